"""The tiny real model the tests share: one small CNN in tf_keras, converted by edgebuild's own converter.

Built once per test session (each conversion is cached), so that the runner, firmware,
inspect, fuzz, qemu and ssh tests all run the same few-kilobyte ``.tflite`` instead of each
training or converting its own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

INPUT_SHAPE = (10, 10, 1)
CLASSES = 5
SAMPLES = 48
# Conv2D(8, 3) on 10x10x1 -> 8x8x8 (512 outputs x 9 MACs), DepthwiseConv2D(3) -> 6x6x8 (288 x 9),
# MaxPooling2D(2) -> 3x3x8, Dense(16) on 72 inputs, Dense(5) on 16. The first dense kernel has
# over 1024 weights, so dynamic-range conversion makes it int8 (a hybrid FULLY_CONNECTED); the
# convolutions and the last dense layer stay float.
OPS = ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "SOFTMAX"]
MACS = {"CONV_2D": 512 * 9, "DEPTHWISE_CONV_2D": 288 * 9, "FULLY_CONNECTED": 72 * 16 + 16 * 5}
KERNEL_WEIGHTS = 8 * 9 + 8 * 9 + 72 * 16 + 16 * 5


def tiny_keras(*, zero_depthwise: bool = False) -> Any:
    """The tiny CNN with Keras's seeded initial kernels, every other kernel weight zero (so weight
    sparsity is one half) and random non-zero biases (Keras starts them at zero, and the converter
    stores equal constant tensors once, which would make the .tflite hold fewer parameters than
    the Keras model).

    ``zero_depthwise``: the depthwise kernel and every bias zero, a model TFLM aborts on (SIGABRT).
    """
    from edgebuild.tf import keras, seed_everything

    seed_everything(0)
    k = keras()
    model = k.Sequential(
        [
            k.Input(INPUT_SHAPE),
            k.layers.Conv2D(8, 3, activation="relu"),
            k.layers.DepthwiseConv2D(3, activation="relu"),
            k.layers.MaxPooling2D(2),
            k.layers.Flatten(),
            k.layers.Dense(16, activation="relu"),
            k.layers.Dense(CLASSES),
            k.layers.Softmax(),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            kernel.reshape(-1)[::2] = 0.0
            bias = rng.normal(0.0, 0.1, bias.shape).astype(np.float32)
            if zero_depthwise:
                bias[:] = 0.0
                if isinstance(layer, k.layers.DepthwiseConv2D):
                    kernel[:] = 0.0
            layer.set_weights([kernel, bias])
    return model


@cache
def float_inputs() -> np.ndarray:
    """48 float32 inputs in [0, 1): the calibration set of the int8 conversion and the test inputs."""
    return np.random.default_rng(0).random((SAMPLES, *INPUT_SHAPE)).astype(np.float32)


@cache
def _keras(zero_depthwise: bool) -> Any:
    return tiny_keras(zero_depthwise=zero_depthwise)


@cache
def tiny_tflite(mode: str = "int8", io: str = "int8", *, zero_depthwise: bool = False) -> bytes:
    """The tiny CNN as ``.tflite``: ``mode`` int8 (full integer, calibrated on ``float_inputs()``),
    dynamic, float16 or float32; ``io`` the int8 model's input and output type."""
    from edgebuild.tflite import convert_keras

    calibration = float_inputs() if mode == "int8" else None
    return convert_keras(_keras(zero_depthwise), mode, io, calibration)


@cache
def int8_inputs(*, zero_depthwise: bool = False) -> np.ndarray:
    """``float_inputs()`` quantized to the int8 model's input, as a device is given them."""
    from edgebuild.tflite import io_details, make_interpreter

    model = tiny_tflite(zero_depthwise=zero_depthwise)
    return io_details(make_interpreter(model))[0][0].quantize(float_inputs())


@cache
def mlp_tflite() -> tuple[bytes, np.ndarray]:
    """A digits-sized int8 MLP (8x8x1 -> 96 -> 48 -> 10, seeded kernels, random biases) and one int8
    input: the pinned TFLM segfaults on a few arenas just under the one this model needs."""
    from edgebuild.tf import keras, seed_everything
    from edgebuild.tflite import convert_keras, io_details, make_interpreter

    seed_everything(0)
    k = keras()
    model = k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Flatten(),
            k.layers.Dense(96, activation="relu"),
            k.layers.Dense(48, activation="relu"),
            k.layers.Dense(10),
            k.layers.Softmax(),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0.0, 0.1, bias.shape).astype(np.float32)])
    calibration = rng.random((SAMPLES, 8, 8, 1)).astype(np.float32)
    tflite = convert_keras(model, "int8", "int8", calibration)
    return tflite, io_details(make_interpreter(tflite))[0][0].quantize(calibration[:1])
