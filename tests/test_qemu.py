"""QemuArm64 on a real emulated arm64 root: real debootstrap, real qemu-user, the real aarch64 LiteRT wheel.

The root is built once per test session under the session's ``$EDGEBUILD_CACHE_DIR``
(or reused from ``$EDGEBUILD_QEMU_ROOT`` when that is set, e.g. on a developer's
machine), and its cold setup time is printed. Nothing is mocked: the missing-qemu test
runs the real CLI with a ``PATH`` that has no qemu on it.

Needs root (chroot), network access to a Debian mirror and PyPI for the first setup,
and Debian's ``qemu-user-static`` and ``debootstrap``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgebuild.errors import BuildError
from edgebuild.runners.arm64_root import MARKER, default_root, is_ready, setup_root
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.qemu_arm64 import QemuArm64
from edgebuild.stages.validate import compare_outputs
from tests.conftest import assert_one_line_error, quick_project, run_cli
from tests.models import CLASSES, SAMPLES, int8_inputs, tiny_tflite

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _cannot_run() -> str | None:
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (chroot into the emulated root)"
    if is_ready(default_root()):
        return None
    missing = [tool for tool in ("qemu-aarch64-static", "debootstrap", "dpkg-deb") if not shutil.which(tool, path=SBIN)]
    if missing:
        return f"needs {', '.join(missing)}: apt-get install qemu-user-static debootstrap"
    return None


pytestmark = pytest.mark.skipif(_cannot_run() is not None, reason=_cannot_run() or "")


@pytest.fixture(scope="session")
def qemu_root() -> Path:
    """The session's emulated root, built once (cold setup time printed) or reused."""
    start = time.perf_counter()
    was_ready = is_ready(default_root())
    root = setup_root()
    print(
        f"\nqemu root {'reused' if was_ready else 'built cold'} in {time.perf_counter() - start:.1f} s: {root}",
        file=sys.stderr,
    )
    return root


def tiny_int8() -> tuple[bytes, np.ndarray]:
    """The shared tiny int8 CNN and its 48 inputs, quantized to int8."""
    return tiny_tflite(), int8_inputs()


@pytest.mark.slow
def test_root_is_complete_and_described(qemu_root: Path) -> None:
    marker = json.loads((qemu_root / MARKER).read_text())
    assert marker["arch"] == "arm64" and marker["suite"] == "bookworm" and marker["python"] == "3.11"
    assert marker["wheels"]["ai-edge-litert"] == "2.3.0" and "numpy" in marker["wheels"]
    assert any(p.startswith("python3.11_") for p in marker["debian_packages"])
    assert (qemu_root / "usr/bin/qemu-aarch64-static").is_file()
    assert not (qemu_root / "sys").exists() or not any((qemu_root / "sys").iterdir())  # nothing mounted there
    assert not list(qemu_root.parent.glob(f".{qemu_root.name}.building-*"))  # no half-built root left
    assert setup_root(qemu_root) == qemu_root  # ready: reused, not rebuilt
    assert json.loads((qemu_root / MARKER).read_text())["created"] == marker["created"]


def test_a_folder_without_marker_is_not_a_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    assert not is_ready(tmp_path)
    (tmp_path / MARKER).write_text(json.dumps({"format": 0}))
    assert not is_ready(tmp_path)


@pytest.mark.slow
def test_runs_on_emulated_arm64_and_reference_kernels_match_the_host(qemu_root: Path) -> None:
    model, inputs = tiny_int8()
    runner = QemuArm64(qemu_root)
    start = time.perf_counter()
    result = runner.run(model, inputs)
    default_s = time.perf_counter() - start
    assert result.outputs.shape == (SAMPLES, CLASSES) and result.outputs.dtype == np.int8
    assert result.emulated is True
    assert "emulated" in result.device and "aarch64" in result.device and "default kernels" in result.device
    assert len(result.latency_ms) == SAMPLES and all(ms > 0 for ms in result.latency_ms)
    assert result.peak_memory_bytes and result.peak_memory_bytes > 0
    host_default = LiteRTHost().run(model, inputs).outputs
    # arm64 XNNPACK vs the host's: judged by top-1 agreement, not by LSB (the kernels, chosen by
    # CPU, round differently and the differences grow through the layers).
    differences = compare_outputs(result.outputs, host_default)
    assert differences.top1_agreement >= 0.9, differences

    start = time.perf_counter()
    reference = runner.run(model, inputs, reference=True)
    reference_s = time.perf_counter() - start
    host = LiteRTHost(reference=True).run(model, inputs)
    assert "reference kernels" in reference.device and reference.emulated
    assert reference.outputs.dtype == host.outputs.dtype
    assert np.array_equal(reference.outputs, host.outputs)  # bit-identical
    print(
        f"\nqemu run: default kernels {default_s:.1f} s, reference {reference_s:.1f} s (48 inputs); "
        f"latency emulated {result.latency_summary()} vs host {LiteRTHost().run(model, inputs).latency_summary()}",
        file=sys.stderr,
    )
    assert not list((qemu_root / "tmp").glob("edgebuild-*"))  # the run's folders are removed


