"""QAT: TF-MOT quantization-aware training, prune-preserving when the model was pruned.

Reads ``ctx.model``. Writes ``ctx.qat_model`` (a fake-quantized copy; ``ctx.model``
stays as it was so convert can also try post-training quantization) and ``ctx.qat_layers``
(what was done with each layer: ``edgebuild.layers``). A model TF-MOT cannot take, or whose
fake-quantized copy the converter refuses, is left to post-training quantization with a
warning: ``ctx.qat_model`` stays None and ``ctx.qat_refused`` says why.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.errors import BuildError
from edgebuild.layers import plan_qat, quantize_aware
from edgebuild.results import QatLayer, StageResult, from_json, skipped, to_json
from edgebuild.stages.tuning import fine_tune
from edgebuild.tasks import describe
from edgebuild.tf import keras
from edgebuild.tflite import convert_keras, make_interpreter
from edgebuild.training import weights_from, weights_of


def run(ctx: BuildContext) -> StageResult:
    plan = ctx.recipe.qat
    if plan is None:
        return skipped("the recipe has no [qat] table")
    if ctx.target.precision.mode != "int8":
        return skipped(f"the target's precision is {ctx.target.precision.mode}, QAT is for full-integer int8")
    ctx.qat_layers = plan_qat(ctx.model)
    try:
        qat_model = _fake_quantized(ctx)
        calibrate_ranges(qat_model, ctx.model, ctx.x_fit)
        if any(entry.action != "tf-mot" for entry in ctx.qat_layers):
            # TF-MOT's own layers convert. With edgebuild's configs or float layers the converter can
            # still refuse (a Concatenate fed by a float layer: "same scale constraint"), so try once.
            make_interpreter(convert_keras(qat_model, "int8", ctx.target.precision.io, ctx.x_fit), reference=True)
    except (ValueError, RuntimeError, TypeError, BuildError) as e:
        ctx.qat_layers, ctx.qat_refused = (), _first_line(e)
        _warn_refused(ctx)
        return StageResult("QAT not possible: post-training quantization only (see the warnings)")
    learning_rate = plan.learning_rate or ctx.recipe.train.learning_rate / 10
    fine_tune(
        ctx,
        qat_model,
        epochs=plan.epochs,
        learning_rate=learning_rate,
        seed_offset=3,
        what="quantization-aware training",
    )
    ctx.qat_model = qat_model
    metrics = ctx.score_stage("qat", qat_model, "the quantization-aware model")
    kind = "prune-preserving " if _has_zeros(ctx) else ""
    return StageResult(f"{kind}QAT {plan.epochs} epochs: fake-quantized test {describe(metrics)}")


CALIBRATION_SAMPLES = 512


def _has_zeros(ctx: BuildContext) -> bool:
    """Whether pruning left zeros in the weights that QAT must keep (not after channel removal)."""
    return ctx.pruned_structure in ("unstructured", "2:4")


def _fake_quantized(ctx: BuildContext) -> Any:
    """``ctx.model`` wrapped for QAT as ``plan_qat`` plans it, prune-preserving when it was pruned.

    Raises what TF-MOT raises when it cannot take the model.
    """
    return quantize_aware(ctx.model, plan_qat(ctx.model), prune_preserving=_has_zeros(ctx))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _warn_refused(ctx: BuildContext) -> None:
    ctx.warn(
        f"quantization-aware training cannot take this model ({ctx.qat_refused}); it is quantized after "
        "training only (post-training quantization)"
    )


def calibrate_ranges(qat_model: Any, float_model: Any, x: np.ndarray) -> None:
    """Start the activation quantizers at the ranges the float model shows on ``x``.

    TF-MOT starts them at [-6, 6] and moves them by an exponential average with decay
    0.999, so a few hundred steps of fine-tuning leave them near where they started and
    waste most of the int8 range; measured here, that made QAT worse than plain
    post-training quantization. Writes the quantizers' min/max variables.
    """
    k = keras()
    # A fresh copy: after strip_pruning the layers also belong to the pruning wrapper's
    # graph, and a probe over their first outputs would be disconnected from the inputs.
    clone = k.models.clone_model(float_model)
    clone.set_weights(float_model.get_weights())
    names = [layer.name for layer in clone.layers]
    probe = k.Model(clone.inputs, [clone.get_layer(name).output for name in names])
    outputs = probe.predict(x[:CALIBRATION_SAMPLES], verbose=0)
    ranges = {
        name: (min(0.0, float(out.min())), max(0.0, float(out.max())))
        for name, out in zip(names, outputs if isinstance(outputs, list) else [outputs], strict=True)
    }
    ranges[""] = (min(0.0, float(x.min())), max(0.0, float(x.max())))  # the model's input
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", None)
        for variable in layer.non_trainable_variables:
            short = variable.name.split("/")[-1].split(":")[0]
            kind = next((end for end in ("_min", "_max") if short.endswith(end)), None)
            if kind is None or short.startswith("kernel") or short.startswith("depthwise_kernel"):
                continue  # weight quantizers follow the weights by themselves
            source = "" if inner is None else inner.name
            if source in ranges:
                variable.assign(ranges[source][0 if kind == "_min" else 1])


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The QAT plan and whether the target is full-integer."""
    plan = ctx.recipe.qat
    return [dataclasses.asdict(plan) if plan else None, ctx.target.precision.mode]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The fake-quantized model's weights (quantizer ranges included), what was done with each layer,
    and why QAT could not take the model when it could not."""
    meta = {"qat_layers": to_json(ctx.qat_layers), "refused": ctx.qat_refused}
    return ({} if ctx.qat_model is None else weights_of(ctx.qat_model)), meta


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put back what was done with each layer (and warn again when QAT could not take the model);
    rebuild the QAT model around ``ctx.model`` and load the cached weights, when convert needs it."""
    ctx.qat_layers = tuple(from_json(QatLayer, item) for item in entry.meta.get("qat_layers", []))
    ctx.qat_refused = entry.meta.get("refused")
    if ctx.qat_refused is not None:
        _warn_refused(ctx)
        return
    if need_model:
        ctx.qat_model = _fake_quantized(ctx)
        ctx.qat_model.set_weights(weights_from(entry.arrays))
