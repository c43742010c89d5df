"""Run a ``.tflite`` on emulated arm64 Linux: ``device_script.py`` with the arm64 build of LiteRT
(XNNPACK and reference kernels) that a Raspberry Pi 4 or an arm64 phone would use, under qemu-user in
the root ``arm64_root`` builds. Timings under emulation say nothing about real speed; the outputs are
what matter. Runs mount nothing (see ``arm64_root``) and need root (chroot).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgebuild.errors import BuildError
from edgebuild.runners import DEVICE_SCRIPT, OUTPUTS, REFERENCE, RunResult, read_device_result
from edgebuild.runners.arm64_root import (
    CHROOT_ENV,
    PYTHON_IN_ROOT,
    QEMU_IN_ROOT,
    default_root,
    is_ready,
    need_root,
    root_lock,
    setup_root,
    which,
)
from edgebuild.runners.text import last_line

DEVICE = "qemu arm64 Linux (emulated)"
NO_INTERPRETER = 3  # device_script.py's exit code when it finds no LiteRT


class QemuArm64:
    """Emulated arm64 Linux: runs ``device_script.py`` with the cached root's Python and LiteRT under qemu-user."""

    def __init__(self, root: Path | None = None, *, timeout_s: float = 3600):
        """Use ``root`` (default ``default_root()``); a run taking over ``timeout_s`` seconds is stopped."""
        self.root = Path(root) if root is not None else default_root()
        self.timeout_s = timeout_s
        self.label = "qemu"
        self.capabilities = frozenset({OUTPUTS, REFERENCE})

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Run every input through ``model`` on emulated arm64 Linux, one at a time.

        Builds the root first when it is missing (``setup_root``: about a minute, once).
        Writes a private folder under the root's /tmp with the model, ``inputs.npy`` and
        ``device_script.py``, runs ``chroot ROOT qemu-aarch64-static /usr/bin/python3
        device_script.py FOLDER [--reference]`` (``reference=True``: LiteRT's reference
        kernels), and removes the folder afterwards, on failure too. Mounts nothing.
        Returns the outputs, per-inference latency (emulated: says nothing about real
        speed) and peak memory (qemu's own included), with ``emulated`` True. Raises
        ConfigError (not root; setup's errors) or BuildError (no LiteRT in the root, the
        script failed or ran past ``timeout_s``).
        """
        need_root("--device qemu")
        root = self.root
        if not is_ready(root):
            setup_root(root)
        with root_lock(root, shared=True):
            if not is_ready(root):
                raise BuildError(
                    f"validate: the emulated arm64 root {root} was removed during the build",
                    hint="run `edgebuild device setup qemu`, then build again",
                )
            folder = Path(tempfile.mkdtemp(prefix="edgebuild-", dir=root / "tmp"))
            try:
                (folder / "model.tflite").write_bytes(model)
                np.save(folder / "inputs.npy", np.ascontiguousarray(inputs), allow_pickle=False)
                shutil.copyfile(DEVICE_SCRIPT, folder / "device_script.py")
                inside = f"/tmp/{folder.name}"
                args = [f"{inside}/device_script.py", inside, *(["--reference"] if reference else [])]
                code, stderr = _python_in_root(root, args, self.timeout_s)
                if code == NO_INTERPRETER:
                    raise BuildError(
                        f"validate: no LiteRT interpreter in the emulated arm64 root {root}",
                        hint="run `edgebuild device setup qemu --force`",
                    )
                if code != 0:
                    raise BuildError(
                        f"validate: device_script.py failed on emulated arm64 Linux with exit code "
                        f"{code} ({last_line(stderr, skip='Error in cpuinfo') or 'no error message'})",
                        hint="run `edgebuild device setup qemu --force` if the root is damaged",
                    )
                return read_device_result(folder, DEVICE, emulated=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)


def _python_in_root(root: Path, args: list[str], timeout_s: float) -> tuple[int, str]:
    """Run the root's python3 with ``args`` under qemu in a chroot; its exit code and stderr.

    Started through ``sh`` as a grandchild, in a session of its own: a process started
    straight from edgebuild would inherit edgebuild's peak memory (Linux keeps
    ``ru_maxrss`` across fork and exec, and edgebuild holds TensorFlow), so the device's
    peak memory would be edgebuild's. Past ``timeout_s`` the whole session is killed and
    BuildError is raised.
    """
    command = [
        "/bin/sh",
        "-c",
        '"$@"; exit $?',  # not the last command: sh forks for it instead of exec'ing it
        "sh",
        which("chroot") or "chroot",
        str(root),
        QEMU_IN_ROOT,
        PYTHON_IN_ROOT,
        "-I",
        *args,
    ]
    with subprocess.Popen(
        command,
        env=CHROOT_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    ) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise BuildError(
                f"validate: the run on emulated arm64 Linux took more than {timeout_s:.0f} s",
                hint="emulation is about 40 times slower than native; validate a smaller test split",
            ) from None
        except BaseException:  # Ctrl-C: leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    return proc.returncode, stderr
