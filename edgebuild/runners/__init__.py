"""Runners execute a ``.tflite`` on something and report outputs and timings.

A runner is the only device-specific code in edgebuild. Each has one method,
``run(model, inputs) -> RunResult``: put the model on the device, run every input
(already in the model's input dtype) one at a time, and bring back the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
