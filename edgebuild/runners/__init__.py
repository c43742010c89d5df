"""Runners execute a ``.tflite`` on something and report outputs and timings.

A runner is the only device-specific code in edgebuild, and every runner keeps one
contract, ``Runner``: ``run(model, inputs, reference=False) -> RunResult`` puts the model
on its device, runs every input (already in the model's input dtype) one at a time, and
brings back the outputs, per-inference latency, and peak memory where the device can
report it. What a runner can do beyond timing is in its ``capabilities``: ``outputs``
(it brings back outputs, so accuracy and comparisons can be computed) and ``reference``
(it can run LiteRT's reference kernels, which must match the host's bit for bit).
Host runners are chosen by the profile's ``validate.runner``, device runners by
``--device`` and the target's runtime: ``DEVICE_RUNNERS`` on LiteRT targets (qemu and ssh run
``device_script.py`` with the device's own Python), ``FIRMWARE_RUNNERS`` on TFLM targets (qemu
runs the firmware built from the emitted C on an emulated Cortex-M board).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgebuild.devices import DeviceSpec

if TYPE_CHECKING:
    from edgebuild.firmware import FirmwareModel
    from edgebuild.mcu_firmware import FirmwareImage


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
OUTPUTS = "outputs"  # brings back every output: accuracy and comparisons can be computed
REFERENCE = "reference"  # runs LiteRT's reference kernels on request: bit-exact against the host


class Runner(Protocol):
    """What every runner offers: a label for messages, its capabilities, and ``run``."""

    label: str
    capabilities: frozenset[str]

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Run every input through ``model``; ``reference`` asks for LiteRT's reference kernels
        (only where ``REFERENCE`` is a capability). Raises EdgebuildError naming the device."""
        ...


def _qemu(spec: DeviceSpec, benchmark_binary: Path | None) -> Runner:
    from edgebuild.runners.qemu_arm64 import QemuArm64

    return QemuArm64()


def _ssh(spec: DeviceSpec, benchmark_binary: Path | None) -> Runner:
    from edgebuild.runners.ssh import SshDevice

    return SshDevice(spec)


def _adb(spec: DeviceSpec, benchmark_binary: Path | None) -> Runner:
    from edgebuild.runners.adb import AdbDevice

    return AdbDevice(spec, benchmark_binary)


# The runner for each kind of --device on LiteRT targets (imported only when asked for): it runs
# the .tflite on a Linux device, in the validate stage.
DEVICE_RUNNERS: dict[str, Callable[[DeviceSpec, Path | None], Runner]] = {"qemu": _qemu, "ssh": _ssh, "adb": _adb}


def _qemu_mcu(image: FirmwareImage, model: FirmwareModel) -> Runner:
    from edgebuild.runners.qemu_mcu import QemuMcu

    return QemuMcu(image, model)


# The runner for each kind of --device on TFLM (microcontroller) targets: it runs the firmware built
# from the emitted C, so the link stage calls it, after emit.
FIRMWARE_RUNNERS: dict[str, Callable[[FirmwareImage, FirmwareModel], Runner]] = {"qemu": _qemu_mcu}
