"""Distill: train a narrower student on the float teacher's temperature-scaled logits.

Reads ``ctx.teacher`` and the recipe's [distill] table. Writes ``ctx.model`` (the
trained student) and ``ctx.soft_targets``, which prune and QAT keep learning from.
"""

from __future__ import annotations

from edgebuild.context import BuildContext
from edgebuild.models import build_model
from edgebuild.training import Teacher, accuracy, fit_model, teacher_logits


def run(ctx: BuildContext) -> str:
    plan = ctx.recipe.distill
    if plan is None:
        return "skipped: the recipe has no [distill] table"
    architecture = ctx.recipe.student_architecture
    assert architecture is not None
    data = ctx.data
    ctx.soft_targets = Teacher(teacher_logits(ctx.teacher, ctx.x_fit), plan.temperature, plan.alpha)
    student = build_model(architecture, data.input_shape, data.num_classes, plan.student_width)
    fit_model(
        student,
        ctx.x_fit,
        ctx.y_fit,
        epochs=plan.epochs,
        batch_size=ctx.recipe.train.batch_size,
        learning_rate=plan.learning_rate or ctx.recipe.train.learning_rate,
        seed=ctx.recipe.seed + 1,
        reporter=ctx.reporter,
        what="distill student",
        teacher=ctx.soft_targets,
    )
    ctx.model = student
    ctx.stage_accuracy["distill"] = accuracy(student, data.x_test, data.y_test)
    return (
        f"student {architecture} width {plan.student_width:g}, {student.count_params()} parameters: "
        f"test accuracy {ctx.stage_accuracy['distill']:.2%} (teacher {ctx.teacher_accuracy:.2%})"
    )
