"""AdbDevice with a stand-in ``adb`` and ``benchmark_model`` (no phone or emulator can be had here).

The fake ``adb`` (written by the test, first on PATH) implements ``devices``, ``-s SERIAL``,
``push`` and ``shell`` over a local folder standing for the phone's file system; the fake
``benchmark_model`` checks its flags and prints RECORDED_OUTPUT, a recording of LiteRT's real
tool on a phone. Nothing here is measured: every timing a test sees is a number from that
recording, and the tests check what edgebuild makes of it (microseconds to milliseconds, the
runs, the peak memory, the device's name), not how fast anything ran.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgebuild.devices import DeviceSpec, parse_device
from edgebuild.errors import BuildError, ConfigError, EdgebuildError
from edgebuild.runners.adb import BINARY_HINT, AdbDevice, parse_benchmark_output
from tests.conftest import Result, assert_one_line_error, quick_project, run_cli

# Recorded once: LiteRT 2.x benchmark_model on a phone, verbatim apart from the paths. The fake
# benchmark_model prints it back, so these are the numbers every run on the fake phone gives.
RECORDED_OUTPUT = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [50]
INFO: Num threads: [1]
INFO: Graph: [{graph}]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [1]
INFO: Loaded model {graph}
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.037640
INFO: Initialized session in 5.685ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=320 first=2394 curr=1455 min=1427 max=2394 avg=1563.89 std=82 p5=1431 median=1540 p95=1702

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=683 first=1480 curr=1462 min=1431 max=1605 avg=1464.76 std=15 p5=1440 median=1458 p95=1494

INFO: Inference timings in us: Init: 5685, First inference: 2394, Warmup (avg): 1563.89, Inference (avg): 1464.76
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the \
actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=2.33984 overall=2.5
INFO: Overall peak memory footprint (MB) via periodic monitoring: 4.23438
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 5 MB
"""

# An older build: no INFO: prefix, exponent notation, a one-field warm-up line, no peak memory.
OLD_OUTPUT = """Running benchmark for at least 1 iterations and at least 0.5 seconds \
but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
"""

FAKE_ADB = '''#!{python}
"""A stand-in adb: devices, -s SERIAL, push and shell over the folder $FAKE_PHONE."""
import os, shutil, subprocess, sys
from pathlib import Path

phone = Path(os.environ["FAKE_PHONE"])
devices = dict(item.split("=") for item in os.environ.get("FAKE_ADB_DEVICES", "").split(",") if item)
args = sys.argv[1:]
with open(phone.parent / "adb.log", "a") as log:
    log.write(" ".join(args) + "\\n")
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if args == ["devices"]:
    print("* daemon not running; starting now at tcp:5037", file=sys.stderr)
    print("List of devices attached")
    for name, state in devices.items():
        print(f"{{name}}\\t{{state}}")
    print()
    sys.exit(0)
if serial is None:
    if len(devices) != 1:
        sys.exit("adb: more than one device/emulator" if devices else "adb: no devices/emulators found")
    serial = next(iter(devices))
if serial not in devices:
    sys.exit(f"adb: device '{{serial}}' not found")
if devices[serial] != "device":
    sys.exit(f"adb: device {{devices[serial]}}")

def local(text):
    return text.replace("/data/local/tmp", str(phone / "data/local/tmp"))

if args[0] == "push":
    if os.environ.get("FAKE_PHONE_FULL"):
        sys.exit(f"adb: error: failed to copy '{{args[1]}}' to '{{args[2]}}': remote No space left on device")
    target = Path(local(args[2]))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args[1], target)
    print(f"{{args[1]}}: 1 file pushed, 0 skipped.")
    sys.exit(0)
if args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", local(" ".join(args[1:]))]).returncode)
sys.exit(f"fake adb: unknown command {{args}}")
'''

FAKE_BENCHMARK = """#!/bin/sh
# A stand-in for LiteRT's benchmark_model: checks its flags, prints the recorded output.
echo "$@" >> "$FAKE_BENCH_LOG"
graph=""
for arg in "$@"; do
  case "$arg" in
    --graph=*) graph="${arg#--graph=}" ;;
    --num_threads=1|--num_runs=*) ;;
    *) echo "ERROR: unconsumed flag $arg" >&2; exit 1 ;;
  esac
done
if [ ! -s "$graph" ]; then
  echo "ERROR: Could not build model from the provided pointer $graph" >&2
  exit 1
fi
cat <<'EOF'
OUTPUT
EOF
"""


@dataclass
class Phone:
    """The fake adb's world: the phone's folder, the attached devices, the stand-in binary."""

    root: Path
    bin: Path
    binary: Path
    bench_log: Path

    def env(self, devices: str = "emulator-5554=device") -> dict[str, str]:
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_PHONE": str(self.root),
            "FAKE_ADB_DEVICES": devices,
            "FAKE_BENCH_LOG": str(self.bench_log),
        }

    def leftovers(self) -> list[Path]:
        return list((self.root / "data" / "local" / "tmp").iterdir())


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def phone(tmp_path: Path) -> Phone:
    root = tmp_path / "phone"
    (root / "data" / "local" / "tmp").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable(bin_dir / "adb", FAKE_ADB.format(python=sys.executable))
    graph = "/data/local/tmp/edgebuild-0/model.tflite"
    binary = executable(
        tmp_path / "benchmark_model", FAKE_BENCHMARK.replace("OUTPUT", RECORDED_OUTPUT.format(graph=graph))
    )
    return Phone(root, bin_dir, binary, tmp_path / "bench.log")


