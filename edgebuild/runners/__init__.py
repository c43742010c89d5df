"""Runners execute a ``.tflite`` on something and report outputs and timings.

A runner is the only device-specific code in edgebuild. Each has one method,
``run(model, inputs) -> RunResult``: put the model on the device, run every input
(already in the model's input dtype) one at a time, and bring back the outputs,
per-inference latency, and peak memory where the device can report it. Device
runners (qemu, ssh) also take ``reference=True`` to use LiteRT's reference kernels;
they run ``device_script.py`` with the device's own Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RunResult:
    """Outputs of one run (first output tensor, one row per input) and per-inference latency."""

    outputs: np.ndarray
    latency_ms: list[float]
    device: str
    emulated: bool = False
    peak_memory_bytes: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def latency_summary(self) -> dict[str, float]:
        """Mean, p50 and p90 latency in milliseconds."""
        if not self.latency_ms:
            return {}
        ms = np.asarray(self.latency_ms)
        return {
            "mean_ms": round(float(ms.mean()), 4),
            "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4),
        }


@dataclass(frozen=True)
class DeviceSpec:
    """Where validation also runs the artifact: the host only, emulated arm64 Linux, an SSH board, or adb."""

    kind: str  # host | qemu | ssh | adb
    user: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None

    @property
    def label(self) -> str:
        """The device as the user wrote it."""
        if self.kind == "ssh":
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"ssh://{user}{self.host}{port}"
        if self.kind == "adb":
            return f"adb:{self.serial}" if self.serial else "adb"
        return self.kind


def parse_device(spec: str) -> DeviceSpec:
    """``host``, ``qemu``, ``ssh://[user@]host[:port]`` or ``adb[:SERIAL]``; ConfigError otherwise."""
    import re

    from edgebuild.errors import ConfigError

    if spec in ("host", "qemu"):
        return DeviceSpec(spec)
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        if serial is not None and not re.fullmatch(r"[A-Za-z0-9._:-]+", serial):
            raise ConfigError(f"device {spec!r}: {serial!r} is not an adb serial")
        return DeviceSpec("adb", serial=serial)
    match = re.fullmatch(r"ssh://(?:([A-Za-z0-9._-]+)@)?([A-Za-z0-9._-]+|\[[0-9a-fA-F:]+\])(?::(\d{1,5}))?/?", spec)
    if match:
        port = int(match.group(3)) if match.group(3) else None
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"device {spec!r}: port {port} is out of range")
        return DeviceSpec("ssh", user=match.group(1), host=match.group(2), port=port)
    raise ConfigError(
        f"unknown device {spec!r}",
        hint="use host, qemu, ssh://user@host[:port] or adb[:SERIAL]",
    )


def read_device_result(folder: Path, device: str, emulated: bool) -> RunResult:
    """The RunResult ``device_script.py`` left in ``folder`` (outputs.npy and result.json)."""
    import json

    result = json.loads((folder / "result.json").read_text())
    return RunResult(
        outputs=np.load(folder / "outputs.npy"),
        latency_ms=[float(v) for v in result["latency_ms"]],
        device=f"{device} ({result['interpreter']}, {result['kernels']} kernels, {result['machine']})",
        emulated=emulated,
        peak_memory_bytes=int(result["peak_rss_bytes"]),
        extra={"interpreter": result["interpreter"], "kernels": result["kernels"]},
    )


DEVICE_SCRIPT = Path(__file__).with_name("device_script.py")


def device_runner(spec: DeviceSpec, benchmark_binary: Path | None = None) -> Any:
    """The runner for a device that is not the host (imported only when asked for)."""
    if spec.kind == "qemu":
        from edgebuild.runners.qemu_arm64 import QemuArm64

        return QemuArm64()
    if spec.kind == "ssh":
        from edgebuild.runners.ssh import SshDevice

        return SshDevice(spec)
    if spec.kind == "adb":
        from edgebuild.runners.adb import AdbDevice

        return AdbDevice(spec, benchmark_binary)
    raise ValueError(f"no device runner for {spec.kind!r}")
