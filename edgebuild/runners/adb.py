"""Time a ``.tflite`` on an Android phone with ``adb`` and LiteRT's ``benchmark_model``.

Phones have no Python to run ``device_script.py``, so this runner measures latency
only: it pushes the model and the user's ``benchmark_model`` binary (built for the
phone's CPU, e.g. ``android_arm64``) to a fresh ``/data/local/tmp/edgebuild-<random>/``,
runs ``benchmark_model --graph=... --num_threads=1 --num_runs=N`` there through
``adb [-s SERIAL] shell``, parses the timings it prints, and removes the folder again.
benchmark_model feeds random inputs and returns no outputs, so the result's
``outputs`` is empty (validation then reports latency and no device accuracy), and
there is no reference-kernel run: ``run(..., reference=True)`` raises ValueError.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebuild.devices import DeviceSpec
from edgebuild.errors import BuildError, ConfigError, EdgebuildError
from edgebuild.runners import RunResult
from edgebuild.runners.text import last_line, line_with

REMOTE_ROOT = "/data/local/tmp"
DEFAULT_RUNS = 50
TIMEOUT_S = 600
EXIT_MARK = "EDGEBUILD_EXIT="  # old adb (no shell protocol v2) does not pass the exit status back
INSTALL_HINT = "Debian/Ubuntu: sudo apt-get install adb; elsewhere put adb from Android SDK Platform-Tools on PATH"
BINARY_HINT = (
    "LiteRT's benchmark_model built for the phone, e.g. bazel build -c opt --config=android_arm64 "
    "//tensorflow/lite/tools/benchmark:benchmark_model, or TensorFlow's prebuilt android_aarch64_benchmark_model"
)

_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)"
_TIMINGS = re.compile(r"Inference timings in (us|ms):(.*)")
_FIELD = re.compile(r"([A-Za-z][A-Za-z ()]*?):\s*" + _NUMBER)
_COUNT = re.compile(
    rf"count={_NUMBER}\s+first={_NUMBER}\s+curr={_NUMBER}\s+min={_NUMBER}\s+max={_NUMBER}\s+avg={_NUMBER}\s+std={_NUMBER}"
)
_PEAK = re.compile(r"peak memory footprint \(MB\)[^:]*:\s*" + _NUMBER, re.IGNORECASE)


@dataclass(frozen=True)
class BenchmarkTimings:
    """What benchmark_model printed, in milliseconds (it prints microseconds)."""

    avg_ms: float
    init_ms: float | None = None
    first_ms: float | None = None
    warmup_avg_ms: float | None = None
    runs: int | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    peak_memory_bytes: int | None = None


def parse_benchmark_output(text: str) -> BenchmarkTimings | None:
    """Parse benchmark_model's log (with or without ``INFO:`` prefixes); None without an ``Inference (avg)``.

    Reads the ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ...,
    Inference (avg): ...`` line; from the ``count=N first= curr= min= max= avg= std=`` lines
    the one whose average is the inference average (the others are warm-up); and
    ``[Overall] peak memory footprint (MB)`` where the tool printed it.
    """
    summary: dict[str, float] = {}
    scale = 0.001
    for line in text.splitlines():
        found = _TIMINGS.search(line)
        if found:
            scale = 0.001 if found.group(1) == "us" else 1.0
            summary = {name.strip(): float(value) for name, value in _FIELD.findall(found.group(2))}
    if "Inference (avg)" not in summary:
        return None
    avg_us = summary["Inference (avg)"]
    counts = [[float(v) for v in found.groups()] for found in _COUNT.finditer(text)]
    matching = [c for c in counts if abs(c[5] - avg_us) <= max(0.01 * avg_us, 1.0)]
    peak = _PEAK.search(text)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * scale, 6)

    run = matching[-1] if matching else None
    return BenchmarkTimings(
        avg_ms=round(avg_us * scale, 6),
        init_ms=ms(summary.get("Init")),
        first_ms=ms(summary.get("First inference")),
        warmup_avg_ms=ms(summary.get("Warmup (avg)")),
        runs=int(run[0]) if run else None,
        min_ms=ms(run[3]) if run else None,
        max_ms=ms(run[4]) if run else None,
        std_ms=ms(run[6]) if run else None,
        peak_memory_bytes=int(float(peak.group(1)) * 1024 * 1024) if peak else None,
    )


class AdbDevice:
    """An Android phone reached with ``adb``; times the model with LiteRT's ``benchmark_model`` (latency only)."""

    def __init__(
        self,
        spec: DeviceSpec,
        benchmark_binary: Path | None,
        *,
        runs: int = DEFAULT_RUNS,
        timeout_s: float = TIMEOUT_S,
    ):
        """Keep ``spec`` (kind ``adb``, optional serial) and the path of benchmark_model; checks nothing yet."""
        if spec.kind != "adb":
            raise ValueError(f"AdbDevice needs an adb device, not {spec.label!r}")
        self.spec = spec
        self.label = spec.label
        self.capabilities: frozenset[str] = frozenset()  # latency only: benchmark_model brings back no outputs
        self.benchmark_binary = benchmark_binary
        self.runs = runs
        self.timeout_s = timeout_s

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Time ``model`` on the phone (``inputs`` go unused: benchmark_model feeds random inputs).

        Reads ``adb devices``; writes the model and benchmark_model to
        ``/data/local/tmp/edgebuild-<random>/`` on the phone (removed afterwards, on
        failure too) and a local temporary file. Returns empty ``outputs``,
        ``latency_ms`` = [benchmark_model's average], the device ``adb:SERIAL
        (benchmark_model)``, and min/max/std/runs in ``extra``. Raises ValueError for
        ``reference=True`` (benchmark_model has no reference-kernel mode and returns no
        outputs to compare); ConfigError (adb or the binary missing, several phones and
        no serial, phone not authorized, a binary the phone cannot run) or BuildError
        (no phone attached, adb failed, out of space, unparsable output), each naming the device.
        """
        if reference:
            raise ValueError("benchmark_model has no reference-kernel mode: an adb device measures latency only")
        binary = self.check_binary()
        adb = self.adb()
        serial = self.attached(adb)
        label = f"adb:{serial}"
        folder = f"{REMOTE_ROOT}/edgebuild-{secrets.token_hex(6)}"
        try:
            with tempfile.TemporaryDirectory(prefix="edgebuild-adb-") as tmp:
                local_model = Path(tmp) / "model.tflite"
                local_model.write_bytes(model)
                self._push(adb, serial, local_model, f"{folder}/model.tflite")
            self._push(adb, serial, binary, f"{folder}/benchmark_model")
            command = (
                f"chmod 755 {folder}/benchmark_model && cd {folder} && ./benchmark_model "
                f"--graph={folder}/model.tflite --num_threads=1 --num_runs={self.runs} 2>&1; echo {EXIT_MARK}$?"
            )
            output = self._adb(adb, serial, "shell", command).stdout
        finally:
            self._adb(adb, serial, "shell", f"rm -rf {folder}", check=False)
        status = re.search(re.escape(EXIT_MARK) + r"(\d+)", output)
        text = output[: status.start()] if status else output
        if status is None or status.group(1) != "0":
            raise self._benchmark_error(label, binary, text)
        timings = parse_benchmark_output(text)
        if timings is None:
            raise BuildError(
                f"validate: benchmark_model on {label} printed no 'Inference (avg)' timing ({last_line(text)})",
                hint=f"--benchmark-binary should be {BINARY_HINT}",
            )
        extra: dict[str, object] = {"tool": "benchmark_model", "threads": 1}
        for name in ("runs", "min_ms", "max_ms", "std_ms", "init_ms", "first_ms", "warmup_avg_ms"):
            if getattr(timings, name) is not None:
                extra[name] = getattr(timings, name)
        return RunResult(
            outputs=np.empty((0,)),
            latency_ms=[timings.avg_ms],
            device=f"{label} (benchmark_model)",
            emulated=False,
            peak_memory_bytes=timings.peak_memory_bytes,
            extra=extra,
        )

    def check_binary(self) -> Path:
        """The benchmark_model path. Raises ConfigError when none was given or it is not a file."""
        if self.benchmark_binary is None:
            raise ConfigError(f"--device {self.label} needs --benchmark-binary PATH", hint=f"give it {BINARY_HINT}")
        if not self.benchmark_binary.is_file():
            raise ConfigError(
                f"--benchmark-binary {self.benchmark_binary}: no such file (for --device {self.label})",
                hint=f"give it {BINARY_HINT}",
            )
        return self.benchmark_binary

    def adb(self) -> str:
        """The path of ``adb`` on PATH. Raises ConfigError with how to install it when there is none."""
        found = shutil.which("adb")
        if found is None:
            raise ConfigError(f"--device {self.label}: adb is not installed", hint=INSTALL_HINT)
        return found

    def attached(self, adb: str) -> str:
        """The serial of the phone to use, from ``adb devices``.

        With a serial in the spec, that phone; without one, the only phone attached.
        Raises BuildError (none attached, that one not attached, offline, adb failed) or
        ConfigError (several and no serial, not authorized), naming the device.
        """
        listed = self._adb(adb, None, "devices").stdout
        states: dict[str, str] = {}
        for line in listed.splitlines():
            fields = line.split()
            if len(fields) >= 2 and not line.startswith(("*", "List of devices")):
                states[fields[0]] = fields[1]
        serial = self.spec.serial
        if serial is None:
            if not states:
                raise BuildError(
                    f"validate: no Android device is attached for --device {self.label}; adb devices lists none",
                    hint="connect the phone by USB with USB debugging on, or adb connect HOST:PORT for wireless "
                    "debugging; then check with adb devices",
                )
            if len(states) > 1:
                raise ConfigError(
                    f"--device {self.label}: {len(states)} devices are attached ({', '.join(sorted(states))})",
                    hint="choose one with --device adb:SERIAL",
                )
            serial = next(iter(states))
        elif serial not in states:
            listing = ", ".join(sorted(states)) or "none"
            raise BuildError(
                f"validate: adb:{serial} is not attached; adb devices lists: {listing}",
                hint="connect it with USB debugging on or adb connect HOST:PORT, or use a listed serial",
            )
        state = states[serial]
        if state == "unauthorized":
            raise ConfigError(
                f"--device adb:{serial}: the phone has not authorized this computer for USB debugging",
                hint="unlock it and accept the 'Allow USB debugging?' prompt, then check with adb devices",
            )
        if state != "device":
            raise BuildError(
                f"validate: adb:{serial} is {state}",
                hint="reconnect it: adb reconnect, or unplug it and plug it in again",
            )
        return serial

    def _push(self, adb: str, serial: str, local: Path, remote: str) -> None:
        """``adb push`` one file. Raises BuildError naming the phone (out of space, or adb's own message)."""
        self._adb(adb, serial, "push", str(local), remote)

    def _adb(self, adb: str, serial: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``adb [-s SERIAL] ARGS``; returns it. With ``check``, raises BuildError naming the device on failure."""
        label = f"adb:{serial}" if serial else self.label
        command = [adb, *(["-s", serial] if serial else []), *args]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            if not check:
                return subprocess.CompletedProcess(command, 124, "", "")
            raise BuildError(f"validate: adb {args[0]} on {label} took more than {self.timeout_s:.0f} s") from None
        if check and proc.returncode != 0:
            raise _adb_error(label, args[0], proc.stdout + proc.stderr)
        return proc

    def _benchmark_error(self, label: str, binary: Path, text: str) -> EdgebuildError:
        """The error for a benchmark_model run that failed on the phone, from what it printed."""
        wrong_binary = line_with(
            text, "Exec format error", "not executable", "cannot execute", "yntax error", "CANNOT LINK EXECUTABLE"
        )
        if wrong_binary:
            return ConfigError(
                f"--benchmark-binary {binary} does not run on {label} ({wrong_binary})",
                hint="use the build for the phone's CPU, e.g. android_arm64 for arm64-v8a; "
                "adb shell getprop ro.product.cpu.abi says which",
            )
        line = line_with(text, "ERROR", "Error", "error", "Failed", "failed") or last_line(text)
        return BuildError(f"validate: benchmark_model failed on {label} ({line or 'no output'})")


def _adb_error(label: str, action: str, text: str) -> BuildError:
    """The error for a failed ``adb ACTION`` on ``label``, from its output ``text``."""
    full = line_with(text, "No space left on device")
    if full:
        return BuildError(
            f"validate: {label} is out of storage ({full})", hint=f"free some space on the phone's {REMOTE_ROOT}"
        )
    line = line_with(text, "error", "failed") or last_line(text)
    return BuildError(f"validate: adb {action} on {label} failed ({line or 'no output'})")
