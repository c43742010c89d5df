"""Everything edgebuild knows about ``.tflite`` files: converting to them and reading them.

Conversion goes through TensorFlow's ``TFLiteConverter``; reading goes through the
LiteRT interpreter (no TensorFlow import), which also verifies the flatbuffer.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgebuild.capture import captured_stderr
from edgebuild.errors import BuildError, ConfigError
from edgebuild.tf import tf

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")
REPRESENTATIVE_SAMPLES = 300


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
    detail = detail.split(": error: ")[-1]  # not the MLIR location (a long call stack of Python files)
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

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """This tensor's values as float32: dequantized when the tensor is integer."""
        if self.dtype in ("int8", "uint8") and self.scale > 0:
            return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)
        return q.astype(np.float32)

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


FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")
QUANTIZED_WEIGHT_TYPES = ("int8", "uint8", "int4", "int2")
INTEGER_ACTIVATION_TYPES = ("int8", "uint8", "int16")
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")  # convert at the model's edges; neither float nor integer compute


def enum_names(enum: type) -> dict[int, str]:
    """Codes and names of an enum of the flatbuffer schema LiteRT ships (BuiltinOperator, TensorType)."""
    return {value: name for name, value in vars(enum).items() if not name.startswith("_") and isinstance(value, int)}


def _elements(shape: list[int]) -> int:
    """Elements of a tensor of this shape (unknown dimensions, -1, count as 1)."""
    return math.prod(max(d, 1) for d in shape)


def _quantization(tensor: Any) -> dict[str, Any] | None:
    """A tensor's affine quantization: None, per-tensor or per-channel (with its axis)."""
    q = tensor.Quantization()
    if q is None or q.ScaleLength() == 0:
        return None
    scales = [float(q.Scale(i)) for i in range(q.ScaleLength())]
    zero_points = [int(q.ZeroPoint(i)) for i in range(q.ZeroPointLength())] or [0] * len(scales)
    if len(scales) == 1:
        return {"kind": "per-tensor", "scale": scales[0], "zero_point": zero_points[0]}
    return {
        "kind": "per-channel",
        "axis": int(q.QuantizedDimension()),
        "channels": len(scales),
        "scale": scales,
        "zero_point": zero_points,
    }


def _macs(op: str, inputs: list[dict[str, Any] | None], outputs: list[dict[str, Any] | None]) -> int:
    """Multiply-accumulates of one node, from its tensors' shapes; 0 for ops that are not weighted.

    CONV_2D filter [OC, KH, KW, IC/groups]; DEPTHWISE_CONV_2D filter [1, KH, KW, OC];
    FULLY_CONNECTED filter [units, in]; TRANSPOSE_CONV inputs (output shape, filter
    [OC, KH, KW, IC], input): each input element meets KH·KW·OC weights.
    """

    def shape(tensors: list[dict[str, Any] | None], i: int) -> list[int] | None:
        tensor = tensors[i] if i < len(tensors) else None
        return tensor["shape"] if tensor is not None else None

    if op == "TRANSPOSE_CONV":
        filt, data = shape(inputs, 1), shape(inputs, 2)
        return _elements(data) * _elements(filt[:3]) if filt is not None and data is not None and filt else 0
    filt, out = shape(inputs, 1), shape(outputs, 0)
    if filt is None or out is None or not filt:
        return 0  # not a weighted op, or a node without the tensors its op should have
    if op == "CONV_2D":
        return _elements(out) * _elements(filt[1:])
    if op == "DEPTHWISE_CONV_2D":
        return _elements(out) * _elements(filt[1:3])
    if op == "FULLY_CONNECTED":
        return _elements(out) * max(filt[-1], 1)
    return 0


