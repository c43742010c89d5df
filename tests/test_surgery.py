"""Channel pruning rebuilds a physically smaller model that computes what the original did."""

from __future__ import annotations

import numpy as np
import pytest

from edgebuild.errors import ConfigError
from edgebuild.models import build_model
from edgebuild.surgery import prune_channels
from edgebuild.tf import keras, seed_everything

RNG = np.random.default_rng(0)


def kill_channels(layer, dead: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Make the given output channels of a Conv/Dense exactly zero (weights and bias)."""
    kernel, bias = layer.get_weights()
    kernel[..., dead] = 0.0
    bias[dead] = 0.0
    layer.set_weights([kernel, bias + np.where(np.isin(np.arange(len(bias)), dead), 0.0, 0.05)])


def test_removing_dead_channels_changes_nothing_through_flatten() -> None:
    keras().backend.clear_session()  # layer names count from conv2d again
    seed_everything(0)
    model = build_model("small_cnn", (28, 28, 1), 10, 1.0)
    for name, channels in (("conv2d", 16), ("conv2d_1", 32), ("dense", 64)):
        kill_channels(model.get_layer(name), RNG.choice(channels, channels // 2, replace=False))
    x = RNG.random((8, 28, 28, 1)).astype(np.float32)
    pruned, layers = prune_channels(model, 0.5, criterion="l1")
    assert [(c.layer, c.before, c.after) for c in layers] == [
        ("conv2d", 16, 8),
        ("conv2d_1", 32, 16),
        ("dense", 64, 32),
        ("dense_1", 10, 10),
    ]
    assert pruned.count_params() < model.count_params() / 3
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def _residual_depthwise(k) -> object:  # type: ignore[no-untyped-def]
    """A residual block with batch norm, a depthwise-separable block, global pooling and a classifier."""
    inputs = k.Input((12, 12, 3))
    a = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    b = k.layers.Conv2D(8, 3, padding="same", name="branch")(a)
    b = k.layers.BatchNormalization(name="branch_bn")(b)
    merged = k.layers.ReLU()(k.layers.Add()([a, b]))
    d = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(merged)
    d = k.layers.BatchNormalization(name="dw_bn")(d)
    e = k.layers.Conv2D(16, 1, activation="relu", name="pointwise")(k.layers.ReLU()(d))
    pooled = k.layers.GlobalAveragePooling2D()(e)
    return k.Model(inputs, k.layers.Dense(4, activation="softmax", name="classifier")(pooled))


def test_residual_and_depthwise_channels_stay_tied() -> None:
    seed_everything(1)
    k = keras()
    model = _residual_depthwise(k)
    x = RNG.random((6, 12, 12, 3)).astype(np.float32)
    same, _ = prune_channels(model, 0.0)
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for criterion in ("l1", "l2", "taylor"):
        pruned, layers = prune_channels(model, 0.5, criterion=criterion, data=(x, np.arange(6) % 4))
        after = {c.layer: c.after for c in layers}
        # stem and branch meet in Add: they keep the same channels, and depthwise follows them.
        assert after["stem"] == after["branch"] == 4
        assert pruned.get_layer("dw").output_shape[-1] == 4
        assert after["pointwise"] == 8 and after["classifier"] == 4
        assert pruned.predict(x, verbose=0).shape == (6, 4)


def test_dead_channels_behind_batch_norm_are_removed_exactly() -> None:
    seed_everything(2)
    k = keras()
    inputs = k.Input((10, 10, 1))
    h = k.layers.Conv2D(8, 3, name="conv")(inputs)
    h = k.layers.BatchNormalization(name="bn")(h)
    h = k.layers.ReLU()(h)
    h = k.layers.DepthwiseConv2D(3, name="dw")(h)
    h = k.layers.Flatten()(h)
    model = k.Model(inputs, k.layers.Dense(3, name="out")(h))
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    dead = np.array([1, 4, 6, 7])
    gamma[dead], beta[dead] = 0.0, -1.0  # BN gives -1, ReLU gives 0: these channels carry nothing
    gamma[np.setdiff1d(np.arange(8), dead)] = 5.0
    bn.set_weights([gamma, beta, mean, var])
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    kernel[..., dead] = 0.0
    conv.set_weights([kernel, bias])
    x = RNG.random((5, 10, 10, 1)).astype(np.float32)
    pruned, layers = prune_channels(model, 0.5, criterion="l1")
    assert [(c.layer, c.after) for c in layers] == [("conv", 4), ("out", 3)]
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_concatenate_and_outputs_are_left_alone() -> None:
    k = keras()
    inputs = k.Input((16,))
    a = k.layers.Dense(8, name="a")(inputs)
    b = k.layers.Dense(8, name="b")(inputs)
    c = k.layers.Dense(6, name="c")(k.layers.Concatenate()([a, b]))
    model = k.Model(inputs, k.layers.Dense(2, name="out")(c))
    pruned, layers = prune_channels(model, 0.5)
    assert pruned.get_layer("c").output_shape[-1] == 3
    after = {c.layer: c.after for c in layers}
    assert after == {"a": 8, "b": 8, "c": 3, "out": 2}


def test_nothing_to_prune_is_a_clear_error() -> None:
    k = keras()
    model = k.Sequential([k.Input((4,)), k.layers.Dense(3)])
    with pytest.raises(ConfigError, match="no layer of this model can lose channels"):
        prune_channels(model, 0.5)
