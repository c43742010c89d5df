"""SshDevice against a real OpenSSH server: sshd on 127.0.0.1 stands for the board.

The test starts ``/usr/sbin/sshd -D -e`` on a free port with a host key, client keys and
an ``authorized_keys`` file it generates in a temporary folder. Each client key gets its
own board environment through ``environment="..."`` options (``PermitUserEnvironment
yes``): HOME (an empty folder, so the login user's own ~/.bashrc is not read), PATH
(which python3 the board has) and TMPDIR (where ``mktemp -d`` makes the run's folder).
An ssh config file per key (IdentityFile, the server's real host key in
UserKnownHostsFile, StrictHostKeyChecking yes) is given to edgebuild through
``$EDGEBUILD_SSH_CONFIG``. Nothing is mocked: the real ssh client, sshd, sh, tar and
the board's Python with LiteRT run the model.

Needs Debian's ``openssh-server`` and ``openssh-client``; the out-of-disk case needs root
(it mounts a 16 KiB tmpfs as the board's TMPDIR).
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgebuild.devices import DeviceSpec
from edgebuild.errors import ConfigError, EdgebuildError
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.ssh import CONFIG_ENV, PYTHON_ENV, SshDevice
from edgebuild.stages.validate import compare_outputs
from tests.conftest import Result, assert_one_line_error, quick_project, run_cli
from tests.models import CLASSES, int8_inputs, tiny_tflite

SSHD = "/usr/sbin/sshd"
USER = getpass.getuser()
IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(
    not Path(SSHD).is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="needs OpenSSH: apt-get install openssh-server openssh-client",
)


@dataclass
class Board:
    """A running sshd and the ssh config file for each way of reaching it."""

    port: int
    closed_port: int
    configs: dict[str, Path]
    tmp: dict[str, Path]  # the board's TMPDIR for each key

    def device(self, port: int | None = None) -> SshDevice:
        return SshDevice(DeviceSpec("ssh", user=USER, host="127.0.0.1", port=port or self.port))

    @property
    def label(self) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """Make an ed25519 key pair at ``path`` (no passphrase); return the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def python_without(folder: Path, numpy: bool) -> Path:
    """A venv at ``folder`` with no LiteRT (and numpy only if ``numpy``); return its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    if numpy:
        site = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
        numpy_dir = Path(np.__file__).parent
        for name in ("numpy", "numpy.libs"):
            if (numpy_dir.parent / name).exists():
                (site / name).symlink_to(numpy_dir.parent / name)
    return folder / "bin"


def tools_only(folder: Path) -> Path:
    """A bin folder with sh, mktemp, tar and rm but no python3: a board without Python."""
    folder.mkdir()
    for tool in ("sh", "mktemp", "tar", "rm"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    return folder


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until sshd accepts connections on ``port``; fail with its log if it exits."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sshd exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """sshd on 127.0.0.1 and one ssh config per key; stopped (and its tmpfs unmounted) afterwards."""
    root = tmp_path_factory.mktemp("board")
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    host_key = keys / "host"
    host_public = keygen(host_key)
    other_host_public = keygen(keys / "other-host")
    home = root / "home"  # an empty home: the login user's own ~/.bashrc does not change PATH
    home.mkdir()
    venv_bin = Path(sys.executable).parent  # the project's venv: ai_edge_litert and numpy
    system = "/usr/local/bin:/usr/bin:/bin"
    paths = {
        "board": f"{venv_bin}:{system}",
        "no-litert": f"{python_without(root / 'no-litert', numpy=True)}:{system}",
        "no-numpy": f"{python_without(root / 'no-numpy', numpy=False)}:{system}",
        "no-python": str(tools_only(root / "no-python")),
    }
    tmp: dict[str, Path] = {}
    for name in paths:
        tmp[name] = root / f"tmp-{name}"
        tmp[name].mkdir()
    full = root / "tmp-full-disk"
    full.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(full)]
    # Not root, or a container that may not mount: only the out-of-disk case is skipped.
    mounted = IS_ROOT and subprocess.run(mount, capture_output=True, check=False).returncode == 0
    if mounted:
        paths["full-disk"] = paths["board"]  # the good Python, and a 16 KiB TMPDIR
        tmp["full-disk"] = full
    lines = []
    for name, path in paths.items():
        options = f'environment="HOME={home}",environment="PATH={path}",environment="TMPDIR={tmp[name]}"'
        lines.append(f"{options} {keygen(keys / name)}")
    keygen(keys / "stranger")  # a key the board does not know
    authorized = root / "authorized_keys"
    authorized.write_text("\n".join(lines) + "\n")
    authorized.chmod(0o600)

    port, closed_port = free_port(), free_port()
    sshd_config = root / "sshd_config"
    sshd_config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        f"AuthorizedKeysFile {authorized}\n"
        # the test's folders are under /tmp (world-writable), which StrictModes would refuse
        "StrictModes no\nPermitUserEnvironment yes\nLogLevel VERBOSE\n"
    )
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_public}\n")
    changed = root / "known_hosts_changed"
    changed.write_text(f"[127.0.0.1]:{port} {other_host_public}\n")
    empty = root / "known_hosts_empty"
    empty.write_text("")

    def config(name: str, key: str, known_hosts: Path) -> Path:
        path = root / f"ssh_config_{name}"
        path.write_text(
            f"Host *\n  Port {port}\n  IdentityFile {keys / key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
            f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
            "  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  ControlMaster no\n"
        )
        path.chmod(0o600)
        return path

    configs = {name: config(name, name, known) for name in paths}
    configs["stranger"] = config("stranger", "stranger", known)
    configs["unknown-host"] = config("unknown-host", "board", empty)
    configs["changed-host"] = config("changed-host", "board", changed)

    if IS_ROOT:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = root / "sshd.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(sshd_config), "-p", str(port)], stderr=log_file)
    try:
        wait_for_port(port, proc, log)
        yield Board(port, closed_port, configs, tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if mounted:
            subprocess.run(["umount", str(full)], check=False)


@pytest.fixture(scope="module")
def tiny() -> tuple[bytes, np.ndarray]:
    """The shared tiny int8 CNN and its 48 inputs, quantized to int8."""
    return tiny_tflite(), int8_inputs()


def use(monkeypatch: pytest.MonkeyPatch, board: Board, name: str) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(board.configs[name]))


def error_result(error: EdgebuildError) -> Result:
    """What the CLI prints for ``error``: its exit code and one line on stderr."""
    return Result(error.exit_code, "", f"edgebuild: error: {error}\n")


def test_reference_kernels_on_the_board_match_the_host_bit_for_bit(
    board: Board, tiny: tuple[bytes, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, inputs = tiny
    use(monkeypatch, board, "board")
    device = board.device()
    on_board = device.run(model, inputs, reference=True)
    on_host = LiteRTHost(reference=True).run(model, inputs)
    assert on_board.outputs.dtype == on_host.outputs.dtype == np.int8
    assert on_board.outputs.shape == (len(inputs), CLASSES)
    assert np.array_equal(on_board.outputs, on_host.outputs)
    assert on_board.emulated is False
    assert len(on_board.latency_ms) == len(inputs) and all(ms > 0 for ms in on_board.latency_ms)
    assert on_board.peak_memory_bytes and on_board.peak_memory_bytes > 0
    assert on_board.device.startswith(board.label) and "reference kernels" in on_board.device
    assert on_board.extra["kernels"] == "reference"

    # XNNPACK, whose kernels are chosen by CPU: judged by top-1 agreement with the reference
    # kernels, not by LSB (1-LSB roundings grow through the layers by model-dependent amounts).
    default = device.run(model, inputs)
    assert default.extra["kernels"] == "default"
    assert compare_outputs(default.outputs, on_host.outputs).top1_agreement >= 0.9
    assert list(board.tmp["board"].iterdir()) == []  # the board's run folders are gone


@pytest.mark.slow
def test_end_to_end_build_validates_on_the_board(board: Board, project: Path) -> None:
    quick_project(project)
    result = run_cli(
        "--target",
        "rpi4-relaxed",
        "--device",
        board.label,
        "--quiet",
        cwd=project,
        env={CONFIG_ENV: str(board.configs["board"])},
    )
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "rpi4-relaxed" / "report.json").read_text())
    run = report["validation"]["device_run"]
    assert run["device"] == board.label
    assert run["emulated"] is False
    assert 0.5 < run["accuracy"] <= 1.0
    assert run["latency"]["mean_ms"] > 0
    assert run["reference_kernels_vs_host"]["mismatched_outputs"] == 0
    assert run["vs_host_reference"]["compared_outputs"] > 0
    assert list(board.tmp["board"].iterdir()) == []


@pytest.mark.slow
def test_unreachable_board_through_the_cli(board: Board, project: Path) -> None:
    """A closed port: the CLI prints one line naming the device and exits 1."""
    quick_project(project)
    label = f"ssh://{USER}@127.0.0.1:{board.closed_port}"
    result = run_cli(
        "--target",
        "rpi4-relaxed",
        "--device",
        label,
        "--quiet",
        cwd=project,
        env={CONFIG_ENV: str(board.configs["board"])},
    )
    assert_one_line_error(result, 1, label, "unreachable", "Connection refused")


@pytest.mark.parametrize(
    ("config", "code", "needles"),
    [
        ("stranger", 2, ("refused the key", "Permission denied", "ssh-copy-id")),
        ("unknown-host", 2, ("host key is not in known_hosts", "ssh-keyscan -p")),
        ("changed-host", 2, ("host key has changed", "ssh-keygen -R '[127.0.0.1]:")),
        ("no-litert", 2, ("no LiteRT interpreter", "pip install ai-edge-litert")),
        ("no-numpy", 2, ("no numpy",)),
        ("no-python", 2, ("no python3", PYTHON_ENV)),
        ("full-disk", 1, ("out of disk space", "No space left on device")),
    ],
)
def test_failures_are_one_line_naming_the_board(
    board: Board,
    tiny: tuple[bytes, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    code: int,
    needles: tuple[str, ...],
) -> None:
    model, inputs = tiny
    if config not in board.configs:
        pytest.skip("needs root and permission to mount a tmpfs")
    if config == "full-disk":
        inputs = np.concatenate([inputs] * 10)  # 47 KiB: more than the board's 16 KiB TMPDIR
    use(monkeypatch, board, config)
    with pytest.raises(EdgebuildError) as caught:
        board.device().run(model, inputs)
    assert_one_line_error(error_result(caught.value), code, board.label, *needles)
    if config in board.tmp:
        assert list(board.tmp[config].iterdir()) == []  # removed on failure too


def test_board_python_by_full_path(
    board: Board, tiny: tuple[bytes, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """$EDGEBUILD_SSH_PYTHON: a Python that is not on the board's PATH (a venv there)."""
    use(monkeypatch, board, "no-python")
    monkeypatch.setenv(PYTHON_ENV, sys.executable)
    result = board.device().run(*tiny)
    assert result.outputs.shape == (len(tiny[1]), CLASSES) and "ai_edge_litert" in result.device
    assert list(board.tmp["no-python"].iterdir()) == []