def use(monkeypatch: pytest.MonkeyPatch, phone: Phone, devices: str = "emulator-5554=device") -> None:
    for name, value in phone.env(devices).items():
        monkeypatch.setenv(name, value)


def error_result(error: EdgebuildError) -> Result:
    """What the CLI prints for ``error``: its exit code and one line on stderr."""
    return Result(error.exit_code, "", f"edgebuild: error: {error}\n")


MODEL = b"\x1c\x00\x00\x00TFL3" + bytes(100)  # the stand-in binary only checks the file arrived
INPUTS = np.zeros((4, 8), np.int8)


# What edgebuild must read from RECORDED_OUTPUT ("Inference (avg): 1464.76" us and the
# 50-run line "count=683 ... min=1431 max=1605 ... std=15", peak "4.23438" MB).
RECORDED_AVG_MS = 1464.76 / 1000
RECORDED_PEAK_BYTES = int(4.23438 * 1024 * 1024)


def test_parse_the_recorded_tool_output() -> None:
    timings = parse_benchmark_output(RECORDED_OUTPUT.format(graph="/data/local/tmp/m.tflite"))
    assert timings is not None
    assert timings.avg_ms == pytest.approx(RECORDED_AVG_MS)
    assert (timings.runs, timings.min_ms, timings.max_ms, timings.std_ms) == (683, 1.431, 1.605, 0.015)
    assert (timings.init_ms, timings.first_ms, timings.warmup_avg_ms) == (5.685, 2.394, 1.56389)
    assert timings.peak_memory_bytes == RECORDED_PEAK_BYTES


def test_parse_an_older_output_with_crlf() -> None:
    timings = parse_benchmark_output(OLD_OUTPUT.replace("\n", "\r\n"))  # adb shell with a pty
    assert timings is not None
    assert timings.avg_ms == pytest.approx(2950.34)
    assert (timings.runs, timings.min_ms, timings.std_ms) == (50, 2727.568, 109.798)
    assert timings.peak_memory_bytes is None


def test_parse_only_the_summary_line() -> None:
    line = "Inference timings in us: Init: 12345, First inference: 9876, Warmup (avg): 8000, Inference (avg): 7654.32"
    timings = parse_benchmark_output(line)
    assert timings is not None and timings.avg_ms == pytest.approx(7.65432)
    assert timings.runs is None and timings.min_ms is None
    assert parse_benchmark_output("ERROR: Could not build model") is None


