"""What each stage's model costs: parameters, MACs, bytes, TFLM arena, host latency.

The report shows these for the float teacher, the student, the pruned model and the
artifact, so the effect of every stage of the pipeline is measured, not assumed.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import numpy as np

from edgebuild.errors import BuildError
from edgebuild.results import Costs
from edgebuild.runners.tflm_host import find_min_arena
from edgebuild.tflite import convert_keras, io_details, make_interpreter, parse_tflite

LATENCY_RUNS = 1000


def host_latency_ms(model: bytes, sample: np.ndarray, runs: int = LATENCY_RUNS) -> float:
    """Median latency of ``runs`` invocations on one input, LiteRT default kernels, one thread."""
    interpreter = make_interpreter(model, threads=1)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, sample[None])
    interpreter.invoke()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def tflite_costs(model: bytes, x_float: np.ndarray, *, arena: bool = True) -> Costs:
    """Parameters, MACs, bytes, host latency and (when ``arena``) the TFLM arena of a ``.tflite``.

    ``x_float`` is one float input; it is quantized for integer models.
    """
    parsed = parse_tflite(model)
    sample = io_details(make_interpreter(model))[0][0].quantize(x_float[None])[0]
    arena_bytes = None
    if arena:
        with contextlib.suppress(BuildError):  # TFLM cannot run every model (float16, say): no arena then
            arena_bytes = find_min_arena(model, sample)
    return Costs(
        parameters=parsed["parameters"],
        macs=parsed["macs"],
        tflite_bytes=len(model),
        host_latency_ms=round(host_latency_ms(model, sample), 5),
        arena_bytes=arena_bytes,
    )


def keras_costs(model: Any, x_float: np.ndarray) -> Costs:
    """``tflite_costs`` of the model converted to float32."""
    return tflite_costs(convert_keras(model, "float32", "float32", None), x_float)
