"""Report: check every budget and write ``report.json`` and ``report.md``.

Reads everything the earlier stages measured. Writes ``ctx.budgets``, ``ctx.report``
and the two report files under ``ctx.work``. The driver fails the build with exit
code 3 when a budget is missed.
"""

from __future__ import annotations

import json
import platform
import time
from typing import Any

from edgebuild import __version__
from edgebuild.context import BuildContext
from edgebuild.tf import versions

SPARSITY_TOLERANCE = 0.02


def _budget(name: str, limit: float, actual: float, kind: str, unit: str) -> dict[str, Any]:
    ok = actual <= limit + 1e-12 if kind == "max" else actual >= limit - 1e-12
    margin = limit - actual if kind == "max" else actual - limit
    return {"name": name, "kind": kind, "unit": unit, "limit": limit, "actual": actual, "margin": margin, "ok": ok}


def check_budgets(ctx: BuildContext) -> list[dict[str, Any]]:
    """Each budget of the target with its limit, the measured value, the margin and whether it is met."""
    budgets, artifact = ctx.target.budgets, ctx.artifact
    checked = []
    if budgets.model_bytes is not None:
        checked.append(_budget("model_bytes", budgets.model_bytes, artifact["tflite_bytes"], "max", "bytes"))
    if budgets.arena_bytes is not None and artifact.get("arena_bytes") is not None:
        checked.append(_budget("arena_bytes", budgets.arena_bytes, artifact["arena_bytes"], "max", "bytes"))
    drop = ctx.teacher_accuracy - artifact["accuracy"]
    checked.append(_budget("accuracy_drop", budgets.max_accuracy_drop, round(drop, 6), "max", "fraction"))
    target_sparsity = ctx.target.sparsity.target
    if target_sparsity > 0:
        floor = round(max(0.0, target_sparsity - SPARSITY_TOLERANCE), 6)
        checked.append(_budget("sparsity", floor, round(artifact["sparsity"], 6), "min", "fraction"))
    return checked


def budget_table(budgets: list[dict[str, Any]]) -> str:
    """A plain-text table of budgets: name, limit, actual, margin, status."""
    rows = [("budget", "limit", "actual", "margin", "")]
    for b in budgets:
        fmt = (lambda v: f"{v:,.0f}") if b["unit"] == "bytes" else (lambda v: f"{v * 100:.2f}%")
        sign = "<=" if b["kind"] == "max" else ">="
        rows.append(
            (b["name"], f"{sign} {fmt(b['limit'])}", fmt(b["actual"]), fmt(b["margin"]), "ok" if b["ok"] else "MISSED")
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows)


def _markdown(report: dict[str, Any], table: str) -> str:
    teacher, artifact, validation = report["teacher"], report["artifact"], report["validation"]
    lines = [
        f"# edgebuild report: {report['recipe']} for {report['target']}",
        "",
        f"- Float teacher: accuracy {teacher['accuracy']:.2%}, float32 .tflite {teacher['tflite_bytes']:,} bytes",
        f"- Artifact ({artifact['precision']}): accuracy {artifact['accuracy']:.2%}, "
        f"{artifact['tflite_bytes']:,} bytes, sparsity {artifact['sparsity']:.1%}",
    ]
    if artifact.get("arena_bytes") is not None:
        lines.append(f"- TFLM tensor arena: {artifact['arena_bytes']:,} bytes")
    lines += [
        f"- Validated on: {validation['device']}",
        f"- Against {validation['reference']}: {validation['mismatched_outputs']} of "
        f"{validation['compared_outputs']} outputs differ, max {validation['max_lsb_diff']} LSB, "
        f"top-1 agreement {validation['top1_agreement']:.2%}",
        f"- Latency on that device: {validation['latency']}",
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


def run(ctx: BuildContext) -> str:
    start = time.perf_counter()
    ctx.budgets = check_budgets(ctx)
    teacher = ctx.teacher
    report: dict[str, Any] = {
        "recipe": ctx.recipe.name,
        "target": ctx.target.name,
        "edgebuild_version": __version__,
        "teacher": {
            "accuracy": ctx.teacher_accuracy,
            "tflite_bytes": ctx.teacher_tflite_bytes,
            "parameters": int(teacher.count_params()),
        },
        "artifact": ctx.artifact,
        "validation": ctx.validation,
        "budgets": ctx.budgets,
        "conversion": ctx.conversion,
        "stage_accuracy": ctx.stage_accuracy,
        "stages": [*ctx.stages, {"name": "report", "seconds": 0.0, "summary": "report.json, report.md"}],
        "warnings": ctx.warnings,
        "versions": versions(),
        "platform": f"{platform.system()} {platform.machine()} Python {platform.python_version()}",
    }
    report["stages"][-1]["seconds"] = round(time.perf_counter() - start, 3)
    ctx.report = report
    (ctx.work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    (ctx.work / "report.md").write_text(_markdown(report, budget_table(ctx.budgets)))
    missed = [b["name"] for b in ctx.budgets if not b["ok"]]
    return f"budgets: {len(ctx.budgets) - len(missed)} met, {len(missed)} missed" + (
        f" ({', '.join(missed)})" if missed else ""
    )
