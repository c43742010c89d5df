"""Emit: write the model and everything a developer builds it into.

Reads ``ctx.deploy_tflite`` and what validation measured (I/O, arena). Writes under
``ctx.work``: ``model.tflite``; the C header and source (``<basename>_data.h/.cc``);
for TFLM targets the op resolver header, an Arduino library (``arduino/``) and a CMake
target (``cmake/``); for LiteRT targets ``labels.txt``, ``model.json`` and ``infer.py``.
Writes ``ctx.firmware_model`` and ``ctx.firmware``.
"""

from __future__ import annotations

from edgebuild import __version__
from edgebuild.budgets import check_budgets
from edgebuild.bundles import write_arduino_library, write_cmake_target, write_linux_bundle
from edgebuild.context import BuildContext
from edgebuild.firmware import FirmwareModel, c_identifier, model_header, model_source, ops_header
from edgebuild.results import Firmware, StageResult, to_json
from edgebuild.tflite import flatbuffer_ops


def firmware_model(ctx: BuildContext) -> FirmwareModel:
    """The generated C's view of this build."""
    recipe, target, artifact = ctx.recipe, ctx.target, ctx.artifact
    contract = artifact.input_contract
    arena = artifact.arena_bytes
    if arena is not None and ctx.npu is not None:
        # TFLM on the host cannot run the NPU's op: Vela's SRAM plan is the arena estimate.
        arena = max(arena, ctx.npu.sram_bytes)
    return FirmwareModel(
        data=ctx.deploy_tflite,
        prefix=c_identifier(recipe.firmware.prefix or recipe.name),
        basename=recipe.firmware.basename,
        arena_bytes=arena,
        arena_margin=target.firmware.arena_margin,
        section=target.firmware.section,
        inputs=[t.as_dict() for t in artifact.inputs],
        outputs=[t.as_dict() for t in artifact.outputs],
        labels=ctx.data.labels,
        ops=sorted(set(flatbuffer_ops(ctx.deploy_tflite))),
        task=ctx.data.task,
        trained_range=(contract.trained_min, contract.trained_max) if contract is not None else None,
        anomaly_threshold=artifact.anomaly_threshold,
    )


def run(ctx: BuildContext) -> StageResult:
    work = ctx.work
    (work / "model.tflite").write_bytes(ctx.deploy_tflite)
    written = ["model.tflite"]
    if ctx.npu is not None:
        (work / "model_cpu.tflite").write_bytes(ctx.tflite)  # what was validated, runs without the NPU
        written.append("model_cpu.tflite")
    model = ctx.firmware_model = firmware_model(ctx)
    header, source, ops = model.files
    sources = {header: model_header(model), source: model_source(model)}
    if ctx.target.runtime == "tflm":
        sources[ops] = ops_header(model)
    for name, text in sources.items():
        (work / name).write_text(text)
    written += list(sources)
    ctx.firmware = Firmware(prefix=model.prefix, files=tuple(sources), arena_bytes=model.arena_with_margin)
    if ctx.target.runtime == "tflm":
        library = write_arduino_library(work / "arduino", model, sources)
        write_cmake_target(work / "cmake", model, sources)
        written += [f"arduino/{library.name}/", "cmake/"]
    else:
        card = {
            "name": ctx.recipe.name,
            "target": ctx.target.name,
            "runtime": ctx.target.runtime,
            "edgebuild_version": __version__,
            "sha256": model.sha256,
            "bytes": len(model.data),
            "precision": ctx.target.precision.mode,
            "inputs": model.inputs,
            "outputs": model.outputs,
            "labels": list(model.labels),
            "task": ctx.data.task,
            "accuracy": {"artifact": ctx.artifact.accuracy, "float_teacher": ctx.teacher.accuracy},
            "metrics": {"artifact": ctx.artifact.metrics, "float_teacher": ctx.teacher.metrics},
            "input": to_json(ctx.artifact.input_contract),
            "anomaly_threshold": ctx.artifact.anomaly_threshold,
            "validated_on": ctx.validation.device,
            "budgets": to_json(check_budgets(ctx)),
        }
        write_linux_bundle(work, card, model.labels)
        written += ["labels.txt", "model.json", "infer.py"]
    return StageResult(", ".join(written))
