"""The default recipe on every shipped target: teacher and artifact bytes and accuracy,
sparsity, TFLM arena, host latency of the int8 artifact against the same model in
float32. Also the rebuild figures (no-op, second target) and channel pruning against
the same recipe unpruned on cortex-m4.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from common import Run, failure, read_report, run_edgebuild, shipped, write_table
from goals import MAX_DROP_POINTS, SHIPPED_TARGETS, Measurement, failed


def target_row(report: dict[str, Any], run: Run) -> dict[str, Any]:
    """One target's figures from its build's report.json and process ``run``.

    The float latency is the pruned (or distilled) model's profile; ``int8_speedup`` is None when
    either latency is missing from the report.
    """
    artifact, profiles = report["artifact"], report["profiles"]
    float_ms = (profiles.get("prune") or profiles.get("distill") or {}).get("host_latency_ms")
    int8_ms = (profiles.get("artifact") or {}).get("host_latency_ms")
    drop = (report["teacher"]["accuracy"] - artifact["accuracy"]) * 100
    return {
        "teacher_bytes": report["teacher"]["tflite_bytes"],
        "teacher_accuracy": report["teacher"]["accuracy"],
        "artifact_bytes": artifact["tflite_bytes"],
        "artifact_accuracy": artifact["accuracy"],
        "precision": artifact["precision"],
        "sparsity": artifact["sparsity"],
        "arena_bytes": artifact["arena_bytes"],
        "float_latency_ms": float_ms,
        "int8_latency_ms": int8_ms,
        "int8_speedup": round(float_ms / int8_ms, 2) if float_ms and int8_ms else None,
        "compression": round(report["teacher"]["tflite_bytes"] / artifact["tflite_bytes"], 1),
        "drop_points": round(drop, 2),
        "wall_s": round(run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes,
    }


def every_target(table: dict[str, Any], targets: tuple[str, ...], project: Path, no_op_runs: int) -> dict[str, Any]:
    """The recipe ``table`` on each of ``targets`` in one project (one shared stage cache): the first
    cold, then ``no_op_runs`` no-op rebuilds of it, then the others; then cortex-m4 without pruning.

    Returns rows per target (``{"error": ...}`` for a failed build), the cold build's stages and peak
    memory, the rebuild times and the unpruned cortex-m4 row.
    """
    recipe = table["name"]
    write_table(project, "recipes", recipe, table)
    first = targets[0]
    cold = run_edgebuild(project, recipe, first)
    if cold.returncode:
        not_built = {t: {"error": f"the cold build for {first} failed"} for t in targets}
        return {"rows": {**not_built, first: failure(cold, f"edgebuild {recipe} {first}")}}
    cold_report = read_report(project, recipe, first)
    rows = {first: target_row(cold_report, cold)}
    no_op = [run_edgebuild(project, recipe, first).seconds for _ in range(no_op_runs)]
    second_s = None  # the second target's build, which reuses the first's teacher and student
    for target in targets[1:]:
        run = run_edgebuild(project, recipe, target)
        if run.returncode:
            rows[target] = failure(run, target)
            continue
        rows[target] = target_row(read_report(project, recipe, target), run)
        if target == targets[1]:
            second_s = run.seconds
    dense = shipped("targets", "cortex-m4")
    dense["sparsity"] = {**dense["sparsity"], "target": 0.0}
    dense["budgets"] = {"max_accuracy_drop": 1.0}
    write_table(project, "targets", "cortex-m4-dense", dense)
    run = run_edgebuild(project, recipe, "cortex-m4-dense")
    unpruned = target_row(read_report(project, recipe, "cortex-m4-dense"), run) if not run.returncode else None
    return {
        "rows": rows,
        "cold_stages": [{k: s[k] for k in ("name", "seconds", "summary")} for s in cold_report["stages"]],
        "cold_peak_memory_bytes": cold_report["build"]["peak_memory_bytes"],
        "rebuild": {
            "first_target": first,
            "cold_s": round(cold.seconds, 2),
            "no_op_s": [round(s, 3) for s in no_op],
            "no_op_median_s": round(statistics.median(no_op), 3),
            "second_target": targets[1] if len(targets) > 1 else None,
            "second_target_s": round(second_s, 2) if second_s else None,
            "second_target_ratio": round(second_s / cold.seconds, 3) if second_s else None,
        },
        "cortex_m4_unpruned": unpruned or failure(run, "cortex-m4-dense"),
    }


def full_plan_build(part: dict[str, Any]) -> dict[str, Any] | None:
    """The rpi4 build of ``every_target``'s result as ``vs_script`` summarizes a build; None if it failed."""
    row = part["rows"].get("rpi4")
    if not row or "error" in row:
        return None
    return {
        "tflite_bytes": row["artifact_bytes"],
        "accuracy": row["artifact_accuracy"],
        "wall_s": row["wall_s"],
        "peak_rss_bytes": row["peak_rss_bytes"],
        "stages": {s["name"]: s["seconds"] for s in part["cold_stages"]},
    }


