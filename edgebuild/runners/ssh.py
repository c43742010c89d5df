"""Run a ``.tflite`` on a Linux board over SSH (a Raspberry Pi, a Jetson, any arm64 or x86 box).

The system ``ssh`` client does the work, so the user's ``~/.ssh/config``, keys, agent
and ``known_hosts`` apply as they do on the command line. Login is by key only
(``BatchMode=yes``: ssh never asks for a password) and host keys are checked as the
user's configuration says (edgebuild never turns checking off). ``$EDGEBUILD_SSH_CONFIG``
names another ssh config file (``ssh -F FILE``); ``$EDGEBUILD_SSH_PYTHON`` names the
board's Python (default ``python3`` on the PATH of a non-interactive login there, e.g.
``/home/pi/litert/bin/python3`` for a venv).

One ssh connection per run: the model, the inputs and ``device_script.py`` go to the
board as a tar stream on stdin; a POSIX ``sh`` script there makes a private folder with
``mktemp -d`` (under the board's ``$TMPDIR``, else ``/tmp``), runs
``python3 device_script.py FOLDER [--reference]`` with the board's own Python and LiteRT
(``ai_edge_litert``, else ``tflite_runtime``), sends ``outputs.npy`` and ``result.json``
back as a tar stream on stdout, and removes the folder on any exit, hang-up included.
The board needs ``sh``, ``mktemp``, ``tar``, ``python3`` with numpy, and a LiteRT interpreter.
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from edgebuild.devices import DeviceSpec
from edgebuild.errors import BuildError, ConfigError, EdgebuildError
from edgebuild.runners import DEVICE_SCRIPT, OUTPUTS, REFERENCE, RunResult, read_device_result
from edgebuild.runners.text import last_line, line_with

CONFIG_ENV = "EDGEBUILD_SSH_CONFIG"
PYTHON_ENV = "EDGEBUILD_SSH_PYTHON"
CONNECT_TIMEOUT_S = 10
RUN_TIMEOUT_S = 1800

# Exit codes of the board-side script (ssh itself uses 255 for its own failures).
NO_TMPDIR, COPY_FAILED, NO_PYTHON, SCRIPT_FAILED, NO_INTERPRETER, FETCH_FAILED, HUNG_UP = 91, 92, 93, 94, 95, 96, 97

# Run as: sh -c REMOTE_SCRIPT edgebuild-device PYTHON [--reference]. One line, so that any login
# shell (bash, dash, fish, tcsh) passes it to sh unchanged.
REMOTE_SCRIPT = "; ".join(
    [
        "py=$1",
        "shift",
        "umask 077",
        f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/edgebuild.XXXXXX") || exit {NO_TMPDIR}',
        """trap 'rm -rf "$d"' EXIT""",
        f"trap 'exit {HUNG_UP}' HUP INT TERM PIPE",
        f'tar -xf - -C "$d" || exit {COPY_FAILED}',
        f'command -v "$py" >/dev/null 2>&1 || exit {NO_PYTHON}',
        '"$py" "$d/device_script.py" "$d" "$@" >&2',
        "rc=$?",
        f'[ "$rc" -eq 3 ] && exit {NO_INTERPRETER}',
        f'[ "$rc" -eq 0 ] || exit {SCRIPT_FAILED}',
        f'tar -cf - -C "$d" outputs.npy result.json || exit {FETCH_FAILED}',
    ]
)

RECEIVED = ("outputs.npy", "result.json")


class SshDevice:
    """A Linux board reached with the system ``ssh``; runs the model with the board's Python and LiteRT."""

    def __init__(self, spec: DeviceSpec, *, timeout_s: float = RUN_TIMEOUT_S):
        """Keep ``spec`` (kind ``ssh``). Raises ConfigError for a host that ssh would read as an option."""
        if spec.kind != "ssh" or not spec.host:
            raise ValueError(f"SshDevice needs an ssh:// device, not {spec.label!r}")
        self.spec = spec
        self.label = spec.label
        self.capabilities = frozenset({OUTPUTS, REFERENCE})
        self.host = spec.host.strip("[]")  # ssh wants an IPv6 address without brackets
        self.timeout_s = timeout_s
        if spec.host.startswith("-") or (spec.user or "").startswith("-"):
            raise ConfigError(f"device {self.label}: a host or user name cannot start with '-'")

    def ssh_command(self, remote_command: str) -> list[str]:
        """The ``ssh`` argument list that runs ``remote_command`` on the board.

        Reads ``$EDGEBUILD_SSH_CONFIG`` (passed as ``-F``). Raises ConfigError when ssh is
        not installed or that config file does not exist.
        """
        ssh = shutil.which("ssh")
        if ssh is None:
            raise ConfigError(
                f"--device {self.label}: no ssh client on this machine",
                hint="install OpenSSH's client: sudo apt-get install openssh-client",
            )
        command = [ssh]
        config = os.environ.get(CONFIG_ENV)
        if config:
            if not Path(config).is_file():
                raise ConfigError(f"--device {self.label}: ${CONFIG_ENV} names {config}, which is not a file")
            command += ["-F", config]
        command += [
            "-o",
            "BatchMode=yes",  # keys only: never a password prompt
            "-o",
            f"ConnectTimeout={CONNECT_TIMEOUT_S}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-T",  # no terminal: stdin and stdout carry tar streams
            "-x",  # no X11 forwarding
            "-a",  # no agent forwarding
        ]
        if self.spec.port:
            command += ["-p", str(self.spec.port)]
        if self.spec.user:
            command += ["-l", self.spec.user]
        command += ["--", self.host, remote_command]
        return command

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Copy ``model`` and ``inputs`` to the board, run them there, and bring the outputs back.

        Reads ``$EDGEBUILD_SSH_CONFIG`` and ``$EDGEBUILD_SSH_PYTHON``; talks to the board
        over one ssh connection and writes only a local temporary folder
        (removed afterwards) and, on the board, a ``mktemp -d`` folder that is removed on
        success and failure alike. ``reference=True`` runs LiteRT's reference kernels.
        Returns the board's outputs, per-inference latency and peak memory (``emulated``
        False). Raises ConfigError (ssh missing, key refused, host key unknown or changed,
        no python3 / numpy / LiteRT on the board) or BuildError (board unreachable, out of
        disk, the run failed or timed out), each naming the device.
        """
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(inputs), allow_pickle=False)
        files = {"model.tflite": model, "inputs.npy": buffer.getvalue(), "device_script.py": DEVICE_SCRIPT.read_bytes()}
        payload = _tar(files)
        python = os.environ.get(PYTHON_ENV) or "python3"
        arguments = ["edgebuild-device", python, *(["--reference"] if reference else [])]
        remote = shlex.join(["sh", "-c", REMOTE_SCRIPT, *arguments])
        command = self.ssh_command(remote)
        try:
            proc = subprocess.run(command, input=payload, capture_output=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise ConfigError(
                f"--device {self.label}: no ssh client on this machine",
                hint="install OpenSSH's client: sudo apt-get install openssh-client",
            ) from None
        except subprocess.TimeoutExpired:
            raise BuildError(
                f"validate: the run on {self.label} took more than {self.timeout_s:.0f} s",
                hint="check the board is not overloaded; its temporary folder is removed when ssh hangs up",
            ) from None
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise self.error(proc.returncode, stderr)
        with tempfile.TemporaryDirectory(prefix="edgebuild-ssh-") as tmp:
            folder = Path(tmp)
            _untar(proc.stdout, folder, RECEIVED, self.label)
            return read_device_result(folder, self.label, emulated=False)

    def error(self, code: int, stderr: str) -> EdgebuildError:
        """The one-line error, naming the device, for ssh's or the board script's exit ``code`` and ``stderr``."""
        label = self.label
        last = last_line(stderr)
        python = os.environ.get(PYTHON_ENV) or "python3"
        full = line_with(stderr, "No space left on device", "Disk quota exceeded")
        if full:
            return BuildError(
                f"validate: {label} is out of disk space ({full})",
                hint="free some space on the board, or point TMPDIR there at a filesystem with room",
            )
        if code == 255:  # ssh's own failures
            return self._ssh_error(stderr, last)
        if code == NO_TMPDIR:
            return BuildError(f"validate: could not make a temporary folder on {label} ({last})")
        if code == COPY_FAILED:
            if "not found" in last:
                return ConfigError(f"--device {label}: the board has no tar", hint="install tar on the board")
            return BuildError(f"validate: copying the model to {label} failed ({last})")
        if code == NO_PYTHON:
            return ConfigError(
                f"--device {label}: the board has no {python} on the PATH of a non-interactive ssh login",
                hint="install Python 3 there, e.g. sudo apt-get install python3 python3-numpy on Raspberry Pi OS; "
                f"or set ${PYTHON_ENV} to the full path of the board's python3",
            )
        if code == NO_INTERPRETER:
            return ConfigError(
                f"--device {label}: the board's {python} has no LiteRT interpreter",
                hint="on the board: python3 -m pip install ai-edge-litert, or tflite-runtime; with a venv there, "
                f"set ${PYTHON_ENV} to the venv's bin/python3",
            )
        if code == SCRIPT_FAILED and "No module named 'numpy'" in stderr:
            return ConfigError(
                f"--device {label}: the board's {python} has no numpy",
                hint="on the board: sudo apt-get install python3-numpy, or python3 -m pip install numpy",
            )
        if code == SCRIPT_FAILED:
            return BuildError(f"validate: device_script.py failed on {label} ({last})")
        if code == FETCH_FAILED:
            return BuildError(f"validate: could not bring the outputs back from {label} ({last})")
        if code == HUNG_UP:
            return BuildError(f"validate: the run on {label} was interrupted ({last})")
        return BuildError(f"validate: the run on {label} failed with exit code {code} ({last})")

    def _ssh_error(self, stderr: str, last: str) -> EdgebuildError:
        """The error for an ssh exit status of 255: connection, authentication or host key."""
        label, host = self.label, self.host
        port = f"-p {self.spec.port} " if self.spec.port else ""
        known_name = f"'[{host}]:{self.spec.port}'" if self.spec.port else host
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return ConfigError(
                f"--device {label}: the board's host key has changed since it was added to known_hosts",
                hint="if the board was reinstalled, check its new key's fingerprint, then replace the old one: "
                f"ssh-keygen -R {known_name} && ssh-keyscan {port}{host} >> ~/.ssh/known_hosts",
            )
        if "Host key verification failed" in stderr or "host key is known" in stderr:
            return ConfigError(
                f"--device {label}: the board's host key is not in known_hosts",
                hint=f"check its fingerprint, then add it with ssh-keyscan {port}{host} >> ~/.ssh/known_hosts, "
                "or log in once with ssh",
            )
        refused = line_with(stderr, "Permission denied", "Too many authentication failures")
        if refused:
            return ConfigError(
                f"--device {label}: the board refused the key ({refused})",
                hint="edgebuild logs in with a key only: copy yours there with ssh-copy-id, or set IdentityFile "
                f"in ~/.ssh/config or ${CONFIG_ENV}",
            )
        unreachable = (
            "Could not resolve hostname",
            "Connection refused",
            "No route to host",
            "timed out",
            "Network is unreachable",
            "Connection reset",
            "Connection closed",
            "kex_exchange_identification",
        )
        reason = line_with(stderr, *unreachable)
        if reason:
            return BuildError(
                f"validate: {label} is unreachable ({reason})",
                hint="check that the board is on and on the network, that the address and port are right, "
                "and that sshd runs there",
            )
        if any(text in stderr for text in ("Bad configuration option", "Can't open user config", "Bad owner or perm")):
            return ConfigError(f"--device {label}: ssh could not use its configuration ({last})")
        return BuildError(f"validate: ssh to {label} failed ({last or 'exit code 255'})")


def _tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar archive holding ``files`` (name to content), mode 0600, owned by uid 0, dated now."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o600
            info.mtime = now  # tar warns about files from 1970
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _untar(data: bytes, folder: Path, names: tuple[str, ...], label: str) -> None:
    """Write the regular files ``names`` from the tar archive ``data`` into ``folder`` (nothing else).

    Raises BuildError naming ``label`` when the archive is unreadable or lacks one of them.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for name in names:
                member = archive.getmember(name)
                source = archive.extractfile(member) if member.isreg() else None
                if source is None:
                    raise KeyError(name)
                (folder / name).write_bytes(source.read())
    except (tarfile.TarError, KeyError) as e:
        raise BuildError(
            f"validate: {label} sent back no {' and '.join(names)} ({type(e).__name__}: {e})",
            hint="something on the board may print to stdout in non-interactive shells (check its ~/.bashrc)",
        ) from None
