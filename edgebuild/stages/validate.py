"""Validate: run the artifact on the target's runner and compare with reference kernels.

Reads ``ctx.tflite`` and the held-out test split. Writes ``ctx.artifact_facts`` (accuracy,
bytes, measured sparsity, TFLM arena) and ``ctx.validation_facts`` (runner, device, output
differences against LiteRT's reference kernels end to end and op by op, latency, and the
run on ``--device``: what it measures depends on its runner's capabilities).
Raises BuildError when an op's own kernel differs from the reference by more than
1 LSB (the runtimes only round requantization differently, so more means something
is wrong) or when top-1 agreement falls below the profile's minimum.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from edgebuild.cache import Entry
from edgebuild.context import BuildContext
from edgebuild.costs import tflite_costs
from edgebuild.errors import BuildError
from edgebuild.results import (
    Artifact,
    Comparison,
    DeviceRun,
    InputContract,
    OpCheck,
    StageResult,
    Validation,
    from_json,
    to_json,
)
from edgebuild.runners import DEVICE_RUNNERS, OUTPUTS, REFERENCE, Runner
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.opcheck import compare_ops
from edgebuild.runners.tflm_host import TflmHost, find_min_arena
from edgebuild.tasks import anomaly_threshold, confusion, describe, evaluate, log_loss, reconstruction_errors
from edgebuild.tflite import TensorInfo, io_details, make_interpreter, op_names, weight_sparsity
from edgebuild.training import check_outputs

MAX_LSB_DIFF = 1
FLOAT_TOLERANCE = 1e-4
OPCHECK_SAMPLES = 200


def compare_outputs(result: np.ndarray, reference: np.ndarray) -> Comparison:
    """Differences between two runs' outputs: differing elements, max LSB (integer outputs) and top-1 agreement."""
    if np.issubdtype(result.dtype, np.integer):
        diff = np.abs(result.astype(np.int64) - reference.astype(np.int64))
        differing = diff > 0
        max_lsb: int | None = int(diff.max()) if diff.size else 0
        max_abs = float(max_lsb or 0)
    else:
        diff_f = np.abs(result.astype(np.float64) - reference.astype(np.float64))
        differing = diff_f > FLOAT_TOLERANCE * (1.0 + np.abs(reference))
        max_lsb = None
        max_abs = float(diff_f.max()) if diff_f.size else 0.0
    agreement = float(np.mean(np.argmax(result, axis=-1) == np.argmax(reference, axis=-1)))
    return Comparison(int(result.size), int(np.count_nonzero(differing)), max_lsb, max_abs, agreement)


def _host_runner(ctx: BuildContext, sample: np.ndarray) -> tuple[Runner, int | None]:
    """The profile's host runner, and the TFLM arena it found (None for LiteRT)."""
    target = ctx.target
    if target.validate.runner == "tflm-host":
        arena = find_min_arena(ctx.tflite, sample)
        return TflmHost(arena_bytes=arena), arena
    return LiteRTHost(threads=target.validate.threads), None


def _check_ops(ctx: BuildContext, interpreter: Any, x: np.ndarray, arena: int | None) -> tuple[OpCheck, ...]:
    """Every op's kernel on the target's runtime against LiteRT's reference kernel, on identical inputs.

    Raises BuildError when one differs by more than ``MAX_LSB_DIFF``.
    """
    target = ctx.target
    # Keeping every tensor needs room for all of them and TFLM's bookkeeping besides the arena.
    every_tensor = sum(
        int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize for t in interpreter.get_tensor_details()
    )
    keep_all = 2 * (arena or 0) + every_tensor + 64 * 1024
    ops = tuple(OpCheck(**row) for row in compare_ops(ctx.tflite, x[:OPCHECK_SAMPLES], target.runtime, keep_all))
    wrong = [r for r in ops if r.max_own_lsb > MAX_LSB_DIFF]
    if wrong:
        r = wrong[0]
        raise BuildError(
            f"validate: op #{r.index} {r.op} on {target.validate.runner} differs from LiteRT's "
            f"reference kernel by {r.max_own_lsb} LSB on identical inputs (more than {MAX_LSB_DIFF})",
            hint="this is a runtime or converter bug; report it with the model.tflite",
        )
    return ops


