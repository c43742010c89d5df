"""Report: check every budget and write ``report.json``, ``report.md`` and ``report.html``.

Reads everything the earlier stages measured. Writes ``ctx.budgets``, ``ctx.report``
and the three report files under ``ctx.work``. The driver fails the build with exit
code 3 when a budget is missed.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

from edgebuild import __version__
from edgebuild.budgets import budget_table, check_budgets
from edgebuild.context import BuildContext
from edgebuild.html_report import build_html
from edgebuild.memory import peak_bytes
from edgebuild.results import StageResult, to_json
from edgebuild.tasks import ANOMALY_PERCENTILE, describe
from edgebuild.tf import build_threads, versions


def _evolution(report: dict[str, Any]) -> list[str]:
    """The model after each stage, and the channels channel pruning kept."""
    names = {"baseline": "float teacher", "distill": "student", "prune": "pruned", "artifact": "artifact"}
    profiles = report["profiles"]
    lines = [
        "",
        "## The model at each stage",
        "",
        "| stage | test metrics | parameters | MACs | .tflite bytes | TFLM arena | host latency (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for stage, label in names.items():
        p = profiles.get(stage)
        if not p:
            continue
        metrics = report["stage_metrics"].get(stage) or (report["artifact"]["metrics"] if stage == "artifact" else {})
        arena = f"{p['arena_bytes']:,}" if p.get("arena_bytes") else "-"
        sizes = f"{p['parameters']:,} | {p['macs']:,} | {p['tflite_bytes']:,} | {arena}"
        lines.append(f"| {label} | {describe(metrics)} | {sizes} | {p['host_latency_ms'] * 1000:.1f} µs |")
    matrix = report["artifact"].get("confusion_matrix")
    if matrix:
        labels = list(report["artifact"]["per_class_accuracy"])
        lines += ["", "Confusion matrix of the artifact on the test split (rows: true class, columns: predicted):", ""]
        lines += ["| | " + " | ".join(labels) + " | accuracy |", "|---" * (len(labels) + 2) + "|"]
        for label, row in zip(labels, matrix, strict=True):
            share = report["artifact"]["per_class_accuracy"][label]
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {share:.1%} |")
    pruning = report.get("pruning") or {}
    if pruning.get("layers"):
        lines += ["", f"Channel pruning ({pruning['criterion']}):", "", "| layer | kind | channels before | after |"]
        lines.append("|---|---|---:|---:|")
        lines += [
            f"| {c['layer']} | {c['kind']} | {c['before']} | {c['after']}"
            + (f" (skipped: pruning cannot follow {c['skipped']})" if c.get("skipped") else "")
            + " |"
            for c in pruning["layers"]
        ]
    handled = [q for q in report.get("qat_layers", []) if q["action"] != "tf-mot"]
    if handled:
        lines += ["", "Quantization-aware training, layers TF-MOT does not quantize by itself:", ""]
        lines += ["| layer | kind | done |", "|---|---|---|"]
        lines += [
            f"| {q['layer']} | {q['kind']} | {q['action']}" + (f": {q['reason']}" if q["reason"] else "") + " |"
            for q in handled
        ]
    return lines


def _firmware_lines(run: dict[str, Any]) -> list[str]:
    """The firmware run on an emulated board (--device qemu on a TFLM target)."""
    fw, same = run["firmware"], run["vs_host_tflm"]
    count = fw["instructions"]
    parts = ", ".join(f"{name} {size:,}" for name, size in fw["flash_by_part"].items())
    ram = ", ".join(f"{name} {size:,}" for name, size in fw["ram_by_part"].items())
    return [
        f"- Firmware on {run['measured_on']}, from {fw['model_source']}: {describe(run['metrics'])}; "
        f"{same['mismatched_outputs']} of {same['compared_outputs']} outputs differ from the host's TFLM "
        f"interpreter (max {same['max_lsb_diff']} LSB)",
        f"- Instructions per inference (QEMU -icount, emulated; not cycles): mean {count['mean']:,.0f}, "
        f"min {count['min']:,.0f}, max {count['max']:,.0f}",
        f"- Firmware flash {fw['flash_bytes']:,} B ({parts}); RAM {fw['ram_bytes']:,} B ({ram}); "
        f"arena used {fw['arena_used_bytes']:,} of {fw['arena_bytes']:,} B, stack {fw['stack_used_bytes']:,} of "
        f"{fw['stack_bytes']:,} B",
        f"- TFLM {fw['tflm_commit'][:12]} ({fw['kernels']} kernels): {fw['library_objects']} objects linked, "
        + (
            f"{fw['library_compiled_objects']} of them compiled by this build in {fw['library_compile_seconds']:.0f} s"
            if fw["library_compiled_objects"]
            else "all from the cache"
        ),
        *_kernel_table(fw["kernel_comparison"]),
    ]


def _kernel_table(runs: list[dict[str, Any]]) -> list[str]:
    """Both TFLM kernel families on the same firmware (--compare-kernels): what each costs."""
    if not runs:
        return []
    base = runs[-1]["instructions"]["mean"]
    lines = [
        "",
        f"| kernels | instructions per inference (mean) | min | max | speed-up over {runs[-1]['kernels']} "
        "| firmware flash B | arena used B | outputs differing from host TFLM |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        count, same = run["instructions"], run["vs_host_tflm"]
        lines.append(
            f"| {run['kernels']} | {count['mean']:,.0f} | {count['min']:,.0f} | {count['max']:,.0f} | "
            f"{base / count['mean']:.2f}x | {run['flash_bytes']:,} | {run['arena_used_bytes']:,} | "
            f"{same['mismatched_outputs']} of {same['compared_outputs']} |"
        )
    return [*lines, ""]


def _markdown(report: dict[str, Any], table: str) -> str:
    teacher, artifact, validation = report["teacher"], report["artifact"], report["validation"]
    lines = [
        f"# edgebuild report: {report['recipe']} for {report['target']}",
        "",
        f"- Task: {report['task']}",
        f"- Float teacher: {describe(teacher['metrics'])}, float32 .tflite {teacher['tflite_bytes']:,} bytes",
        f"- Artifact ({artifact['precision']}): {describe(artifact['metrics'])}, "
        f"{artifact['tflite_bytes']:,} bytes, sparsity {artifact['sparsity']:.1%}",
    ]
    if artifact.get("anomaly_threshold") is not None:
        lines.append(
            f"- Anomaly threshold (the {ANOMALY_PERCENTILE:g}th percentile of the validation split's reconstruction "
            f"error): {artifact['anomaly_threshold']:.6g}"
        )
    if report.get("sparsity_note"):
        lines.append(f"- Sparsity: {report['sparsity_note']}")
    if artifact.get("arena_bytes") is not None:
        lines.append(f"- TFLM tensor arena: {artifact['arena_bytes']:,} bytes")
    lines += [
        f"- Validated on: {validation['device']}",
        f"- Against {validation['reference']}: {validation['mismatched_outputs']} of "
        f"{validation['compared_outputs']} outputs differ, max {validation['max_lsb_diff']} LSB, "
        f"top-1 agreement {validation['top1_agreement']:.2%}"
        if report["task"] == "classification"
        else "",
        "- Latency on that device: "
        + ", ".join(f"{k.removesuffix('_ms')} {v:.3f} ms" for k, v in validation["latency"].items()),
    ]
    run = validation.get("device_run")
    if run and run.get("firmware"):
        lines += _firmware_lines(run)
    elif run:
        accuracy = f"{describe(run['metrics'])}, " if run.get("metrics") else ""
        latency = ", ".join(f"{k.removesuffix('_ms')} {v:.3f} ms" for k, v in run["latency"].items())
        lines.append(
            f"- Also ran on {run['device']} ({run['measured_on']}): {accuracy}latency {latency} ({run['latency_note']})"
        )
    npu = report.get("npu")
    if npu:
        lines.append(
            f"- NPU {npu['accelerator']} (Vela, {npu['system_config']}, {npu['memory_mode']}): "
            f"{npu['npu_cycles']:,} NPU cycles, {npu['total_cycles']:,} in all; SRAM {npu['sram_bytes']:,} B; "
            f"flash {npu['off_chip_flash_bytes'] + npu['on_chip_flash_bytes']:,} B; "
            f"ops on the CPU: {', '.join(npu['cpu_ops']) or 'none'}"
        )
    firmware = report.get("firmware") or {}
    for region in firmware.get("regions", []):
        parts = ", ".join(f"{name} {size:,}" for name, size in region["parts"].items())
        lines.append(
            f"- {region['name']} (linker, runtime from {firmware['fit_from']}): {region['used']:,} of "
            f"{region['total']:,} B used, {region['margin']:,} B free ({parts})"
        )
    lines.append(f"- Peak memory of the build process: {report['build']['peak_memory_bytes'] / 2**20:,.0f} MB")
    if report.get("unsafe_model_allowed"):
        lines.append("- The model was loaded with --allow-unsafe-model (its Lambda or custom layers ran code)")
    lines += _evolution(report)
    lines += [
        "",
        "## Budgets",
        "",
        "```",
        table,
        "```",
        "",
        "## Stages",
        "",
        "| stage | seconds | result |",
        "|---|---:|---|",
    ]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {s['summary']} |" for s in report["stages"]]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


def _sparsity_note(ctx: BuildContext) -> str | None:
    """Says plainly when the profile's sparsity was not applied because the recipe does not prune."""
    asked = ctx.target.sparsity
    if ctx.pruning is not None or asked.target == 0:
        return None
    return (
        f"none applied: the recipe has no [prune] table (the profile's {asked.target:.0%} {asked.structure} "
        "sparsity is what the builder aims for when a recipe prunes)"
    )


