"""The firmware run of ``--device qemu`` on microcontroller (TFLM) targets.

Called by the link stage, after emit, because the firmware is built from the files emit wrote
(``<basename>_data.cc``, ``_data.h``, ``_ops.h``, exactly as shipped). Reads ``ctx.firmware_model``,
``ctx.work``, the validated model and the test split. Writes ``ctx.firmware.regions`` (the memory
fit from the firmware as linked: model, TFLM, kernels, C library, stack, arena and the profile's
application placeholders, measured), ``ctx.validation_facts.device_run`` (where it ran, outputs
against the host's TFLM interpreter and LiteRT's reference kernels, the task's metrics, instructions
per inference, flash and RAM by section and by part) and, as on any device that brings outputs
back, the artifact's metrics (the host's kept beside them). A firmware that does not fit the
profile is not run: the budgets then fail the build (exit 3).

On NPU targets the shipped array is Vela's, whose Ethos-U op QEMU cannot run: the firmware then
runs the validated CPU model (``model_cpu.tflite``), written by the same emitter with its own
measured arena, and ``model_source`` says so; the fit stays the link stage's (the shipped firmware
holds Vela's model and the NPU driver, which this one does not).

Raises BuildError when an output differs from the host's TFLM interpreter by more than the
per-op rule of host validation (``MAX_LSB_DIFF``; CMSIS-NN and TFLM's reference kernels were
measured bit-identical), or when top-1 agreement with LiteRT's reference kernels falls below
the profile's minimum; BudgetError (exit 3) when the firmware does not fit the profile's memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from edgebuild.context import BuildContext
from edgebuild.errors import BuildError
from edgebuild.firmware import FirmwareModel, model_header, model_source, ops_header
from edgebuild.mcu_firmware import RUNTIME_PARTS, STACK_BYTES, FirmwareImage, build_firmware
from edgebuild.progress import EpochBar
from edgebuild.results import Comparison, DeviceRun, FirmwareRun, KernelRun
from edgebuild.runners import FIRMWARE_RUNNERS, RunResult
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.runners.qemu_mcu import ArenaTooSmall
from edgebuild.runners.tflm_host import TflmHost
from edgebuild.stages.validate import MAX_LSB_DIFF, artifact_metrics, compare_outputs
from edgebuild.support import Board
from edgebuild.tasks import describe
from edgebuild.tflite import flatbuffer_ops
from edgebuild.third_party import TFLM_COMMIT


def run_firmware(ctx: BuildContext, *, fit: bool) -> str:
    """Build the firmware, run it on the device's emulated board, compare, record; a one-line summary.

    With ``fit`` the firmware's own FLASH and RAM are the link stage's fit (``ctx.firmware.regions``),
    and a firmware that does not fit is not run. With ``ctx.compare_kernels`` the firmware is also
    built and run with the other kernel family, and both are recorded."""
    target, data, artifact = ctx.target, ctx.data, ctx.artifact
    kernels = target.firmware.kernels
    x = artifact.inputs[0].quantize(data.x_test)
    with tempfile.TemporaryDirectory(prefix="edgebuild-firmware-") as tmp:
        work = Path(tmp)
        folder, model, source = _model_files(ctx, work)
        compiled = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in model.files}
        image = _build(ctx, folder, model, work, kernels)
        board = image.board
        if fit:
            assert ctx.firmware is not None, "emit recorded the firmware"
            ctx.firmware = dataclasses.replace(
                ctx.firmware, regions=image.regions, fit_from=f"the firmware linked for {board.machine}, measured"
            )
            _check_estimates(ctx, image)
            if not image.fits:
                usage = "; ".join(f"{r.name} {r.used:,} of {r.total:,} B" for r in image.regions)
                return f"the firmware for {board.machine} does not fit the profile ({usage}), so it was not run"
        result = _run(ctx, image, folder, model, work, x)
        compared: tuple[KernelRun, ...] = ()
        if ctx.compare_kernels:
            other = "reference" if kernels == "cmsis-nn" else "cmsis-nn"
            other_image = _build(ctx, folder, model, work, other)
            other_result = _run(ctx, other_image, folder, model, work, x)
    host = TflmHost(arena_bytes=artifact.arena_bytes or 0).run(ctx.tflite, x)
    reference = LiteRTHost(reference=True).run(ctx.tflite, x)
    vs_tflm = compare_outputs(result.outputs, host.outputs)
    vs_reference = compare_outputs(result.outputs, reference.outputs)
    _check_same(ctx, board, kernels, vs_tflm)
    if ctx.compare_kernels:
        other_vs_tflm = compare_outputs(other_result.outputs, host.outputs)
        _check_same(ctx, board, other, other_vs_tflm)
        compared = (
            _kernel_run(kernels, image, result, vs_tflm),
            _kernel_run(other, other_image, other_result, other_vs_tflm),
        )
    minimum = target.validate.min_top1_agreement
    if data.task == "classification" and vs_reference.top1_agreement < minimum:
        raise BuildError(
            f"the firmware on {board.machine} ({board.cpu}, {kernels} kernels): top-1 agreement with LiteRT's "
            f"reference kernels is {vs_reference.top1_agreement:.2%}, below the target's "
            f"validate.min_top1_agreement of {minimum:.2%}"
        )
    metrics = artifact_metrics(ctx, artifact.outputs[0], result.outputs)
    counted = _instructions(result)
    firmware = FirmwareRun(
        machine=board.machine,
        cpu=board.cpu,
        kernels=kernels,
        model_source=source,
        sources_sha256=compiled,
        tflm_commit=TFLM_COMMIT,
        inferences=len(x),
        instructions=counted,
        flash_bytes=image.flash_bytes,
        ram_bytes=image.ram_bytes,
        sections=image.sections,
        flash_by_part=image.flash_by_part,
        ram_by_part=image.ram_by_part,
        arena_bytes=_extra_int(result, "arena_bytes"),
        arena_used_bytes=_extra_int(result, "arena_used_bytes"),
        stack_bytes=_extra_int(result, "stack_bytes"),
        stack_used_bytes=_extra_int(result, "stack_used_bytes"),
        library_objects=image.library_objects,
        library_compiled_objects=image.compiled_objects,
        library_compile_seconds=image.compile_seconds,
        kernel_comparison=compared,
    )
    ctx.validation_facts = dataclasses.replace(
        ctx.validation,
        device_run=DeviceRun(
            device=ctx.device.label,
            measured_on=result.device,
            emulated=True,
            latency={},
            latency_note="emulated: instructions counted by QEMU (-icount), not cycles; no time measured",
            peak_memory_bytes=None,
            accuracy=metrics.get("accuracy"),
            metrics=metrics,
            vs_host_reference=vs_reference,
            vs_host_tflm=vs_tflm,
            firmware=firmware,
        ),
    )
    ctx.artifact_facts = dataclasses.replace(
        artifact,
        accuracy=metrics.get("accuracy"),
        metrics=metrics,
        host_accuracy=artifact.metrics.get("accuracy"),
        host_metrics=artifact.metrics,
    )
    both = "".join(f"; {k.kernels} {k.instructions['mean']:,.0f}" for k in compared[1:])
    return (
        f"firmware on qemu-system-arm -M {board.machine}: {describe(metrics)}, {vs_tflm.mismatched_outputs}/"
        f"{vs_tflm.compared_outputs} outputs differ from host TFLM; {counted['mean']:,.0f} instructions per "
        f"inference ({kernels}{both}); flash {image.flash_bytes:,} B, RAM {image.ram_bytes:,} B"
    )


def _model_files(ctx: BuildContext, work: Path) -> tuple[Path, FirmwareModel, str]:
    """The folder holding the model files the firmware compiles, their model, and what they are."""
    model = ctx.firmware_model
    assert model is not None, "emit made the firmware model"
    if ctx.npu is None:
        return ctx.work, model, f"{', '.join(model.files)} as emitted"
    # QEMU emulates no Ethos-U: run the validated CPU model, emitted the same way.
    # The header's arena stays: what a developer allocates for the shipped model.
    model = dataclasses.replace(model, data=ctx.tflite, ops=sorted(set(flatbuffer_ops(ctx.tflite))))
    folder = work / "cpu-model"
    folder.mkdir()
    header, c_source, ops = model.files
    (folder / header).write_text(model_header(model))
    (folder / c_source).write_text(model_source(model))
    (folder / ops).write_text(ops_header(model))
    return folder, model, "model_cpu.tflite, emitted as emit does (QEMU emulates no Ethos-U NPU)"


def _build(ctx: BuildContext, folder: Path, model: FirmwareModel, work: Path, kernels: str) -> FirmwareImage:
    """The firmware with ``kernels``, built in ``work/<kernels>``, with a progress bar per compile round."""
    bar: list[tuple[contextlib.ExitStack, EpochBar]] = []  # the bar of the compile round under way

    def progress(what: str, done: int, total: int) -> None:
        if done == 0:
            stack = contextlib.ExitStack()
            bar[:] = [(stack, stack.enter_context(ctx.reporter.epochs(what, total)))]
        elif bar:
            bar[0][1].advance({})
            if done == total:
                bar.pop()[0].close()

    (work / kernels).mkdir()
    try:
        image = build_firmware(
            folder, model, ctx.target, work / kernels, kernels=kernels, progress=progress, note=ctx.reporter.note
        )
    finally:
        if bar:
            bar.pop()[0].close()
    if image.compiled_objects:
        ctx.reporter.note(
            f"TFLM library for {image.config.arch} ({kernels}): compiled {image.compiled_objects} objects in "
            f"{image.compile_seconds:.0f} s (cached for later builds)"
        )
    return image


def _run(
    ctx: BuildContext, image: FirmwareImage, folder: Path, model: FirmwareModel, work: Path, x: np.ndarray
) -> RunResult:
    """Every input through the firmware on its board; BuildError naming the arena it needs when the
    header's is too small there."""
    try:
        return FIRMWARE_RUNNERS[ctx.device.kind](image, model).run(model.data, x)
    except ArenaTooSmall:
        kernels = image.config.kernels
        needed = _arena_needed(ctx, folder, model, work / f"probe-{kernels}", x[:1], kernels)
        raise _arena_error(ctx, model, image.board, kernels, needed) from None


