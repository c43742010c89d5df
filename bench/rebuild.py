"""Rebuild benchmark: the no-op rebuild and a second target that shares teacher and student.

    python bench/rebuild.py [--recipe mnist] [--target rpi4] [--second-target cortex-m4] [--runs 5]

Runs edgebuild as a user does (a fresh process per command, in an empty project folder
with its own empty stage cache) and reports wall times and the two ratios the issue
sets as goals: median no-op rebuild <= 1.5 s, second target <= 0.35x the cold build.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "edgebuild", *args, "--quiet"], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def measure(recipe: str, target: str, second_target: str, runs: int) -> dict[str, Any]:
    """Cold build, ``runs`` no-op rebuilds and a second-target build, each timed in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-") as tmp:
        project = Path(tmp)
        env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(project / "cache")}
        build = ["build", "--recipe", recipe]
        cold = _timed([*build, "--target", target], project, env)
        no_op = [_timed([*build, "--target", target], project, env) for _ in range(runs)]
        second = _timed([*build, "--target", second_target], project, env)
    median_no_op = statistics.median(no_op)
    return {
        "recipe": recipe,
        "target": target,
        "second_target": second_target,
        "cold_build_s": round(cold, 2),
        "no_op_rebuild_s": [round(t, 3) for t in no_op],
        "no_op_rebuild_median_s": round(median_no_op, 3),
        "second_target_s": round(second, 2),
        "second_target_ratio": round(second / cold, 3),
        "goals": {
            "no_op_median_at_most_1_5_s": median_no_op <= 1.5,
            "second_target_at_most_0_35x_cold": second / cold <= 0.35,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mnist")
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--second-target", default="cortex-m4")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = measure(args.recipe, args.target, args.second_target, args.runs)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
