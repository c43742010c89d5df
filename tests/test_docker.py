"""The container image (``Dockerfile``) builds, runs edgebuild, and gives the host's bytes.

A registry base image cannot be pulled on the test machines, so the test makes its own:
``debootstrap --variant=minbase bookworm`` (with python3, python3-venv, ca-certificates),
imported into podman as ``localhost/edgebuild-base:bookworm`` and passed as ``BASE_IMAGE``.
The image is built with ``podman build --isolation=chroot`` (no Docker engine needed), then
the default recipe is built for cortex-m4 twice, from empty folders: in the container (the
image's non-root user, the folder mounted at /work, no network; with ``$EDGEBUILD_THIRD_PARTY``
set the image carries TFLM's pinned archives and the build also runs the firmware under
``--device qemu``, compiling TFLM from them) and on the host with this
interpreter, under the same environment (``BUILD_ENVIRONMENT``; the host's build is the session's
``default_recipe_build``, which test_default_recipe reads too). The generated ``.tflite``, ``.h``
and ``.cc`` files must be byte-identical.

Needs root (debootstrap, rootful podman), podman, runc and debootstrap, and network access to
deb.debian.org and PyPI while building. A cold run takes about 10 minutes on two cores (base
image 1.5 min, image 5 min, each build 2 min), a warm one (base image and image layers kept by
podman) about 4.5. The base image is kept between runs: it is only a minimal Debian bookworm.
The image is rebuilt every run from podman's layer cache, which is keyed on the content of
every file the Dockerfile copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BUILD_ENVIRONMENT, Build

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/edgebuild-base:bookworm"
IMAGE = "localhost/edgebuild:test"
MIRROR = "http://deb.debian.org/debian"
OUTPUT = Path("build") / "mnist" / "cortex-m4"
FIRMWARE_FILES = ("model.tflite", "model_data.h", "model_data.cc", "model_ops.h")

# The apt sources of Docker's debian:bookworm-slim, so that the local base gets the same
# package versions (bookworm-updates and security updates included) as the real one.
DEBIAN_SOURCES = """\
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _missing() -> str | None:
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (debootstrap and rootful podman)"
    absent = [tool for tool in ("podman", "debootstrap") if shutil.which(tool) is None]
    if shutil.which("runc") is None and shutil.which("crun") is None:
        absent.append("runc")
    if absent:
        return f"needs {', '.join(absent)} (apt-get install podman runc debootstrap)"
    return None


pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


def _run(cmd: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if proc.returncode != 0:
        tail = (proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]).strip()
        pytest.fail(f"{' '.join(cmd[:3])} ... exited {proc.returncode}:\n{tail}")


def _timed(label: str, timings: dict[str, float], start: float) -> None:
    timings[label] = time.monotonic() - start


def _base_image(scratch: Path) -> None:
    """A minimal Debian bookworm as a podman image; kept between runs (it holds nothing of ours)."""
    if subprocess.run(["podman", "image", "exists", BASE_IMAGE]).returncode == 0:
        return
    try:
        _debootstrap_and_import(scratch)
    finally:
        shutil.rmtree(scratch / "rootfs", ignore_errors=True)
        (scratch / "rootfs.tar").unlink(missing_ok=True)