@pytest.mark.slow
def test_a_root_without_litert_is_a_one_line_build_error(qemu_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "root"
    try:  # a hard-linked copy: cheap, and removing files from it leaves the session's root alone
        shutil.copytree(qemu_root, copy, symlinks=True, copy_function=os.link)
    except OSError as error:
        pytest.skip(f"cannot hard-link the root into {tmp_path}: {error}")
    for litert in (copy / "usr/local/lib/python3.11/dist-packages").glob("ai_edge_litert*"):
        shutil.rmtree(litert)
    model, inputs = tiny_int8()
    with pytest.raises(BuildError) as raised:
        QemuArm64(copy).run(model, inputs[:2])
    assert "no LiteRT interpreter in the emulated arm64 root" in str(raised.value)
    assert "edgebuild device setup qemu --force" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert (qemu_root / "usr/local/lib/python3.11/dist-packages/ai_edge_litert").is_dir()


@pytest.mark.slow
def test_setup_cli_reuses_the_cached_root(qemu_root: Path, tmp_path: Path) -> None:
    result = run_cli("device", "setup", "qemu", cwd=tmp_path, timeout=120)
    assert result.code == 0, result.err
    assert f"emulated arm64 Linux ready in {qemu_root}" in result.out


def test_missing_qemu_names_the_install_command(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with this Python and the basic tools, but no qemu and no debootstrap
    bin_dir.mkdir()
    for tool in ("tar", "dpkg-deb", "sh"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir), "EDGEBUILD_CACHE_DIR": str(tmp_path / "cache"), "EDGEBUILD_QEMU_ROOT": ""}
    result = run_cli("device", "setup", "qemu", cwd=tmp_path, env=env, timeout=120)
    assert_one_line_error(result, 2, "qemu-aarch64-static", "apt-get install qemu-user-static")
    assert not (tmp_path / "cache" / "devices" / "qemu-arm64").exists()


@pytest.mark.slow
def test_a_killed_setup_leaves_no_root_that_looks_ready(tmp_path: Path) -> None:
    root = tmp_path / "devices" / "qemu-arm64"
    env = {**os.environ, "EDGEBUILD_QEMU_ROOT": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgebuild", "device", "setup", "qemu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(root.parent.glob(".qemu-arm64.building-*/var/cache/apt")):
            time.sleep(0.2)  # wait until debootstrap is downloading into the folder being built
        assert proc.poll() is None, "setup ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not root.exists() and not is_ready(root)
    assert list(root.parent.glob(".qemu-arm64.building-*"))  # the half-built root, under a name never used


def test_setup_never_deletes_through_a_mount(tmp_path: Path) -> None:
    root = tmp_path / "qemu-arm64"
    (root / "proc").mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "proc")], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (root / "proc" / "precious").write_text("host data")
        with pytest.raises(BuildError) as raised:
            setup_root(root, force=True)
        assert "is mounted inside" in str(raised.value) and "umount" in str(raised.value)
        assert (root / "proc" / "precious").read_text() == "host data"
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False)


@pytest.fixture(scope="module")
def e2e_build(qemu_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quick rpi4-relaxed build validated on --device qemu; the output folder."""
    project = tmp_path_factory.mktemp("qemu-project")
    (project / "recipes").mkdir()
    (project / "targets").mkdir()
    quick_project(project)
    start = time.perf_counter()
    result = run_cli("--target", "rpi4-relaxed", "--device", "qemu", "--quiet", cwd=project)
    print(f"\nquick rpi4-relaxed build with --device qemu: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    assert result.code == 0, result.err
    return project / "build" / "quick" / "rpi4-relaxed"


@pytest.mark.slow
def test_cli_build_validates_on_emulated_arm64(e2e_build: Path) -> None:
    report = json.loads((e2e_build / "report.json").read_text())
    run = report["validation"]["device_run"]
    assert run["device"] == "qemu" and run["emulated"] is True
    assert "emulated" in run["measured_on"] and "aarch64" in run["measured_on"]
    assert 0.0 < run["accuracy"] <= 1.0
    assert run["reference_kernels_vs_host"]["mismatched_outputs"] == 0
    assert run["latency"]["mean_ms"] > 0 and run["latency"]["p90_ms"] >= run["latency"]["p50_ms"]
    assert "emulated" in run["latency_note"]
    assert run["peak_memory_bytes"] < 512 * 1024**2  # the device's own, not edgebuild's (TensorFlow: ~900 MB)
    print(f"\nemulated latency: {run['latency']}, peak memory {run['peak_memory_bytes']:,} B", file=sys.stderr)


@pytest.mark.slow
def test_report_md_marks_the_emulated_latency(e2e_build: Path) -> None:
    text = (e2e_build / "report.md").read_text()
    lines = [line for line in text.splitlines() if "latency" in line.lower() and "qemu" in line.lower()]
    assert lines and all("emulated" in line for line in lines), text
