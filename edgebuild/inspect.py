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
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.errors import BuildError, ConfigError
from edgebuild.files import read_limited
from edgebuild.schema import Target, all_names, find_file, load_target
from edgebuild.support import NPU_CUSTOM_OPS, TFLM_CUSTOM_OPS, missing_ops
from edgebuild.tflite import counted_ops, parse_tflite

MAX_TFLITE_BYTES = 512 * 1024 * 1024
TFLITE_IDENTIFIER = b"TFL3"
TFLITE_SCHEMA_VERSION = 3  # every runtime loads only this schema version
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
        result["missing_ops"] = missing_ops(e.message)
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
                f"{counted_ops(precision['hybrid_ops'])}"
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
        reasons.append(f"float ops on an int8 target: {counted_ops(precision['float_ops'])}")
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
    parsed = parse_tflite(model, str(path))
    del parsed["nodes"]
    info.update(parsed)
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
