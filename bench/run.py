"""edgebuild's benchmarks in one command: every goal measured side by side in one run.

    python bench/run.py --kws ../shared/data/mlperf-tiny-kws [--quick] [--out bench]

Writes ``results.json`` and ``RESULTS.md`` into ``--out`` (``bench/`` by default;
``bench/quick/`` with ``--quick``). Every build is a fresh ``edgebuild`` process in a
temporary project with its own stage cache, as a user runs it. One module per part,
numbered as in RESULTS.md:

1. ``vs_script.py``: against ``bench/tfmot_script.py``, the TF-MOT tutorials by hand.
2. ``every_target.py``: the default recipe on every shipped target, rebuilds, and
   channel pruning against none on cortex-m4. It runs first: its rpi4 build is also
   part 1's full plan for the first seed.
3. ``mlperf_kws.py``: the MLPerf Tiny keyword-spotting DS-CNN against its int8 model.
4. ``build_cost.py``: wall time and memory per stage, and their growth with data and width.
5. ``search_bench.py``: ``edgebuild search`` for cortex-m4 against the script, 3 seeds.

``--only search`` (or ``--only kws``) runs that part alone and merges it into the results
already in ``--out`` (the other parts keep their figures and their date; ``parts_run`` says
when each ran).

The goals (``goals.py``) are judged once every part has run; a goal that could not be
measured is unmet, with the reason. ``report.py`` writes RESULTS.md.

``--quick`` is a smoke run, not the figures to quote: the 8x8 digits recipe with 40 % of
its epochs, one seed, two targets, and no growth builds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import build_cost
import every_target
import mlperf_kws
import report
import search_bench
import vs_script
from common import BENCH, describe_machine, scaled_epochs, shipped
from goals import SHIPPED_TARGETS, Measurement, judge_goals

# --quick: the digits recipe with 40 % of its epochs, so that the smoke run takes minutes.
QUICK_EPOCH_FRACTION = 0.4


def main() -> None:
    """Parse the command line, run every part in a temporary folder, judge the goals, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kws", type=Path, help="the mlperf-tiny-kws folder (reference DS-CNN, int8 model, inputs)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on the digits recipe (a few minutes)")
    parser.add_argument("--out", type=Path, help="where results.json and RESULTS.md go [bench/, or bench/quick/]")
    parser.add_argument("--only", choices=["search", "kws"], help="run this part alone, merged into --out's results")
    args = parser.parse_args()
    out = args.out or (BENCH / "quick" if args.quick else BENCH)
    if args.quick and out.resolve() == BENCH:
        parser.error("a --quick run does not replace bench/RESULTS.md: leave out --out, or choose another folder")
    recipe = shipped("recipes", "digits" if args.quick else "mnist")
    if args.quick:
        recipe = {**scaled_epochs(recipe, QUICK_EPOCH_FRACTION), "name": "digits-quick"}
    search_seeds, search_trials = ((0,), 4) if args.quick else ((0, 1, 2), 12)
    if args.only == "kws" and not args.kws:
        parser.error("--only kws needs --kws PATH")
    if args.only:
        _only(args.only, out, recipe, search_seeds, search_trials, args.kws)
        return
    started = time.perf_counter()
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py" + (" --quick" if args.quick else "") + (" --kws PATH" if args.kws else ""),
        "quick": args.quick,
        "recipe": recipe["name"],
        "machine": describe_machine(),
    }
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-") as tmp:
        work = Path(tmp)
        print("the default recipe on every target ...", flush=True)
        (work / "targets").mkdir()
        targets = SHIPPED_TARGETS[:2] if args.quick else SHIPPED_TARGETS
        result["every_target"] = every_target.every_target(recipe, targets, work / "targets", 3 if args.quick else 5)
        print("against the TF-MOT script ...", flush=True)
        (work / "script").mkdir()
        seeds = (0,) if args.quick else (0, 1, 2)
        full_plan_first = every_target.full_plan_build(result["every_target"])
        result["against_script"] = vs_script.against_script(recipe, work / "script", seeds, full_plan_first)
        print("edgebuild search against the TF-MOT script ...", flush=True)
        (work / "search").mkdir()
        result["search"] = search_bench.search_part(recipe, work / "search", search_seeds, search_trials)
        if args.kws:
            print("MLPerf Tiny KWS ...", flush=True)
            (work / "kws").mkdir()
            result["kws"] = mlperf_kws.kws(args.kws.resolve(), work / "kws")
        if not args.quick:  # the growth builds take minutes; quick has the per-stage table of part 1
            print("build cost ...", flush=True)
            (work / "cost").mkdir()
            result["build_cost"] = build_cost.build_cost(recipe, work / "cost", (1, 2, 4), (0.5, 2.0))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["parts_run"] = {part: result["date"] for part in ("every_target", "against_script", "search", "kws")}
    _write(out, result, args.quick)


def _judge(result: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    return judge_goals(
        {
            **every_target.measure_goals(result["every_target"]),
            **vs_script.measure_goals(result["against_script"]),
            **search_bench.measure_goals(result.get("search")),
            **mlperf_kws.measure_goals(result.get("kws")),
            "bench.wall_s": Measurement(round(result["wall_s"])),
        },
        quick,
    )


def _only(part: str, out: Path, recipe: dict[str, Any], seeds: tuple[int, ...], trials: int, kws: Path | None) -> None:
    """One part alone (``search`` or ``kws``), merged into ``out/results.json`` (which must exist: the
    other parts' figures stay, with their dates in ``parts_run``)."""
    result = json.loads((out / "results.json").read_text())
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-") as tmp:
        print(f"{part} ...", flush=True)
        if part == "search":
            result["search"] = search_bench.search_part(recipe, Path(tmp), seeds, trials)
        else:
            assert kws is not None
            result["kws"] = mlperf_kws.kws(kws.resolve(), Path(tmp))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    result.setdefault("parts_run", {})[part] = now
    _write(out, result, result["quick"])


def _write(out: Path, result: dict[str, Any], quick: bool) -> None:
    """Judge the goals and write results.json and RESULTS.md into ``out``."""
    result["goals"] = _judge(result, quick)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "RESULTS.md").write_text(report.markdown(result))
    met = sum(g["met"] for g in result["goals"])
    unmeasured = sum(g["value"] is None for g in result["goals"])
    print(
        f"{met} of {len(result['goals'])} goals met ({unmeasured} not measured)"
        f" in {result['wall_s'] / 60:.1f} min: {out / 'RESULTS.md'}"
    )


if __name__ == "__main__":
    main()