def _target_goals(target: str, row: dict[str, Any] | None, built: list[str]) -> dict[str, Measurement]:
    names = [f"{target}.int8_speedup", f"{target}.compression"]
    if row is None:
        return {
            name: Measurement(None, f"not built: this run built only {', '.join(built)} (--quick)") for name in names
        }
    if "error" in row:
        return failed(row, names)
    latency = (
        Measurement(row["int8_speedup"])
        if row["int8_speedup"] is not None
        else Measurement(
            None, f"no host latency in report.json (float {row['float_latency_ms']}, int8 {row['int8_latency_ms']})"
        )
    )
    over = row["drop_points"] > MAX_DROP_POINTS
    compression = Measurement(
        row["compression"], f"accuracy drop {row['drop_points']} points > {MAX_DROP_POINTS:g}" if over else ""
    )
    return {names[0]: latency, names[1]: compression}


def _ratio(pruned: dict[str, Any], dense: dict[str, Any], key: str) -> Measurement:
    if pruned.get(key) is None or dense.get(key) is None:
        return Measurement(
            None, f"{key} missing from report.json (pruned {pruned.get(key)}, unpruned {dense.get(key)})"
        )
    return Measurement(round(pruned[key] / dense[key], 3))


def measure_goals(part: dict[str, Any]) -> dict[str, Measurement]:
    """The per-target, ``rebuild.*`` and ``channels.*`` goals from ``every_target``'s result."""
    rows = part["rows"]
    measured: dict[str, Measurement] = {}
    for target in SHIPPED_TARGETS:
        measured |= _target_goals(target, rows.get(target), list(rows))
    rebuild = part.get("rebuild")
    if rebuild is None:
        measured |= failed(rows[next(iter(rows))], ["rebuild.no_op_median_s", "rebuild.second_target_ratio"])
    else:
        measured["rebuild.no_op_median_s"] = Measurement(rebuild["no_op_median_s"])
        measured["rebuild.second_target_ratio"] = (
            Measurement(rebuild["second_target_ratio"])
            if rebuild["second_target_ratio"] is not None
            else Measurement(None, f"not measured: no second target built ({rebuild['second_target']})")
        )
    names = ["channels.bytes_ratio", "channels.arena_ratio", "channels.latency_ratio", "channels.drop"]
    pruned = rows.get("cortex-m4", {"error": "cortex-m4 was not built"})
    dense = part.get("cortex_m4_unpruned", {"error": "cortex-m4 unpruned was not built"})
    if "error" in pruned:
        measured |= failed(pruned, names)
    elif "error" in dense:
        measured |= failed(dense, names)
    else:
        measured["channels.bytes_ratio"] = _ratio(pruned, dense, "artifact_bytes")
        measured["channels.arena_ratio"] = _ratio(pruned, dense, "arena_bytes")
        measured["channels.latency_ratio"] = _ratio(pruned, dense, "int8_latency_ms")
        measured["channels.drop"] = Measurement(pruned["drop_points"])
    return measured
