"""Against the hand-written way: ``bench/tfmot_script.py`` (the TF-MOT tutorials' train,
``prune_low_magnitude``, QAT, int8) and edgebuild on a recipe with exactly those stages,
both cold, one after the other: wall time, bytes, accuracy. Then the recipe's full plan
(distillation, channel pruning) against the same script.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH, Run, failure, measuring, read_report, run_edgebuild, run_python, shipped, write_table
from goals import Measurement, failed

GOAL_NAMES = [
    "script.wall_ratio",
    "script.bytes_ratio",
    "script.accuracy_diff",
    "script.full_plan_bytes_ratio",
    "script.full_plan_accuracy_diff",
]


def same_stages(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe cut down to the script's stages: its deployed model trained, magnitude-pruned, QAT."""
    same = {k: v for k, v in recipe.items() if k not in ("distill", "description")}
    if "distill" in recipe:  # the script trains the deployed (student) model directly
        same["model"] = {**recipe["model"], "width": recipe["distill"]["student_width"]}
    same["prune"] = {"epochs": recipe.get("prune", {}).get("epochs", 2), "schedule": "polynomial"}
    same["qat"] = {"epochs": recipe.get("qat", {}).get("epochs", 1)}
    return {**same, "name": name}


def summarize_build(report: dict[str, Any], run: Run) -> dict[str, Any]:
    """One build's artifact bytes and accuracy (from its report.json), wall time, peak memory, stage times."""
    return {
        "tflite_bytes": report["artifact"]["tflite_bytes"],
        "accuracy": report["artifact"]["accuracy"],
        "wall_s": round(run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes,
        "stages": {s["name"]: s["seconds"] for s in report["stages"]},
    }


def against_script(
    recipe: dict[str, Any], project: Path, seeds: tuple[int, ...], full_plan_first: dict[str, Any] | None
) -> dict[str, Any]:
    """For each seed, cold and one after the other: the TF-MOT tutorial script, edgebuild with the same
    stages for rpi4, and the recipe's full plan for rpi4 (for the first seed ``full_plan_first``, the
    build ``every_target`` already made, when given).

    Writes recipes, targets and builds into ``project``. Returns the runs and their mean ratios, or
    ``{"error": ...}`` naming the first process that failed.
    """
    tfmot_target = measuring(shipped("targets", "rpi4"))
    tfmot_target["sparsity"] = {"target": 0.5, "structure": "unstructured", "exploitable": ["unstructured"]}
    write_table(project, "targets", "rpi4-tfmot", tfmot_target)
    write_table(project, "targets", "rpi4-measure", measuring(shipped("targets", "rpi4")))
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        seeded = {**recipe, "seed": seed, "name": f"{recipe['name']}-seed{seed}"}
        write_table(project, "recipes", seeded["name"], seeded)
        same = same_stages(seeded, f"tfmot-stages-seed{seed}")
        write_table(project, "recipes", same["name"], same)
        out = f"script-seed{seed}"
        script_args = [str(BENCH / "tfmot_script.py"), "--recipe", seeded["name"], "--out", out]
        script = run_python(script_args, project, {**os.environ})
        if script.returncode:
            return failure(script, f"tfmot_script.py seed {seed}")
        ours = run_edgebuild(project, same["name"], "rpi4-tfmot", "--no-cache")
        if ours.returncode:
            return failure(ours, f"edgebuild {same['name']}")
        if seed == seeds[0] and full_plan_first:
            full = full_plan_first
        else:
            run = run_edgebuild(project, seeded["name"], "rpi4-measure")
            if run.returncode:
                return failure(run, f"edgebuild {seeded['name']}")
            full = summarize_build(read_report(project, seeded["name"], "rpi4-measure"), run)
        script_result = json.loads((project / out / "result.json").read_text())
        runs.append(
            {
                "seed": seed,
                "script": {
                    **script_result,
                    "wall_s": round(script.seconds, 1),
                    "peak_rss_bytes": script.peak_rss_bytes,
                },
                "edgebuild": summarize_build(read_report(project, same["name"], "rpi4-tfmot"), ours),
                "full_plan": full,
            }
        )

    def mean(who: str, key: str) -> float:
        return float(np.mean([run[who][key] for run in runs]))

    return {
        "runs": runs,
        "test_samples": runs[0]["script"]["test_samples"],
        "wall_ratio": round(sum(r["edgebuild"]["wall_s"] for r in runs) / sum(r["script"]["wall_s"] for r in runs), 3),
        "bytes_ratio": round(mean("edgebuild", "tflite_bytes") / mean("script", "tflite_bytes"), 3),
        "accuracy_diff_points": round((mean("edgebuild", "accuracy") - mean("script", "accuracy")) * 100, 2),
        "full_plan_bytes_ratio": round(mean("full_plan", "tflite_bytes") / mean("script", "tflite_bytes"), 3),
        "full_plan_accuracy_diff_points": round((mean("full_plan", "accuracy") - mean("script", "accuracy")) * 100, 2),
        "mean_accuracy": {who: round(mean(who, "accuracy"), 4) for who in ("script", "edgebuild", "full_plan")},
    }


def measure_goals(part: dict[str, Any]) -> dict[str, Measurement]:
    """The ``script.*`` goals from ``against_script``'s result (all unmeasured when it failed)."""
    if "error" in part:
        return failed(part, GOAL_NAMES)
    return {
        "script.wall_ratio": Measurement(part["wall_ratio"]),
        "script.bytes_ratio": Measurement(part["bytes_ratio"]),
        "script.accuracy_diff": Measurement(part["accuracy_diff_points"]),
        "script.full_plan_bytes_ratio": Measurement(part["full_plan_bytes_ratio"]),
        "script.full_plan_accuracy_diff": Measurement(part["full_plan_accuracy_diff_points"]),
    }
