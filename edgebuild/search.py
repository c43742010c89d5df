"""Search: the compression plan that fits a target's budgets, explored on Ray Tune.

``edgebuild search`` explores the plans of the recipe's ``[search]`` table (``schema.Search``):
student width (distillation), channel sparsity, post-training or quantization-aware
quantization, and precision. Each trial is a real build through the stages (``build_in``) into
``<out>/trials/<plan>/``, sharing one stage cache, so the teacher (trained once, before the
trials) and every stage two plans have in common are computed once. The trials are Ray Tune
trials: a grid, random samples, or Optuna's multi-objective sampler (validation metric up, model
bytes down), on a local Ray or an existing cluster (``--ray-address``). After each stage a trial
reports what it knows; a Tune stopper ends a trial that has already missed a budget (the model
bytes, or the metric on the validation split by more than the plan's later stages can be
expected to win back).

Every decision uses the validation split: each trial's budgets on metrics are judged on it, the
Pareto fronts (metric against bytes, metric against arena) and the chosen plan come from it. The
test split's metric of each trial is reported beside it and never ranks anything.

Writes ``<out>/search.json`` (every trial: plan, bytes, arena, instructions per inference where
the firmware ran, host latency, validation and test metric, budgets met; the fronts; the chosen
plan), ``<out>/search.html`` and the chosen plan as a recipe (``best.toml``). Raises ConfigError
(exit 2) for a bad search table or output folder, BudgetError (exit 3) when no plan meets every
budget (naming the closest trial and what it missed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import platform
import random
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from edgebuild.errors import BudgetError, ConfigError, EdgebuildError
from edgebuild.progress import Reporter
from edgebuild.schema import Distill, Precision, Prune, Qat, Recipe, Search, Target
from edgebuild.support import PRECISION_FOR_RUNTIME
from edgebuild.tasks import Metric, headline

SEARCH_JSON = "search.json"
OURS = (SEARCH_JSON, "search.html", "best.toml", "trials", "ray")  # what a search writes in its folder
BEST_MARKER = "# Written by edgebuild search:"
PRECISIONS = {  # a precision mode as the profile's [precision] table
    "int8": Precision("int8", "int8", "int8"),
    "dynamic": Precision("int8", "float32", "float32"),
    "float16": Precision("float16", "float32", "float32"),
    "float32": Precision("float32", "float32", "float32"),
}


class _Enough(Exception):
    """Raised by a build observer to end a build early (the teacher's warm-up, a stopped trial)."""


@dataclass(frozen=True)
class Plan:
    """One compression plan: the recipe's and target's settings a trial changes."""

    student_width: float
    sparsity: float
    quantization: str  # ptq | qat
    precision: str  # int8 | dynamic | float16 | float32

    @property
    def name(self) -> str:
        """A folder-safe name that says the plan, e.g. ``w0.5-s0.25-qat-int8``."""
        return f"w{self.student_width:g}-s{self.sparsity:g}-{self.quantization}-{self.precision}"


@dataclass(frozen=True)
class Setup:
    """What every trial needs, sent to the Ray workers once (``tune.with_parameters``)."""

    project: Path
    recipe: Recipe
    target: Target
    out: Path
    cache_dir: Path
    device: str | None
    metric: str
    higher_is_better: bool
    teacher_validation: float
    teacher_test: float | None  # reported beside the plans' test metric, never used to decide
    limits: dict[str, float]  # model_bytes, arena_bytes, max_metric_drop (what the budgets allow)
    stop_margin: float
    choose: str  # most_accurate | smallest
    versions: dict[str, str]  # edgebuild's and its pinned libraries' on the driver (``node_versions``)


def plan_space(recipe: Recipe, target: Target, search: Search) -> dict[str, list[Any]]:
    """The values of each plan key: the recipe's ``[search]`` lists, the target's precision by default.

    Raises ConfigError for a precision the target's runtime has no kernels for."""
    precisions = list(search.precision) or [target.precision.mode]
    allowed = PRECISION_FOR_RUNTIME[target.runtime]
    for mode in precisions:
        if mode not in allowed:
            raise ConfigError(
                f"{recipe.source}: key 'search.precision': {mode!r} is not a precision the {target.runtime} runtime "
                f"of {target.name} runs",
                hint=f"use some of: {', '.join(allowed)}",
            )
    return {
        "student_width": list(search.student_width),
        "sparsity": list(search.sparsity),
        "quantization": list(search.quantization),
        "precision": precisions,
    }


def plan_recipe(base: Recipe, plan: Plan) -> Recipe:
    """The recipe of ``plan``: a student of the plan's width, pruned to its sparsity (no [prune] for 0),
    quantization-aware trained or not; the rest of ``base`` as it is."""
    distill = base.distill or Distill(student_width=plan.student_width)
    distill = dataclasses.replace(distill, student_width=plan.student_width)
    prune = dataclasses.replace(base.prune or Prune(), sparsity=plan.sparsity) if plan.sparsity > 0 else None
    qat = (base.qat or Qat()) if plan.quantization == "qat" else None
    return dataclasses.replace(base, distill=distill, prune=prune, qat=qat, search=None)


def plan_target(base: Target, plan: Plan) -> Target:
    """The target with the plan's precision (its own [precision] table when that is the plan's)."""
    if plan.precision == base.precision.mode:
        return base
    return dataclasses.replace(base, precision=PRECISIONS[plan.precision])


# ---------------------------------------------------------------- one trial (on a Ray worker)


def node_versions() -> dict[str, str]:
    """The versions of edgebuild and of the libraries a build depends on, on this machine."""
    from edgebuild import __version__
    from edgebuild.tf import versions

    return {"edgebuild": __version__, **versions()}


def version_mismatch(driver: dict[str, str]) -> str | None:
    """What differs between this node's versions and the driver's, as a reason; None when nothing does."""
    here = node_versions()
    differ = [f"{name} {here.get(name)} (the search's {v})" for name, v in driver.items() if here.get(name) != v]
    if not differ:
        return None
    return (
        f"node {platform.node()} has {', '.join(differ)}: every node of the cluster needs the same edgebuild and "
        "pinned versions"
    )


def run_trial(config: dict[str, Any], setup: Setup) -> None:
    """A Ray Tune function trainable: build ``config``'s plan, reporting after each stage, then the result.

    Reports ``stage``, ``val_metric``, ``tflite_bytes`` (NaN where not known yet) after each stage
    and a final result with ``done``, ``status`` (done | failed), ``budgets_met``, ``missed`` and
    every figure of the trial record. A build that misses a budget still gives its figures.
    """
    from ray import tune

    from edgebuild.devices import parse_device
    from edgebuild.pipeline import BuildOptions, build_in

    plan = Plan(**_plan_values(config))
    started = time.perf_counter()
    known: dict[str, float] = {"val_metric": math.nan, "tflite_bytes": math.nan, "arena_bytes": math.nan}

    def observe(stage: str, ctx: Any) -> None:
        if stage in ctx.stage_validation_metrics and setup.metric in ctx.stage_validation_metrics[stage]:
            known["val_metric"] = ctx.stage_validation_metrics[stage][setup.metric]
        if stage == "convert":
            known["tflite_bytes"] = float(len(ctx.tflite))
        if stage == "vela" and ctx.deploy_tflite is not None:
            known["tflite_bytes"] = float(len(ctx.deploy_tflite))
        if stage == "validate":
            known["val_metric"] = ctx.artifact.validation_metrics.get(setup.metric, math.nan)
            known["arena_bytes"] = float(ctx.artifact.arena_bytes or math.nan)
        tune.report({"stage": stage, "done": False, **known})

    options = BuildOptions(device=parse_device(setup.device) if setup.device else None, observer=observe)
    record: dict[str, Any] = {"plan": dataclasses.asdict(plan), "name": plan.name}
    if (mismatch := version_mismatch(setup.versions)) is not None:
        record.update(status="failed", reason=mismatch, missed=[mismatch], seconds=0.0, node_mismatch=True)
        tune.report({"stage": "preflight", "done": True, **known, "record": record})
        return
    try:
        built = build_in(
            setup.project,
            plan_recipe(setup.recipe, plan),
            plan_target(setup.target, plan),
            setup.out / "trials" / plan.name,
            options=options,
            cache_dir=setup.cache_dir,
        )
        report: dict[str, Any] | None = built.report
    except BudgetError as e:
        report = e.report
        if report is None:  # refused before any work (e.g. a profile that requires pruning)
            record.update(status="failed", reason=e.message, missed=[e.message])
    except EdgebuildError as e:
        report = None
        record.update(status="failed", reason=e.message, missed=[f"the build failed: {e.message}"])
    if report is not None:
        record.update(_figures(report, setup))
    record["seconds"] = round(time.perf_counter() - started, 1)
    tune.report({"stage": "report", "done": True, **known, "record": record})


def _figures(report: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """A finished trial's figures, with its budgets judged on the validation split."""
    artifact, validation = report["artifact"], report["validation"]
    val = artifact.get("validation_metrics", {}).get(setup.metric)
    missed = []
    for budget in report["budgets"]:
        name = budget["name"]
        if name.endswith(("_drop", "_increase")):
            continue  # the metric budgets: judged below, on the validation split
        if not budget["ok"]:
            missed.append(f"{name} over by {-budget['margin']:,.0f} {budget['unit']}")
    limit = setup.limits.get("max_metric_drop")
    if val is None:
        missed.append(f"no validation {setup.metric}")
    elif limit is not None:
        drop = Metric(setup.metric, setup.higher_is_better).change(setup.teacher_validation, val)
        if drop > limit + 1e-9:
            missed.append(f"{setup.metric} on the validation split down by {drop:.4g} (more than {limit:.4g})")
    # What `edgebuild build` of this plan judges: the metric budgets on the test split (read only to
    # report on the chosen plan at the end, never to decide).
    test_missed = [
        f"{b['name']} {b['actual']:.4g} (limit {b['limit']:.4g})"
        for b in report["budgets"]
        if b["name"].endswith(("_drop", "_increase")) and not b["ok"]
    ]
    firmware = (validation.get("device_run") or {}).get("firmware") or {}
    latency = validation.get("latency") or {}
    return {
        "status": "done",
        "reason": "",
        "tflite_bytes": artifact["tflite_bytes"],
        "arena_bytes": artifact.get("arena_bytes"),
        "instructions_per_inference": (firmware.get("instructions") or {}).get("mean"),
        "host_latency_ms": latency.get("mean_ms", next(iter(latency.values()), None)),
        "validation_metric": val,
        "validation_log_loss": artifact.get("validation_metrics", {}).get("log_loss"),
        "test_metric": artifact["metrics"].get(setup.metric),
        "budgets_met": not missed,
        "missed": missed,
        "test_missed": test_missed,
        "sha256": artifact["sha256"],
    }


class HopelessStopper:
    """Tune's stopper for a trial that can no longer meet the budgets: model bytes already over
    ``model_bytes``, or the validation metric after a training stage worse than the budget allows
    by more than ``stop_margin`` (fine-tuning later rarely wins that much back)."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.stopped: dict[str, str] = {}  # trial id -> why

    def __call__(self, trial_id: str, result: Mapping[str, Any]) -> bool:
        if result.get("done"):
            return False
        setup, why = self.setup, None
        model_bytes = setup.limits.get("model_bytes")
        if model_bytes is not None and result.get("tflite_bytes", math.nan) > model_bytes:
            why = f"stopped after {result['stage']}: {result['tflite_bytes']:,.0f} model bytes, over {model_bytes:,.0f}"
        limit, value = setup.limits.get("max_metric_drop"), result.get("val_metric", math.nan)
        if limit is not None and not math.isnan(value):
            drop = Metric(setup.metric, setup.higher_is_better).change(setup.teacher_validation, value)
            if drop > limit + setup.stop_margin:
                why = (
                    f"stopped after {result['stage']}: validation {setup.metric} down by {drop:.4g}, more than the "
                    f"budget's {limit:.4g} + search.stop_margin {setup.stop_margin:.4g}"
                )
        if why is not None:
            self.stopped[trial_id] = why
        return why is not None

    def stop_all(self) -> bool:
        return False


# ---------------------------------------------------------------- the search (the driver)


def search(
    project: Path,
    recipe: Recipe,
    target: Target,
    out: Path,
    *,
    reporter: Reporter,
    cache_dir: Path,
    trials: int | None = None,
    algorithm: str | None = None,
    ray_address: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Run the search and write its outputs into ``out``; return what ``search.json`` holds.

    Raises ConfigError (search table, output folder, Ray missing or unreachable), BudgetError when
    no trial meets every budget (after writing the outputs), and what the teacher's build raises.
    """
    space_table = recipe.search or Search()
    algorithm = algorithm or space_table.algorithm
    trials = trials or space_table.trials
    if recipe.train.validation_fraction <= 0:
        raise ConfigError(
            f"{recipe.source}: key 'train.validation_fraction': a search scores plans on the validation split, "
            "and the recipe has none",
            hint="set train.validation_fraction to 0.1 or so",
        )
    space = plan_space(recipe, target, space_table)
    if (recipe.distill is None or recipe.distill.student_architecture is None) and recipe.model.architecture is None:
        raise ConfigError(
            f"{recipe.source}: a search distills students of each search.student_width, and the recipe's model is "
            "a saved model with no built-in architecture to make a student from",
            hint="add [distill] student_architecture = 'small_cnn' (or ds_cnn, mlp) to the recipe",
        )
    check_search_folder(out, recipe, target)
    best_recipe_path(out, recipe, target)  # a file there that a search did not write: refused before any work
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables and hints: edgebuild prints progress
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(
            "edgebuild search runs its trials on Ray Tune, which is not installed",
            hint="install it with: pip install 'edgebuild[ray]'",
        ) from None
    out = out.resolve()
    cache_dir = cache_dir.resolve()
    started = time.perf_counter()
    metric = headline(recipe.task, recipe.task == "reconstruction")
    teacher, teacher_test = _teacher_validation(project, recipe, target, cache_dir, metric.name, reporter)
    setup = Setup(
        project=project.resolve(),
        recipe=recipe,
        target=target,
        out=out,
        cache_dir=cache_dir,
        device=device,
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        teacher_validation=teacher,
        teacher_test=teacher_test,
        limits=_limits(recipe, target),
        stop_margin=space_table.stop_margin,
        choose=space_table.choose,
        versions=node_versions(),
    )
    env = {k: v for k, v in os.environ.items() if k.startswith(("EDGEBUILD_", "ONEDNN_", "TF_"))}
    try:
        ray.init(
            address=ray_address or "local",  # a Ray of its own, not one that happens to run on this machine
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env={"env_vars": env},
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {ray_address}" if ray_address else "a local Ray"
        raise ConfigError(
            f"edgebuild search could not start on {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
            hint="check --ray-address (host:port of the head node, `ray status` there) and its RAY_AUTH_TOKEN",
        ) from None
    try:
        # A trial takes the build's threads, at most what the smallest node has (a trial larger than
        # every node would never start); as many run at once as the cluster has room for.
        nodes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
        threads = int(os.environ.get("EDGEBUILD_THREADS") or 2)
        per_trial = max(1, min(threads, *[n for n in nodes if n > 0] or [1]))
        parallel = max(1, sum(n // per_trial for n in nodes))
        stopper = HopelessStopper(setup)
        progress = _Progress(reporter, setup, _planned(space, algorithm, trials), parallel)
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"cpu": per_trial}),
            param_space=_param_space(space, algorithm, trials, space_table.seed, tune),
            tune_config=tune.TuneConfig(
                search_alg=_search_algorithm(algorithm, space, space_table.seed, metric, parallel, trials),
                num_samples=_planned(space, algorithm, trials) if algorithm == "optuna" else 1,
                max_concurrent_trials=parallel if algorithm == "optuna" else None,
                reuse_actors=True,  # a trial in a worker that ran one before: no new process, no new TensorFlow
                trial_name_creator=lambda trial: Plan(**_plan_values(trial.config)).name,
                trial_dirname_creator=lambda trial: f"{Plan(**_plan_values(trial.config)).name}-{trial.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=f"search-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",  # one experiment per run
                storage_path=str(out / "ray"),
                stop=stopper.__call__,
                callbacks=[progress.callback()],
                verbose=0,
                log_to_file=True,
            ),
        )
        tuner.fit()  # the records come from what the driver saw (progress.trials), not the files synced to storage
        records = _records(progress.trials, stopper, {record["name"] for record in progress.done})
    finally:
        ray.shutdown()
    ended = sum(r["status"] != "interrupted" for r in records)
    summary = summarize(records, setup, algorithm, trials, time.perf_counter() - started)
    write_outputs(out, summary, recipe, target)
    cut = progress.planned - ended
    if cut > 0:  # Ctrl-C: Tune stopped the trials (and started no more); what ended is written
        raise EdgebuildError(
            f"search interrupted: {ended} trial(s) that ended are in {out / SEARCH_JSON}, "
            f"{cut} were cut short or never started",
            hint="run the search again: finished stages come from the cache",
            exit_code=130,
        )
    mismatched = [r for r in records if r.get("node_mismatch")]
    if mismatched:  # a setup error, not a plan that missed: say which node, whatever the other trials did
        raise ConfigError(
            f"{mismatched[0]['reason']} ({len(mismatched)} trial(s) failed there; every trial is in "
            f"{out / SEARCH_JSON})",
            hint="install the driver's edgebuild and pinned versions on that node (or leave it out), then search again",
        )
    chosen = summary["chosen"]
    test_missed: list[str] = next((r["test_missed"] for r in records if r["name"] == chosen), [])
    if test_missed:  # the validation split could not tell: say so before the user builds it
        reporter.warn(
            f"the chosen plan {chosen} meets every budget on the validation split but not on the test split, "
            f"which `edgebuild build` judges: {'; '.join(test_missed)}; the validation split is too small to tell "
            "the plans apart: try a larger train.validation_fraction, or another plan of the front"
        )
    if chosen is None:
        closest = _closest(records)
        raise BudgetError(
            f"no plan of {len(records)} met every budget of {target.name}"
            + (f"; the closest, {closest['name']}, missed: {'; '.join(closest['missed'])}" if closest else ""),
            hint=f"widen the recipe's [search] table or relax the target's budgets; every trial is in {out}",
        )
    return summary


def _teacher_validation(
    project: Path, recipe: Recipe, target: Target, cache_dir: Path, metric: str, reporter: Reporter
) -> tuple[float, float | None]:
    """Train (or take from the cache) the teacher once, before any trial; its validation metric, and its
    test metric to report beside the plans' (None where the split has none)."""
    import tempfile

    from edgebuild.pipeline import BuildOptions, build_in

    seen: dict[str, float] = {}
    tested: dict[str, float] = {}

    def stop_after_baseline(stage: str, ctx: Any) -> None:
        if stage == "baseline":
            seen.update(ctx.stage_validation_metrics.get("baseline", {}))
            tested.update(ctx.stage_metrics.get("baseline", {}))
            raise _Enough

    reporter.note("the teacher, once for every trial")
    # The teacher depends on neither the plan nor the budgets: no size estimate may stop it here.
    unbounded = dataclasses.replace(
        target, budgets=dataclasses.replace(target.budgets, model_bytes=None, arena_bytes=None)
    )
    with tempfile.TemporaryDirectory(prefix="edgebuild-teacher-") as tmp, contextlib.suppress(_Enough):
        build_in(
            project,
            dataclasses.replace(recipe, search=None),
            unbounded,
            Path(tmp) / "teacher",
            reporter=reporter,
            options=BuildOptions(observer=stop_after_baseline),
            cache_dir=cache_dir,
        )
    if metric not in seen:
        raise ConfigError(
            f"{recipe.source}: the teacher has no {metric} on the validation split to compare plans with",
            hint="a reconstruction search needs anomaly labels in the validation split; use max_mse_increase",
        )
    return seen[metric], tested.get(metric)


def _limits(recipe: Recipe, target: Target) -> dict[str, float]:
    """What the budgets allow: model and arena bytes, and the metric's drop (or increase)."""
    limits: dict[str, float] = {}
    if target.budgets.model_bytes is not None:
        limits["model_bytes"] = float(target.budgets.model_bytes)
    if target.budgets.arena_bytes is not None:
        limits["arena_bytes"] = float(target.budgets.arena_bytes)
    drop = {
        "classification": target.budgets.max_accuracy_drop,
        "regression": recipe.budgets.max_mae_increase,
        "reconstruction": target.budgets.max_auc_drop,
    }[recipe.task]
    if drop is not None:
        limits["max_metric_drop"] = float(drop)
    return limits


def _plan_values(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's plan from its Tune config (flat, or under "plan" for random sampling)."""
    config = config.get("plan", config)
    return {key: config[key] for key in ("student_width", "sparsity", "quantization", "precision")}


def _every_plan(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def _planned(space: dict[str, list[Any]], algorithm: str, trials: int) -> int:
    """How many trials the search runs: every plan for a grid, else ``trials`` distinct plans (or every plan)."""
    every = math.prod(len(values) for values in space.values())
    return every if algorithm == "grid" else min(trials, every)


def _param_space(space: dict[str, list[Any]], algorithm: str, trials: int, seed: int, tune: Any) -> dict[str, Any]:
    """Tune's param_space: every plan for a grid; for random, ``trials`` distinct plans drawn with ``seed``."""
    if algorithm == "grid":
        return {key: tune.grid_search(values) for key, values in space.items()}
    if algorithm == "random":
        plans = _every_plan(space)
        return {"plan": tune.grid_search(random.Random(seed).sample(plans, _planned(space, algorithm, trials)))}
    return {}  # Optuna's space is given to its searcher


def _search_algorithm(
    algorithm: str, space: dict[str, list[Any]], seed: int, metric: Metric, parallel: int, trials: int
) -> Any:
    """Tune's searcher: Tune's variants for grid and random (``_param_space``); for optuna, Optuna's
    multi-objective sampler (validation metric up, model bytes down) in generations of a third of
    the trials, never running a plan twice."""
    from ray.tune.search import BasicVariantGenerator

    if algorithm in ("grid", "random"):
        return BasicVariantGenerator(random_state=seed, max_concurrent=parallel)
    import optuna
    from ray.tune.search import Searcher
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    untried = random.Random(seed)

    class DistinctPlans(OptunaSearch):
        """Optuna's suggestions without repeats: a plan Optuna suggests again is told its known result
        (or, still running, a failure) at once, and replaced by an untried plan drawn with the seed."""

        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.results: dict[tuple[Any, ...], list[float] | None] = {}
            self.plan_of: dict[str, tuple[Any, ...]] = {}

        def suggest(self, trial_id: str) -> dict[Any, Any] | None:
            while True:
                config = super().suggest(trial_id)
                study: Any = self._ot_study
                if config is None or study is None:  # (Tune calls suggest after setting the space)
                    return config
                plan = tuple(sorted(config.items()))
                if plan not in self.results:
                    self.results[plan], self.plan_of[trial_id] = None, plan
                    return dict(config)
                known = self.results[plan]
                state = optuna.trial.TrialState.COMPLETE if known else optuna.trial.TrialState.FAIL
                study.tell(self._ot_trials.pop(trial_id), known, state=state)
                left = [p for p in _every_plan(space) if tuple(sorted(p.items())) not in self.results]
                if not left:
                    return Searcher.FINISHED  # type: ignore[return-value]  # every plan was tried
                study.enqueue_trial(untried.choice(left))  # Optuna's next ask gives it

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            super().on_trial_complete(trial_id, result, error)
            values = [_number(result.get(key)) if result else None for key in self.metric]
            if all(v is not None and math.isfinite(v) for v in values):  # a stopped trial's may be missing
                self.results[self.plan_of[trial_id]] = [float(v) for v in values if v is not None]

    return DistinctPlans(
        space={key: optuna.distributions.CategoricalDistribution(values) for key, values in space.items()},
        metric=["val_metric", "tflite_bytes"],
        mode=["max" if metric.higher_is_better else "min", "min"],
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, trials // 3)),
    )


class _Progress:
    """Trials done, running and left, the best feasible plan so far and the time left, one line each."""

    def __init__(self, reporter: Reporter, setup: Setup, planned: int, parallel: int):
        self.reporter, self.setup, self.planned, self.parallel = reporter, setup, planned, parallel
        self.done: list[dict[str, Any]] = []
        self.running: set[str] = set()
        # every trial that started, as the driver saw it: id -> (config, last result, error)
        self.trials: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {}
        self.started = time.perf_counter()

    def __getstate__(self) -> dict[str, Any]:
        """Tune saves its callbacks with the experiment's state: everything but the terminal."""
        return {k: v for k, v in self.__dict__.items() if k != "reporter"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, reporter=Reporter(quiet=True))

    def callback(self) -> Any:
        from ray import tune

        progress = self

        class Callback(tune.Callback):
            def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                progress.running.add(trial.trial_id)
                progress.trials[trial.trial_id] = (dict(trial.config), {}, "")

            def on_trial_result(
                self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
            ) -> None:
                progress.trials[trial.trial_id] = (dict(trial.config), dict(result), "")

            def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                progress.finished(trial)

            def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
                progress.finished(trial)

        return Callback()

    def finished(self, trial: Any) -> None:
        self.running.discard(trial.trial_id)
        error = str(getattr(trial, "error_file", "") or "")
        self.trials[trial.trial_id] = (dict(trial.config), dict(trial.last_result or {}), error)
        name = Plan(**_plan_values(trial.config)).name
        record = (trial.last_result or {}).get("record") or {"name": name, "status": "stopped"}
        self.done.append(record)
        best = choose(self.done, self.setup)
        left = max(0, self.planned - len(self.done) - len(self.running))
        elapsed = time.perf_counter() - self.started
        remaining = elapsed / len(self.done) * (left + len(self.running)) / self.parallel
        self.reporter.note(
            f"trial {record['name']}: {record.get('status', 'stopped')}; {len(self.done)} done, "
            f"{len(self.running)} running, {left} left; best feasible so far: "
            + (
                f"{best['name']} ({best['tflite_bytes']:,} B, {validation_text(best, self.setup.metric)})"
                if best
                else "none"
            )
            + f"; about {remaining / 60:.0f} min left"
        )


def _records(
    trials: dict[str, tuple[dict[str, Any], dict[str, Any], str]], stopper: HopelessStopper, ended: set[str]
) -> list[dict[str, Any]]:
    """Every trial's record, from what the driver saw of it (its config, last result and error file):
    finished, stopped early, failed, or interrupted (a Ctrl-C ended the search first: not in ``ended``)."""
    records = []
    for trial_id, (config, last, error) in trials.items():
        plan = Plan(**_plan_values(config))
        record = last.get("record")
        if record is None:
            reason = stopper.stopped.get(trial_id) or (f"the trial raised an error (see {error})" if error else "")
            record = {
                "name": plan.name,
                "plan": dataclasses.asdict(plan),
                "status": (
                    "stopped" if trial_id in stopper.stopped else "failed" if plan.name in ended else "interrupted"
                ),
                "reason": reason,
                "tflite_bytes": _number(last.get("tflite_bytes")),
                "arena_bytes": _number(last.get("arena_bytes")),
                "validation_metric": _number(last.get("val_metric")),
                "budgets_met": False,
                "missed": [reason] if reason else [],
            }
        records.append(record)
    figures = (
        "tflite_bytes arena_bytes instructions_per_inference host_latency_ms validation_metric validation_log_loss "
        "test_metric"
    )
    unknown = {**dict.fromkeys(["status", "reason", "seconds", *figures.split()]), "budgets_met": False}
    return sorted(
        ({**unknown, "missed": [], "test_missed": [], **record, "id": record["name"]} for record in records),
        key=lambda r: r["name"],
    )


def _number(value: Any) -> int | float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value) if float(value).is_integer() else float(value)


def pareto(records: list[dict[str, Any]], cost: str, higher_is_better: bool) -> list[str]:
    """The names of the trials no other trial beats on both the validation metric and ``cost``."""
    scored = [r for r in records if r["validation_metric"] is not None and r.get(cost) is not None]
    sign = 1 if higher_is_better else -1

    def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
        better = sign * a["validation_metric"] >= sign * b["validation_metric"] and a[cost] <= b[cost]
        return bool(better and (sign * a["validation_metric"] > sign * b["validation_metric"] or a[cost] < b[cost]))

    front = [r for r in scored if not any(beats(o, r) for o in scored if o is not r)]
    return [r["name"] for r in sorted(front, key=lambda r: (r[cost], r["name"]))]


def validation_text(record: dict[str, Any], metric: str) -> str:
    """``validation accuracy 0.9725, log-loss 0.1674``: what a trial scored on the validation split."""
    text = f"validation {metric} {record['validation_metric']:.4g}"
    loss = record.get("validation_log_loss")
    return text if loss is None else f"{text}, log-loss {loss:.4g}"


def choose(records: list[dict[str, Any]], setup: Setup) -> dict[str, Any] | None:
    """Of the plans that meet every budget: ``most_accurate``, the lowest validation log-loss (a
    classifier), then the best validation metric, then the fewest model bytes; ``smallest``, the
    fewest bytes, then the best metric, then the log-loss; then the name.

    A classifier's accuracy on a few hundred validation images moves in steps of a few tenths of a
    point and by about a point from one sample of images to another, so the plan with the best one
    is often the luckiest, not the best (and misses on the test split). Its log-loss scores the
    same predictions by how sure each was: a steadier estimate of which plan is more accurate.
    """
    sign = 1 if setup.higher_is_better else -1

    def rank(r: dict[str, Any]) -> tuple[Any, ...]:
        metric = -sign * round(r["validation_metric"], 9)
        loss = r.get("validation_log_loss")
        loss = math.inf if loss is None else round(loss, 9)
        bytes_ = r["tflite_bytes"]
        first = (loss, metric, bytes_) if setup.choose == "most_accurate" else (bytes_, metric, loss)
        return (*first, r["name"])

    return min((r for r in records if r.get("budgets_met")), key=rank, default=None)


def summarize(
    records: list[dict[str, Any]], setup: Setup, algorithm: str, trials: int, seconds: float
) -> dict[str, Any]:
    """What ``search.json`` holds: the trials, both fronts and the chosen plan (``choose``)."""
    chosen = choose(records, setup)
    return {
        "edgebuild_search": 1,
        "recipe": setup.recipe.name,
        "target": setup.target.name,
        "metric": setup.metric,
        "higher_is_better": setup.higher_is_better,
        "budgets": {
            "model_bytes": setup.limits.get("model_bytes"),
            "arena_bytes": setup.limits.get("arena_bytes"),
            "max_metric_drop": setup.limits.get("max_metric_drop"),
        },
        "teacher": {"validation_metric": setup.teacher_validation, "test_metric": setup.teacher_test},
        "algorithm": algorithm,
        "trials_asked": trials,
        "seconds": round(seconds, 1),
        "trials": records,
        "front_bytes": pareto(records, "tflite_bytes", setup.higher_is_better),
        "front_arena": pareto(records, "arena_bytes", setup.higher_is_better),
        "chosen": chosen["name"] if chosen else None,
        "choose": setup.choose,
        "best_recipe": None,
    }


def _closest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial that missed the fewest budgets (a finished one before a stopped one)."""
    tried = [r for r in records if r["missed"]]
    return min(tried, key=lambda r: (r["status"] != "done", len(r["missed"]), r["name"]), default=None)


# ---------------------------------------------------------------- outputs


def check_search_folder(out: Path, recipe: Recipe, target: Target) -> None:
    """ConfigError unless ``out`` is new, empty, or a previous search's folder holding only what a
    search writes (``OURS``); the build rules (``publish.check_out_folder``) apply to the folder itself."""
    from edgebuild.publish import check_out_folder, protected_folders

    protected = protected_folders(recipe.source, target.source)
    previous_search = out.is_dir() and not out.is_symlink() and (out / SEARCH_JSON).is_file()
    if not previous_search:
        check_out_folder(out, protected)  # new, empty, or refused with the reason
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OURS)
    if foreign:
        raise ConfigError(
            f"search folder {out} holds {foreign[0]!r}, which edgebuild did not write",
            hint="give --out a new or empty folder, or one holding a previous search",
        )


def write_outputs(out: Path, summary: dict[str, Any], recipe: Recipe, target: Target) -> None:
    """``best.toml`` (the chosen plan as a recipe), ``search.json`` and ``search.html`` in ``out``."""
    chosen = next((r for r in summary["trials"] if r["name"] == summary["chosen"]), None)
    if chosen is not None:
        text = best_recipe_text(recipe, Plan(**chosen["plan"]), target, summary)
        path = best_recipe_path(out, recipe, target)
        _write(path, text)
        summary["best_recipe"] = str(path)
    _write(out / SEARCH_JSON, json.dumps(summary, indent=2) + "\n")
    try:
        from edgebuild.html_report import search_html
    except ImportError:  # pragma: no cover - the HTML module ships with edgebuild
        return
    _write(out / "search.html", search_html(summary))


def best_recipe_path(out: Path, recipe: Recipe, target: Target) -> Path:
    """Where the chosen plan's recipe goes: ``<out>/best.toml``, or, when the recipe names files (an
    npz dataset, a saved model) relative to its folder, beside it as ``<name>.searched-<target>.toml``.

    Raises ConfigError when that file exists and is not one a search wrote (it is never overwritten)."""
    relative_paths = recipe.dataset.startswith("npz:") or recipe.model.path is not None
    if not relative_paths or not recipe.source:
        return out / "best.toml"
    path = Path(recipe.source).with_name(f"{Path(recipe.source).stem}.searched-{target.name}.toml")
    if path.exists() and (path.is_symlink() or not path.read_text(errors="replace").startswith(BEST_MARKER)):
        raise ConfigError(
            f"{path} exists and was not written by edgebuild search; it was left as it is",
            hint="move it away to have the chosen plan written there",
        )
    return path


def _write(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file renamed into place (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def best_recipe_text(recipe: Recipe, plan: Plan, target: Target, summary: dict[str, Any]) -> str:
    """The base recipe's TOML with the plan's [distill], [prune] and [qat] tables, without [search].

    Reads the base recipe's file (its other keys and tables stay as the user wrote them)."""
    table = tomllib.loads(Path(recipe.source).read_text()) if recipe.source else {}
    table.pop("search", None)
    table["name"] = f"{recipe.name}-{target.name}-searched"
    distill = table.setdefault("distill", {})
    distill["student_width"] = plan.student_width
    if plan.sparsity > 0:
        table.setdefault("prune", {})["sparsity"] = plan.sparsity
    else:
        table.pop("prune", None)
    if plan.quantization == "qat":
        table.setdefault("qat", {})
    else:
        table.pop("qat", None)
    chosen = next(r for r in summary["trials"] if r["name"] == plan.name)
    header = [
        f"{BEST_MARKER} plan {plan.name} for {target.name}, of {len(summary['trials'])} trials",
        f"# {validation_text(chosen, summary['metric'])}, {chosen['tflite_bytes']:,} model bytes",
    ]
    if plan.precision != target.precision.mode:
        header.append(f"# build it with a target whose [precision] is {plan.precision}")
    return "\n".join(header) + "\n" + tomli_w.dumps(table)