def run(ctx: BuildContext) -> StageResult:
    target, data = ctx.target, ctx.data
    interpreter = make_interpreter(ctx.tflite, reference=True)  # no delegate: every op stays visible
    inputs, outputs = io_details(interpreter)
    x = inputs[0].quantize(data.x_test)
    zeros, total = weight_sparsity(interpreter)

    reference = LiteRTHost(reference=True).run(ctx.tflite, x)
    runner, arena = _host_runner(ctx, x[0])
    result = runner.run(ctx.tflite, x)
    check_outputs(result.outputs, f"the converted model on {target.validate.runner}")
    host_metrics = artifact_metrics(ctx, outputs[0], result.outputs)
    differences = compare_outputs(result.outputs, reference.outputs)
    integer = np.issubdtype(result.outputs.dtype, np.integer)
    ops = _check_ops(ctx, interpreter, x, arena) if integer else ()
    minimum = target.validate.min_top1_agreement
    if data.task == "classification" and differences.top1_agreement < minimum:
        raise BuildError(
            f"validate: top-1 agreement with LiteRT's reference kernels is {differences.top1_agreement:.2%}, "
            f"below the target's validate.min_top1_agreement of {minimum:.2%}",
            hint="lower validate.min_top1_agreement only if such disagreement is expected",
        )
    # On TFLM targets the device runs the firmware built from the emitted C: the link stage runs it.
    on_linux = ctx.device.kind != "host" and target.runtime != "tflm"
    device_run = _run_on_device(ctx, x, reference.outputs, outputs[0]) if on_linux else None
    on_device = device_run is not None and bool(device_run.metrics)
    metrics = device_run.metrics if device_run is not None and device_run.metrics else host_metrics
    threshold = None
    validation_metrics: dict[str, float] = {}
    if len(ctx.x_val):
        val_outputs = runner.run(ctx.tflite, inputs[0].quantize(ctx.x_val)).outputs
        validation_metrics = evaluate(data.task, outputs[0].dequantize(val_outputs), ctx.y_val)
        if data.task == "classification":  # what a search ranks plans by (steadier than accuracy)
            validation_metrics["log_loss"] = log_loss(outputs[0].dequantize(val_outputs), ctx.y_val)
        if data.task == "reconstruction":
            threshold = anomaly_threshold(reconstruction_errors(outputs[0].dequantize(val_outputs), ctx.x_val))
    names = op_names(interpreter)
    ctx.artifact_facts = Artifact(
        accuracy=metrics.get("accuracy"),
        tflite_bytes=len(ctx.tflite),
        sha256=hashlib.sha256(ctx.tflite).hexdigest(),
        precision=target.precision.mode,
        # The budget's measure: removed channels for channel pruning, zero weights otherwise.
        sparsity=ctx.pruning.measured if ctx.pruning and ctx.pruning.structure == "channel" else zeros / max(total, 1),
        sparsity_structure=ctx.pruned_structure,
        zero_weights=zeros / total if total else 0.0,
        weights=total,
        arena_bytes=arena,
        ops={op: names.count(op) for op in sorted(set(names))},
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        metrics=metrics,
        host_accuracy=host_metrics.get("accuracy") if on_device else None,
        host_metrics=host_metrics if on_device else None,
        anomaly_threshold=threshold,
        **_classes(ctx, result.outputs),
        input_contract=_input_contract(data.x_train, inputs[0]),
        validation_metrics=validation_metrics,
    )
    ctx.costs["artifact"] = dataclasses.replace(
        tflite_costs(ctx.tflite, data.x_test[0], arena=False), arena_bytes=arena, accuracy=host_metrics.get("accuracy")
    )
    ctx.validation_facts = Validation(
        **dataclasses.asdict(differences),
        runner=target.validate.runner,
        device=result.device,
        emulated=result.emulated,
        reference=reference.device,
        test_samples=len(x),
        latency=result.latency_summary(),
        ops=ops,
        max_op_lsb_diff=max((r.max_own_lsb for r in ops), default=0) if integer else None,
        device_run=device_run,
    )
    lsb = differences.max_lsb_diff
    arena_text = f", arena {arena} bytes" if arena is not None else ""
    per_op = ctx.validation.max_op_lsb_diff
    agreement = f", top-1 agreement {differences.top1_agreement:.2%}" if data.task == "classification" else ""
    return StageResult(
        f"{target.validate.runner}: {describe(metrics)}{arena_text}; vs reference kernels "
        f"{differences.mismatched_outputs}/{differences.compared_outputs} outputs differ "
        f"(max {lsb if lsb is not None else differences.max_abs_diff}; per op "
        f"{per_op if per_op is not None else '-'}){agreement}"
    )


