"""The search against the TF-MOT script: ``edgebuild search --target cortex-m4`` on the default
data, one cold search per seed (its own stage cache), against the script's int8 model of the
same seed (``tfmot_script.py``: train, prune, PQAT, int8), and its wall time against a cold
build of the same seed's recipe for cortex-m4 run right after it (the mean over the seeds of
each, so that one slow or fast build does not make the ratio).

The chosen plan's test accuracy is the test split's (the search decided on the validation split);
the script's is on the same test split. The chosen recipe (``best.toml``) is then built for
cortex-m4 as a user would, which judges every budget on the test split: the seeds where it
meets every one are counted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH, failure, run_edgebuild, run_python, write_table
from goals import Measurement, failed

GOAL_NAMES = ["search.bytes_ratio", "search.accuracy_diff", "search.wall_ratio", "search.best_recipe_builds"]


def search_part(recipe: dict[str, Any], project: Path, seeds: tuple[int, ...], trials: int) -> dict[str, Any]:
    """For each seed: the TF-MOT script, a cold ``edgebuild search`` of ``trials`` trials (Optuna)
    for cortex-m4, and a cold build of the seed's recipe for cortex-m4.

    Writes recipes and outputs into ``project``. Returns the runs, the ratios and the standard
    error of the accuracy difference, or ``{"error": ...}`` naming the first process that failed.
    """
    runs = []
    for seed in seeds:
        seeded = {**recipe, "seed": seed, "name": f"{recipe['name']}-seed{seed}"}
        seeded["search"] = {"algorithm": "optuna", "trials": trials, "seed": seed}
        write_table(project, "recipes", seeded["name"], seeded)
        out = f"script-seed{seed}"
        script = run_python(
            [str(BENCH / "tfmot_script.py"), "--recipe", seeded["name"], "--out", out], project, {**os.environ}
        )
        if script.returncode:
            return failure(script, f"tfmot_script.py seed {seed}")
        env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(project / f"cache-seed{seed}")}
        args = ["-m", "edgebuild", "search", "--recipe", seeded["name"], "--target", "cortex-m4", "--quiet"]
        searched = run_python([*args, "--out", f"search-seed{seed}"], project, env)
        if searched.returncode:
            return failure(searched, f"edgebuild search seed {seed}")
        summary = json.loads((project / f"search-seed{seed}" / "search.json").read_text())
        # What the user does next: build the chosen recipe (its stages come from the search's cache).
        built = ["build", "--recipe", summary["best_recipe"], "--target", "cortex-m4", "--quiet"]
        best = run_python(["-m", "edgebuild", *built, "--out", f"best-seed{seed}"], project, env)
        if best.returncode not in (0, 3):
            return failure(best, f"edgebuild build --recipe {summary['best_recipe']}")
        cold = run_edgebuild(project, seeded["name"], "cortex-m4", "--no-cache", "--out", f"cold-seed{seed}")
        if cold.returncode:
            return failure(cold, f"edgebuild {seeded['name']} cortex-m4 --no-cache")
        chosen = next(t for t in summary["trials"] if t["name"] == summary["chosen"])
        script_result = json.loads((project / out / "result.json").read_text())
        runs.append(
            {
                "seed": seed,
                "script": {"tflite_bytes": script_result["tflite_bytes"], "accuracy": script_result["accuracy"]},
                "chosen": {
                    "plan": chosen["name"],
                    "tflite_bytes": chosen["tflite_bytes"],
                    "arena_bytes": chosen["arena_bytes"],
                    "validation_accuracy": chosen["validation_metric"],
                    "accuracy": chosen["test_metric"],
                    "test_missed": chosen["test_missed"],
                },
                # exit 0: every budget met; 3: one missed (on the test split, where a build judges)
                "best_recipe_build": "met" if best.returncode == 0 else f"missed: {best.error}",
                "trials": len(summary["trials"]),
                "stopped_early": sum(t["status"] == "stopped" for t in summary["trials"]),
                "feasible": sum(bool(t["budgets_met"]) for t in summary["trials"]),
                "front_bytes": summary["front_bytes"],
                "wall_s": round(searched.seconds, 1),
                "cold_build_s": round(cold.seconds, 1),
            }
        )
    cold_build_s = float(np.mean([r["cold_build_s"] for r in runs]))
    differences = [(r["chosen"]["accuracy"] - r["script"]["accuracy"]) * 100 for r in runs]
    standard_error = float(np.std(differences, ddof=1) / math.sqrt(len(differences))) if len(runs) > 1 else None
    return {
        "runs": runs,
        "trials_per_search": trials,
        "cold_build_s": round(cold_build_s, 1),
        "bytes_ratio": round(
            float(
                np.mean([r["chosen"]["tflite_bytes"] for r in runs])
                / np.mean([r["script"]["tflite_bytes"] for r in runs])
            ),
            3,
        ),
        "accuracy_diff_points": round(float(np.mean(differences)), 2),
        "accuracy_diff_standard_error": round(standard_error, 2) if standard_error is not None else None,
        "best_recipe_builds": sum(r["best_recipe_build"] == "met" for r in runs),
        "wall_ratio": round(float(np.mean([r["wall_s"] for r in runs]) / cold_build_s), 2),
    }


def measure_goals(part: dict[str, Any] | None) -> dict[str, Measurement]:
    """The ``search.*`` goals from ``search_part``'s result; None (not run) leaves them unmeasured."""
    if part is None:
        return {name: Measurement(None, "not run") for name in GOAL_NAMES}
    if "error" in part:
        return failed(part, GOAL_NAMES)
    return {
        "search.bytes_ratio": Measurement(part["bytes_ratio"]),
        "search.accuracy_diff": Measurement(part["accuracy_diff_points"]),
        "search.wall_ratio": Measurement(part["wall_ratio"]),
        "search.best_recipe_builds": Measurement(
            part.get("best_recipe_builds"), "" if "best_recipe_builds" in part else "not measured in that run"
        ),
    }
