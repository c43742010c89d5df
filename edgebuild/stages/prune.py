"""Prune: TF-MOT magnitude pruning up to the target's sparsity, then stripped.

Reads ``ctx.model`` and the target's [sparsity] table. Writes ``ctx.model``, the
pruned model with the pruning wrappers removed (its zeros are in the weights).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.tf import keras, tfmot
from edgebuild.training import accuracy, fit_model, weights_from, weights_of


def keras_sparsity(model: object) -> float:
    """Fraction of zeros over the kernels of Conv and Dense layers of a Keras model."""
    zeros = total = 0
    for layer in model.layers:  # type: ignore[attr-defined]
        for weight in layer.weights:
            if "kernel" in weight.name:
                values = weight.numpy()
                zeros += int(np.count_nonzero(values == 0))
                total += values.size
    return zeros / total if total else 0.0


def run(ctx: BuildContext) -> str:
    plan, sparsity = ctx.recipe.prune, ctx.target.sparsity
    if plan is None:
        return "skipped: the recipe has no [prune] table"
    if sparsity.target == 0:
        return "skipped: the target asks for no sparsity"
    mot = tfmot().sparsity.keras
    batch_size = ctx.recipe.train.batch_size
    steps_per_epoch = math.ceil(len(ctx.x_fit) / batch_size)
    frequency = max(1, steps_per_epoch // 4)
    if plan.schedule == "polynomial":
        # Reach the target one epoch before the end, so the last epoch recovers at it.
        end_step = max(frequency, steps_per_epoch * max(1, plan.epochs - 1))
        schedule = mot.PolynomialDecay(0.0, sparsity.target, begin_step=0, end_step=end_step, frequency=frequency)
    else:
        schedule = mot.ConstantSparsity(sparsity.target, begin_step=0, frequency=frequency)
    wrapped = mot.prune_low_magnitude(ctx.model, pruning_schedule=schedule)
    fit_model(
        wrapped,
        ctx.x_fit,
        ctx.y_fit,
        epochs=plan.epochs,
        batch_size=batch_size,
        learning_rate=plan.learning_rate or ctx.recipe.train.learning_rate,
        seed=ctx.recipe.seed + 2,
        reporter=ctx.reporter,
        what="prune",
        teacher=ctx.soft_targets,
        callbacks=(mot.UpdatePruningStep(),),
    )
    ctx.model = mot.strip_pruning(wrapped)
    ctx.stage_accuracy["prune"] = accuracy(ctx.model, ctx.data.x_test, ctx.data.y_test)
    return (
        f"{plan.schedule} schedule to {sparsity.target:.0%}: kernel sparsity {keras_sparsity(ctx.model):.1%}, "
        f"test accuracy {ctx.stage_accuracy['prune']:.2%}"
    )


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The pruning plan and the target's sparsity budget."""
    plan = ctx.recipe.prune
    return [dataclasses.asdict(plan) if plan else None, dataclasses.asdict(ctx.target.sparsity)]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The pruned model's weights (its architecture is the input model's)."""
    return weights_of(ctx.model), {}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put the cached pruned weights into a copy of the model when a later stage needs it."""
    if need_model:
        pruned = keras().models.clone_model(ctx.model)
        pruned.set_weights(weights_from(entry.arrays))
        ctx.model = pruned
