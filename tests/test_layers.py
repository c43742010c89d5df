"""Layers TF-MOT's QAT or channel pruning cannot handle by themselves: preflight names them, QAT
annotates what it can with edgebuild's configs, pruning skips what it cannot follow, and a model QAT
cannot take at all is quantized after training instead. Real TF-MOT, real builds, no mocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebuild.layers import plan_qat, quantize_aware, unhandled_layers
from edgebuild.stages.prune import channels_removed
from edgebuild.surgery import prune_channels, reestimate_batch_norm, skipped_producers
from edgebuild.tf import keras
from tests.conftest import quick_project, run_cli


def _digits_head(layers: Any, x: Any) -> Any:
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="hidden")(x)
    return layers.Softmax(name="probabilities")(layers.Dense(10, name="logits")(x))


def rescaled_branches() -> Any:
    """A digits CNN that starts with Rescaling and joins two convolution branches with a Concatenate."""
    k = keras()
    layers = k.layers
    inputs = k.Input((8, 8, 1))
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)  # digits come in [0, 1]
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(x)
    a = layers.Conv2D(8, 3, padding="same", activation="relu", name="branch_a")(x)
    b = layers.Conv2D(8, 1, activation="relu", name="branch_b")(x)
    return k.Model(inputs, _digits_head(layers, layers.Concatenate(name="join")([a, b])))


def rescaled_pooling_branches() -> Any:
    """A digits CNN that starts with Rescaling and joins two pooling branches of it with a Concatenate
    (multi-scale input features), then a convolution with BatchNorm: every convolution and dense layer
    can still lose channels."""
    k = keras()
    layers = k.layers
    inputs = k.Input((8, 8, 1))
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)  # digits come in [0, 1]
    a = layers.MaxPooling2D(3, strides=1, padding="same", name="branch_max")(x)
    b = layers.AveragePooling2D(3, strides=1, padding="same", name="branch_mean")(x)
    x = layers.Concatenate(name="join")([a, b])
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="features")(x)
    x = layers.ReLU(name="relu")(layers.BatchNormalization(name="norm")(x))
    return k.Model(inputs, _digits_head(layers, x))


def attention() -> Any:
    """A digits model with multi-head attention, which QAT leaves float and the converter then refuses."""
    k = keras()
    layers = k.layers
    inputs = k.Input((8, 8, 1))
    rows = layers.Reshape((8, 8), name="rows")(inputs)
    x = layers.MultiHeadAttention(2, 8, name="attention")(rows, rows)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(32, activation="relu", name="hidden")(x)
    return k.Model(inputs, layers.Softmax(name="probabilities")(layers.Dense(10, name="logits")(x)))


def model_project(project: Path, model: Any, prune: bool = True) -> None:
    """The quick project (its rpi4-relaxed target too) with ``model`` saved as the recipe's [model] path."""
    quick_project(project)
    model.save(project / "model.keras")
    recipe = (
        (project / "edgebuild.toml").read_text().replace('architecture = "mlp"\nwidth = 0.5', 'path = "model.keras"')
    )
    if not prune:
        recipe = recipe.replace("[prune]\nepochs = 1\n", "")
    (project / "edgebuild.toml").write_text(recipe)


def test_plan_names_what_each_layer_gets() -> None:
    plan = {entry.layer: entry for entry in plan_qat(rescaled_branches())}
    assert plan["rescale"].action == "output-quantized"
    assert {plan[name].action for name in ("stem", "branch_a", "branch_b", "join", "hidden")} == {"tf-mot"}
    k = keras()
    inputs = k.Input((8, 8, 1))
    x = k.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = k.layers.BatchNormalization(name="folded")(x)  # TF-MOT folds it into the convolution
    x = k.layers.Conv2D(4, 3, activation="elu", name="elu")(x)  # TF-MOT has no fake-quantized elu
    x = k.layers.LayerNormalization(name="norm")(x)  # TF-MOT has no config for it
    x = k.layers.BatchNormalization(name="alone")(x)  # after a LayerNormalization: nothing to fold into
    x = k.layers.Dense(3, name="out")(k.layers.Flatten()(x))
    plan = {entry.layer: entry for entry in plan_qat(k.Model(inputs, x))}
    assert [plan[name].action for name in ("conv", "folded", "elu", "norm", "alone", "out")] == [
        "tf-mot",
        "tf-mot",
        "float",
        "float",
        "output-quantized",
        "tf-mot",
    ]
    assert "elu activation" in plan["elu"].reason