def parse_tflite(model: bytes, where: str = "model.tflite") -> dict[str, Any]:
    """The one reader of ``.tflite`` flatbuffers: ops, tensors, parameters, MACs and precision.

    Reads verified ``.tflite`` bytes (LiteRT loaded them, or a converter or Vela wrote them)
    with the schema that ships with ai-edge-litert. Returns ``nodes`` (the op of every node
    of the main subgraph, custom ops by name, in execution order), ``ops`` (counts over
    every subgraph), ``custom_ops``, ``inputs``/``outputs``, ``parameters``, ``macs`` and
    ``precision`` among others (see ``edgebuild inspect --json``). Raises ConfigError naming
    ``where`` when an index in the file points nowhere.
    """
    from ai_edge_litert import schema_py_generated as schema

    builtin = enum_names(schema.BuiltinOperator)
    dtypes = {code: name.lower() for code, name in enum_names(schema.TensorType).items()}

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{where}: corrupt .tflite: {what}", hint="convert or download the model again")

    root = schema.Model.GetRootAs(model, 0)
    opcodes: list[str] = []
    custom: set[str] = set()
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        number = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        if number == schema.BuiltinOperator.CUSTOM:
            name = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
            custom.add(name)
            opcodes.append(name)
        else:
            opcodes.append(builtin.get(number, f"BUILTIN_{number}"))
    buffer_bytes: list[int] = []
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        # Models over 2 GiB keep buffers after the flatbuffer (offset > 1, size); others inline.
        buffer_bytes.append(int(buffer.DataLength()) or (int(buffer.Size()) if int(buffer.Offset()) > 1 else 0))

    ops: Counter[str] = Counter()
    macs_by_op: Counter[str] = Counter()
    float_ops: Counter[str] = Counter()
    hybrid_ops: Counter[str] = Counter()
    integer_ops: Counter[str] = Counter()
    activation_types: set[str] = set()
    dequantized_types: set[str] = set()
    tensor_count = constant_count = 0
    parameters = constant_elements = 0
    parameter_buffers: set[int] = set()
    constant_buffers: set[int] = set()
    io: dict[str, list[dict[str, Any]]] = {"inputs": [], "outputs": []}
    nodes: list[str] = []

    for g in range(root.SubgraphsLength()):
        graph = root.Subgraphs(g)
        tensors: list[dict[str, Any]] = []
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            buffer_index = int(tensor.Buffer())
            if not 0 <= buffer_index < len(buffer_bytes) and buffer_index != 0:
                raise bad(f"tensor {t} of subgraph {g} points to buffer {buffer_index} of {len(buffer_bytes)}")
            name = tensor.Name()
            entry: dict[str, Any] = {
                "name": name.decode("utf-8", "replace") if name else f"tensor_{t}",
                "shape": [int(tensor.Shape(j)) for j in range(tensor.ShapeLength())],
                "dtype": dtypes.get(int(tensor.Type()), f"type_{tensor.Type()}"),
                "quantization": _quantization(tensor),
                "constant": buffer_index < len(buffer_bytes) and buffer_bytes[buffer_index] > 0,
                "shape_signature": [int(tensor.ShapeSignature(j)) for j in range(tensor.ShapeSignatureLength())],
            }
            tensors.append(entry)
            tensor_count += 1
            if entry["constant"]:
                constant_count += 1
                elements = _elements(entry["shape"])
                constant_elements += elements
                constant_buffers.add(buffer_index)
                # Learned values are float or quantized; unquantized integer constants are
                # op arguments (shapes, axes, paddings), which Keras does not count either.
                if entry["dtype"] in FLOAT_TYPES or entry["quantization"] is not None:
                    parameters += elements
                    parameter_buffers.add(buffer_index)

        def tensor_at(index: int, g: int = g, tensors: list[dict[str, Any]] = tensors) -> dict[str, Any] | None:
            if index == -1:  # an optional input left out (a bias, say)
                return None
            if not 0 <= index < len(tensors):
                raise bad(f"subgraph {g} uses tensor {index} of {len(tensors)}")
            return tensors[index]

        if g == 0:
            for key, length, at in (
                ("inputs", graph.InputsLength, graph.Inputs),
                ("outputs", graph.OutputsLength, graph.Outputs),
            ):
                for j in range(length()):
                    found = tensor_at(int(at(j)))
                    if found is not None:
                        io[key].append(
                            {k: found[k] for k in ("name", "shape", "shape_signature", "dtype", "quantization")}
                        )

        for n in range(graph.OperatorsLength()):
            node = graph.Operators(n)
            index = int(node.OpcodeIndex())
            if not 0 <= index < len(opcodes):
                raise bad(f"node {n} of subgraph {g} uses op code {index} of {len(opcodes)}")
            op = opcodes[index]
            inputs = [tensor_at(int(node.Inputs(j))) for j in range(node.InputsLength())]
            outputs = [tensor_at(int(node.Outputs(j))) for j in range(node.OutputsLength())]
            ops[op] += 1
            if g == 0:
                nodes.append(op)
            macs_by_op[op] += _macs(op, inputs, outputs)
            variable = [t for t in [*inputs, *outputs] if t is not None and not t["constant"]]
            if op == "DEQUANTIZE":
                dequantized_types.update(t["dtype"] for t in inputs if t is not None and t["constant"])
            if op in EDGE_OPS:
                continue
            if any(t["dtype"] in FLOAT_TYPES for t in variable):
                float_ops[op] += 1
                float_inputs = any(t is not None and not t["constant"] and t["dtype"] in FLOAT_TYPES for t in inputs)
                quantized_weights = any(
                    t is not None and t["constant"] and t["dtype"] in QUANTIZED_WEIGHT_TYPES for t in inputs
                )
                if float_inputs and quantized_weights:
                    hybrid_ops[op] += 1
            quantized = [
                t["dtype"] for t in variable if t["dtype"] in INTEGER_ACTIVATION_TYPES and t["quantization"] is not None
            ]
            if quantized:
                integer_ops[op] += 1
                activation_types.update(quantized)

    precision = _precision(float_ops, hybrid_ops, integer_ops, activation_types, dequantized_types)
    return {
        "schema_version": int(root.Version()),
        "description": (root.Description() or b"").decode("utf-8", "replace"),
        "subgraphs": int(root.SubgraphsLength()),
        "ops": dict(ops),
        "nodes": nodes,
        "op_count": sum(ops.values()),
        "custom_ops": sorted(custom),
        "tensors": {"count": tensor_count, "constant": constant_count},
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "parameters": parameters,
        "weight_bytes": sum(buffer_bytes[b] for b in parameter_buffers),
        "constant_elements": constant_elements,
        "constant_bytes": sum(buffer_bytes[b] for b in constant_buffers),
        "macs": sum(macs_by_op.values()),
        "macs_by_op": dict(macs_by_op),
        "precision": precision,
    }


