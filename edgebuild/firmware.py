"""Firmware-ready C for TFLM: the model array header and source, and the op resolver header.

Nothing a user typed reaches the generated files unescaped: identifiers are made
from names by ``c_identifier`` (valid, not a keyword, and different names never give
the same identifier), strings go through ``c_string``, and comments hold only
hashes and versions.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Any

from edgebuild import __version__
from edgebuild.errors import BuildError
from edgebuild.support import NPU_OP

C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if inline int
    long register restrict return short signed sizeof static struct switch typedef union unsigned void
    volatile while _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert
    _Thread_local alignas alignof and and_eq asm bitand bitor bool catch char8_t char16_t char32_t class
    compl concept consteval constexpr constinit const_cast co_await co_return co_yield decltype delete
    dynamic_cast explicit export false friend mutable namespace new noexcept not not_eq nullptr operator
    or or_eq private protected public reinterpret_cast requires static_assert static_cast template this
    thread_local throw true try typeid typename using virtual wchar_t xor xor_eq""".split()
)

# TFLM's MicroMutableOpResolver method for each builtin op, where it is not the op's
# name in CamelCase (CONV_2D -> AddConv2D).
_RESOLVER_EXCEPTIONS = {
    "BATCH_MATMUL": "AddBatchMatMul",
    "CUMSUM": "AddCumSum",
    NPU_OP: "AddEthosU",  # Vela's custom op
    "PADV2": "AddPadV2",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
}

C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t", "float32": "float"}


