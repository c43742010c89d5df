"""``--device qemu`` on Cortex-M targets: the real firmware (the emitted C, TFLM with CMSIS-NN, a harness)
built with the real arm-none-eabi-gcc and TFLM's own Makefile, run on qemu-system-arm's boards.

Nothing is mocked. The TFLM library is compiled once per cpu and test session, into the session's
stage cache (``<cache>/firmware``; ``$EDGEBUILD_FIRMWARE_DIR`` keeps it between sessions), and its
cold and warm build times are printed. The source archives come from ``$EDGEBUILD_THIRD_PARTY``
(``.ci/run`` sets it); the download path is covered by a local HTTP server on 127.0.0.1 serving the
same archives. Tests that need qemu-system-arm, the arm toolchain or the archives skip, saying which.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from edgebuild.errors import BuildError, ConfigError
from edgebuild.firmware import FirmwareModel
from edgebuild.mcu_firmware import STARTUP, FirmwareImage, LibraryConfig, linker_script
from edgebuild.runners.qemu_mcu import QemuMcu
from edgebuild.schema import find_file, load_target
from edgebuild.support import BOARDS
from edgebuild.third_party import (
    ARCHIVES_ENV,
    DOWNLOADS,
    FIRMWARE_DIR_ENV,
    MARKER,
    SOURCES,
    URL_ENV,
    extract,
    sources_id,
    tflm_tree,
)
from tests.conftest import REPO, Result, assert_one_line_error, quick_project, run_cli, shipped

ARCHIVES = os.environ.get(ARCHIVES_ENV, "")
ARM_TOOLS = ("qemu-system-arm", "arm-none-eabi-gcc", "arm-none-eabi-g++", "make")
INSTALL = (
    "apt-get install qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib make"
)


@cache
def _missing_tools() -> str | None:
    missing = [tool for tool in ARM_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)}: {INSTALL}"
    proc = subprocess.run(
        ["arm-none-eabi-g++", "-x", "c++", "-mcpu=cortex-m4", "-mthumb", "-fsyntax-only", "-"],
        input="#include <cstddef>\n",
        capture_output=True,
        text=True,
    )
    return None if proc.returncode == 0 else "needs apt-get install libstdc++-arm-none-eabi-newlib"


def _missing_archives() -> str | None:
    if not ARCHIVES:
        return f"needs ${ARCHIVES_ENV}, a folder with TFLM's pinned source archives (.ci/run sets it)"
    missing = [s.archive for s in SOURCES if not (Path(ARCHIVES) / s.archive).is_file()]
    return f"${ARCHIVES_ENV}={ARCHIVES} lacks {missing[0]}" if missing else None


needs_tools = pytest.mark.skipif(_missing_tools() is not None, reason=_missing_tools() or "")
needs_archives = pytest.mark.skipif(_missing_archives() is not None, reason=_missing_archives() or "")
TARGETS = ("cortex-m4-relaxed", "cortex-m55-u55-relaxed")


@dataclass(frozen=True)
class FirmwareBuild:
    project: Path
    out: Path
    result: Result
    seconds: float

    @property
    def report(self) -> dict[str, object]:
        report: dict[str, object] = json.loads((self.out / "report.json").read_text())
        return report

    @property
    def run(self) -> dict[str, object]:
        validation = self.report["validation"]
        assert isinstance(validation, dict)
        run: dict[str, object] = validation["device_run"]
        return run


@pytest.fixture(scope="session")
def firmware_build(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], FirmwareBuild]:
    """``edgebuild --target T --device qemu`` on the quick project, once per target and session (the
    first build for a cpu compiles its TFLM objects: the cold time is printed)."""
    project = tmp_path_factory.mktemp("mcu-firmware")
    (project / "recipes").mkdir()
    (project / "targets").mkdir()
    quick_project(project, targets=("cortex-m4", "cortex-m55-u55"))

    @cache
    def build(target: str) -> FirmwareBuild:
        start = time.perf_counter()
        result = run_cli("--target", target, "--device", "qemu", "--quiet", cwd=project, timeout=3600)
        seconds = time.perf_counter() - start
        assert result.code == 0, result.err
        out = project / "build" / "quick" / target
        fw = json.loads((out / "report.json").read_text())["validation"]["device_run"]["firmware"]
        print(
            f"\n{target} --device qemu: build {seconds:.1f} s, of which TFLM {fw['library_compiled_objects']} "
            f"objects compiled in {fw['library_compile_seconds']:.1f} s ({fw['library_objects']} linked)",
            file=sys.stderr,
        )
        return FirmwareBuild(project, out, result, seconds)

    return build


# ---------------------------------------------------------------- the quick model on M4 and M55


@pytest.mark.slow
@needs_tools
@needs_archives
@pytest.mark.parametrize("target", TARGETS)
def test_quick_model_runs_bit_identical_in_firmware(
    firmware_build: Callable[[str], FirmwareBuild], target: str
) -> None:
    build = firmware_build(target)
    run = build.run
    fw = run["firmware"]
    assert isinstance(fw, dict)
    cpu, machine = ("cortex-m4", "mps2-an386") if "m4" in target else ("cortex-m55", "mps3-an547")
    assert run["device"] == "qemu" and run["emulated"] is True
    assert (fw["machine"], fw["cpu"], fw["kernels"]) == (machine, cpu, "cmsis-nn")
    assert f"-M {machine}" in str(run["measured_on"]) and "emulated" in str(run["measured_on"])
    same = run["vs_host_tflm"]
    assert isinstance(same, dict)
    assert same["mismatched_outputs"] == 0 and same["max_lsb_diff"] == 0  # CMSIS-NN = TFLM on the host, bit for bit
    assert same["compared_outputs"] == fw["inferences"] * 10 > 0  # every output of every test input
    assert run["vs_host_reference"]["top1_agreement"] >= 0.99  # type: ignore[index]
    report = build.report
    assert report["artifact"]["metrics"] == run["metrics"]  # type: ignore[index]
    count = fw["instructions"]
    assert 1_000 < count["min"] <= count["mean"] <= count["max"] < 10_000_000
    assert "instructions" in str(run["latency_note"]) and run["latency"] == {}
    # the real image: sections and parts from the ELF and the map; the arena from the header
    assert fw["sections"][".text"] > 10_000 and fw["sections"][".stack"] == fw["stack_bytes"]
    assert {"model", "tflm", "cmsis-nn", "c library", "harness"} <= set(fw["flash_by_part"])
    assert fw["flash_by_part"]["model"] >= report["artifact"]["tflite_bytes"] * 0.9  # type: ignore[index]
    assert fw["flash_bytes"] >= sum(fw["flash_by_part"].values())
    assert fw["ram_by_part"]["arena"] == fw["arena_bytes"] == report["firmware"]["arena_bytes"]  # type: ignore[index]
    assert 0 < fw["arena_used_bytes"] <= fw["arena_bytes"] and 0 < fw["stack_used_bytes"] < fw["stack_bytes"]
    # the memory fit: on the CPU target the firmware's own FLASH and RAM (the profile's application
    # placeholders linked in); on the NPU target, whose shipped firmware holds Vela's model, the estimate
    memory = load_target(find_file("targets", target.removesuffix("-relaxed"), REPO)).memory
    assert memory is not None
    regions = {r["name"]: r for r in report["firmware"]["regions"]}  # type: ignore[index]
    if "m4" in target:
        assert report["firmware"]["fit_from"] == "the firmware linked for mps2-an386, measured"  # type: ignore[index]
        assert fw["flash_by_part"]["application"] == memory.application_flash_bytes
        assert fw["ram_by_part"]["application"] == memory.application_ram_bytes
        assert regions["FLASH"]["used"] == fw["flash_bytes"] and regions["RAM"]["used"] == fw["ram_bytes"]
        assert regions["FLASH"]["parts"] == fw["flash_by_part"] and regions["RAM"]["parts"] == fw["ram_by_part"]
        assert sum(fw["ram_by_part"].values()) <= fw["ram_bytes"] < sum(fw["ram_by_part"].values()) + 64
    else:
        assert report["firmware"]["fit_from"] == "the profile's runtime estimate"  # type: ignore[index]
        assert regions["FLASH"]["parts"]["runtime (estimate)"] == memory.runtime_flash_bytes
    text = (build.out / "report.md").read_text()
    assert "Instructions per inference (QEMU -icount, emulated; not cycles)" in text
    print(
        f"\n{target}: {count['mean']:,.0f} instructions per inference; flash {fw['flash_bytes']:,} B "
        f"{fw['flash_by_part']}; RAM {fw['ram_bytes']:,} B {fw['ram_by_part']}",
        file=sys.stderr,
    )


@pytest.mark.slow
@needs_tools
@needs_archives
def test_the_header_is_compiled_exactly_as_emitted(firmware_build: Callable[[str], FirmwareBuild]) -> None:
    build = firmware_build("cortex-m4-relaxed")
    fw = build.run["firmware"]
    assert isinstance(fw, dict)
    shipped_files = {name: hashlib.sha256((build.out / name).read_bytes()).hexdigest() for name in fw["sources_sha256"]}
    assert fw["sources_sha256"] == shipped_files
    assert set(shipped_files) == {"model_data.h", "model_data.cc", "model_ops.h"}
    assert "as emitted" in fw["model_source"]
    # On the NPU target the shipped array is Vela's: the firmware ran the validated CPU model instead.
    npu = firmware_build("cortex-m55-u55-relaxed").run["firmware"]
    assert isinstance(npu, dict) and "model_cpu.tflite" in npu["model_source"]


@pytest.mark.slow
@needs_tools
@needs_archives
def test_a_second_build_reuses_the_library(firmware_build: Callable[[str], FirmwareBuild]) -> None:
    first = firmware_build("cortex-m4-relaxed")
    shutil.rmtree(first.out)  # not up to date: every stage comes from the stage cache, link runs again
    start = time.perf_counter()
    result = run_cli("--target", "cortex-m4-relaxed", "--device", "qemu", "--quiet", cwd=first.project)
    warm = time.perf_counter() - start
    assert result.code == 0, result.err
    fw = json.loads((first.out / "report.json").read_text())["validation"]["device_run"]["firmware"]
    assert fw["library_compiled_objects"] == 0 and fw["library_objects"] > 0
    print(f"\ncortex-m4-relaxed --device qemu, warm (library cached): {warm:.1f} s", file=sys.stderr)


@pytest.mark.slow
@needs_tools
@needs_archives
def test_a_firmware_too_large_for_the_profile_fails_with_exit_3(
    firmware_build: Callable[[str], FirmwareBuild],
) -> None:
    project = firmware_build("cortex-m4-relaxed").project  # its stages are cached
    text = (project / "targets" / "cortex-m4-relaxed.toml").read_text()
    text = text.replace('name = "cortex-m4-relaxed"', 'name = "cortex-m4-tiny"')
    text = text.replace("flash_bytes = 1_048_576", "flash_bytes = 24_576")
    text = text.replace("model_bytes = 524_288", "model_bytes = 16_384")
    text = text.replace("runtime_flash_bytes = 98_304", "").replace("application_flash_bytes = 32_768", "")
    (project / "targets" / "cortex-m4-tiny.toml").write_text(text)
    # Without the firmware the fit has no runtime (the profile estimates none): it passes.
    assert run_cli("--target", "cortex-m4-tiny", "--quiet", cwd=project).code == 0
    # The firmware measures TFLM and its kernels: FLASH is missed by what they take (exit 3), nothing runs.
    result = run_cli("--target", "cortex-m4-tiny", "--device", "qemu", "--out", "tiny-qemu", cwd=project)
    assert result.code == 3 and "Traceback" not in result.err, result.err
    missed = re.search(r"flash_region over by ([\d,]+) bytes", result.err.strip().splitlines()[-1])
    assert missed and int(missed.group(1).replace(",", "")) > 20_000  # TFLM and CMSIS-NN take more than that
    assert "does not fit the profile" in result.out + result.err and "so it was not run" in result.out + result.err
    assert not (project / "tiny-qemu").exists()


@pytest.mark.slow
@needs_tools
@needs_archives
def test_compare_kernels_runs_both_families_and_a_low_runtime_estimate_is_named(
    firmware_build: Callable[[str], FirmwareBuild],
) -> None:
    project = firmware_build("cortex-m4-relaxed").project  # its stages and CMSIS-NN library are cached
    text = (project / "targets" / "cortex-m4-relaxed.toml").read_text()
    text = text.replace('name = "cortex-m4-relaxed"', 'name = "cortex-m4-low"')
    text = text.replace("runtime_flash_bytes = 98_304", "runtime_flash_bytes = 4_096")
    (project / "targets" / "cortex-m4-low.toml").write_text(text)
    result = run_cli(
        "--target", "cortex-m4-low", "--device", "qemu", "--compare-kernels", "--quiet", cwd=project, timeout=3600
    )
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "cortex-m4-low" / "report.json").read_text())
    fw = report["validation"]["device_run"]["firmware"]
    cmsis, reference = fw["kernel_comparison"]
    assert (cmsis["kernels"], reference["kernels"]) == ("cmsis-nn", "reference")
    assert cmsis["instructions"] == fw["instructions"]  # the first is the build's own run
    for run in (cmsis, reference):
        assert run["vs_host_tflm"]["mismatched_outputs"] == 0 and run["vs_host_tflm"]["compared_outputs"] > 0
    assert reference["instructions"]["mean"] > cmsis["instructions"]["mean"]  # CMSIS-NN's point on a Cortex-M4
    text = (project / "build" / "quick" / "cortex-m4-low" / "report.md").read_text()
    assert "| cmsis-nn |" in text and "| reference |" in text
    # the measured runtime is above the profile's estimate: the warning names the key and the size to set
    runtime = sum(fw["flash_by_part"][part] for part in ("tflm", "cmsis-nn", "c library", "harness"))
    (warning,) = [w for w in report["warnings"] if "memory.runtime_flash_bytes" in w]
    assert f"set memory.runtime_flash_bytes to at least {runtime:,}" in warning
    print(
        f"\ncortex-m4 quick model: CMSIS-NN {cmsis['instructions']['mean']:,.0f}, reference "
        f"{reference['instructions']['mean']:,.0f} instructions per inference",
        file=sys.stderr,
    )


# ---------------------------------------------------------------- errors in one line


def _default_project(tmp_path: Path) -> Path:
    (tmp_path / "targets").mkdir()
    return tmp_path


def test_no_qemu_system_arm_is_one_line_with_the_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_cli("--target", "cortex-m4", "--device", "qemu", cwd=tmp_path, env={"PATH": str(empty)})
    assert_one_line_error(result, 2, "qemu-system-arm", "apt-get install qemu-system-arm")


def test_a_cpu_no_board_has_and_a_profile_larger_than_the_board_are_refused(tmp_path: Path) -> None:
    project = _default_project(tmp_path)
    result = run_cli("--target", "esp32-c3", "--device", "qemu", cwd=project)
    assert_one_line_error(result, 2, "there is none for cpu", "esp32-c3", "mps2-an386 (cortex-m4)")
    text = shipped("targets", "cortex-m55-u55").replace("flash_bytes = 2_097_152", "flash_bytes = 4_194_304")
    (project / "targets" / "big-m55.toml").write_text(text.replace('name = "cortex-m55-u55"', 'name = "big-m55"'))
    result = run_cli("--target", "big-m55", "--device", "qemu", cwd=project)
    assert_one_line_error(result, 2, "memory.flash_bytes", "4,194,304", "2,097,152", "mps3-an547")


def test_qemu_machine_key_and_renamed_memory_keys_are_checked(tmp_path: Path) -> None:
    project = _default_project(tmp_path)
    cases = {
        "wrong-board": ('qemu_machine = "mps2-an386"', 'qemu_machine = "mps3-an547"'),
        "unknown-board": ('qemu_machine = "mps2-an386"', 'qemu_machine = "mps2-an368"'),
        "old-key": ("runtime_flash_bytes = 98_304", "reserved_flash_bytes = 131_072"),
    }
    for name, (old, new) in cases.items():
        text = shipped("targets", "cortex-m4").replace('name = "cortex-m4"', f'name = "{name}"')
        assert old in text
        (project / "targets" / f"{name}.toml").write_text(text.replace(old, new))
    result = run_cli("--target", "wrong-board", "--device", "qemu", cwd=project)
    assert_one_line_error(result, 2, "device.qemu_machine", "mps3-an547 emulates a cortex-m55", "cortex-m4")
    result = run_cli("--target", "unknown-board", cwd=project)
    assert_one_line_error(result, 2, "device.qemu_machine", "unknown QEMU machine 'mps2-an368'", "mps2-an386")
    result = run_cli("--target", "old-key", cwd=project)
    assert_one_line_error(result, 2, "memory.reserved_flash_bytes", "renamed", "memory.runtime_flash_bytes")


def test_compare_kernels_without_the_firmware_is_refused(tmp_path: Path) -> None:
    result = run_cli("--target", "cortex-m4", "--compare-kernels", cwd=tmp_path)
    assert_one_line_error(result, 2, "--compare-kernels", "--device qemu")
    result = run_cli("--target", "rpi4", "--device", "qemu", "--compare-kernels", cwd=tmp_path)
    assert_one_line_error(result, 2, "--compare-kernels", "microcontroller target")


def test_device_ssh_on_a_microcontroller_target_is_refused(tmp_path: Path) -> None:
    result = run_cli("--target", "cortex-m4", "--device", "ssh://pi@board", cwd=tmp_path)
    assert_one_line_error(result, 2, "runs TFLM firmware", "--device qemu")


def _tiny_firmware(tmp_path: Path, main: str) -> tuple[QemuMcu, bytes, np.ndarray]:
    """A firmware of edgebuild's start-up code and ``main`` (no TFLM), linked for mps2-an386."""
    target = load_target(find_file("targets", "cortex-m4", REPO))
    board = BOARDS["mps2-an386"]
    (tmp_path / "main.c").write_text(main)
    (tmp_path / "firmware.ld").write_text(linker_script(board, target))
    elf = tmp_path / "firmware.elf"
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-O1"]
    command = ["arm-none-eabi-gcc", *flags, "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs"]
    subprocess.run(
        [*command, "-T", str(tmp_path / "firmware.ld"), str(STARTUP), str(tmp_path / "main.c"), "-o", str(elf)],
        check=True,
    )
    config = LibraryConfig("cortex-m4+fp", "fpv4-sp-d16", "cmsis-nn", "gcc")
    image = FirmwareImage(elf, board, config, 0, 0, {}, {}, {}, 0, 0, 0.0, ())
    tensor = {"name": "x", "shape": [1, 4], "dtype": "int8", "scale": 1.0, "zero_point": 0}
    model = FirmwareModel(b"model", "t", "model", 16, 0.0, "", [tensor], [tensor], (), [])
    return QemuMcu(image, model, timeout_s=5), model.data, np.zeros((2, 4), np.int8)


