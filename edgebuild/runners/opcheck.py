"""Op-by-op comparison of a runtime's kernels with LiteRT's reference kernels.

End to end, a 1-LSB rounding difference in one layer can grow in the layers after
it, so the model's outputs alone cannot tell a rounding difference from a wrong
kernel. Here both runtimes keep every intermediate tensor; an op is judged only on
the samples where its inputs are bit-identical in both, which isolates that op's
own kernel. More than 1 LSB there means something is wrong.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgebuild.capture import captured_stderr
from edgebuild.runners.tflm_host import intermediate_tensors


def _litert_tensors(
    model: bytes, inputs: np.ndarray, tensors: list[int], reference: bool
) -> list[dict[int, np.ndarray]]:
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
    input_index = interpreter.get_input_details()[0]["index"]
    per_sample = []
    for sample in inputs:
        interpreter.set_tensor(input_index, sample[None])
        interpreter.invoke()
        per_sample.append({i: interpreter.get_tensor(i).copy() for i in tensors})
    return per_sample


def compare_ops(model: bytes, inputs: np.ndarray, runtime: str, arena_bytes: int = 0) -> list[dict[str, Any]]:
    """Per op: samples judged, the largest own-kernel difference (LSB) and the largest difference overall.

    ``runtime`` is ``tflm`` (the TFLM interpreter, given a tensor arena large enough to
    keep every tensor) or ``litert`` (LiteRT's default kernels). Float ops are skipped.
    """
    from edgebuild.tflite import make_interpreter

    interpreter = make_interpreter(model, reference=True)
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    produced = {int(t) for op in ops for t in op["outputs"]} | graph_inputs
    tensors = sorted(produced)
    reference = _litert_tensors(model, inputs, tensors, reference=True)
    if runtime == "tflm":
        device = intermediate_tensors(model, inputs, tensors, arena_bytes)
    else:
        device = _litert_tensors(model, inputs, tensors, reference=False)
    rows = []
    for op in ops:
        out = int(op["outputs"][0])
        live = [int(i) for i in op["inputs"] if int(i) in produced]
        judged = max_own = max_any = 0
        for ref, dev in zip(reference, device, strict=True):
            if not np.issubdtype(ref[out].dtype, np.integer):
                break
            diff = int(np.abs(dev[out].astype(np.int64) - ref[out].astype(np.int64)).max(initial=0))
            max_any = max(max_any, diff)
            if all(np.array_equal(dev[i], ref[i]) for i in live):
                judged += 1
                max_own = max(max_own, diff)
        rows.append(
            {
                "index": int(op["index"]),
                "op": str(op["op_name"]),
                "judged": judged,
                "max_own_lsb": max_own,
                "max_lsb": max_any,
            }
        )
    return rows
