"""Baseline: train (or load) the float model, the reference every budget is measured against.

Reads ``ctx.float_model`` and the fit split. Writes ``ctx.teacher_model`` (trained),
``ctx.teacher_facts`` (test accuracy, float32 .tflite bytes, parameters), its costs, and
``ctx.model``, a copy the later stages compress when there is no distillation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.costs import tflite_costs
from edgebuild.results import StageResult, Teacher, from_json, to_json
from edgebuild.tasks import describe
from edgebuild.tf import keras
from edgebuild.tflite import convert_keras
from edgebuild.training import fit_model, weights_from, weights_of


def run(ctx: BuildContext) -> StageResult:
    recipe = ctx.recipe
    teacher = ctx.float_model
    fit_model(
        teacher,
        ctx.x_fit,
        ctx.y_fit,
        epochs=recipe.train.epochs,
        batch_size=recipe.train.batch_size,
        learning_rate=recipe.train.learning_rate,
        seed=recipe.seed,
        reporter=ctx.reporter,
        what="train float model",
        task=recipe.task,
    )
    ctx.teacher_model = teacher
    metrics = ctx.score_stage("baseline", teacher, "the float model")
    teacher_tflite = convert_keras(teacher, "float32", "float32", None)
    ctx.costs["baseline"] = tflite_costs(teacher_tflite, ctx.x_fit[0])
    ctx.teacher_facts = Teacher(metrics.get("accuracy"), len(teacher_tflite), int(teacher.count_params()), metrics)
    _copy_for_compression(ctx)
    trained = f"trained {recipe.train.epochs} epochs" if recipe.train.epochs else "loaded, not retrained"
    return StageResult(
        f"float model {ctx.teacher.parameters} parameters, {trained}: test {describe(metrics)}, "
        f"float32 .tflite {ctx.teacher.tflite_bytes} bytes"
    )


def _copy_for_compression(ctx: BuildContext) -> None:
    if ctx.recipe.distill is None:
        ctx.model = keras().models.clone_model(ctx.teacher_model)
        ctx.model.set_weights(ctx.teacher_model.get_weights())


def cache_parts(ctx: BuildContext) -> list[Any]:
    """What the trained teacher depends on beyond the inputs: the training settings."""
    return [dataclasses.asdict(ctx.recipe.train)]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The teacher's weights and measurements."""
    return weights_of(ctx.teacher_model), {"teacher": to_json(ctx.teacher)}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put a cached teacher back: its measurements, and its weights when a later stage trains."""
    ctx.teacher_facts = from_json(Teacher, entry.meta["teacher"])
    if need_model:
        ctx.float_model.set_weights(weights_from(entry.arrays))
        ctx.teacher_model = ctx.float_model
        _copy_for_compression(ctx)