@needs_tools
def test_a_firmware_that_hangs_is_stopped_at_the_wall_clock_limit(tmp_path: Path) -> None:
    runner, model, inputs = _tiny_firmware(
        tmp_path, 'void edgebuild_write(const char*);\nint main(void) { edgebuild_write("waiting\\n"); for (;;) {} }\n'
    )
    start = time.perf_counter()
    with pytest.raises(BuildError) as caught:
        runner.run(model, inputs)
    assert time.perf_counter() - start < 30
    message = str(caught.value)
    assert "finished no inference for 5 s (at input 1 of 2)" in message and "mps2-an386" in message
    assert "last output: waiting" in message and "\n" not in message


@needs_tools
def test_a_firmware_that_faults_says_which_fault_in_one_line(tmp_path: Path) -> None:
    runner, model, inputs = _tiny_firmware(tmp_path, 'int main(void) { __asm__ volatile("udf #0"); return 0; }\n')
    with pytest.raises(BuildError) as caught:
        runner.run(model, inputs)
    message = str(caught.value)
    assert "exit code 3" in message and "fault: UsageFault" in message and "PC 0x" in message, message
    assert "\n" not in message


# ---------------------------------------------------------------- the pinned sources


@pytest.fixture
def firmware_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty firmware cache of the test's own (the session's stays untouched)."""
    folder = tmp_path / "firmware"
    monkeypatch.setenv(FIRMWARE_DIR_ENV, str(folder))
    return folder


def _archives_with(tmp_path: Path, change: Callable[[Path], None]) -> Path:
    """A copy of the archive folder (as symlinks) that ``change`` then breaks."""
    folder = tmp_path / "archives"
    folder.mkdir()
    for source in SOURCES:
        (folder / source.archive).symlink_to(Path(ARCHIVES) / source.archive)
    change(folder)
    return folder


def _nothing_half_made(firmware_dir: Path) -> None:
    sources = firmware_dir / "sources"
    assert not (sources / sources_id()).exists()
    assert [p.name for p in sources.iterdir()] == [".lock"]


@needs_archives
def test_a_missing_archive_is_a_config_error_naming_it(
    tmp_path: Path, firmware_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tflm = SOURCES[0]
    folder = _archives_with(tmp_path, lambda f: (f / tflm.archive).unlink())
    monkeypatch.setenv(ARCHIVES_ENV, str(folder))
    with pytest.raises(ConfigError) as caught:
        tflm_tree()
    assert caught.value.exit_code == 2
    assert tflm.archive in str(caught.value) and "github.com/tensorflow/tflite-micro/archive" in str(caught.value)
    _nothing_half_made(firmware_dir)


@needs_archives
def test_a_corrupt_archive_is_a_build_error_naming_it(
    tmp_path: Path, firmware_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tflm = SOURCES[0]

    def truncate(folder: Path) -> None:
        data = (folder / tflm.archive).read_bytes()
        (folder / tflm.archive).unlink()
        (folder / tflm.archive).write_bytes(data[: len(data) // 2])

    monkeypatch.setenv(ARCHIVES_ENV, str(_archives_with(tmp_path, truncate)))
    with pytest.raises(BuildError) as caught:
        tflm_tree()
    assert caught.value.exit_code == 1
    assert "corrupt or truncated" in str(caught.value) and tflm.archive in str(caught.value)
    _nothing_half_made(firmware_dir)


@needs_archives
def test_an_archive_of_other_sources_fails_the_tree_hash(
    tmp_path: Path, firmware_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tflm = SOURCES[0]

    def replace(folder: Path) -> None:
        (folder / tflm.archive).unlink()
        with tarfile.open(folder / tflm.archive, "w:gz") as tar:
            data = b"not TFLM\n"
            info = tarfile.TarInfo("tflite-micro-x/README.md")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    monkeypatch.setenv(ARCHIVES_ENV, str(_archives_with(tmp_path, replace)))
    with pytest.raises(BuildError) as caught:
        tflm_tree()
    assert "are not the pinned tflite-micro 90b983c2b3f1" in str(caught.value)
    _nothing_half_made(firmware_dir)


@pytest.mark.slow
@needs_tools
@needs_archives
def test_a_corrupt_archive_fails_the_build_in_one_line(
    firmware_build: Callable[[str], FirmwareBuild], tmp_path: Path
) -> None:
    project = firmware_build("cortex-m4-relaxed").project  # its stages are cached: the link stage fails

    def truncate(folder: Path) -> None:
        name = SOURCES[0].archive
        data = (folder / name).read_bytes()
        (folder / name).unlink()
        (folder / name).write_bytes(data[:1000])

    env = {ARCHIVES_ENV: str(_archives_with(tmp_path, truncate)), FIRMWARE_DIR_ENV: str(tmp_path / "firmware")}
    result = run_cli("--target", "cortex-m4-relaxed", "--device", "qemu", "--no-cache", "--quiet", cwd=project, env=env)
    # --no-cache: the build reaches link on its own; the stage cache stays out of it
    assert_one_line_error(result, 1, "link:", "corrupt or truncated", SOURCES[0].archive)


class _Archives(http.server.BaseHTTPRequestHandler):
    """GitHub's archive URLs (/<owner>/<repo>/archive/<ref>.tar.gz), served from the archive folder."""

    requested: list[str]  # each server's own (see archive_server)
    missing: str = ""

    def do_GET(self) -> None:
        self.requested.append(self.path)
        for source in SOURCES:
            if self.path == f"/{source.repo}/archive/{source.ref}.tar.gz" and source.archive != self.missing:
                data = (Path(ARCHIVES) / source.archive).read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
        self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def archive_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Archives]]:
    """A local HTTP server on 127.0.0.1 in place of github.com ($EDGEBUILD_SOURCES_URL), no archive folder."""
    handler = type("Handler", (_Archives,), {"requested": [], "missing": ""})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv(ARCHIVES_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@needs_archives
def test_sources_download_from_github_urls_and_are_verified(
    firmware_dir: Path, archive_server: type[_Archives]
) -> None:
    start = time.perf_counter()
    tree = tflm_tree()
    print(f"\nTFLM sources downloaded and laid out in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    assert tree == firmware_dir / "sources" / sources_id()
    assert sorted(archive_server.requested) == sorted(f"/{s.repo}/archive/{s.ref}.tar.gz" for s in SOURCES)
    record = json.loads((tree / MARKER).read_text())
    assert record["sources"]["ARM-software/CMSIS-NN"]["tree_sha256"] == SOURCES[5].tree_sha256
    downloads = tree / DOWNLOADS
    assert (downloads / "cmsis" / "Cortex_DFP" / "Device").is_dir() and (downloads / "pigweed").is_dir()
    assert "FLATBUFFERS_LOCALE_INDEPENDENT 0" in (downloads / "flatbuffers/include/flatbuffers/base.h").read_text()
    assert "Patched." in (downloads / "kissfft" / "kiss_fft.h").read_text()  # TFLM's kissfft.patch
    assert not list(firmware_dir.rglob("*.tar.gz"))  # the downloads are not kept
    assert tflm_tree() == tree and len(archive_server.requested) == len(SOURCES)  # laid out once


@needs_archives
def test_a_failed_download_says_where_from_and_what_to_do(firmware_dir: Path, archive_server: type[_Archives]) -> None:
    archive_server.missing = SOURCES[0].archive
    with pytest.raises(BuildError) as caught:
        tflm_tree()
    message = str(caught.value)
    assert f"{SOURCES[0].repo}/archive/{SOURCES[0].ref}.tar.gz failed" in message and ARCHIVES_ENV in message
    _nothing_half_made(firmware_dir)


@pytest.mark.parametrize("filters", [True, False], ids=["tarfile-filter", "python-before-3.11.4"])
def test_extract_keeps_everything_inside_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    """With tarfile's data filter, and without it (Debian bookworm's Python 3.11.2 has none): a link
    inside the tree is extracted, a link or path out of it is refused."""
    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)

    def archive(name: str, members: list[tuple[str, str]]) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            for member, link in members:
                info = tarfile.TarInfo(f"top/{member}")
                if link:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                    tar.addfile(info)
                else:
                    info.size = 2
                    tar.addfile(info, io.BytesIO(b"ok"))
        return path

    good = archive("good.tar.gz", [("a/file", ""), ("b/c/link", "../../a/file")])
    extract(good, tmp_path / "good", "good")
    assert (tmp_path / "good" / "b" / "c" / "link").read_text() == "ok"
    for name, members in {
        "link-out": [("a/link", "../../outside")],
        "path-out": [("../escape", "")],
        "absolute-link": [("a/link", "/etc/passwd")],
    }.items():
        with pytest.raises(BuildError, match="corrupt or truncated"):
            extract(archive(f"{name}.tar.gz", members), tmp_path / name, name)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "escape").exists()
