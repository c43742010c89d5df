"""Run a .tflite on a device: copied there and run with the device's own Python.

    python3 device_script.py FOLDER [--reference]

Reads ``FOLDER/model.tflite`` and ``FOLDER/inputs.npy`` (already in the model's input
type), runs every input one at a time with ``ai_edge_litert`` (or ``tflite_runtime``
where that is what the device has), and writes ``FOLDER/outputs.npy`` and
``FOLDER/result.json`` (interpreter, per-inference latency in ms, peak memory).
``--reference`` uses LiteRT's reference kernels. Exit code 3: no interpreter on the
device. This file imports nothing from edgebuild: it runs where edgebuild is not installed.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NO_INTERPRETER = 3


def load_interpreter(model_path: Path, reference: bool) -> tuple[Any, str]:
    """An interpreter from ai_edge_litert, else tflite_runtime; and which one it is."""
    try:
        from ai_edge_litert import interpreter as module

        name = "ai_edge_litert"
    except ImportError:
        try:
            from tflite_runtime import interpreter as module

            name = "tflite_runtime"
        except ImportError:
            print("no LiteRT interpreter: install ai-edge-litert (or tflite-runtime)", file=sys.stderr)
            sys.exit(NO_INTERPRETER)
    kwargs: dict[str, Any] = {"model_path": str(model_path), "num_threads": 1}
    if reference:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
    version = getattr(sys.modules[name.split(".")[0]], "__version__", "unknown")
    return module.Interpreter(**kwargs), f"{name} {version}"


def run_inputs(interpreter: Any, inputs: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Every input through an allocated interpreter, one at a time: the first output of each
    and the milliseconds each ``invoke`` took. The host's LiteRT runner times the same way."""
    given = interpreter.get_input_details()[0]["index"]
    found = interpreter.get_output_details()[0]["index"]
    outputs, latency_ms = [], []
    for sample in inputs:
        interpreter.set_tensor(given, sample[None])
        start = time.perf_counter()
        interpreter.invoke()
        latency_ms.append((time.perf_counter() - start) * 1000.0)
        outputs.append(interpreter.get_tensor(found)[0].copy())
    return np.stack(outputs), latency_ms


def main(argv: list[str]) -> int:
    folder = Path(argv[1])
    reference = "--reference" in argv[2:]
    interpreter, name = load_interpreter(folder / "model.tflite", reference)
    interpreter.allocate_tensors()
    outputs, latency_ms = run_inputs(interpreter, np.load(folder / "inputs.npy"))
    np.save(folder / "outputs.npy", outputs)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {
        "interpreter": name,
        "kernels": "reference" if reference else "default",
        "machine": platform.machine(),
        "latency_ms": latency_ms,
        "peak_rss_bytes": int(peak_kib) * 1024,
    }
    (folder / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