def test_tf_mot_alone_refuses_what_edgebuild_annotates() -> None:
    """TF-MOT's quantize_model raises on the Rescaling; edgebuild's plan gives a model that trains."""
    from edgebuild.tf import tfmot

    model = rescaled_branches()
    with pytest.raises(RuntimeError, match="rescale"):
        tfmot().quantization.keras.quantize_model(model)
    qat = quantize_aware(model, plan_qat(model))
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype(np.float32)
    assert qat(x, training=True).shape == (8, 10)


def test_pruning_skips_the_producers_of_a_concatenate_and_counts_them() -> None:
    model = rescaled_branches()
    skipped = skipped_producers(model)
    assert skipped == {"branch_a": "Concatenate 'join'", "branch_b": "Concatenate 'join'"}
    assert unhandled_layers(plan_qat(model), skipped) == [  # what preflight warns, before training
        "QAT: TF-MOT has no quantize config for Rescaling 'rescale'; edgebuild's own config quantizes their outputs",
        "channel pruning cannot follow Concatenate 'join': 'branch_a', 'branch_b' keep all their channels "
        "(and count as unpruned in the sparsity)",
    ]
    pruned, layers = prune_channels(model, 0.5)
    after = {c.layer: (c.after, c.skipped) for c in layers}
    assert after == {
        "stem": (8, None),
        "branch_a": (8, "Concatenate 'join'"),
        "branch_b": (8, "Concatenate 'join'"),
        "hidden": (16, None),
        "logits": (10, None),  # the model's output: never pruned, never counted
    }
    # Removed: 8 of stem's 16 and 16 of hidden's 32; the branches' 16 count as kept.
    assert channels_removed(layers) == pytest.approx(24 / 64)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    assert pruned.predict(x, verbose=0).shape == (4, 10)


def test_batch_norm_statistics_are_those_of_the_inputs() -> None:
    k = keras()
    inputs = k.Input((6, 6, 2))
    x = k.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = k.layers.BatchNormalization(name="bn")(x)
    model = k.Model(inputs, k.layers.Dense(2)(k.layers.Flatten()(x)))
    x_fit = np.random.default_rng(0).normal(3.0, 2.0, (300, 6, 6, 2)).astype(np.float32)
    assert reestimate_batch_norm(model, x_fit) == 1
    conv = k.Model(inputs, model.get_layer("conv").output).predict(x_fit, verbose=0).reshape(-1, 4)
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), conv.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(), conv.var(axis=0), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_rescaling_and_concatenate_go_through_the_whole_plan(project: Path) -> None:
    """Prune and QAT a model with Rescaling and a Concatenate on rpi4-relaxed: no traceback, exit 0,
    and the report names what was done with each of those layers."""
    model_project(project, rescaled_pooling_branches())
    result = run_cli("--target", "rpi4-relaxed", "-q", cwd=project)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert "QAT: TF-MOT has no quantize config for Rescaling 'rescale'" in result.err
    out = project / "build" / "quick" / "rpi4-relaxed"
    report = json.loads((out / "report.json").read_text())
    done = {q["layer"]: q["action"] for q in report["qat_layers"]}
    assert (done["rescale"], done["join"], done["features"], done["norm"]) == (
        "output-quantized",
        "tf-mot",
        "tf-mot",
        "tf-mot",  # folded into the convolution by TF-MOT
    )
    assert [c["name"] for c in report["conversion"]["candidates"]] == ["qat", "ptq"]
    layers = {c["layer"]: (c["before"], c["after"], c["skipped"]) for c in report["pruning"]["layers"]}
    assert layers == {"features": (16, 8, None), "hidden": (32, 16, None), "logits": (10, 10, None)}
    assert report["pruning"]["measured"] == report["artifact"]["sparsity"] == 0.5
    assert "| rescale | Rescaling | output-quantized |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_model_qat_cannot_take_is_quantized_after_training(project: Path) -> None:
    """Multi-head attention stays float in QAT and the converter refuses the mix: a warning, and the
    convert stage has only the post-training-quantized candidate."""
    model_project(project, attention(), prune=False)
    result = run_cli("--target", "rpi4-relaxed", "-q", cwd=project)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert "QAT: TF-MOT cannot quantize MultiHeadAttention 'attention'" in result.err
    assert "quantization-aware training cannot take this model" in result.err
    report = json.loads((project / "build" / "quick" / "rpi4-relaxed" / "report.json").read_text())
    assert report["qat_layers"] == []
    assert [c["name"] for c in report["conversion"]["candidates"]] == ["ptq"]
    assert any("quantization-aware training cannot take this model" in w for w in report["warnings"])
