"""The LiteRT interpreter on this machine: default kernels (XNNPACK) or reference kernels."""

from __future__ import annotations

import platform

import numpy as np

from edgebuild.runners import OUTPUTS, REFERENCE, RunResult
from edgebuild.runners.device_script import run_inputs
from edgebuild.tflite import make_interpreter


class LiteRTHost:
    """Runs a model with ``ai_edge_litert`` on the host, one input at a time."""

    capabilities = frozenset({OUTPUTS, REFERENCE})

    def __init__(self, *, threads: int = 1, reference: bool = False):
        self.threads = threads
        self.reference = reference
        self.label = "litert-host-reference" if reference else "litert-host"

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Run every input; returns the first output tensor per input. Raises BuildError on load."""
        reference = reference or self.reference
        interpreter = make_interpreter(model, reference=reference, threads=self.threads)
        outputs, latency_ms = run_inputs(interpreter, inputs)
        kernels = "reference kernels" if reference else "default kernels"
        return RunResult(
            outputs=outputs,
            latency_ms=latency_ms,
            device=f"host {platform.machine()} LiteRT, {kernels}, {self.threads} thread(s)",
        )
