"""Preflight: check the recipe against the target before any training.

Reads the recipe, the target and the dataset. Writes ``ctx.dataset``, ``ctx.sparsity``
(what pruning aims for), the fit and validation splits, and ``ctx.float_model`` (built
or loaded, untrained). Raises
ConfigError for a dataset or model that does not fit the recipe or a microcontroller
target whose compiler refuses its cpu or arch (``toolchain.check_machine``), and BudgetError
for a budget the planned model can never meet, however well it trains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from edgebuild.context import BuildContext
from edgebuild.datasets import Dataset, load_dataset, split_validation
from edgebuild.errors import BudgetError, BuildError, ConfigError
from edgebuild.layers import plan_qat, unhandled_layers
from edgebuild.models import build_model, load_model
from edgebuild.results import StageResult
from edgebuild.runners.tflm_host import check_loads
from edgebuild.support import SPARSITY_WHY_NOT, missing_ops
from edgebuild.surgery import skipped_producers
from edgebuild.tf import seed_everything
from edgebuild.tflite import convert_keras, make_interpreter
from edgebuild.toolchain import check_machine

BYTES_PER_WEIGHT = {"int8": 1, "dynamic": 1, "float16": 2, "float32": 4}
BYTES_PER_ACTIVATION = {"int8": 1, "dynamic": 4, "float16": 4, "float32": 4}


def _shape(tensor_shape: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor_shape)


def check_model_fits_data(model: Any, data: Dataset, where: str) -> None:
    """The model takes the dataset's samples and outputs what the task needs (one output per class,
    the regression target's shape, or the input's shape); ConfigError if not."""
    input_shape = data.input_shape
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(
            f"{where}: the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs",
            hint="edgebuild builds single-input, single-output models",
        )
    model_in = _shape(model.inputs[0].shape)[1:]
    if None in model_in:
        raise ConfigError(
            f"{where}: the model takes inputs of shape {model_in}, with a dimension left open; edgebuild "
            "converts models with fixed shapes (TFLM plans its memory ahead)",
            hint=f"save the model with a fixed input shape, e.g. Input(shape={input_shape})",
        )
    mismatch = len(model_in) != len(input_shape) or any(
        m is not None and m != d for m, d in zip(model_in, input_shape, strict=True)
    )
    if mismatch:
        raise ConfigError(
            f"{where}: the model takes inputs of shape {model_in} but the dataset's samples are {input_shape}",
            hint="use a dataset that matches the model, or a model built for this data",
        )
    model_out = _shape(model.outputs[0].shape)[1:]
    expected = data.output_shape
    if model_out != expected:
        needs = {
            "classification": f"the dataset has {data.num_classes} classes",
            "regression": f"the regression targets have shape {expected}",
            "reconstruction": f"a reconstruction model outputs its input's shape {expected}",
        }[data.task]
        raise ConfigError(
            f"{where}: the model outputs shape {model_out} but {needs}",
            hint=f"the model's last layer must output shape {expected} (task = {data.task!r})",
        )


# Inputs larger than this in magnitude train badly without a normalizing first layer.
INPUT_SCALE_WARNING = 100.0
NORMALIZING_LAYERS = ("Rescaling", "Normalization", "BatchNormalization", "LayerNormalization")


def warn_input_scale(ctx: BuildContext, model: Any) -> None:
    """Warn when the training inputs lie far outside about [-1, 1] and the model does not rescale them."""
    low, high = float(ctx.data.x_train.min()), float(ctx.data.x_train.max())
    if max(abs(low), abs(high)) <= INPUT_SCALE_WARNING:
        return
    if any(type(layer).__name__ in NORMALIZING_LAYERS for layer in model.layers[:3]):
        return
    ctx.warn(
        f"the training inputs range from {low:g} to {high:g}; models train best on inputs scaled to about "
        "[-1, 1] or [0, 1]: scale the data (e.g. divide images by 255) or start the model with a Rescaling layer"
    )


def warn_test_range(ctx: BuildContext) -> None:
    """Warn when the test inputs reach far outside the range the model is trained on (a tenth of it):
    the scores would then measure data the model never saw, as a device fed differently scaled data would."""
    data = ctx.data
    low, high = float(data.x_train.min()), float(data.x_train.max())
    margin = 0.1 * max(high - low, 1e-12)
    test_low, test_high = float(data.x_test.min()), float(data.x_test.max())
    if test_low < low - margin or test_high > high + margin:
        ctx.warn(
            f"the test inputs range from {test_low:g} to {test_high:g}, far outside the training inputs' "
            f"{low:g} to {high:g}: were both split's inputs scaled the same way?"
        )


def _outputs(data: Dataset) -> int | tuple[int, ...]:
    """What ``build_model`` needs to know of the outputs: the classes, or the output's shape."""
    return data.num_classes if data.task == "classification" else data.output_shape


