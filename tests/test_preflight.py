"""Preflight asks the real TFLM interpreter whether it has a kernel for every op, before training."""

from __future__ import annotations

import pytest

from edgebuild.errors import ConfigError
from edgebuild.stages.preflight import check_tflm_ops
from edgebuild.tf import keras, tf


def test_op_tflm_lacks_is_named_with_its_layer() -> None:
    k = keras()
    model = k.Sequential(
        [
            k.Input((8,)),
            k.layers.Dense(8),
            k.layers.Lambda(lambda x: tf().math.abs(tf().signal.rfft(x)), name="spectrum"),
        ]
    )
    with pytest.raises(ConfigError, match=r"here: TFLM has no kernel for op RFFT2D.*spectrum"):
        check_tflm_ops(model, "here")


def test_supported_model_passes() -> None:
    k = keras()
    model = k.Sequential([k.Input((6, 6, 1)), k.layers.Conv2D(2, 3), k.layers.Flatten(), k.layers.Dense(3)])
    check_tflm_ops(model, "here")
