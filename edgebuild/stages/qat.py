"""QAT: TF-MOT quantization-aware training, prune-preserving when the model was pruned.

Reads ``ctx.model``. Writes ``ctx.qat_model`` (a fake-quantized copy; ``ctx.model``
stays as it was so convert can also try post-training quantization).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.results import StageResult, skipped
from edgebuild.stages.tuning import fine_tune
from edgebuild.tasks import describe
from edgebuild.tf import keras, tfmot
from edgebuild.training import weights_from, weights_of


def run(ctx: BuildContext) -> StageResult:
    plan = ctx.recipe.qat
    if plan is None:
        return skipped("the recipe has no [qat] table")
    if ctx.target.precision.mode != "int8":
        return skipped(f"the target's precision is {ctx.target.precision.mode}, QAT is for full-integer int8")
    qat_model = _fake_quantized(ctx)
    calibrate_ranges(qat_model, ctx.model, ctx.x_fit)
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
    metrics = ctx.stage_metrics["qat"] = ctx.score(qat_model, "the quantization-aware model")
    kind = "prune-preserving " if _has_zeros(ctx) else ""
    return StageResult(f"{kind}QAT {plan.epochs} epochs: fake-quantized test {describe(metrics)}")


CALIBRATION_SAMPLES = 512


def _has_zeros(ctx: BuildContext) -> bool:
    """Whether pruning left zeros in the weights that QAT must keep (not after channel removal)."""
    return ctx.pruned_structure in ("unstructured", "2:4")


def _fake_quantized(ctx: BuildContext) -> Any:
    """``ctx.model`` wrapped for QAT, with the prune-preserving scheme when it was pruned."""
    mot = tfmot()
    annotated = mot.quantization.keras.quantize_annotate_model(ctx.model)
    if _has_zeros(ctx):
        return mot.quantization.keras.quantize_apply(
            annotated, mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        )
    return mot.quantization.keras.quantize_apply(annotated)


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
    """The fake-quantized model's weights (quantizer ranges included)."""
    return weights_of(ctx.qat_model), {}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Rebuild the QAT model around ``ctx.model`` and load the cached weights, when convert needs it."""
    if need_model:
        ctx.qat_model = _fake_quantized(ctx)
        ctx.qat_model.set_weights(weights_from(entry.arrays))
