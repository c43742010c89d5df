"""Link: compile the generated C with the real compilers and prove the model fits the device.

Reads the emitted C files and the target's [memory] map. Writes ``ctx.firmware``
(compilers used, FLASH and RAM as the linker counts them). Without the arm toolchain
it warns with the package to install and the build goes on without the fit check.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from edgebuild.context import BuildContext
from edgebuild.results import StageResult, skipped
from edgebuild.toolchain import INSTALL_HINT, compile_checks, have_arm_toolchain, link_check


def run(ctx: BuildContext) -> StageResult:
    if ctx.target.runtime != "tflm":
        return skipped("not a microcontroller target")
    model, firmware = ctx.firmware_model, ctx.firmware
    assert model is not None and firmware is not None, "emit made the firmware model"
    with tempfile.TemporaryDirectory(prefix="edgebuild-link-") as tmp:
        compilers = tuple(compile_checks(ctx.work, model, ctx.target, Path(tmp)))
        if not have_arm_toolchain():
            ctx.firmware = dataclasses.replace(
                firmware, compilers=compilers, link="skipped: arm-none-eabi-gcc not found"
            )
            ctx.warn(f"arm-none-eabi-gcc not found, so the firmware fit was not checked: {INSTALL_HINT}")
            return StageResult(
                f"compiled with {', '.join(compilers) or 'no compiler'}; fit not checked (no arm toolchain)"
            )
        regions = tuple(link_check(ctx.work, model, ctx.target, Path(tmp)))
    ctx.firmware = dataclasses.replace(firmware, compilers=compilers, regions=regions)
    usage = "; ".join(f"{r.name} {r.used:,} of {r.total:,} B ({r.margin:,} B free)" for r in regions)
    return StageResult(f"compiled warning-free with {', '.join(compilers)}; linked for {ctx.target.cpu}: {usage}")
