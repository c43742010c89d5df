"""``edgebuild inspect FILE.tflite``: what is in any ``.tflite`` file and which targets can run it.

The file is checked before it is parsed: its size (at most ``MAX_TFLITE_BYTES``), its
``TFL3`` identifier, and LiteRT's interpreter, which runs TFLite's flatbuffer verifier.
Only then is the flatbuffer read with the schema that ships with ai-edge-litert
(``ai_edge_litert.schema_py_generated``) for ops, tensors, quantization, parameters and
MACs. TFLM runs the model in a child process to find the tensor arena it needs, and
every target profile (shipped and the project's ``targets/*.toml``) is checked against
the result. No TensorFlow import: this stays as fast as loading the model.
"""

from __future__ import annotations

import faulthandler
import math
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.errors import BuildError, ConfigError
from edgebuild.files import read_limited
from edgebuild.schema import Target, all_names, find_file, load_target
from edgebuild.tflite import enum_names

MAX_TFLITE_BYTES = 512 * 1024 * 1024
TFLITE_IDENTIFIER = b"TFL3"
TFLITE_SCHEMA_VERSION = 3  # every runtime loads only this schema version
FLOAT_TYPES = ("float32", "float16", "float64", "bfloat16")
QUANTIZED_WEIGHT_TYPES = ("int8", "uint8", "int4", "int2")
INTEGER_ACTIVATION_TYPES = ("int8", "uint8", "int16")
EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")  # convert at the model's edges; neither float nor integer compute
# Custom ops the host build of TFLM registers (its AllOpsResolver); any other custom op is missing.
TFLM_CUSTOM_OPS = ("TFLite_Detection_PostProcess",)
# Custom ops a target's TFLM has when the profile has an [npu] table (TFLM built with the Ethos-U driver).
NPU_CUSTOM_OPS = ("ethos-u",)
# Messages with which LiteRT says the bytes are not a model at all (as opposed to ops it cannot run).
_NOT_A_MODEL = ("not a valid flatbuffer", "model identifier", "must be specified", "could not open")


# ---------------------------------------------------------------- reading and checking the file


def read_tflite(path: Path) -> bytes:
    """Read a ``.tflite`` file's bytes after checking that it can be one.

    Reads ``path``; returns its bytes. Raises ConfigError naming the file when it is
    missing, a folder, unreadable, empty, over ``MAX_TFLITE_BYTES``, or lacks the
    ``TFL3`` flatbuffer identifier.
    """
    data = read_limited(path, "", max_bytes=MAX_TFLITE_BYTES, what=".tflite file")
    if not data:
        raise ConfigError(f"{path}: file is empty (0 bytes)", hint="was the conversion interrupted?")
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ConfigError(
            f"{path}: not a .tflite model (no {TFLITE_IDENTIFIER.decode()} flatbuffer identifier at byte 4)",
            hint="is this the right file?",
        )
    return data


def _litert_check(path: Path, model: bytes) -> str | None:
    """Load ``model`` in LiteRT (which verifies the flatbuffer first).

    Returns None when LiteRT loads it, or LiteRT's reason when the flatbuffer is sound
    but LiteRT cannot run it (an unresolved custom op, say). Raises ConfigError naming
    ``path`` when the verifier rejects the file (truncated or corrupt).
    """
    error = _load_in_child(model)
    if error is None:
        return None
    if error.startswith("crashed"):
        raise ConfigError(
            f"{path}: corrupt .tflite ({len(model):,} bytes): LiteRT {error} while loading it",
            hint="convert or download the model again",
        )
    if any(words in error.lower() for words in _NOT_A_MODEL):
        raise ConfigError(
            f"{path}: corrupt or truncated .tflite ({len(model):,} bytes): TFLite's flatbuffer verifier rejects it",
            hint="convert or download the model again",
        )
    words = " ".join(error.split()).removeprefix("LiteRT cannot load the model: ")
    return re.sub(r" ?See instructions: \S+", "", words)


