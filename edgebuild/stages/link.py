"""Link: compile the generated C with the real compilers and prove the model fits the device.

Reads the emitted C files, the target's [memory] map and its compiler family
(``[firmware] toolchain``). Writes ``ctx.firmware`` (compilers used, FLASH and RAM as
the linker counts them, by part). The fit counts the model, its arena, the profile's
``memory.application_*`` and the runtime: the profile's ``memory.runtime_*`` estimate, or, with
``--device qemu``, the firmware built from these files with TFLM (measured; it then runs on an
emulated Cortex-M board, ``firmware_run``). Without the target's cross-compiler it warns with the
packages to install and the build goes on without the fit check.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from edgebuild.context import BuildContext
from edgebuild.firmware_run import run_firmware
from edgebuild.results import StageResult, skipped
from edgebuild.toolchain import Region, compile_checks, have_compiler, install_hint, link_check, machine_flags


def run(ctx: BuildContext) -> StageResult:
    if ctx.target.runtime != "tflm":
        return skipped("not a microcontroller target")
    model, firmware = ctx.firmware_model, ctx.firmware
    assert model is not None and firmware is not None, "emit made the firmware model"
    # --device qemu builds the firmware from these files: its own FLASH and RAM are the fit. On an NPU
    # target the firmware that runs is the CPU model's, not the shipped one: the estimate stays the fit.
    measured = ctx.device.kind != "host" and ctx.npu is None
    with tempfile.TemporaryDirectory(prefix="edgebuild-link-") as tmp:
        compilers = tuple(compile_checks(ctx.work, model, ctx.target, Path(tmp)))
        gcc = ctx.target.toolchain.gcc
        if not have_compiler(ctx.target):
            ctx.firmware = dataclasses.replace(firmware, compilers=compilers, link=f"skipped: {gcc} not found")
            ctx.warn(f"{gcc} not found, so the firmware fit was not checked: {install_hint(ctx.target)}")
            return StageResult(f"compiled with {', '.join(compilers) or 'no compiler'}; fit not checked (no {gcc})")
        regions = () if measured else tuple(link_check(ctx.work, model, ctx.target, Path(tmp)))
    ctx.firmware = dataclasses.replace(
        firmware, compilers=compilers, regions=regions, fit_from="" if measured else "the profile's runtime estimate"
    )
    machine = f"{ctx.target.cpu} ({' '.join(machine_flags(ctx.target))})"
    summary = f"compiled warning-free with {', '.join(compilers)}; "
    if measured:
        ran = run_firmware(ctx, fit=True)  # the firmware from these files, linked and run on an emulated board
        return StageResult(f"{summary}firmware linked for {machine}: {_usage(ctx.firmware.regions)}; {ran}")
    summary += f"linked for {machine} with the profile's runtime estimate: {_usage(regions)}"
    if ctx.device.kind != "host" and all(r.margin >= 0 for r in regions):
        summary += "; " + run_firmware(ctx, fit=False)  # an NPU target's CPU model, on an emulated board
    return StageResult(summary)


def _usage(regions: tuple[Region, ...]) -> str:
    return "; ".join(f"{r.name} {r.used:,} of {r.total:,} B ({r.margin:,} B free)" for r in regions)