def run(ctx: BuildContext) -> StageResult:
    start = time.perf_counter()
    ctx.budgets = check_budgets(ctx)
    report: dict[str, Any] = {
        "recipe": ctx.recipe.name,
        "target": ctx.target.name,
        "edgebuild_version": __version__,
        "teacher": to_json(ctx.teacher),
        "artifact": to_json(ctx.artifact),
        "validation": to_json(ctx.validation),
        "budgets": to_json(ctx.budgets),
        "conversion": to_json(ctx.conversion),
        "npu": to_json(ctx.npu),
        "firmware": to_json(ctx.firmware),
        "task": ctx.recipe.task,
        "stage_accuracy": {name: m["accuracy"] for name, m in ctx.stage_metrics.items() if "accuracy" in m},
        "stage_metrics": ctx.stage_metrics,
        "stage_validation_metrics": ctx.stage_validation_metrics,
        "profiles": to_json(ctx.costs),
        "pruning": to_json(ctx.pruning),
        "qat_layers": to_json(ctx.qat_layers),
        "sparsity_note": _sparsity_note(ctx),
        "stages": [*ctx.stages, {"name": "report", "seconds": 0.0, "summary": "report.json, report.md, report.html"}],
        "warnings": ctx.warnings,
        "unsafe_model_allowed": ctx.allow_unsafe_model,
        "build": {"peak_memory_bytes": peak_bytes(), "threads": build_threads()},
        "versions": versions(),
        "platform": f"{platform.system()} {platform.machine()} Python {platform.python_version()}",
    }
    report["stages"][-1]["seconds"] = round(time.perf_counter() - start, 3)
    ctx.report = report
    (ctx.work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (ctx.work / "report.md").write_text(_markdown(report, budget_table(ctx.budgets)))
    (ctx.work / "report.html").write_text(build_html(report))
    missed = [b.name for b in ctx.budgets if not b.ok]
    return StageResult(
        f"budgets: {len(ctx.budgets) - len(missed)} met, {len(missed)} missed"
        + (f" ({', '.join(missed)})" if missed else "")
    )
