"""Distill: train a narrower student on the float teacher's temperature-scaled logits.

Reads ``ctx.teacher_model`` and the recipe's [distill] table. Writes ``ctx.model`` (the
trained student) and ``ctx.soft_targets``, which prune and QAT keep learning from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.costs import keras_costs
from edgebuild.models import build_model
from edgebuild.results import StageResult, skipped
from edgebuild.stages.tuning import fine_tune
from edgebuild.tasks import describe
from edgebuild.training import SoftTargets, teacher_logits, weights_from, weights_of


def run(ctx: BuildContext) -> StageResult:
    plan = ctx.recipe.distill
    if plan is None:
        return skipped("the recipe has no [distill] table")
    architecture = ctx.recipe.student_architecture
    assert architecture is not None
    ctx.soft_targets = SoftTargets(
        teacher_logits(ctx.teacher_model, ctx.x_fit, ctx.recipe.task), plan.temperature, plan.alpha
    )
    student = _student(ctx)
    learning_rate = plan.learning_rate or ctx.recipe.train.learning_rate
    fine_tune(ctx, student, epochs=plan.epochs, learning_rate=learning_rate, seed_offset=1, what="distill student")
    ctx.model = student
    metrics = ctx.score_stage("distill", student, "the distilled student")
    ctx.costs["distill"] = keras_costs(student, ctx.x_fit[0])
    return StageResult(
        f"student {architecture} width {plan.student_width:g}, {student.count_params()} parameters: "
        f"test {describe(metrics)} (teacher {describe(ctx.teacher.metrics)})"
    )


def _student(ctx: BuildContext) -> Any:
    plan, architecture = ctx.recipe.distill, ctx.recipe.student_architecture
    assert plan is not None and architecture is not None
    data = ctx.data
    outputs = data.num_classes if data.task == "classification" else data.output_shape
    return build_model(architecture, data.input_shape, outputs, plan.student_width, data.task)


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The distillation settings."""
    return [dataclasses.asdict(ctx.recipe.distill) if ctx.recipe.distill else None]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The student's weights and the teacher's soft targets."""
    assert ctx.soft_targets is not None
    return {**weights_of(ctx.model), "soft_targets": ctx.soft_targets.logits}, {}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put a cached student back (weights and soft targets only when a later stage trains)."""
    plan = ctx.recipe.distill
    assert plan is not None
    if need_model:
        ctx.model = _student(ctx)
        ctx.model.set_weights(weights_from(entry.arrays))
        ctx.soft_targets = SoftTargets(entry.arrays["soft_targets"], plan.temperature, plan.alpha)
