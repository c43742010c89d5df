"""The emulated arm64 Linux root that ``--device qemu`` runs in: a Debian bookworm root for qemu-user.

``setup_root()`` builds the root once and caches it (``default_root()``), with the
root's own Python 3.11 and the aarch64 ``ai-edge-litert`` wheel; the runner
(``qemu_arm64.QemuArm64``) runs models in it.

How the root is made, and why it needs no binfmt_misc:

1. ``debootstrap --foreign --arch=arm64 --variant=minbase --include=python3`` resolves
   and downloads Debian's packages and unpacks the essential ones (no arm64 code runs).
2. The packages ``python3`` needs (debootstrap's ``base`` list) are unpacked on the host
   with ``dpkg-deb --fsys-tarfile | tar -x``: no maintainer script runs, so nothing
   arm64 has to run either. (debootstrap's ``--second-stage`` would configure every
   package under emulation: 11 minutes on two cores, against about a minute for all of this.)
3. The aarch64 wheels (``ai-edge-litert`` and its requirements, numpy among them, which
   brings its own OpenBLAS) are installed on the host by pip with ``--platform
   manylinux_2_*_aarch64 --target`` into the root's ``/usr/local/lib/python3.11/dist-packages``.
4. The host's statically linked ``qemu-aarch64-static`` is copied into the root, and
   every arm64 program is started through it explicitly
   (``chroot ROOT /usr/bin/qemu-aarch64-static /usr/bin/python3 ...``), so the kernel's
   binfmt_misc registration (often missing or unmountable in containers) is not needed.

The root is built in a temporary folder beside the final one and renamed into place
only when complete, with a marker file (``edgebuild-root.json``) saying what it holds;
a killed setup leaves only a ``.qemu-arm64.building-*`` folder that the next setup
removes. An exclusive lock serialises setups; runs hold a shared lock, so a forced
rebuild waits for them. Runs mount nothing: Python and LiteRT need neither /proc nor
/sys, and with both mounted XNNPACK's cpuinfo segfaults under qemu (measured: signal 11);
the root's /dev has debootstrap's few device nodes.
chroot needs root, so setup and runs need root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from edgebuild import __version__, cache
from edgebuild.errors import BuildError, ConfigError

ROOT_ENV = "EDGEBUILD_QEMU_ROOT"
MIRROR_ENV = "EDGEBUILD_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
LITERT_VERSION = "2.3.0"
ROOT_FORMAT = 1  # bump when the root's contents change: an older root is rebuilt
MARKER = "edgebuild-root.json"
QEMU = "qemu-aarch64-static"
QEMU_IN_ROOT = "/usr/bin/qemu-aarch64-static"
PYTHON_IN_ROOT = "/usr/bin/python3"
SITE_IN_ROOT = "usr/local/lib/python{version}/dist-packages"
# What the arm64 programs see: nothing of the host's environment (no LD_PRELOAD, PYTHONPATH, QEMU_*).
CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
}


def default_root() -> Path:
    """Where the emulated root is cached.

    Reads ``$EDGEBUILD_QEMU_ROOT`` (a root shared between projects or kept between test
    runs), else ``$EDGEBUILD_CACHE_DIR`` through ``edgebuild.cache.default_root()``:
    ``<cache>/devices/qemu-arm64``. Writes nothing.
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    return cache.default_root() / "devices" / "qemu-arm64"


def read_marker(root: Path) -> dict[str, object] | None:
    """What ``root/edgebuild-root.json`` says the root holds, or None when it is absent or unreadable."""
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_ready(root: Path) -> bool:
    """Whether ``root`` is a complete root of this edgebuild's format (marker, qemu and python3 present).

    Reads the marker file and checks two paths inside the root; writes nothing.
    """
    marker = read_marker(root)
    if marker is None or marker.get("format") != ROOT_FORMAT:
        return False
    wheels = marker.get("wheels")
    if not isinstance(wheels, dict) or wheels.get("ai-edge-litert") != LITERT_VERSION:
        return False
    return (root / QEMU_IN_ROOT.lstrip("/")).is_file() and (root / PYTHON_IN_ROOT.lstrip("/")).exists()


