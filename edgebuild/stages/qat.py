"""QAT: TF-MOT quantization-aware training, prune-preserving when the model was pruned.

Reads ``ctx.model``. Writes ``ctx.qat_model`` (a fake-quantized copy; ``ctx.model``
stays as it was so convert can also try post-training quantization).
"""

from __future__ import annotations

from edgebuild.context import BuildContext
from edgebuild.tf import tfmot
from edgebuild.training import accuracy, fit_model


def run(ctx: BuildContext) -> str:
    plan = ctx.recipe.qat
    if plan is None:
        return "skipped: the recipe has no [qat] table"
    if ctx.target.precision.mode != "int8":
        return f"skipped: the target's precision is {ctx.target.precision.mode}, QAT is for full-integer int8"
    mot = tfmot()
    annotated = mot.quantization.keras.quantize_annotate_model(ctx.model)
    pruned = "prune" in ctx.stage_accuracy
    scheme = mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme() if pruned else None
    if scheme is None:
        qat_model = mot.quantization.keras.quantize_apply(annotated)
    else:
        qat_model = mot.quantization.keras.quantize_apply(annotated, scheme)
    fit_model(
        qat_model,
        ctx.x_fit,
        ctx.y_fit,
        epochs=plan.epochs,
        batch_size=ctx.recipe.train.batch_size,
        learning_rate=plan.learning_rate or ctx.recipe.train.learning_rate / 10,
        seed=ctx.recipe.seed + 3,
        reporter=ctx.reporter,
        what="quantization-aware training",
        teacher=ctx.soft_targets,
    )
    ctx.qat_model = qat_model
    ctx.stage_accuracy["qat"] = accuracy(qat_model, ctx.data.x_test, ctx.data.y_test)
    kind = "prune-preserving " if pruned else ""
    return f"{kind}QAT {plan.epochs} epochs: fake-quantized test accuracy {ctx.stage_accuracy['qat']:.2%}"