def _check_same(ctx: BuildContext, board: Board, kernels: str, vs_tflm: Comparison) -> None:
    """BuildError when the firmware's outputs differ from the host TFLM's by more than the per-op rule."""
    if vs_tflm.max_lsb_diff is not None and vs_tflm.max_lsb_diff > MAX_LSB_DIFF:
        raise BuildError(
            f"the firmware on {board.machine} ({board.cpu}, {kernels} kernels) gives {vs_tflm.mismatched_outputs} "
            f"of {vs_tflm.compared_outputs} outputs different from the host's TFLM interpreter, by up to "
            f"{vs_tflm.max_lsb_diff} LSB (more than {MAX_LSB_DIFF})",
            hint="TFLM's kernels on the device compute something else than on the host: report it with the model",
        )


def _check_estimates(ctx: BuildContext, image: FirmwareImage) -> None:
    """Warn when the profile's runtime estimate is below what the firmware measured: builds without
    ``--device qemu`` check the fit against that estimate."""
    memory = ctx.target.memory
    assert memory is not None
    for region, estimate in zip(image.regions, (memory.runtime_flash_bytes, memory.runtime_ram_bytes), strict=True):
        measured = sum(size for part, size in region.parts.items() if part in RUNTIME_PARTS)
        if measured > estimate:
            key = f"memory.runtime_{region.name.lower()}_bytes"
            ctx.warn(
                f"the firmware's runtime takes {measured:,} B of {region.name} ({', '.join(RUNTIME_PARTS)}), more than "
                f"the profile's {key} = {estimate:,}: builds without --device qemu check the fit against too "
                f"little; set {key} to at least {measured:,} in {ctx.target.source or 'the target profile'}"
            )