def counted_ops(ops: dict[str, int], limit: int = 6) -> str:
    """``CONV_2D ×5, SOFTMAX`` for an op → count dict, at most ``limit`` ops then how many more."""
    named = [f"{op} ×{n}" if n > 1 else op for op, n in ops.items()]
    more = f" and {len(named) - limit} more" if len(named) > limit else ""
    return ", ".join(named[:limit]) + more


def _precision(
    float_ops: Counter[str],
    hybrid_ops: Counter[str],
    integer_ops: Counter[str],
    activation_types: set[str],
    dequantized_types: set[str],
) -> dict[str, Any]:
    """Classify the model's arithmetic from which ops compute in float and which in integers.

    Returns ``{"mode", "detail", "float_ops", "hybrid_ops"}``; ``mode`` is ``int8``
    (full integer; ``int16x8`` with int16 activations), ``float32``, ``float16``
    (float16 weights + DEQUANTIZE), ``dynamic`` (int8 weights feeding float ops, or
    dequantized to float), ``mixed`` (integer and float compute) or ``none``.
    """
    if hybrid_ops:
        mode, detail = "dynamic", f"hybrid dynamic range: int8 weights feeding float ops ({counted_ops(hybrid_ops)})"
    elif float_ops and integer_ops:
        mode = "mixed"
        detail = (
            f"partly integer: float ops ({counted_ops(float_ops)}) next to integer ops ({counted_ops(integer_ops)})"
        )
    elif float_ops and "float16" in dequantized_types:
        mode, detail = "float16", "float16 weights, dequantized to float32 (DEQUANTIZE); float32 compute"
    elif float_ops and dequantized_types & set(QUANTIZED_WEIGHT_TYPES):
        mode, detail = "dynamic", "int8 weights dequantized to float32 (DEQUANTIZE); float32 compute"
    elif float_ops:
        mode, detail = "float32", "float32 weights and compute"
    elif integer_ops:
        mode = "int16x8" if "int16" in activation_types else "int8"
        detail = f"full integer: {'/'.join(sorted(activation_types))} activations, integer weights"
    else:
        mode, detail = "none", "no float or quantized compute"
    return {"mode": mode, "detail": detail, "float_ops": dict(float_ops), "hybrid_ops": dict(hybrid_ops)}


def flatbuffer_ops(model: bytes) -> list[str]:
    """The op of every node in the main subgraph (custom ops by name), in execution order.

    Works for models LiteRT cannot run, such as Vela's output with its ethos-u custom op.
    """
    nodes: list[str] = parse_tflite(model)["nodes"]
    return nodes
