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

from edgebuild.devices import DeviceSpec


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
