"""Budgets: each limit of the target against what the build measured."""

from __future__ import annotations

from collections.abc import Iterable

from edgebuild.context import BuildContext
from edgebuild.results import Budget
from edgebuild.tasks import Metric

SPARSITY_TOLERANCE = 0.02


def _budget(name: str, limit: float, actual: float, kind: str, unit: str) -> Budget:
    ok = actual <= limit + 1e-12 if kind == "max" else actual >= limit - 1e-12
    margin = limit - actual if kind == "max" else actual - limit
    return Budget(name=name, kind=kind, unit=unit, limit=limit, actual=actual, margin=margin, ok=ok)


def _metric_budgets(ctx: BuildContext) -> list[tuple[str, float, str]]:
    """The task's budgets on metrics: (metric, limit, unit). Accuracy and AUC drops are fractions;
    MAE and MSE increases are in the data's own units."""
    task, recipe_budgets, budgets = ctx.recipe.task, ctx.recipe.budgets, ctx.target.budgets
    if task == "classification":
        return [("accuracy", budgets.max_accuracy_drop, "fraction")]
    if task == "regression":
        assert recipe_budgets.max_mae_increase is not None, "the schema requires it"
        return [("mae", recipe_budgets.max_mae_increase, "units")]
    found = []
    if "auc" in ctx.artifact.metrics:
        found.append(("auc", budgets.max_auc_drop, "fraction"))
    if recipe_budgets.max_mse_increase is not None:
        found.append(("mse", recipe_budgets.max_mse_increase, "units"))
    return found


def check_budgets(ctx: BuildContext) -> tuple[Budget, ...]:
    """Each budget of the target with its limit, the measured value, the margin and whether it is met."""
    budgets, artifact = ctx.target.budgets, ctx.artifact
    checked = []
    if budgets.model_bytes is not None:
        shipped = len(ctx.deploy_tflite or ctx.tflite)  # Vela's model on an NPU target
        checked.append(_budget("model_bytes", budgets.model_bytes, shipped, "max", "bytes"))
    if budgets.arena_bytes is not None and artifact.arena_bytes is not None:
        checked.append(_budget("arena_bytes", budgets.arena_bytes, artifact.arena_bytes, "max", "bytes"))
    for name, limit, unit in _metric_budgets(ctx):
        metric = Metric(name, higher_is_better=name in ("accuracy", "auc"))
        change = metric.change(ctx.teacher.metrics[name], artifact.metrics[name])
        label = f"{name}_drop" if metric.higher_is_better else f"{name}_increase"
        checked.append(_budget(label, limit, round(change, 6), "max", unit))
    target_sparsity = ctx.sparsity.target  # 0 when the recipe does not prune (and the profile allows that)
    if target_sparsity > 0:
        floor = round(max(0.0, target_sparsity - SPARSITY_TOLERANCE), 6)
        checked.append(_budget("sparsity", floor, round(artifact.sparsity, 6), "min", "fraction"))
    for region in ctx.firmware.regions if ctx.firmware is not None else ():
        checked.append(_budget(f"{region.name.lower()}_region", region.total, region.used, "max", "bytes"))
    return tuple(checked)


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{value * 100:.2f}%"


def _units(value: float) -> str:
    return f"{value:.4g}"


_FORMATS = {"bytes": _bytes, "fraction": _percent, "units": _units}


def budget_table(budgets: Iterable[Budget]) -> str:
    """A plain-text table of budgets: name, limit, actual, margin, status."""
    rows = [("budget", "limit", "actual", "margin", "")]
    for b in budgets:
        fmt = _FORMATS[b.unit]
        sign = "<=" if b.kind == "max" else ">="
        rows.append((b.name, f"{sign} {fmt(b.limit)}", fmt(b.actual), fmt(b.margin), "ok" if b.ok else "MISSED"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows)


def missed_summary(budgets: Iterable[Budget]) -> str:
    """One line naming each missed budget and by how much."""
    parts = []
    for b in budgets:
        if not b.ok:
            over = -b.margin
            amount = {"bytes": f"{over:,.0f} bytes", "fraction": f"{over * 100:.2f} points"}.get(b.unit, f"{over:.4g}")
            parts.append(f"{b.name} {'over' if b.kind == 'max' else 'under'} by {amount}")
    return ", ".join(parts)