def test_run_on_the_fake_phone(phone: Phone, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake phone's run: the recorded timings, read and converted, and the phone's folder removed."""
    use(monkeypatch, phone)
    result = AdbDevice(DeviceSpec("adb"), phone.binary).run(MODEL, INPUTS)
    assert result.outputs.size == 0  # benchmark_model returns no outputs
    assert result.latency_ms == [pytest.approx(RECORDED_AVG_MS)]  # one figure: benchmark_model's average
    assert result.latency_summary()["mean_ms"] == round(RECORDED_AVG_MS, 4)
    assert result.device == "adb:emulator-5554 (benchmark_model)"  # the serial the fake adb reported
    assert result.emulated is False  # what edgebuild says of any phone; this one is a recording
    assert result.peak_memory_bytes == RECORDED_PEAK_BYTES
    assert result.extra["runs"] == 683 and result.extra["min_ms"] == 1.431 and result.extra["std_ms"] == 0.015
    (flags,) = phone.bench_log.read_text().splitlines()
    assert "--num_threads=1" in flags and "--num_runs=50" in flags
    assert "/data/local/tmp/edgebuild-" in flags.split("--graph=")[1]  # (as the fake phone's folder)
    assert phone.leftovers() == []  # the phone's folder is gone
    adb_log = (phone.root.parent / "adb.log").read_text()
    assert "-s emulator-5554 push" in adb_log and "rm -rf /data/local/tmp/edgebuild-" in adb_log


def test_serial_picks_one_of_several(phone: Phone, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, phone, "emulator-5554=device,192.168.1.20:5555=device")
    result = AdbDevice(parse_device("adb:192.168.1.20:5555"), phone.binary).run(MODEL, INPUTS)
    assert result.device == "adb:192.168.1.20:5555 (benchmark_model)"
    assert phone.leftovers() == []


@pytest.mark.parametrize(
    ("devices", "device", "code", "needles"),
    [
        ("", "adb", 1, ("--device adb", "no Android device is attached", "USB debugging")),
        ("emulator-5554=device", "adb:R58M12", 1, ("adb:R58M12 is not attached", "emulator-5554")),
        ("a1=device,b2=device", "adb", 2, ("2 devices", "a1, b2", "--device adb:SERIAL")),
        ("R58M12=unauthorized", "adb", 2, ("adb:R58M12", "not authorized", "accept")),
        ("R58M12=offline", "adb:R58M12", 1, ("adb:R58M12 is offline", "reconnect")),
    ],
)
def test_device_errors(
    phone: Phone, monkeypatch: pytest.MonkeyPatch, devices: str, device: str, code: int, needles: tuple[str, ...]
) -> None:
    use(monkeypatch, phone, devices)
    with pytest.raises(EdgebuildError) as caught:
        AdbDevice(parse_device(device), phone.binary).run(MODEL, INPUTS)
    assert_one_line_error(error_result(caught.value), code, *needles)


def test_no_adb(phone: Phone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as caught:
        AdbDevice(DeviceSpec("adb"), phone.binary).run(MODEL, INPUTS)
    assert_one_line_error(error_result(caught.value), 2, "--device adb", "adb is not installed", "apt-get install adb")


def test_benchmark_binary_missing(phone: Phone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, phone)
    hint = f"give it {BINARY_HINT}"
    with pytest.raises(ConfigError) as caught:
        AdbDevice(DeviceSpec("adb"), None).run(MODEL, INPUTS)
    assert str(caught.value) == f"--device adb needs --benchmark-binary PATH ({hint})"
    with pytest.raises(ConfigError) as caught:
        AdbDevice(DeviceSpec("adb"), tmp_path / "nowhere").run(MODEL, INPUTS)
    assert str(caught.value) == f"--benchmark-binary {tmp_path / 'nowhere'}: no such file (for --device adb) ({hint})"
    assert caught.value.exit_code == 2


def test_reference_kernels_are_not_offered(phone: Phone) -> None:
    with pytest.raises(ValueError, match="latency only"):
        AdbDevice(DeviceSpec("adb"), phone.binary).run(MODEL, INPUTS, reference=True)


@pytest.mark.parametrize(
    ("script", "error", "needles"),
    [
        ("echo \"ERROR: Didn't find op for builtin opcode 'GELU'\" >&2; exit 1", BuildError, ("failed", "GELU")),
        ("echo './benchmark_model: 1: Syntax error: word unexpected'; exit 2", ConfigError, ("does not run on",)),
        ("echo 'all done'", BuildError, ("no 'Inference (avg)'", "all done")),
    ],
)
def test_benchmark_failures(
    phone: Phone,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    error: type[EdgebuildError],
    needles: tuple[str, ...],
) -> None:
    use(monkeypatch, phone)
    binary = executable(tmp_path / "broken_benchmark_model", f"#!/bin/sh\n{script}\n")
    with pytest.raises(error) as caught:
        AdbDevice(DeviceSpec("adb"), binary).run(MODEL, INPUTS)
    assert_one_line_error(error_result(caught.value), error.exit_code, "adb:emulator-5554", *needles)
    assert phone.leftovers() == []  # removed on failure too


def test_phone_out_of_storage(phone: Phone, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, phone)
    monkeypatch.setenv("FAKE_PHONE_FULL", "1")
    with pytest.raises(BuildError) as caught:
        AdbDevice(DeviceSpec("adb"), phone.binary).run(MODEL, INPUTS)
    assert_one_line_error(error_result(caught.value), 1, "adb:emulator-5554 is out of storage", "No space left")


def test_cli_needs_a_benchmark_binary(project: Path) -> None:
    quick_project(project)
    result = run_cli("--target", "rpi4-relaxed", "--device", "adb", "--quiet", cwd=project)
    assert_one_line_error(result, 2, "--device adb", "--benchmark-binary")


@pytest.mark.slow
def test_end_to_end_build_reports_the_recorded_benchmark(phone: Phone, project: Path) -> None:
    """A build with --device adb against the fake phone: the report carries what edgebuild made of the
    recorded benchmark_model output, labelled the way it labels a real phone's."""
    quick_project(project)
    result = run_cli(
        "--target",
        "rpi4-relaxed",
        "--device",
        "adb",
        "--benchmark-binary",
        str(phone.binary),
        "--quiet",
        cwd=project,
        env=phone.env(),
    )
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "rpi4-relaxed" / "report.json").read_text())
    run = report["validation"]["device_run"]
    assert run["device"] == "adb"
    assert run["measured_on"] == "adb:emulator-5554 (benchmark_model)"
    assert run["emulated"] is False and run["latency_note"] == "measured on the device"
    assert run["latency"]["mean_ms"] == round(RECORDED_AVG_MS, 4)  # the recording's average, in ms
    assert run["peak_memory_bytes"] == RECORDED_PEAK_BYTES
    assert run["accuracy"] is None and run["reference_kernels_vs_host"] is None  # no outputs to judge
    assert report["artifact"]["accuracy"] > 0.5  # the host's figure stands
    assert phone.leftovers() == []
