"""Baseline: train (or load) the float model, the reference every budget is measured against.

Reads ``ctx.float_model`` and the fit split. Writes ``ctx.teacher`` (trained),
``ctx.teacher_accuracy`` on the held-out test split, ``ctx.teacher_tflite_bytes`` (its
float32 .tflite), and ``ctx.model``, a copy the later stages compress when there is
no distillation.
"""

from __future__ import annotations

from edgebuild.context import BuildContext
from edgebuild.tf import keras
from edgebuild.tflite import convert_keras
from edgebuild.training import accuracy, fit_model


def run(ctx: BuildContext) -> str:
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
    )
    ctx.teacher = teacher
    ctx.teacher_accuracy = accuracy(teacher, ctx.data.x_test, ctx.data.y_test)
    ctx.teacher_tflite_bytes = len(convert_keras(teacher, "float32", "float32", None))
    ctx.stage_accuracy["baseline"] = ctx.teacher_accuracy
    if recipe.distill is None:
        ctx.model = keras().models.clone_model(teacher)
        ctx.model.set_weights(teacher.get_weights())
    trained = f"trained {recipe.train.epochs} epochs" if recipe.train.epochs else "loaded, not retrained"
    return (
        f"float model {teacher.count_params()} parameters, {trained}: test accuracy "
        f"{ctx.teacher_accuracy:.2%}, float32 .tflite {ctx.teacher_tflite_bytes} bytes"
    )