def _largest_activation_pair(model: Any) -> int:
    """Elements of the largest input + output pair of any layer: a lower bound on live activations."""
    largest = 0
    for layer in model.layers:
        try:
            ins, outs = layer.input_shape, layer.output_shape
        except (AttributeError, RuntimeError):
            continue
        ins_list = ins if isinstance(ins, list) else [ins]
        outs_list = outs if isinstance(outs, list) else [outs]
        elements = sum(math.prod(d for d in s[1:] if d) for s in ins_list + outs_list if s)
        largest = max(largest, elements)
    return largest


def check_tflm_ops(model: Any, where: str) -> None:
    """Every op of the model, converted as it stands, has a TFLM kernel; ConfigError naming op and layer if not.

    Asks the real TFLM interpreter (kernels for int8 are checked again on the artifact).
    """
    tflite = convert_keras(model, "float32", "float32", None)
    sample = np.zeros(tuple(int(d) for d in model.inputs[0].shape[1:]), dtype=np.float32)
    try:
        check_loads(tflite, sample)
    except BuildError as e:
        missing = missing_ops(e.message)
        if not missing:
            raise
        op = missing[0]
        interpreter = make_interpreter(tflite, reference=True)
        names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
        layer = next(
            (names[int(o["outputs"][0])] for o in interpreter._get_ops_details() if o["op_name"] == op), "unknown"
        )
        raise ConfigError(
            f"{where}: TFLM has no kernel for op {op}, which the model uses (from {layer})",
            hint="replace that layer, or build for a LiteRT target",
        ) from None


def warn_unhandled_layers(ctx: BuildContext, model: Any, where: str) -> None:
    """Warn about the layers of the model to deploy that QAT or channel pruning cannot handle by
    themselves, and what edgebuild does with them (``edgebuild.layers``), when the build runs them.

    Raises ConfigError when channel pruning is planned but no layer of the model can lose channels.
    """
    qat = ctx.recipe.qat is not None and ctx.target.precision.mode == "int8"
    sparsity = ctx.sparsity
    prune = ctx.recipe.prune is not None and sparsity.target > 0 and sparsity.structure == "channel"
    try:
        skipped = skipped_producers(model) if prune else {}
    except ConfigError as e:
        raise ConfigError(
            f"{where}: {e.message}",
            hint="use a model whose layers channel pruning can follow, or a target without sparsity",
        ) from None
    for line in unhandled_layers(plan_qat(model) if qat else (), skipped):
        ctx.warn(line)