def which(name: str) -> str | None:
    """``name`` on ``$PATH``, or in /usr/sbin and /sbin (where debootstrap and chroot live)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


def need_root(what: str) -> None:
    """Raise ConfigError unless this process runs as root (chroot and debootstrap need it)."""
    if os.geteuid() != 0:
        raise ConfigError(
            f"{what} needs root: it uses chroot into the emulated arm64 root",
            hint="run edgebuild as root (sudo, or as root in a container or CI job)",
        )


def check_host() -> dict[str, str]:
    """The host tools setup needs, by name: qemu-aarch64-static, debootstrap, dpkg-deb, tar.

    Reads ``$PATH`` (plus /usr/sbin and /sbin). Raises ConfigError naming every missing
    tool with the apt-get command that installs it, when pip is missing from this
    Python, or when not running as root.
    """
    need_root("edgebuild device setup qemu")
    found = {name: which(name) for name in (QEMU, "debootstrap", "dpkg-deb", "tar")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        packages = {QEMU: "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg", "tar": "tar"}
        raise ConfigError(
            f"--device qemu: {' and '.join(missing)} not found on this machine "
            "(needed to build the emulated arm64 root)",
            hint=f"install with: apt-get install {' '.join(packages[name] for name in missing)}",
        )
    import importlib.metadata

    try:
        importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"--device qemu: {sys.executable} has no pip (needed to fetch the aarch64 ai-edge-litert wheel)",
            hint=f"install it: {sys.executable} -m ensurepip",
        ) from None
    return {name: str(path) for name, path in found.items()}


@contextlib.contextmanager
def root_lock(root: Path, *, shared: bool) -> Iterator[None]:
    """Hold ``<root's parent>/.<root name>.lock``: shared for runs, exclusive for setup."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str) -> None:
    """A short progress line on stderr (setup takes about a minute and happens once)."""
    print(f"edgebuild: {message}", file=sys.stderr, flush=True)


