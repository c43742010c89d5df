"""The LiteRT interpreter on this machine: default kernels (XNNPACK) or reference kernels."""

from __future__ import annotations

import platform
import time

import numpy as np

from edgebuild.runners import OUTPUTS, REFERENCE, RunResult
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
        input_index = interpreter.get_input_details()[0]["index"]
        output_index = interpreter.get_output_details()[0]["index"]
        outputs = []
        latency_ms = []
        for sample in inputs:
            interpreter.set_tensor(input_index, sample[None])
            start = time.perf_counter()
            interpreter.invoke()
            latency_ms.append((time.perf_counter() - start) * 1000.0)
            outputs.append(interpreter.get_tensor(output_index)[0].copy())
        kernels = "reference kernels" if reference else "default kernels"
        return RunResult(
            outputs=np.stack(outputs),
            latency_ms=latency_ms,
            device=f"host {platform.machine()} LiteRT, {kernels}, {self.threads} thread(s)",
        )