def run(ctx: BuildContext) -> StageResult:
    recipe, target = ctx.recipe, ctx.target
    if target.runtime == "tflm":
        check_machine(target)  # seconds, before the data and the model; a missing compiler is the link stage's warning
    data = load_dataset(recipe)
    ctx.dataset = data
    ctx.x_fit, ctx.y_fit, ctx.x_val, ctx.y_val = split_validation(
        data.x_train, data.y_train, recipe.train.validation_fraction
    )
    if len(ctx.x_fit) < recipe.train.batch_size:
        raise ConfigError(
            f"{recipe.source}: key 'train.batch_size': {recipe.train.batch_size} is more than the "
            f"{len(ctx.x_fit)} training samples",
            hint="lower train.batch_size or use more data",
        )

    where = f"{recipe.source}: key 'model'" + (f" ({recipe.model.path})" if recipe.model.path else "")
    if recipe.model.path is not None:
        model_path = recipe.resolve_path(recipe.model.path, "model.path")
    seed_everything(recipe.seed * 100)
    if recipe.model.path is not None:
        ctx.float_model = load_model(model_path, where, allow_unsafe=ctx.allow_unsafe_model)
    else:
        assert recipe.model.architecture is not None
        ctx.float_model = build_model(
            recipe.model.architecture, data.input_shape, _outputs(data), recipe.model.width, recipe.task
        )
    check_model_fits_data(ctx.float_model, data, where)
    if recipe.task == "reconstruction" and data.anomaly_test is None and recipe.budgets.max_mse_increase is None:
        raise ConfigError(
            f"{recipe.source}: key 'budgets.max_mse_increase': the test split has no anomaly labels, so the only "
            "budget on the artifact's quality is its reconstruction error",
            hint="add [budgets] max_mse_increase (in the squared units of x), or y_test anomaly labels (0/1)",
        )
    warn_input_scale(ctx, ctx.float_model)
    warn_test_range(ctx)

    deployed = ctx.float_model
    if recipe.distill is not None:
        student_arch = recipe.student_architecture
        assert student_arch is not None
        deployed = build_model(
            student_arch, data.input_shape, _outputs(data), recipe.distill.student_width, recipe.task
        )

    sparsity = ctx.sparsity = target.sparsity
    if recipe.prune is not None and recipe.prune.sparsity is not None:  # the recipe's own aim (a searched plan)
        sparsity = ctx.sparsity = dataclasses.replace(target.sparsity, target=recipe.prune.sparsity)
    if sparsity.target > 0 and sparsity.structure not in sparsity.exploitable:
        if not ctx.convert_sparsity:
            raise ConfigError(
                f"{target.source}: key 'sparsity.structure': the {target.runtime} runtime of {target.name} cannot "
                f"cash in {sparsity.structure} sparsity ({SPARSITY_WHY_NOT[sparsity.structure]}); it exploits "
                f"{', '.join(sparsity.exploitable) or 'no sparsity'}",
                hint="use structure = 'channel', or pass --convert-sparsity to prune channels instead",
            )
        ctx.sparsity = dataclasses.replace(sparsity, structure="channel")
        ctx.warn(
            f"{sparsity.structure} sparsity saves nothing on {target.name}; pruning {sparsity.target:.0%} of "
            "the channels instead (--convert-sparsity)"
        )

    if target.sparsity.target > 0 and recipe.prune is None:
        if target.sparsity.required:
            raise BudgetError(
                f"{target.source}: key 'sparsity.required': the profile requires {target.sparsity.target:.0%} "
                f"sparsity but the recipe {recipe.source} has no [prune] table",
                hint="add a [prune] table to the recipe, or use a target that does not require sparsity",
            )
        ctx.sparsity = dataclasses.replace(ctx.sparsity, target=0.0)  # nothing to aim for: no pruning

    if target.runtime == "tflm":
        check_tflm_ops(deployed, where)
    warn_unhandled_layers(ctx, deployed, where)

    mode = target.precision.mode
    params = int(deployed.count_params())
    kept = (1.0 - ctx.sparsity.target) ** 2 if ctx.sparsity.structure == "channel" else 1.0
    # Channel pruning shrinks a layer's inputs and outputs; zeros (unstructured, 2:4) save no bytes.
    min_bytes = int(params * kept * BYTES_PER_WEIGHT[mode])
    limit = target.budgets.model_bytes
    if limit is not None and min_bytes > limit:
        raise BudgetError(
            f"{target.source}: key 'budgets.model_bytes': the model to deploy has {params} parameters, "
            f"so its {mode} .tflite is at least {min_bytes} bytes even after pruning, more than the budget of {limit}",
            hint="use a narrower model (model.width or distill.student_width) or a larger budget",
        )
    arena_limit = target.budgets.arena_bytes
    min_arena = _largest_activation_pair(deployed) * BYTES_PER_ACTIVATION[mode]
    if arena_limit is not None and min_arena > arena_limit:
        raise BudgetError(
            f"{target.source}: key 'budgets.arena_bytes': one layer's input and output alone take "
            f"{min_arena} bytes, more than the arena budget of {arena_limit}",
            hint="use smaller inputs or a narrower model, or a larger budget",
        )
    return StageResult(
        f"{data.name}: {len(ctx.x_fit)} train / {len(ctx.x_val)} validation / {len(data.x_test)} test, "
        f"{f'{data.num_classes} classes' if data.task == 'classification' else data.task}; "
        f"deployed model {params} parameters, {mode}"
    )