def _debootstrap_and_import(scratch: Path) -> None:
    rootfs = scratch / "rootfs"
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            MIRROR,
        ],
        timeout=1800,
    )
    (rootfs / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
    (rootfs / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(DEBIAN_SOURCES)
    for leftovers in (rootfs / "var" / "cache" / "apt" / "archives", rootfs / "var" / "lib" / "apt" / "lists"):
        for path in leftovers.glob("*"):
            if path.is_file():
                path.unlink()
    tarball = scratch / "rootfs.tar"
    _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."], timeout=600)
    _run(["podman", "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE_IMAGE], timeout=600)


def _ca_bundle() -> str | None:
    """The CA bundle pip trusts on this host (a TLS-intercepting proxy's CA may be in it)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _build_image(scratch: Path) -> bool:
    """Build the image from a copy of the repository's files the Dockerfile reads, with TFLM's pinned
    archives in ``docker/third_party/`` (``edgebuild sources --into``) when ``$EDGEBUILD_THIRD_PARTY``
    has them. Whether the image carries them."""
    context = scratch / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, context / name)
    for name in ("edgebuild", "docker"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.tar.gz"))
    sources = bool(os.environ.get("EDGEBUILD_THIRD_PARTY"))
    if sources:
        into = context / "docker" / "third_party"
        _run([sys.executable, "-m", "edgebuild", "sources", "--into", str(into)], timeout=600, cwd=scratch)
    cmd = ["podman", "build", "--isolation=chroot", "--network=host", "--layers", "--pull=never"]
    cmd += ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--tag", IMAGE, "--file", str(context / "Dockerfile")]
    bundle = _ca_bundle()
    if bundle:
        cmd += ["--secret", f"id=pip_cert,src={bundle}"]
    _run([*cmd, str(context)], timeout=3600)
    return sources


def _ulimits() -> list[str]:
    """Explicit limits no higher than this process's own.

    Rootful podman asks for 1048576 open files and processes by default, and it lowers its
    own process limit to 32768; where the caller lacks CAP_SYS_RESOURCE (CI sandboxes) runc
    cannot raise a limit and the container does not start ("error setting rlimit").
    """
    flags = []
    for name, limit, cap in (("nofile", resource.RLIMIT_NOFILE, 1 << 20), ("nproc", resource.RLIMIT_NPROC, 32768)):
        hard = resource.getrlimit(limit)[1]
        value = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        flags += ["--ulimit", f"{name}={value}:{value}"]
    return flags


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".tflite", ".h", ".cc")
    }


def _first_difference(a: Path, b: Path) -> str:
    x, y = a.read_bytes(), b.read_bytes()
    offset = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    return f"{a.name}: host {len(x)} B, container {len(y)} B, first difference at byte {offset}"


def test_image_builds_the_default_recipe_with_the_hosts_bytes(
    tmp_path: Path, default_recipe_build: Callable[[str], Build]
) -> None:
    timings: dict[str, float] = {}
    start = time.monotonic()
    _base_image(tmp_path)
    _timed("base image", timings, start)

    start = time.monotonic()
    carries_sources = _build_image(tmp_path)
    _timed("image", timings, start)

    # In the container: the image's own user (uid 1000) writes into the mounted folder, so the
    # folder is opened to it; the host (root) reads what it wrote. No network: a build needs none.
    in_container = tmp_path / "container"
    in_container.mkdir()
    in_container.chmod(0o777)
    start = time.monotonic()
    cmd = ["podman", "run", "--rm", "--network=none", *_ulimits(), "--volume", f"{in_container}:/work"]
    for key, value in BUILD_ENVIRONMENT.items():
        cmd += ["--env", f"{key}={value}"]
    # With TFLM's archives in the image, the build also builds and runs the firmware (--device qemu):
    # the sources come from the image, not the network.
    firmware = ["--device", "qemu"] if carries_sources else []
    _run([*cmd, IMAGE, "--target", "cortex-m4", *firmware, "--quiet"], timeout=1800)
    _timed("container build", timings, start)

    # On the host, with this interpreter and the sources the image was built from, under the same
    # environment: the session's default-recipe build (test_default_recipe reads it too).
    start = time.monotonic()
    host = default_recipe_build("cortex-m4").out
    _timed("host build (or the session's)", timings, start)
    print("timings:", ", ".join(f"{label} {seconds:.0f} s" for label, seconds in timings.items()))

    container = in_container / OUTPUT
    for name in FIRMWARE_FILES:
        assert (host / name).is_file(), name
        assert (container / name).is_file(), name
    host_digests, container_digests = _digests(host), _digests(container)
    assert sorted(host_digests) == sorted(container_digests)
    differing = [name for name in host_digests if host_digests[name] != container_digests[name]]
    assert not differing, "\n".join(_first_difference(host / name, container / name) for name in differing)
    if carries_sources:
        run = json.loads((container / "report.json").read_text())["validation"]["device_run"]
        assert run["firmware"]["machine"] == "mps2-an386" and run["vs_host_tflm"]["mismatched_outputs"] == 0
