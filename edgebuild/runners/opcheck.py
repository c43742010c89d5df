"""Op-by-op comparison of a runtime's kernels with LiteRT's reference kernels.

End to end, a 1-LSB rounding difference in one layer can grow in the layers after
it, so the model's outputs alone cannot tell a rounding difference from a wrong
kernel. Here both interpreters keep every intermediate tensor; an op is judged only
on the samples where its inputs are bit-identical in both runtimes, which isolates
that op's own kernel. More than 1 LSB there means something is wrong.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from edgebuild.tflite import captured_stderr


def _litert(model: bytes, reference: bool) -> tuple[Any, Callable[[np.ndarray], None], Callable[[int], np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with captured_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LiteRT warns that keeping every tensor is for debugging
        interpreter = Interpreter(
            model_content=model,
            num_threads=1,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=True,
        )
        interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]

    def invoke(sample: np.ndarray) -> None:
        interpreter.set_tensor(index, sample[None])
        interpreter.invoke()

    return interpreter, invoke, interpreter.get_tensor


def _tflm(model: bytes, arena_bytes: int) -> tuple[Any, Callable[[np.ndarray], None], Callable[[int], np.ndarray]]:
    from tflite_micro.python.tflite_micro import runtime

    with captured_stderr():
        interpreter = runtime.Interpreter.from_bytes(
            model, arena_size=arena_bytes, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors
        )

    def invoke(sample: np.ndarray) -> None:
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()

    return interpreter, invoke, lambda i: np.asarray(interpreter.GetTensor(i, 0)["tensor_data"])


def compare_ops(model: bytes, inputs: np.ndarray, runtime: str, arena_bytes: int = 0) -> list[dict[str, Any]]:
    """Per op: samples judged, the largest own-kernel difference (LSB) and the largest difference overall.

    ``runtime`` is ``tflm`` (the TFLM interpreter, given a tensor arena large enough to
    keep every tensor) or ``litert`` (LiteRT's default kernels). Integer models only.
    """
    ref, ref_invoke, ref_get = _litert(model, reference=True)
    if runtime == "tflm":
        _, dev_invoke, dev_get = _tflm(model, arena_bytes)
    else:
        _, dev_invoke, dev_get = _litert(model, reference=False)
    ops = ref._get_ops_details()
    produced = {int(t) for op in ops for t in op["outputs"]} | {int(d["index"]) for d in ref.get_input_details()}
    rows = [
        {"index": int(op["index"]), "op": str(op["op_name"]), "judged": 0, "max_own_lsb": 0, "max_lsb": 0}
        for op in ops
    ]
    for sample in inputs:
        ref_invoke(sample)
        dev_invoke(sample)
        for op, row in zip(ops, rows):
            out = int(op["outputs"][0])
            expected = ref_get(out)
            if not np.issubdtype(expected.dtype, np.integer):
                continue
            diff = int(np.abs(dev_get(out).astype(np.int64) - expected.astype(np.int64)).max(initial=0))
            row["max_lsb"] = max(row["max_lsb"], diff)
            live_inputs = [int(i) for i in op["inputs"] if int(i) in produced]
            if all(np.array_equal(dev_get(i), ref_get(i)) for i in live_inputs):
                row["judged"] += 1
                row["max_own_lsb"] = max(row["max_own_lsb"], diff)
    return rows
