"""Everything edgebuild knows about ``.tflite`` files: converting to them and reading them.

Conversion goes through TensorFlow's ``TFLiteConverter``; reading goes through the
LiteRT interpreter (no TensorFlow import), which also verifies the flatbuffer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgebuild.errors import BuildError

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
REPRESENTATIVE_SAMPLES = 300


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send C-level stderr (fd 2) to a buffer for the duration; yields a list that gets its text.

    TensorFlow's converter and the TFLM interpreter print straight to fd 2; this keeps
    that off the user's terminal while keeping it for error messages.
    """
    captured: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as buffer:
        saved = os.dup(2)
        os.dup2(buffer.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            captured.append(buffer.read().decode("utf-8", "replace"))


def convert_keras(
    model: Any,
    mode: str,
    io: str,
    representative: np.ndarray | None,
    *,
    sparse: bool = False,
    signature: bool = False,
) -> bytes:
    """Convert a tf_keras model to ``.tflite`` bytes.

    ``mode`` is ``int8`` (full integer; needs ``representative`` inputs), ``dynamic``,
    ``float16`` or ``float32``; ``io`` is the input/output dtype of an int8 model;
    ``sparse`` stores sparse weights in TFLite's sparse format (for 2:4 models).
    ``signature`` gives the model a ``serving_default`` SignatureDef (for LiteRT's signature
    runners) by lowering through a SavedModel, which costs seconds per conversion: the
    artifact gets one, the models converted only to be measured do not.
    Raises BuildError with the converter's own message when conversion fails.
    """
    from edgebuild.tf import tf

    t = tf()
    # A fixed batch of one: microcontroller runtimes and Vela want static shapes.
    spec = t.TensorSpec([1, *model.inputs[0].shape[1:]], model.inputs[0].dtype)
    function = t.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = t.lite.TFLiteConverter.from_concrete_functions([function], model)
    converter.experimental_lower_to_saved_model = signature
    if mode in ("int8", "dynamic", "float16"):
        converter.optimizations = [t.lite.Optimize.DEFAULT]
    if sparse:
        converter.optimizations = [*converter.optimizations, t.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if mode == "float16":
        converter.target_spec.supported_types = [t.float16]
    if mode == "int8":
        if representative is None or len(representative) == 0:
            raise BuildError("full-integer conversion needs representative inputs and none were given")
        samples = representative[:REPRESENTATIVE_SAMPLES]

        def representative_dataset() -> Iterator[list[np.ndarray]]:
            for sample in samples:
                yield [sample[None].astype(np.float32)]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [t.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io != "float32":
            converter.inference_input_type = {"int8": t.int8, "uint8": t.uint8}[io]
            converter.inference_output_type = {"int8": t.int8, "uint8": t.uint8}[io]
    with captured_stderr() as log:
        try:
            return bytes(converter.convert())
        except Exception as e:  # the converter raises ConverterError and others
            failure = e
    lines = [line for line in log[0].splitlines() if "error" in line.lower()]
    detail = lines[-1].strip() if lines else str(failure).splitlines()[0] if str(failure) else type(failure).__name__
    raise BuildError(f"TFLiteConverter could not convert the model to {mode}: {detail}")


def make_interpreter(model: bytes, *, reference: bool = False, threads: int = 1) -> Any:
    """A LiteRT interpreter with tensors allocated: default kernels (XNNPACK) or reference kernels.

    Raises BuildError when LiteRT rejects the model.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    try:
        with captured_stderr() as log:
            interpreter = Interpreter(model_content=model, num_threads=threads, experimental_op_resolver_type=resolver)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise BuildError(f"LiteRT cannot load the model: {str(e).strip() or log[0].strip()}") from None
    return interpreter


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: shape, dtype and (for integer tensors) quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float data as this tensor's dtype: quantized when the tensor is integer."""
        if self.dtype in ("int8", "uint8") and self.scale > 0:
            info = np.iinfo(self.dtype)
            q = np.round(x / self.scale + self.zero_point)
            return np.clip(q, info.min, info.max).astype(self.dtype)
        return x.astype(self.dtype)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail["quantization"]
    return TensorInfo(
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


def io_details(interpreter: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The model's inputs and outputs as TensorInfo lists."""
    return (
        [_tensor_info(d) for d in interpreter.get_input_details()],
        [_tensor_info(d) for d in interpreter.get_output_details()],
    )


def op_names(interpreter: Any) -> list[str]:
    """The builtin op of every node of the model, in execution order (delegate nodes left out)."""
    return [str(op["op_name"]) for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


def weight_sparsity(interpreter: Any) -> tuple[int, int]:
    """Zero and total weights over the filters of convolution and fully connected ops.

    A filter fed through a DEQUANTIZE (float16 models) is read at its stored source.
    Returns ``(zeros, total)``.
    """
    ops = interpreter._get_ops_details()
    produced_by = {int(out): op for op in ops for out in op["outputs"]}
    zeros = total = 0
    seen: set[int] = set()
    for op in ops:
        if op["op_name"] not in WEIGHTED_OPS or len(op["inputs"]) < 2:
            continue
        index = int(op["inputs"][1])
        producer = produced_by.get(index)
        if producer is not None and producer["op_name"] == "DEQUANTIZE":
            index = int(producer["inputs"][0])
        if index in seen or index in produced_by:
            continue
        seen.add(index)
        weights = interpreter.get_tensor(index)
        zeros += int(np.count_nonzero(weights == 0))
        total += int(weights.size)
    return zeros, total


def enum_names(enum: type) -> dict[int, str]:
    """Codes and names of an enum of the flatbuffer schema LiteRT ships (BuiltinOperator, TensorType)."""
    return {value: name for name, value in vars(enum).items() if not name.startswith("_") and isinstance(value, int)}


def flatbuffer_ops(model: bytes) -> list[str]:
    """The op of every node in the main subgraph, read from the flatbuffer (custom ops by name).

    Works for models LiteRT cannot run, such as Vela's output with its ETHOSU custom op.
    The caller must have verified the file (make_interpreter, or it came from a converter).
    """
    from ai_edge_litert import schema_py_generated as schema

    names = enum_names(schema.BuiltinOperator)
    root = schema.Model.GetRootAs(model, 0)
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            codes.append((code.CustomCode() or b"").decode("utf-8", "replace"))
        else:
            codes.append(names.get(builtin, f"BUILTIN_{builtin}"))
    graph = root.Subgraphs(0)
    return [codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength())]