def _instructions(result: RunResult) -> dict[str, float]:
    """Instructions per inference: mean, min and max."""
    instructions = np.asarray(result.extra["instructions"], dtype=np.float64)
    return {
        "mean": round(float(instructions.mean()), 1),
        "min": float(instructions.min()),
        "max": float(instructions.max()),
    }


def _kernel_run(kernels: str, image: FirmwareImage, result: RunResult, vs_tflm: Comparison) -> KernelRun:
    return KernelRun(
        kernels=kernels,
        instructions=_instructions(result),
        flash_bytes=image.flash_bytes,
        arena_used_bytes=_extra_int(result, "arena_used_bytes"),
        vs_host_tflm=vs_tflm,
    )


def _arena_needed(
    ctx: BuildContext, folder: Path, model: FirmwareModel, work: Path, x: np.ndarray, kernels: str
) -> int | None:
    """How large a tensor arena TFLM needs on the board: the firmware again, with all the RAM the
    profile leaves for an arena, run on one input. None when even that is too small."""
    memory = ctx.target.memory
    assert memory is not None
    largest = (memory.ram_bytes - memory.application_ram_bytes - STACK_BYTES - 16 * 1024) // 16 * 16
    work.mkdir()
    probe = build_firmware(folder, model, ctx.target, work, kernels=kernels, arena_bytes=largest)
    if not probe.fits:
        return None
    try:
        result = FIRMWARE_RUNNERS[ctx.device.kind](probe, model).run(model.data, x)
    except ArenaTooSmall:
        return None
    return _extra_int(result, "arena_used_bytes")


def _arena_error(ctx: BuildContext, model: FirmwareModel, board: Board, kernels: str, needed: int | None) -> BuildError:
    """The header's arena is too small for TFLM on the board: by how much, and the margin that would do."""
    macro = f"{model.prefix.upper()}_TENSOR_ARENA_BYTES"
    where = f"TFLM with {kernels} kernels on {board.machine} ({board.cpu})"
    header = f"the header's {macro} = {model.arena_with_margin:,} bytes"
    measured = model.arena_bytes or 0
    if needed is None:
        return BuildError(f"{where} needs a tensor arena larger than the RAM the profile has; {header} is too small")
    margin = needed / measured - 1 if measured else 0.0
    return BuildError(
        f"{where} needs a tensor arena of {needed:,} bytes, more than {header} (the host TFLM's {measured:,} "
        f"plus firmware.arena_margin {ctx.target.firmware.arena_margin:.0%}): the shipped header would not work there",
        hint=f"set [firmware] arena_margin to at least {int(margin * 100 + 1) / 100:.2f} in "
        f"{ctx.target.source or 'the target profile'}",
    )


def _extra_int(result: RunResult, key: str) -> int:
    """An integer the runner reported in ``extra``."""
    value = result.extra[key]
    assert isinstance(value, int), (key, value)
    return value