def _input_contract(x: np.ndarray, given: TensorInfo) -> InputContract:
    """The training inputs' range per channel and in all, and what the quantized input can represent."""
    channels = x.reshape(-1, x.shape[-1])
    quantized: tuple[float | None, float | None] = (None, None)
    if given.dtype in ("int8", "uint8") and given.scale > 0:
        info = np.iinfo(given.dtype)
        quantized = ((info.min - given.zero_point) * given.scale, (info.max - given.zero_point) * given.scale)
    return InputContract(
        channel_min=tuple(float(v) for v in channels.min(axis=0)),
        channel_max=tuple(float(v) for v in channels.max(axis=0)),
        channel_mean=tuple(round(float(v), 6) for v in channels.mean(axis=0)),
        trained_min=float(x.min()),
        trained_max=float(x.max()),
        quantized_min=quantized[0],
        quantized_max=quantized[1],
    )


def _classes(ctx: BuildContext, outputs: np.ndarray) -> dict[str, Any]:
    """A classifier's per-class accuracy and confusion matrix on the test split (rows: true classes)."""
    data = ctx.data
    if data.task != "classification":
        return {}
    matrix = confusion(outputs, data.y_test, data.num_classes)
    per_class = {
        label: row[i] / max(1, sum(row)) for i, (label, row) in enumerate(zip(data.labels, matrix, strict=True))
    }
    return {"per_class_accuracy": per_class, "confusion_matrix": tuple(tuple(row) for row in matrix)}


def artifact_metrics(ctx: BuildContext, output: TensorInfo, raw: np.ndarray) -> dict[str, float]:
    """The task's metrics of the artifact's raw outputs on the test split (dequantized first)."""
    data = ctx.data
    return evaluate(data.task, output.dequantize(raw), data.y_test, data.anomaly_test)


def _run_on_device(ctx: BuildContext, x: np.ndarray, reference: np.ndarray, output: TensorInfo) -> DeviceRun:
    """Run the artifact on ``ctx.device``: latency, and where the runner brings outputs back,
    accuracy and output differences measured there.

    Raises BuildError when the device's reference kernels do not reproduce the host's
    reference-kernel outputs bit for bit (integer kernels give the same bits everywhere).
    """
    runner = DEVICE_RUNNERS[ctx.device.kind](ctx.device, ctx.benchmark_binary)
    label = ctx.device.label
    result = runner.run(ctx.tflite, x)
    run = DeviceRun(
        device=label,
        measured_on=result.device,
        emulated=result.emulated,
        latency=result.latency_summary(),
        latency_note="emulated: says nothing about real speed" if result.emulated else "measured on the device",
        peak_memory_bytes=result.peak_memory_bytes,
        accuracy=None,
    )
    if OUTPUTS not in runner.capabilities:
        return run
    metrics = artifact_metrics(ctx, output, result.outputs)
    run = dataclasses.replace(
        run,
        accuracy=metrics.get("accuracy"),
        metrics=metrics,
        vs_host_reference=compare_outputs(result.outputs, reference),
    )
    if REFERENCE not in runner.capabilities:
        return run
    same = compare_outputs(runner.run(ctx.tflite, x, reference=True).outputs, reference)
    if same.mismatched_outputs:
        raise BuildError(
            f"validate: on {label}, LiteRT's reference kernels give {same.mismatched_outputs} outputs different "
            f"from the host's (max {same.max_lsb_diff} LSB); they should be bit-identical",
            hint="the device's LiteRT build or the copied model is not what the host ran",
        )
    return dataclasses.replace(run, reference_kernels_vs_host=same)


def cache_parts(ctx: BuildContext) -> list[Any]:
    """The runtime, how to validate and on which device (the model and test split are upstream in the key)."""
    return [ctx.target.runtime, dataclasses.asdict(ctx.target.validate), ctx.device.label]


def save(ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What validation measured."""
    return {}, {"artifact": to_json(ctx.artifact), "validation": to_json(ctx.validation)}


def restore(ctx: BuildContext, entry: Entry, need_model: bool) -> None:
    """Put cached measurements back."""
    ctx.artifact_facts = from_json(Artifact, entry.meta["artifact"])
    ctx.validation_facts = from_json(Validation, entry.meta["validation"])
