"""The TensorFlow Lite Micro interpreter (the ``tflite-micro`` package) on this machine.

These are TFLM's own kernels and memory planner, so the tensor arena found here is
the arena the firmware needs (for the same TFLM version and the reference kernels).
"""

from __future__ import annotations

import platform
import re
import time
from typing import Any

import numpy as np

from edgebuild.errors import BuildError
from edgebuild.runners import RunResult
from edgebuild.tflite import captured_stderr

ARENA_ALIGN = 16
MAX_ARENA_BYTES = 256 * 1024 * 1024
# Below this TFLM can crash (not fail) while placing its own bookkeeping, so the
# search never probes a smaller arena than the allocator itself reported using.
_FIRST_PROBE_BYTES = 256 * 1024


def _interpreter(model: bytes, arena_bytes: int) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena_bytes)


def _try_arena(model: bytes, arena_bytes: int, sample: np.ndarray) -> tuple[bool, str]:
    """Whether one inference works with this arena; also TFLM's log of the attempt."""
    with captured_stderr() as log:
        try:
            interpreter = _interpreter(model, arena_bytes)
            interpreter.set_input(sample[None], 0)
            interpreter.invoke()
            ok = True
        except RuntimeError:
            ok = False
    return ok, log[0]


def _recorded_total(model: bytes, arena_bytes: int, sample: np.ndarray) -> int | None:
    """The arena TFLM's recording allocator says it used, after one inference."""
    with captured_stderr() as log:
        interpreter = _interpreter(model, arena_bytes)
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
        interpreter.print_allocations()
    match = re.search(r"Arena allocation total (\d+) bytes", log[0])
    return int(match.group(1)) if match else None


def find_min_arena(model: bytes, sample: np.ndarray) -> int:
    """The smallest tensor arena (a multiple of 16 bytes) with which TFLM runs the model.

    Raises BuildError when TFLM cannot run the model at all (unsupported op, say)
    or needs more than 256 MiB.
    """
    works = _FIRST_PROBE_BYTES
    while True:
        ok, log = _try_arena(model, works, sample)
        if ok:
            break
        if "resize buffer" not in log and "allocate" not in log:
            raise BuildError(f"TFLM cannot run the model: {_tflm_reason(log)}")
        if works >= MAX_ARENA_BYTES:
            raise BuildError(f"TFLM needs a tensor arena above {MAX_ARENA_BYTES} bytes for this model")
        works *= 2
    recorded = _recorded_total(model, works, sample) or works
    low = max(recorded // ARENA_ALIGN * ARENA_ALIGN - ARENA_ALIGN, ARENA_ALIGN)
    if _try_arena(model, low, sample)[0]:
        return low  # less than TFLM recorded using: never seen, but then this is the answer
    while works - low > ARENA_ALIGN:  # invariant: low fails, works works
        middle = (low + works) // 2 // ARENA_ALIGN * ARENA_ALIGN
        if middle <= low:
            break
        if _try_arena(model, middle, sample)[0]:
            works = middle
        else:
            low = middle
    return works


def _tflm_reason(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return "; ".join(lines[:3]) or "TFLM gave no reason"


class TflmHost:
    """Runs a model in TFLM with a given tensor arena, one input at a time."""

    name = "tflm-host"

    def __init__(self, *, arena_bytes: int):
        self.arena_bytes = arena_bytes

    def run(self, model: bytes, inputs: np.ndarray) -> RunResult:
        """Run every input; returns the first output per input. Raises BuildError if TFLM fails."""
        with captured_stderr() as log:
            try:
                interpreter = _interpreter(model, self.arena_bytes)
            except RuntimeError:
                interpreter = None
        if interpreter is None:
            raise BuildError(f"TFLM cannot load the model: {_tflm_reason(log[0])}")
        outputs = []
        latency_ms = []
        for sample in inputs:
            interpreter.set_input(sample[None], 0)
            start = time.perf_counter()
            interpreter.invoke()
            latency_ms.append((time.perf_counter() - start) * 1000.0)
            outputs.append(np.array(interpreter.get_output(0))[0])
        return RunResult(
            outputs=np.stack(outputs),
            latency_ms=latency_ms,
            device=f"host {platform.machine()} TFLM interpreter (tflite-micro), arena {self.arena_bytes} bytes",
            peak_memory_bytes=self.arena_bytes,
        )