def _load_in_child(model: bytes) -> str | None:
    """Load ``model`` in LiteRT in a forked child: a file can pass the flatbuffer verifier and
    still crash LiteRT's interpreter builder (found by the fuzzer), which must not take
    edgebuild down. Returns None when it loads, LiteRT's error, or "crashed (SIGNAL)"."""
    from edgebuild.tflite import make_interpreter

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running any of the parent's cleanup
        os.close(read_end)
        faulthandler.disable()  # a crash here is an answer for the parent, not a dump on the terminal
        message = b""
        try:
            make_interpreter(model)
        except BuildError as e:
            message = e.message.encode("utf-8", "replace") or b"LiteRT refused it"
        except BaseException as e:  # anything else is still an answer, not a crash
            message = f"{type(e).__name__}: {e}".encode("utf-8", "replace")
        os.write(write_end, message[:4000])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    return message.decode("utf-8", "replace") or None


# ---------------------------------------------------------------- parsing the flatbuffer


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


def parse_tflite(path: Path, model: bytes) -> dict[str, Any]:
    """Read ops, tensors, parameters, MACs and precision from verified ``.tflite`` bytes.

    Returns the parts of ``inspect_tflite``'s dict that come from the flatbuffer alone.
    Raises ConfigError naming ``path`` when an index in the file points nowhere.
    """
    from ai_edge_litert import schema_py_generated as schema

    builtin = enum_names(schema.BuiltinOperator)
    dtypes = {code: name.lower() for code, name in enum_names(schema.TensorType).items()}

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: corrupt .tflite: {what}", hint="convert or download the model again")

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
        mode, detail = "dynamic", f"hybrid dynamic range: int8 weights feeding float ops ({_counted(hybrid_ops)})"
    elif float_ops and integer_ops:
        mode = "mixed"
        detail = f"partly integer: float ops ({_counted(float_ops)}) next to integer ops ({_counted(integer_ops)})"
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


def _counted(ops: dict[str, int], limit: int = 6) -> str:
    """``CONV_2D ×5, SOFTMAX`` for an op → count dict, at most ``limit`` ops then how many more."""
    named = [f"{op} ×{n}" if n > 1 else op for op, n in ops.items()]
    more = f" and {len(named) - limit} more" if len(named) > limit else ""
    return ", ".join(named[:limit]) + more


# ---------------------------------------------------------------- TFLM and targets


