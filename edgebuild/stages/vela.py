"""Vela: compile the int8 model for an Arm Ethos-U NPU (targets with an [npu] table).

Reads ``ctx.tflite`` (the validated int8 model) and the target's [npu] table. Writes
``ctx.deploy_tflite`` (Vela's optimized model, which becomes the C array) and
``ctx.npu`` (Vela's cycle, SRAM and flash estimates, and the ops left to the CPU).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from edgebuild.context import BuildContext
from edgebuild.errors import BuildError
from edgebuild.results import NpuEstimate, StageResult, skipped
from edgebuild.schema import Npu
from edgebuild.support import NPU_OP
from edgebuild.tflite import flatbuffer_ops


def run_vela(model: bytes, npu: Npu, folder: Path) -> tuple[bytes, dict[str, str]]:
    """Run Vela on ``model`` in ``folder``; return the optimized model and its summary CSV row."""
    (folder / "model.tflite").write_bytes(model)
    command = [
        sys.executable,
        "-c",
        "import sys; from ethosu.vela.vela import main; sys.exit(main(sys.argv[1:]))",
        str(folder / "model.tflite"),
        "--accelerator-config",
        npu.accelerator,
        "--config",
        "Arm/vela.ini",
        "--system-config",
        npu.system_config,
        "--memory-mode",
        npu.memory_mode,
        "--optimise",
        npu.optimise,
        "--output-dir",
        str(folder / "out"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        detail = next((line for line in lines if "Error" in line or "error" in line), lines[-1] if lines else "")
        if "No module named" in proc.stderr:
            raise BuildError("Vela is not installed", hint="pip install ethos-u-vela")
        raise BuildError(f"Vela could not compile the model: {detail.strip()}")
    optimized = (folder / "out" / "model_vela.tflite").read_bytes()
    summaries = list((folder / "out").glob("model_summary_*.csv"))
    if not summaries:
        raise BuildError("Vela wrote no summary CSV")
    with summaries[0].open(newline="") as f:
        row = next(csv.DictReader(f))
    return optimized, row


def run(ctx: BuildContext) -> StageResult:
    npu = ctx.target.npu
    if npu is None:
        ctx.deploy_tflite = ctx.tflite
        return skipped("the target has no NPU")
    with tempfile.TemporaryDirectory(prefix="edgebuild-vela-") as tmp:
        optimized, row = run_vela(ctx.tflite, npu, Path(tmp))
    ops = flatbuffer_ops(optimized)
    cpu_ops = sorted({op for op in ops if op != NPU_OP})
    kib = 1024
    ctx.deploy_tflite = optimized
    ctx.npu = npu_facts = NpuEstimate(
        accelerator=npu.accelerator,
        system_config=npu.system_config,
        memory_mode=npu.memory_mode,
        vela_tflite_bytes=len(optimized),
        npu_cycles=int(float(row["cycles_npu"])),
        total_cycles=int(float(row["cycles_total"])),
        inference_time_s=float(row["inference_time"]),
        sram_bytes=math.ceil(float(row["sram_memory_used"]) * kib),
        off_chip_flash_bytes=math.ceil(float(row["off_chip_flash_memory_used"]) * kib),
        on_chip_flash_bytes=math.ceil(float(row["on_chip_flash_memory_used"]) * kib),
        macs=int(float(row["nn_macs"])),
        npu_ops=ops.count(NPU_OP),
        cpu_ops=tuple(cpu_ops),
    )
    on_cpu = f"; on the CPU: {', '.join(cpu_ops)}" if cpu_ops else "; every op on the NPU"
    return StageResult(
        f"{npu.accelerator}: {npu_facts.npu_cycles:,} NPU cycles ({npu_facts.total_cycles:,} in all), "
        f"SRAM {npu_facts.sram_bytes:,} B, "
        f"flash {npu_facts.off_chip_flash_bytes + npu_facts.on_chip_flash_bytes:,} B"
        f"{on_cpu}"
    )