def c_identifier(name: str) -> str:
    """A valid, lower-case C/C++ identifier for any name.

    Characters outside [a-z0-9_] become ``_``; a leading digit, a keyword or a
    reserved form (``_X``, ``__``) is avoided; and when the name had to change, a
    short hash of the original is appended so that two different names never
    collide (``a-b`` and ``a_b`` differ).
    """
    clean = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40]
    if not clean or clean[0].isdigit() or clean in C_KEYWORDS:
        clean = f"m_{clean}".rstrip("_")
    if clean != name:
        clean = f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def c_string(text: str) -> str:
    """A C string literal for any text: printable ASCII kept, everything else as octal escapes."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 0x20 <= byte < 0x7F and char not in '"\\?':
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def c_float(value: float) -> str:
    """A float literal that C and C++ read back as the same value."""
    if not math.isfinite(value):
        raise ValueError(f"cannot write {value} as a C float literal")
    text = repr(float(value))
    return text + ("f" if any(c in text for c in ".e") else ".0f")


def resolver_method(op: str) -> str:
    """The MicroMutableOpResolver method that registers a builtin or custom op."""
    if op in _RESOLVER_EXCEPTIONS:
        return _RESOLVER_EXCEPTIONS[op]
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", op):
        raise BuildError(
            f"the model uses the custom op {c_string(op)}, which edgebuild cannot register in TFLM",
            hint="register it yourself with MicroMutableOpResolver::AddCustom, or avoid the op",
        )
    return "Add" + "".join(part if part[:1].isdigit() else part.capitalize() for part in op.split("_"))


@dataclass(frozen=True)
class FirmwareModel:
    """What the generated C describes: the model bytes and everything measured about it."""

    data: bytes
    prefix: str  # from c_identifier
    basename: str
    arena_bytes: int | None  # measured by TFLM; None for targets that do not run TFLM
    arena_margin: float
    section: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    labels: tuple[str, ...]
    ops: list[str]  # in order of first use
    task: str = "classification"
    trained_range: tuple[float, float] | None = None  # the float inputs the model was trained on: min, max
    anomaly_threshold: float | None = None  # reconstruction: the error above which a sample is anomalous

    @property
    def arena_with_margin(self) -> int | None:
        if self.arena_bytes is None:
            return None
        return math.ceil(self.arena_bytes * (1.0 + self.arena_margin) / 16.0) * 16

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def files(self) -> tuple[str, str, str]:
        """The header, source and op-resolver file names."""
        return f"{self.basename}_data.h", f"{self.basename}_data.cc", f"{self.basename}_ops.h"


def _banner(model: FirmwareModel) -> str:
    return f"// Generated by edgebuild {__version__}. Do not edit.\n// Model sha256: {model.sha256}\n"


def _tensor_macros(macro: str, kind: str, tensor: dict[str, Any]) -> list[str]:
    shape = [int(d) for d in tensor["shape"]]
    lines = [
        f"#define {macro}_{kind}_RANK {len(shape)}",
        f"#define {macro}_{kind}_SHAPE {{{', '.join(str(d) for d in shape)}}}",
        f"#define {macro}_{kind}_ELEMENTS {math.prod(shape)}",
        f"#define {macro}_{kind}_TYPE {C_TYPES.get(tensor['dtype'], 'unsigned char')}",
        f"#define {macro}_{kind}_DTYPE {c_string(tensor['dtype'])}",
    ]
    for axis, dim in enumerate(shape):
        lines.append(f"#define {macro}_{kind}_DIM{axis} {dim}")
    if tensor["dtype"] in ("int8", "uint8", "int16") and tensor["scale"] > 0:
        lines += [
            f"#define {macro}_{kind}_SCALE {c_float(tensor['scale'])}",
            f"#define {macro}_{kind}_ZERO_POINT {int(tensor['zero_point'])}",
        ]
    return lines


def _helpers(prefix: str, macro: str, model: FirmwareModel) -> list[str]:
    """Inline quantize / dequantize helpers for quantized inputs and outputs."""
    lines: list[str] = []
    given, found = model.inputs[0], model.outputs[0]
    if given["dtype"] in ("int8", "uint8") and given["scale"] > 0:
        low, high = (-128, 127) if given["dtype"] == "int8" else (0, 255)
        ctype = C_TYPES[given["dtype"]]
        lines += [
            f"/* A float input value as the model's {given['dtype']} input: round(x / scale) + zero point, clamped. */",
            f"static inline {ctype} {prefix}_quantize_input(float x) {{",
            f"  float scaled = x / {macro}_INPUT_SCALE;",
            f"  long q = (long)(scaled >= 0.0f ? scaled + 0.5f : scaled - 0.5f) + {macro}_INPUT_ZERO_POINT;",
            f"  if (q < {low}) q = {low};",
            f"  if (q > {high}) q = {high};",
            f"  return ({ctype})q;",
            "}",
            "",
        ]
    if found["dtype"] in ("int8", "uint8") and found["scale"] > 0:
        ctype = C_TYPES[found["dtype"]]
        lines += [
            "/* A quantized output value as the float it stands for: (q - zero point) * scale. */",
            f"static inline float {prefix}_dequantize_output({ctype} q) {{",
            f"  return (float)((int)q - {macro}_OUTPUT_ZERO_POINT) * {macro}_OUTPUT_SCALE;",
            "}",
            "",
        ]
    return lines


def _task_macros(macro: str, model: FirmwareModel) -> list[str]:
    """The class count, or the task and its contract: the trained input range and the anomaly threshold."""
    if model.task == "classification" and model.trained_range is None:
        return [f"#define {macro}_NUM_LABELS {len(model.labels)}", ""]
    lines = [f"#define {macro}_TASK {c_string(model.task)}"]
    if model.labels:
        lines.append(f"#define {macro}_NUM_LABELS {len(model.labels)}")
    if model.trained_range is not None:
        low, high = model.trained_range
        lines += [
            "/* The float input range the model was trained on: inputs far outside it give unreliable outputs. */",
            f"#define {macro}_INPUT_TRAINED_MIN {c_float(low)}",
            f"#define {macro}_INPUT_TRAINED_MAX {c_float(high)}",
        ]
    if model.anomaly_threshold is not None:
        lines += [
            "/* Anomalous when the mean squared difference of the dequantized output and the input is above this. */",
            f"#define {macro}_ANOMALY_THRESHOLD {c_float(model.anomaly_threshold)}",
        ]
    return [*lines, ""]


def _arena_macros(macro: str, model: FirmwareModel) -> list[str]:
    if model.arena_bytes is None:
        return []
    return [
        "/* The smallest tensor arena TFLM ran this model with (measured by edgebuild). */",
        f"#define {macro}_TENSOR_ARENA_MIN_BYTES {model.arena_bytes}",
        "/* The arena to allocate: the minimum plus the target's firmware.arena_margin",
        f"   ({model.arena_margin:.0%}), rounded up to 16 bytes. Other TFLM builds (CMSIS-NN",
        "   kernels, another version) may need a little more than the minimum. */",
        f"#define {macro}_TENSOR_ARENA_BYTES {model.arena_with_margin}",
    ]


def model_header(model: FirmwareModel) -> str:
    """``<basename>_data.h``: declarations, sizes, shapes, quantization, helpers; C and C++."""
    p, m = model.prefix, model.prefix.upper()
    guard = f"EDGEBUILD_{m}_{model.basename.upper().replace('-', '_')}_DATA_H_"
    lines = [
        _banner(model),
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define {m}_MODEL_BYTES {len(model.data)}",
        *_arena_macros(m, model),
        "",
        *_tensor_macros(m, "INPUT", model.inputs[0]),
        "",
        *_tensor_macros(m, "OUTPUT", model.outputs[0]),
        "",
        *_task_macros(m, model),
        f"extern const unsigned char g_{p}_model_data[];",
        f"extern const unsigned int g_{p}_model_data_len;",
        *([f"extern const char* const g_{p}_labels[{m}_NUM_LABELS];"] if model.labels else []),
        "",
        *_helpers(p, m, model),
        "#ifdef __cplusplus",
        "}",
        "#endif",
        "",
        f"#endif  /* {guard} */",
        "",
    ]
    return "\n".join(lines)


def model_source(model: FirmwareModel) -> str:
    """``<basename>_data.cc``: the aligned model array, its length and the labels; compiles as C11 and C++11."""
    p, m = model.prefix, model.prefix.upper()
    header = model.files[0]
    section = f' __attribute__((section("{model.section}")))' if model.section else ""
    rows = []
    for start in range(0, len(model.data), 12):
        rows.append("  " + ", ".join(f"0x{b:02x}" for b in model.data[start : start + 12]) + ",")
    labels = ",\n".join(f"  {c_string(label)}" for label in model.labels)
    return "\n".join(
        [
            _banner(model),
            f'#include "{header}"',
            "",
            "#ifndef __cplusplus",
            "#include <stdalign.h>",
            "#endif",
            "",
            "#ifdef __cplusplus",
            'extern "C" {',
            "#endif",
            "",
            "/* 16-byte aligned: TFLM reads the flatbuffer in place. */",
            f"alignas(16) const unsigned char g_{p}_model_data[{m}_MODEL_BYTES]{section} = {{",
            *rows,
            "};",
            f"const unsigned int g_{p}_model_data_len = {m}_MODEL_BYTES;",
            "",
            *([f"const char* const g_{p}_labels[{m}_NUM_LABELS] = {{", labels, "};", ""] if model.labels else []),
            "#ifdef __cplusplus",
            "}",
            "#endif",
            "",
        ]
    )


def ops_header(model: FirmwareModel) -> str:
    """``<basename>_ops.h``: a MicroMutableOpResolver sized for, and registering, exactly the model's ops (C++)."""
    p, m = model.prefix, model.prefix.upper()
    guard = f"EDGEBUILD_{m}_{model.basename.upper().replace('-', '_')}_OPS_H_"
    calls = [f"  if (resolver.{resolver_method(op)}() != kTfLiteOk) return kTfLiteError;" for op in model.ops]
    return "\n".join(
        [
            _banner(model),
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"',
            "",
            f"#define {m}_OP_COUNT {len(model.ops)}",
            "",
            f"typedef tflite::MicroMutableOpResolver<{m}_OP_COUNT> {p}_op_resolver_t;",
            "",
            f"/* Registers the {len(model.ops)} ops the model uses: {', '.join(model.ops)}. */",
            f"static inline TfLiteStatus {p}_register_ops({p}_op_resolver_t& resolver) {{",
            *calls,
            "  return kTfLiteOk;",
            "}",
            "",
            f"#endif  // {guard}",
            "",
        ]
    )
