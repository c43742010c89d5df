"""Runners on a tiny real int8 model: TFLM's arena search is exact, kernels agree with the reference."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from edgebuild.errors import BuildError
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.opcheck import compare_ops
from edgebuild.runners.tflm_host import ARENA_ALIGN, TflmHost, find_min_arena, try_arena
from edgebuild.stages.validate import compare_outputs
from edgebuild.tf import keras, seed_everything
from edgebuild.tflite import convert_keras, io_details, make_interpreter, op_names, weight_sparsity


def tiny_model(zero_depthwise: bool = False) -> tuple[bytes, np.ndarray]:
    """A small CNN with random weights, every other weight zeroed, converted to int8."""
    seed_everything(0)
    k = keras()
    model = k.Sequential(
        [
            k.Input((12, 12, 1)),
            k.layers.Conv2D(6, 3, activation="relu"),
            k.layers.DepthwiseConv2D(3, activation="relu"),
            k.layers.AveragePooling2D(2),
            k.layers.Flatten(),
            k.layers.Dense(16, activation="relu"),
            k.layers.Dense(4),
            k.layers.Softmax(),
        ]
    )
    for layer in model.layers:
        if layer.weights:
            kernel, *rest = layer.get_weights()
            kernel.reshape(-1)[::2] = 0.0
            if zero_depthwise and isinstance(layer, k.layers.DepthwiseConv2D):
                kernel[:] = 0.0
            layer.set_weights([kernel, *rest])
    x = np.random.default_rng(0).random((64, 12, 12, 1)).astype(np.float32)
    return convert_keras(model, "int8", "int8", x), x


@cache
def tiny_int8() -> tuple[bytes, np.ndarray]:
    return tiny_model()


def test_model_details() -> None:
    model, _ = tiny_int8()
    interpreter = make_interpreter(model)
    inputs, outputs = io_details(interpreter)
    assert inputs[0].dtype == "int8" and inputs[0].shape == (1, 12, 12, 1) and inputs[0].scale > 0
    assert outputs[0].shape == (1, 4)
    assert op_names(interpreter) == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    zeros, total = weight_sparsity(interpreter)
    assert total == 6 * 9 + 6 * 9 + 96 * 16 + 16 * 4
    assert zeros / total == pytest.approx(0.5, abs=0.02)


def test_min_arena_is_the_smallest_that_works() -> None:
    model, x = tiny_int8()
    sample = io_details(make_interpreter(model))[0][0].quantize(x[:1])[0]
    arena = find_min_arena(model, sample)
    assert arena % ARENA_ALIGN == 0
    assert try_arena(model, arena, sample)
    assert not try_arena(model, arena - ARENA_ALIGN, sample)


def test_tflm_matches_reference_kernels() -> None:
    model, x = tiny_int8()
    q = io_details(make_interpreter(model))[0][0].quantize(x)
    arena = find_min_arena(model, q[0])
    tflm = TflmHost(arena_bytes=arena).run(model, q)
    reference = LiteRTHost(reference=True).run(model, q)
    assert tflm.outputs.shape == (64, 4) and tflm.outputs.dtype == np.int8
    assert len(tflm.latency_ms) == 64
    assert compare_outputs(tflm.outputs, reference.outputs)["top1_agreement"] >= 0.95
    rows = compare_ops(model, q, "tflm", arena_bytes=1 << 20)
    assert [r["op"] for r in rows][:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"]
    assert all(r["judged"] > 0 and r["max_own_lsb"] <= 1 for r in rows)
    # Convolutions and pooling are bit-identical in the two runtimes (measured on these machines).
    assert all(r["max_own_lsb"] == 0 for r in rows[:3])


def test_compare_outputs_counts_lsb() -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8)
    b = np.array([[1, 2, 4], [4, 8, 6]], dtype=np.int8)
    d = compare_outputs(a, b)
    assert (d["mismatched_outputs"], d["max_lsb_diff"], d["top1_agreement"]) == (2, 3, 0.5)


def test_tflm_crash_is_a_build_error() -> None:
    # TFLM aborts the process while preparing a depthwise convolution whose kernel is all zero.
    model, x = tiny_model(zero_depthwise=True)
    q = io_details(make_interpreter(model))[0][0].quantize(x[:1])
    with pytest.raises(BuildError, match=r"TFLM interpreter crashed \(SIGABRT\)"):
        find_min_arena(model, q[0])


def test_litert_refuses_garbage_with_build_error() -> None:
    with pytest.raises(BuildError):
        make_interpreter(b"\x00" * 64)