def setup_root(root: Path | None = None, *, force: bool = False) -> Path:
    """Build (once) and cache an arm64 Debian bookworm root with Python 3.11 and ai-edge-litert.

    ``root`` defaults to ``default_root()``. Returns the root at once when it is already
    complete (``is_ready``) unless ``force``. Otherwise reads ``$EDGEBUILD_DEBIAN_MIRROR``
    (default deb.debian.org), downloads about 40 MB of Debian packages and 30 MB of
    wheels, and writes: a ``.qemu-arm64.building-*`` folder beside ``root`` that becomes
    ``root`` when complete (an older root is replaced only then), ``root/edgebuild-root.json``,
    the setup log ``<root's parent>/qemu-arm64-setup.log``, and progress lines on stderr.
    Raises ConfigError (not root; qemu-user-static, debootstrap, dpkg-deb or pip missing,
    with the command to install them) or BuildError (a download or unpacking failed,
    naming the log).
    """
    root = Path(root) if root is not None else default_root()
    if is_ready(root) and not force:
        return root
    tools = check_host()
    with root_lock(root, shared=False):
        if is_ready(root) and not force:  # another process built it while we waited
            return root
        for stale in root.parent.glob(f".{root.name}.building-*"):  # left by a killed setup
            _remove_tree(stale)
        for stale in root.parent.glob(f".{root.name}.old-*"):
            _remove_tree(stale)
        if root.is_dir() and not root.is_symlink():
            _refuse_mounts(root)
        start = time.perf_counter()
        _say(f"setting up emulated arm64 Linux in {root} (once; about a minute)")
        building = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
        building.chmod(0o755)
        log = root.parent / f"{root.name}-setup.log"
        try:
            marker = _build(building, tools, log)
            marker["setup_seconds"] = round(time.perf_counter() - start, 1)
            (building / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
            if root.exists() or root.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
                root.rename(old / "root")
                building.rename(root)
                _remove_tree(old)
            else:
                building.rename(root)
        finally:
            if building.exists():
                _remove_tree(building)
    _say(f"emulated arm64 Linux ready in {time.perf_counter() - start:.0f} s")
    return root


def _refuse_mounts(folder: Path) -> None:
    """Raise BuildError when anything is mounted inside ``folder`` (reads /proc/self/mountinfo).

    edgebuild mounts nothing in the root, but one mounted by hand (/proc, a bind mount of
    the host's /dev) would be deleted through by a removal of the folder.
    """
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    inside = str(folder.resolve()) + "/"
    points = [line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4]
    mounted = [point for point in points if point.startswith(inside)]
    if mounted:
        raise BuildError(
            f"device setup qemu: {mounted[0]} is mounted inside {folder}; edgebuild will not delete through it",
            hint=f"unmount it first: umount {mounted[0]}",
        )


def _remove_tree(folder: Path) -> None:
    """Delete ``folder`` (a root or a half-built one) unless something is mounted inside it."""
    _refuse_mounts(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _run_logged(command: list[str], log: Path, what: str, hint: str) -> None:
    """Run ``command``, output appended to ``log``; on failure BuildError naming ``what`` and the log's last line."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise BuildError(f"device setup qemu: {what} failed ({last}); full log in {log}", hint=hint)


def _build(folder: Path, tools: dict[str, str], log: Path) -> dict[str, object]:
    """Fill the empty ``folder`` with the root (steps 1-4 of the module docstring); return the marker's contents."""
    mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    log.write_text("")
    _say(f"debootstrap: Debian {SUITE} arm64 with python3 from {mirror}")
    _run_logged(
        [
            tools["debootstrap"],
            "--foreign",
            "--arch=arm64",
            "--variant=minbase",
            "--include=python3",
            SUITE,
            str(folder),
            mirror,
        ],
        log,
        "debootstrap",
        f"check that this machine reaches {mirror}, or set ${MIRROR_ENV} to a Debian mirror",
    )
    # In a container debootstrap makes /proc a symlink to the host's; leave an empty folder instead.
    proc = folder / "proc"
    if proc.is_symlink():
        proc.unlink()
    proc.mkdir(exist_ok=True)
    archives = folder / "var" / "cache" / "apt" / "archives"
    debs = sorted(archives.glob("*.deb"))
    wanted = (folder / "debootstrap" / "base").read_text().split()
    for name in wanted:
        matches = [deb for deb in debs if deb.name.startswith(f"{name}_")]
        if not matches:
            raise BuildError(f"device setup qemu: debootstrap did not download {name}; full log in {log}")
        _extract(matches[0], folder, tools, log)
    python = (folder / PYTHON_IN_ROOT.lstrip("/")).resolve().name  # python3.11
    if not python.startswith("python3."):
        raise BuildError(f"device setup qemu: {PYTHON_IN_ROOT} in the new root is {python}, not python3.N")
    version = python.removeprefix("python")
    shutil.copy2(tools[QEMU], folder / QEMU_IN_ROOT.lstrip("/"))
    _run_logged(
        [which("chroot") or "chroot", str(folder), QEMU_IN_ROOT, "/sbin/ldconfig"],
        log,
        "ldconfig in the new root",
        "run `edgebuild device setup qemu --force`",
    )
    _say(f"pip: ai-edge-litert {LITERT_VERSION} and its requirements for aarch64, Python {version}")
    site = folder / SITE_IN_ROOT.format(version=version)
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)]  # bookworm's glibc is 2.36
    _run_logged(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--only-binary=:all:",
            *platforms,
            "--platform=manylinux2014_aarch64",
            f"--python-version={version}",
            "--implementation=cp",
            f"--abi=cp{version.replace('.', '')}",
            f"--target={site}",
            f"ai-edge-litert=={LITERT_VERSION}",
        ],
        log,
        "pip install of the aarch64 ai-edge-litert wheel",
        "check that this machine reaches PyPI (pip's own index settings apply)",
    )
    wheels = {}
    for info in sorted(site.glob("*.dist-info")):
        name, _, wheel_version = info.name.removesuffix(".dist-info").partition("-")
        wheels[name.lower().replace("_", "-")] = wheel_version
    packages = [deb.name.removesuffix(".deb") for deb in debs]  # essential ones unpacked by debootstrap, the rest here
    qemu_version = subprocess.run([tools[QEMU], "--version"], capture_output=True, text=True, check=False)
    # Not needed to run Python, about 130 MB: the .deb files, apt's package lists, debootstrap's
    # scripts, documentation and translations.
    for deb in debs:
        deb.unlink()
    for name in ("debootstrap", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(folder / name, ignore_errors=True)
    return {
        "format": ROOT_FORMAT,
        "suite": SUITE,
        "arch": "arm64",
        "mirror": mirror,
        "python": version,
        "debian_packages": packages,
        "wheels": wheels,
        "qemu": (qemu_version.stdout.splitlines() or ["unknown"])[0],
        "edgebuild": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _extract(deb: Path, folder: Path, tools: dict[str, str], log: Path) -> None:
    """Unpack ``deb``'s files into ``folder`` keeping merged-/usr symlinks (/lib -> usr/lib); no scripts run."""
    with log.open("a") as out:
        out.write(f"$ dpkg-deb --fsys-tarfile {deb.name} | tar -x -C {folder}\n")
        out.flush()
        unpack = subprocess.Popen([tools["dpkg-deb"], "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=out)
        assert unpack.stdout is not None
        untar = subprocess.run(
            [tools["tar"], "-x", "--keep-directory-symlink", "-C", str(folder)],
            stdin=unpack.stdout,
            stdout=out,
            stderr=out,
            check=False,
        )
        unpack.stdout.close()
        if unpack.wait() != 0 or untar.returncode != 0:
            raise BuildError(f"device setup qemu: unpacking {deb.name} failed; full log in {log}")
