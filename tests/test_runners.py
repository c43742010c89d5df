"""Runners on a tiny real int8 model: TFLM's arena search is exact, kernels agree with the reference."""

from __future__ import annotations

import numpy as np
import pytest

from edgebuild.errors import BuildError
from edgebuild.results import Comparison
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.opcheck import compare_ops
from edgebuild.runners.tflm_host import ARENA_ALIGN, TflmHost, find_min_arena, try_arena
from edgebuild.stages.validate import compare_outputs
from edgebuild.tflite import io_details, make_interpreter, op_names, weight_sparsity
from tests.models import CLASSES, INPUT_SHAPE, KERNEL_WEIGHTS, OPS, SAMPLES, int8_inputs, mlp_tflite, tiny_tflite


def test_model_details() -> None:
    interpreter = make_interpreter(tiny_tflite())
    inputs, outputs = io_details(interpreter)
    assert inputs[0].dtype == "int8" and inputs[0].shape == (1, *INPUT_SHAPE) and inputs[0].scale > 0
    assert outputs[0].shape == (1, CLASSES)
    assert op_names(interpreter) == OPS
    zeros, total = weight_sparsity(interpreter)  # every other kernel weight is zero
    assert total == KERNEL_WEIGHTS
    assert zeros / total == pytest.approx(0.5, abs=0.02)


def test_min_arena_is_the_smallest_that_works() -> None:
    model, sample = tiny_tflite(), int8_inputs()[0]
    arena = find_min_arena(model, sample)
    assert arena % ARENA_ALIGN == 0
    assert try_arena(model, arena, sample)
    assert not try_arena(model, arena - ARENA_ALIGN, sample)


def test_arena_search_goes_on_past_sizes_tflm_crashes_on() -> None:
    # The pinned TFLM segfaults in its temporary allocator on this MLP at 3,664 bytes, a size the
    # search probes on its way down to 3,696 (the crash depends on the model's tensors only, not on
    # its weights or the CPU). Such a size does not work; the search goes on in a new process.
    model, inputs = mlp_tflite()
    arena = find_min_arena(model, inputs[0])
    assert arena % ARENA_ALIGN == 0
    assert TflmHost(arena_bytes=arena).run(model, inputs).outputs.shape == (1, 10)
    for smaller in (arena - ARENA_ALIGN, arena - 2 * ARENA_ALIGN, arena - 3 * ARENA_ALIGN):
        with pytest.raises(BuildError):  # fails or crashes: each in a child process
            TflmHost(arena_bytes=smaller).run(model, inputs)


def test_tflm_matches_reference_kernels() -> None:
    model, q = tiny_tflite(), int8_inputs()
    arena = find_min_arena(model, q[0])
    tflm = TflmHost(arena_bytes=arena).run(model, q)
    reference = LiteRTHost(reference=True).run(model, q)
    assert tflm.outputs.shape == (SAMPLES, CLASSES) and tflm.outputs.dtype == np.int8
    assert len(tflm.latency_ms) == SAMPLES
    assert compare_outputs(tflm.outputs, reference.outputs).top1_agreement >= 0.95
    rows = compare_ops(model, q, "tflm", arena_bytes=1 << 20)
    assert [r["op"] for r in rows][:3] == ["CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"]
    assert all(r["judged"] > 0 and r["max_own_lsb"] <= 1 for r in rows)
    # Convolutions and pooling are bit-identical in the two runtimes (measured on these machines).
    assert all(r["max_own_lsb"] == 0 for r in rows[:3])


def test_compare_outputs_counts_lsb() -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int8)
    b = np.array([[1, 2, 4], [4, 8, 6]], dtype=np.int8)
    assert compare_outputs(a, b) == Comparison(
        compared_outputs=6, mismatched_outputs=2, max_lsb_diff=3, max_abs_diff=3.0, top1_agreement=0.5
    )


def test_tflm_crash_is_a_build_error() -> None:
    # TFLM aborts the process while preparing a depthwise convolution whose kernel (and every bias) is zero.
    model = tiny_tflite(zero_depthwise=True)
    with pytest.raises(BuildError) as caught:
        find_min_arena(model, int8_inputs(zero_depthwise=True)[0])
    assert str(caught.value) == (
        "the TFLM interpreter crashed (SIGABRT) on this model: TFLM gave no reason "
        "(TFLM aborts on some models, for example one with an all-zero channel)"
    )
    assert caught.value.exit_code == 1


def test_litert_refuses_garbage_with_build_error() -> None:
    with pytest.raises(BuildError) as caught:
        make_interpreter(b"\x00" * 64)
    assert str(caught.value) == "LiteRT cannot load the model: The model is not a valid Flatbuffer buffer"
    assert caught.value.exit_code == 1