def test_unreachable_board(board: Board, tiny: tuple[bytes, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, board, "board")
    with pytest.raises(EdgebuildError) as caught:
        board.device(board.closed_port).run(*tiny)
    label = f"ssh://{USER}@127.0.0.1:{board.closed_port}"
    assert_one_line_error(error_result(caught.value), 1, label, "unreachable", "Connection refused")


def test_no_ssh_client(board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        board.device().run(b"", np.zeros((1, 1), np.int8))
    assert_one_line_error(error_result(caught.value), 2, board.label, "apt-get install openssh-client")


def test_missing_config_file(board: Board, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError) as caught:
        board.device().run(b"", np.zeros((1, 1), np.int8))
    assert_one_line_error(error_result(caught.value), 2, board.label, CONFIG_ENV, "nowhere")


def test_ssh_command_keeps_host_key_checking_and_key_only_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    device = SshDevice(DeviceSpec("ssh", user="pi", host="raspberrypi.local", port=2222))
    command = device.ssh_command("true")
    joined = " ".join(command)
    assert "BatchMode=yes" in joined and "ConnectTimeout=10" in joined
    assert "StrictHostKeyChecking" not in joined and "-F" not in command
    assert command[-5:] == ["-l", "pi", "--", "raspberrypi.local", "true"]
    assert command[command.index("-p") + 1] == "2222"
    no_user = SshDevice(DeviceSpec("ssh", host="pi4")).ssh_command("true")  # user and port from ~/.ssh/config
    assert "-l" not in no_user and "-p" not in no_user
    with pytest.raises(ConfigError) as caught:
        SshDevice(DeviceSpec("ssh", host="-oProxyCommand"))  # would be read as an ssh option
    assert_one_line_error(
        error_result(caught.value), 2, "device ssh://-oProxyCommand: a host or user name cannot start with '-'"
    )
