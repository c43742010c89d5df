"""The benchmark goals, defined once: what each measures, its comparison, limit and unit.

The benchmark modules report a ``Measurement`` per goal name; ``judge_goals`` turns them
into the ``goals`` list of results.json, in table order. A goal that could not be
measured is in that list too, with value ``None``, ``met: false`` and the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

SHIPPED_TARGETS = ("rpi4", "cortex-m4", "android", "cortex-m7", "cortex-m55-u55", "esp32-c3")
# The accuracy a compressed model may lose against its float teacher, in points: a goal
# of its own for channel pruning, and the condition of each target's compression goal.
MAX_DROP_POINTS = 1.0


@dataclasses.dataclass(frozen=True)
class Goal:
    """One goal: ``value <= limit`` ("max") or ``value >= limit`` ("min")."""

    name: str  # the key in results.json and in the benchmark modules
    measures: str  # what the value is, as RESULTS.md shows it
    comparison: Literal["max", "min"]
    limit: float
    unit: str = ""
    quick_limit: float | None = None  # the limit in a --quick run, where it differs


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A goal's measured value, or ``None`` and why; a ``reason`` with a value fails the goal anyway
    (a condition of the goal was not met, e.g. compression at too large an accuracy drop)."""

    value: float | None
    reason: str = ""


def _per_target(target: str) -> tuple[Goal, ...]:
    return (
        Goal(f"{target}.int8_speedup", f"{target}: host latency float / int8", "min", 2.0, "x"),
        Goal(
            f"{target}.compression",
            f"{target}: teacher / artifact bytes at ≤ {MAX_DROP_POINTS:g} point drop",
            "min",
            10.0,
            "x",
        ),
    )


GOALS: tuple[Goal, ...] = (
    Goal("script.wall_ratio", "edgebuild / TF-MOT script wall time, same stages, cold", "max", 1.10),
    Goal("script.bytes_ratio", "edgebuild / script artifact bytes, same stages", "max", 1.0),
    Goal("script.accuracy_diff", "edgebuild - script accuracy, same stages", "min", 0.0, " points"),
    Goal("script.full_plan_bytes_ratio", "default recipe's full plan / script bytes", "max", 1.0),
    Goal("script.full_plan_accuracy_diff", "default recipe's full plan - script accuracy", "min", 0.0, " points"),
    *(goal for target in SHIPPED_TARGETS for goal in _per_target(target)),
    Goal("rebuild.no_op_median_s", "no-op rebuild, median wall", "max", 1.5, " s"),
    Goal("rebuild.second_target_ratio", "second target / cold build wall", "max", 0.35),
    Goal("channels.bytes_ratio", "cortex-m4 channel-pruned / unpruned int8 bytes", "max", 0.55),
    Goal("channels.arena_ratio", "cortex-m4 channel-pruned / unpruned TFLM arena", "max", 0.7),
    Goal("channels.latency_ratio", "cortex-m4 channel-pruned / unpruned host latency", "max", 0.7),
    Goal("channels.drop", "cortex-m4 channel-pruned accuracy drop vs teacher", "max", MAX_DROP_POINTS, " points"),
    Goal("search.bytes_ratio", "search's chosen plan / script int8 bytes (cortex-m4, 3 seeds)", "max", 0.25),
    Goal("search.accuracy_diff", "search's chosen plan - script accuracy (test split)", "min", 0.0, " points"),
    Goal("search.wall_ratio", "12-trial search / cold build, wall (means over the seeds)", "max", 4.0, "x"),
    Goal("search.best_recipe_builds", "seeds whose chosen recipe builds within every budget (of 3)", "min", 3.0),
    Goal("kws.accuracy_diff", "KWS accuracy (TFLM, held-out half) - reference's", "min", 0.0, " points"),
    Goal("kws.bytes_ratio", "KWS int8 bytes / reference's", "max", 1.0),
    Goal("kws.arena_ratio", "KWS TFLM arena / reference's", "max", 1.0),
    Goal("bench.wall_s", "whole benchmark wall time", "max", 1200, " s", quick_limit=180),
)
GOALS_BY_NAME = {goal.name: goal for goal in GOALS}


def judge_goals(measured: Mapping[str, Measurement], quick: bool) -> list[dict[str, Any]]:
    """Every goal in GOALS, in order, as a results.json entry: name, measures, value, comparison,
    limit, unit, met and reason (empty when the value alone decided).

    Reads ``measured`` (goal name to Measurement); a goal it lacks is unmet, "not measured".
    Raises KeyError for a name that is not in GOALS (a typo in a benchmark module).
    """
    unknown = sorted(set(measured) - set(GOALS_BY_NAME))
    if unknown:
        raise KeyError(f"not in the goal table: {', '.join(unknown)}")
    judged = []
    for goal in GOALS:
        m = measured.get(goal.name, Measurement(None, "not measured: no benchmark reported it"))
        limit = goal.quick_limit if quick and goal.quick_limit is not None else goal.limit
        within = m.value is not None and (m.value <= limit if goal.comparison == "max" else m.value >= limit)
        judged.append(
            {
                "name": goal.name,
                "measures": goal.measures,
                "value": m.value,
                "comparison": goal.comparison,
                "limit": limit,
                "unit": goal.unit,
                "met": bool(within and not m.reason),
                "reason": m.reason,
            }
        )
    return judged


def failed(part: Mapping[str, Any], names: list[str]) -> dict[str, Measurement]:
    """``names`` unmeasured because ``part`` (a benchmark's result) holds an ``error``."""
    return {name: Measurement(None, f"not measured: {part['error']}") for name in names}