def _tflm_check(model: bytes, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the model in TFLM (child process) with a zero input to find its smallest arena.

    Returns ``{"ok", "arena_bytes", "error", "missing_ops"}``: ``missing_ops`` are the
    builtin ops TFLM says it lacks. TFLM's failures are reported, never raised.
    """
    from edgebuild.runners.tflm_host import find_min_arena

    result: dict[str, Any] = {"ok": False, "arena_bytes": None, "error": None, "missing_ops": []}
    if not inputs:
        result["error"] = "the model has no inputs"
        return result
    shape = [max(d, 1) for d in inputs[0]["shape"][1:]]
    try:
        dtype = np.dtype(inputs[0]["dtype"])
    except TypeError:
        result["error"] = f"edgebuild cannot make a {inputs[0]['dtype']} input for TFLM"
        return result
    if math.prod(shape) * dtype.itemsize > MAX_TFLITE_BYTES:
        result["error"] = f"the input {shape} is too large to run"
        return result
    sample = np.zeros(shape, dtype=dtype)
    try:
        result["arena_bytes"] = find_min_arena(model, sample)
        result["ok"] = True
    except BuildError as e:
        words = " ".join(e.message.split()).removeprefix("TFLM cannot run the model: ")
        parts = [part.strip() for part in words.split("; ")]
        result["error"] = "; ".join(dict.fromkeys(part for part in parts if part))
        result["missing_ops"] = sorted(set(re.findall(r"Didn't find op for builtin opcode '(\w+)'", e.message)))
    except subprocess.TimeoutExpired:
        result["error"] = "TFLM did not finish within the time limit"
    return result


def _target_reasons(target: Target, info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Why ``target`` cannot run the inspected model (empty when it can), and notes that do not stop it.

    Reads the target profile and ``info`` as ``inspect_tflite`` builds it; returns ``(reasons, notes)``.
    """
    reasons: list[str] = []
    notes: list[str] = []
    precision = info["precision"]
    if target.runtime == "litert":
        if info["litert"]["error"]:
            reasons.append(f"LiteRT cannot load it: {info['litert']['error']}")
    else:
        tflm = info["tflm"]
        explained = False
        if precision["hybrid_ops"]:
            reasons.append(
                f"hybrid ops (int8 weights, float activations), which TFLM has no kernels for: "
                f"{_counted(precision['hybrid_ops'])}"
            )
            explained = True
        if precision["mode"] == "float16":
            reasons.append("float16 weights, which TFLM cannot dequantize (it has no float16 kernels)")
            explained = True
        if tflm["missing_ops"]:
            reasons.append(f"ops TFLM lacks: {', '.join(tflm['missing_ops'])}")
            explained = True
        has_npu = getattr(target, "npu", None) is not None
        device_custom = TFLM_CUSTOM_OPS + (NPU_CUSTOM_OPS if has_npu else ())
        lacking = [op for op in info["custom_ops"] if op not in device_custom]
        if lacking:
            npu_ops = [op for op in lacking if op in NPU_CUSTOM_OPS]
            why = f" ({', '.join(npu_ops)} is Vela's op for an Ethos-U NPU and this target has no [npu] table)"
            reasons.append(f"custom ops TFLM lacks: {', '.join(lacking)}{why if npu_ops else ''}")
            explained = True
        elif tflm["error"] and any(op in NPU_CUSTOM_OPS for op in info["custom_ops"]):
            notes.append("arena not measured: the TFLM on this machine has no Ethos-U driver")
            explained = True
        if tflm["error"] and not explained:
            reasons.append(f"TFLM cannot run it: {tflm['error']}")
        arena, budget = tflm["arena_bytes"], target.budgets.arena_bytes
        if arena is not None and budget is not None and arena > budget:
            reasons.append(f"arena {arena:,} B is over the budget of {budget:,} B")
    if target.precision.mode == "int8" and precision["float_ops"]:
        reasons.append(f"float ops on an int8 target: {_counted(precision['float_ops'])}")
    if target.precision.mode == "int8" and info["inputs"] and info["inputs"][0]["dtype"] != target.precision.io:
        notes.append(f"input is {info['inputs'][0]['dtype']}, the profile's io is {target.precision.io}")
    budget = target.budgets.model_bytes
    if budget is not None and info["bytes"] > budget:
        reasons.append(f"model {info['bytes']:,} B is over the budget of {budget:,} B")
    return reasons, notes


def inspect_tflite(path: Path, project: Path, *, tflm: bool = True) -> dict[str, Any]:
    """Inspect any ``.tflite`` file and check it against every target profile.

    Reads ``path`` (after checking its size, identifier and LiteRT's flatbuffer verifier)
    and the target profiles: shipped ones and ``project/targets/*.toml``. Runs LiteRT and,
    in a child process, TFLM. Returns a JSON-able dict: ``file``, ``bytes``, ``ops``
    (name → count; custom ops by their custom name), ``tensors``, ``inputs``/``outputs``
    (name, shape, dtype, quantization), ``parameters`` (elements of constant float or
    quantized tensors), ``weight_bytes``, ``macs`` and ``macs_by_op``, ``precision``,
    ``litert`` and ``tflm`` (``arena_bytes`` or TFLM's reason), and ``targets`` (per
    profile: ``ok`` and ``reasons``). ``tflm=False`` leaves TFLM out (the fuzzer's fast path).
    Raises ConfigError (one line, naming the file) when
    the file is missing, unreadable, empty, too large, truncated or corrupt, or when a
    project target profile is invalid.
    """
    model = read_tflite(path)
    litert_error = _litert_check(path, model)
    info: dict[str, Any] = {"file": str(path), "bytes": len(model)}
    info.update(parse_tflite(path, model))
    if info["schema_version"] != TFLITE_SCHEMA_VERSION or not info["subgraphs"] or not info["inputs"]:
        raise ConfigError(
            f"{path}: not a usable .tflite model (schema version {info['schema_version']}, "
            f"{info['subgraphs']} subgraphs, {len(info['inputs'])} inputs): no runtime can load it",
            hint="convert or download the model again",
        )
    info["litert"] = {"ok": litert_error is None, "error": litert_error}
    if tflm:
        info["tflm"] = _tflm_check(model, info["inputs"])
    else:
        info["tflm"] = {"ok": None, "arena_bytes": None, "error": None, "missing_ops": []}
    info["targets"] = []
    for name in all_names("targets", project):
        target = load_target(find_file("targets", name, project))
        reasons, notes = _target_reasons(target, info)
        info["targets"].append(
            {
                "name": target.name,
                "runtime": target.runtime,
                "precision": target.precision.mode,
                "source": target.source,
                "ok": not reasons,
                "reasons": reasons,
                "notes": notes,
            }
        )
    return info


# ---------------------------------------------------------------- for people


def _describe_quantization(q: dict[str, Any] | None) -> str:
    if q is None:
        return "not quantized"
    if q["kind"] == "per-tensor":
        return f"scale {q['scale']:.6g}, zero point {q['zero_point']}"
    scales = q["scale"]
    return f"per-channel on axis {q['axis']} ({q['channels']} channels, scale {min(scales):.3g}..{max(scales):.3g})"


def format_inspection(info: dict[str, Any]) -> str:
    """Human text for a dict from ``inspect_tflite``: model, inputs/outputs, ops, TFLM, targets.

    Reads only ``info``; returns lines joined by newlines (no trailing newline).
    """
    precision = info["precision"]
    lines = [
        f"{info['file']}: {info['bytes']:,} B, schema v{info['schema_version']}, "
        f"{info['subgraphs']} subgraph{'s' if info['subgraphs'] != 1 else ''}, "
        f"{info['tensors']['count']} tensors ({info['tensors']['constant']} constant)",
        f"precision: {precision['mode']} ({precision['detail']})",
        f"parameters: {info['parameters']:,} ({info['weight_bytes']:,} B of weights, "
        f"{info['constant_bytes']:,} B of constants in all); "
        f"MACs per inference: {info['macs']:,}",
    ]
    for key in ("inputs", "outputs"):
        lines.append(f"{key}:")
        for t in info[key]:
            shape = str(t["shape"])
            if t["shape_signature"] and t["shape_signature"] != t["shape"]:
                shape += f" (signature {t['shape_signature']})"
            lines.append(f"  {t['name']}  {shape}  {t['dtype']}  {_describe_quantization(t['quantization'])}")
    lines.append(f"ops ({info['op_count']} node{'s' if info['op_count'] != 1 else ''}):")
    width = max((len(op) for op in info["ops"]), default=0)
    for op, count in info["ops"].items():
        macs = info["macs_by_op"].get(op, 0)
        lines.append(f"  {op:<{width}}  ×{count:<4}" + (f" {macs:,} MACs" if macs else "").rstrip())
    litert, tflm = info["litert"], info["tflm"]
    lines.append(f"LiteRT: {'loads it' if litert['ok'] else 'cannot load it: ' + litert['error']}")
    if tflm["ok"]:
        lines.append(f"TFLM: runs it with a tensor arena of {tflm['arena_bytes']:,} B")
    else:
        lines.append(f"TFLM: cannot run it: {tflm['error']}")
    lines.append("targets:")
    width = max((len(t["name"]) for t in info["targets"]), default=0)
    for t in info["targets"]:
        verdict = "ok" if t["ok"] else "no: " + "; ".join(t["reasons"])
        if t["notes"]:
            verdict += f" (note: {'; '.join(t['notes'])})"
        lines.append(f"  {t['name']:<{width}}  {t['runtime']:<6}  {verdict}")
    return "\n".join(line.rstrip() for line in lines)
