"""Training inside the compression stages: distill, prune and QAT all fine-tune the same way."""

from __future__ import annotations

from typing import Any

from edgebuild.context import BuildContext
from edgebuild.training import fit_model


def fine_tune(
    ctx: BuildContext,
    model: Any,
    *,
    epochs: int,
    learning_rate: float,
    seed_offset: int,
    what: str,
    callbacks: tuple[Any, ...] = (),
) -> None:
    """Train ``model`` in place on the fit split, from the teacher's soft targets when the recipe distills.

    Reads ``ctx.x_fit``, ``ctx.y_fit``, ``ctx.soft_targets`` and the recipe's batch size and seed
    (plus ``seed_offset``, one per stage); writes the model's weights; shows a progress bar.
    """
    fit_model(
        model,
        ctx.x_fit,
        ctx.y_fit,
        epochs=epochs,
        batch_size=ctx.recipe.train.batch_size,
        learning_rate=learning_rate,
        seed=ctx.recipe.seed + seed_offset,
        reporter=ctx.reporter,
        what=what,
        teacher=ctx.soft_targets,
        callbacks=callbacks,
        task=ctx.recipe.task,
    )
