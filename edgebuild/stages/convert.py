"""Convert: the compressed Keras model to a ``.tflite`` in the target's precision.

Reads ``ctx.model`` (and ``ctx.qat_model`` when QAT ran). Writes ``ctx.tflite`` and
``ctx.conversion``. A 2:4-pruned model is stored in TFLite's sparse format, or dense
with a warning when LiteRT cannot load that format. For full-integer int8 it converts both the QAT model and the
post-training-quantized model, scores both on the validation split, and keeps the
better one: QAT is not always better than PTQ on small models (measured).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.errors import BuildError
from edgebuild.results import Candidate, Conversion, StageResult, from_json, to_json
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.tasks import describe, evaluate, headline
from edgebuild.tflite import convert_keras, io_details, make_interpreter

SELECTION_SAMPLES = 1000


def _score(model: bytes, x: np.ndarray, y: np.ndarray, task: str) -> float:
    """The choice's metric of a candidate on the validation split (for reconstruction: its MSE,
    which needs no anomaly labels)."""
    inputs, outputs = io_details(make_interpreter(model))
    # Reference kernels: the same results on every CPU, so every machine makes the same choice.
    result = LiteRTHost(reference=True).run(model, inputs[0].quantize(x))
    return evaluate(task, outputs[0].dequantize(result.outputs), y)[headline(task).name]


def run(ctx: BuildContext) -> StageResult:
    precision = ctx.target.precision
    mode = precision.mode
    task = ctx.recipe.task
    metric = headline(task)
    representative = ctx.x_fit
    candidates: list[tuple[str, Any]] = []
    if mode == "int8" and ctx.qat_model is not None:
        candidates.append(("qat", ctx.qat_model))
    candidates.append(("ptq" if mode != "float32" else "float32", ctx.model))

    # Score on the validation split; without one, on training samples (better than guessing).
    x_sel, y_sel = (ctx.x_val, ctx.y_val) if len(ctx.x_val) else (ctx.x_fit, ctx.y_fit)
    x_sel, y_sel = x_sel[:SELECTION_SAMPLES], y_sel[:SELECTION_SAMPLES]
    converted: list[tuple[str, bytes, float]] = []
    sparse = ctx.pruned_structure == "2:4"
    refused = ""
    # Candidates are converted without a SignatureDef (seconds faster each); the chosen one
    # is converted again with it, unless it was the only one.
    only = len(candidates) == 1
    for name, model in candidates:
        try:
            tflite = convert_keras(model, mode, precision.io, representative, sparse=sparse, signature=only)
        except BuildError as e:
            if name != "qat":
                raise
            # The converter can refuse what TF-MOT trained (a "same scale constraint" near a Concatenate).
            ctx.warn(f"the quantization-aware model cannot be converted ({e.message}); post-training quantization only")
            continue
        try:
            score = _score(tflite, x_sel, y_sel, task)
        except BuildError as e:
            if not sparse:
                raise
            # XNNPACK refuses the sparse encoding of some int8 layers (measured: FULLY_CONNECTED).
            refused = str(e).removeprefix("LiteRT cannot load the model: ")
            sparse = False  # the other candidate and the artifact are stored dense too
            tflite = convert_keras(model, mode, precision.io, representative, signature=only)
            score = _score(tflite, x_sel, y_sel, task)
        converted.append((name, tflite, score))
        if len(candidates) > 1:
            ctx.reporter.note(f"{name}: {len(tflite)} bytes, validation {describe({metric.name: score})}")
    # The best validation metric wins; on a tie, the smaller artifact.
    chosen, ctx.tflite, _ = min(converted, key=lambda c: (-c[2] if metric.higher_is_better else c[2], len(c[1])))
    if not only:
        model = dict(candidates)[chosen]
        ctx.tflite = convert_keras(model, mode, precision.io, representative, sparse=sparse, signature=True)
    candidates_scored = tuple(Candidate(n, len(t), a) for n, t, a in converted)
    ctx.conversion = Conversion(mode, precision.io, chosen, candidates_scored, refused or None)
    if refused:
        _warn_dense(ctx)
    names = ", ".join(n for n, _, _ in converted)
    return StageResult(f"{mode} .tflite {len(ctx.tflite)} bytes ({chosen} chosen of {names})")


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The target's precision."""
    return [ctx.target.precision.mode, ctx.target.precision.io]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The .tflite bytes and how they were chosen."""
    return {"tflite": np.frombuffer(ctx.tflite, dtype=np.uint8)}, {"conversion": to_json(ctx.conversion)}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put the cached .tflite back."""
    ctx.tflite = entry.arrays["tflite"].tobytes()
    ctx.conversion = from_json(Conversion, entry.meta["conversion"])
    if ctx.conversion.sparse_encoding_refused:
        _warn_dense(ctx)


def _warn_dense(ctx: BuildContext) -> None:
    assert ctx.conversion is not None
    ctx.warn(
        f"LiteRT cannot load the 2:4 sparse encoding of this {ctx.conversion.mode} model"
        f" ({ctx.conversion.sparse_encoding_refused}): it is stored dense, so its zeros save no bytes or time"
    )
