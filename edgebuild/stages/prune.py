"""Prune: meet the target's sparsity budget in the structure its runtime can cash in.

Reads ``ctx.model`` and ``ctx.sparsity`` (the target's, or channels with
--convert-sparsity). Writes ``ctx.model`` and ``ctx.pruning``. ``channel``: whole
filters and units are removed and a physically smaller model is rebuilt
(``edgebuild.surgery``), in steps with fine-tuning (from the teacher when distilling).
``unstructured`` and ``2:4``: TF-MOT's magnitude pruning, stripped afterwards (the
zeros are in the weights).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.costs import keras_costs
from edgebuild.results import Pruning, StageResult, from_json, skipped, to_json
from edgebuild.stages.tuning import fine_tune
from edgebuild.surgery import LayerChannels, producer_channels, prune_channels, reestimate_batch_norm
from edgebuild.tasks import describe
from edgebuild.tf import keras, tfmot
from edgebuild.training import weights_from, weights_of


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


def run(ctx: BuildContext) -> StageResult:
    plan, sparsity = ctx.recipe.prune, ctx.sparsity
    if plan is None:
        return skipped("the recipe has no [prune] table")
    if sparsity.target == 0:
        return skipped("the target asks for no sparsity")
    summary = _prune_channels(ctx) if sparsity.structure == "channel" else _prune_magnitude(ctx)
    metrics = ctx.score_stage("prune", ctx.model, "the pruned model")
    ctx.costs["prune"] = keras_costs(ctx.model, ctx.x_fit[0])
    return StageResult(f"{summary}, test {describe(metrics)}")


def _fine_tune(ctx: BuildContext, model: Any, epochs: int, what: str, callbacks: tuple[Any, ...] = ()) -> None:
    plan = ctx.recipe.prune
    assert plan is not None
    learning_rate = plan.learning_rate or ctx.recipe.train.learning_rate
    fine_tune(ctx, model, epochs=epochs, learning_rate=learning_rate, seed_offset=2, what=what, callbacks=callbacks)


def _prune_magnitude(ctx: BuildContext) -> str:
    """TF-MOT magnitude pruning: unstructured, or 2:4 (two of every four weights zero)."""
    plan, sparsity = ctx.recipe.prune, ctx.sparsity
    assert plan is not None
    mot = tfmot().sparsity.keras
    steps_per_epoch = math.ceil(len(ctx.x_fit) / ctx.recipe.train.batch_size)
    frequency = max(1, steps_per_epoch // 4)
    extra: dict[str, Any] = {}
    if sparsity.structure == "2:4":
        # The M-by-N pattern is fixed at 50 %; the schedule only says when masks update.
        schedule = mot.ConstantSparsity(0.5, begin_step=0, frequency=frequency)
        extra["sparsity_m_by_n"] = (2, 4)
    elif plan.schedule == "polynomial":
        # Reach the target one epoch before the end, so the last epoch recovers at it.
        end_step = max(frequency, steps_per_epoch * max(1, plan.epochs - 1))
        schedule = mot.PolynomialDecay(0.0, sparsity.target, begin_step=0, end_step=end_step, frequency=frequency)
    else:
        schedule = mot.ConstantSparsity(sparsity.target, begin_step=0, frequency=frequency)
    wrapped = mot.prune_low_magnitude(ctx.model, pruning_schedule=schedule, **extra)
    _fine_tune(ctx, wrapped, plan.epochs, "prune", (mot.UpdatePruningStep(),))
    ctx.model = mot.strip_pruning(wrapped)
    ctx.pruning = Pruning(sparsity.structure, keras_sparsity(ctx.model))
    what = "2:4 pattern" if sparsity.structure == "2:4" else f"{plan.schedule} schedule to {sparsity.target:.0%}"
    return f"{what}: kernel sparsity {ctx.pruning.measured:.1%}"


def channels_removed(layers: list[LayerChannels]) -> float:
    """The fraction of channels channel pruning removed, over the layers it shrank and those it had to
    skip (which count as unpruned); layers whose channels the model's output needs are left out."""
    counted = [layer for layer in layers if layer.after < layer.before or layer.skipped]
    return 1 - sum(layer.after for layer in counted) / max(1, sum(layer.before for layer in counted))


def _prune_channels(ctx: BuildContext) -> str:
    """Remove the least important channels in ``plan.steps`` steps, fine-tuning after each.

    After each surgery the BatchNorm statistics are re-estimated on the fit split before
    fine-tuning (measured on a small MNIST CNN, half its channels removed: test accuracy right
    after surgery 35-46 %, with the statistics re-estimated 67-80 %). ``measured`` is
    ``channels_removed``: the layers pruning had to skip count too.
    """
    plan, sparsity = ctx.recipe.prune, ctx.sparsity
    assert plan is not None
    original = producer_channels(ctx.model)
    params_before = int(ctx.model.count_params())
    epochs_per_step = max(1, math.ceil(plan.epochs / plan.steps))
    layers: list[LayerChannels] = []
    for step in range(1, plan.steps + 1):
        fraction = sparsity.target * step / plan.steps
        ctx.model, layers = prune_channels(
            ctx.model,
            fraction,
            criterion=plan.criterion,
            data=(ctx.x_fit[:1024], ctx.y_fit[:1024]),
            original_channels=original,
        )
        reestimate_batch_norm(ctx.model, ctx.x_fit)
        _fine_tune(ctx, ctx.model, epochs_per_step, f"channel prune {step}/{plan.steps} ({fraction:.0%})")
    removed = channels_removed(layers)
    params_after = int(ctx.model.count_params())
    ctx.pruning = Pruning("channel", removed, plan.criterion, params_before, params_after, tuple(layers))
    kept = sum(1 for layer in layers if layer.skipped)
    return (
        f"{plan.steps} steps of {plan.criterion} channel pruning: {removed:.1%} of the channels removed"
        + (f" ({kept} layers it cannot follow kept whole)" if kept else "")
        + f", parameters {params_before:,} -> {params_after:,}"
    )


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The pruning plan and the target's sparsity budget."""
    plan = ctx.recipe.prune
    return [dataclasses.asdict(plan) if plan else None, dataclasses.asdict(ctx.sparsity)]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The pruned model: its architecture (smaller after channel pruning), weights and pruning report."""
    return weights_of(ctx.model), {"model_json": ctx.model.to_json(), "pruning": to_json(ctx.pruning)}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put the cached pruning report back, and the pruned model when a later stage needs it."""
    ctx.pruning = from_json(Pruning, entry.meta["pruning"])
    if need_model:
        pruned = keras().models.model_from_json(entry.meta["model_json"])
        pruned.set_weights(weights_from(entry.arrays))
        ctx.model = pruned
