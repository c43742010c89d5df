"""The driver: run the stages in order for one recipe and target, then publish atomically.

    preflight → baseline → distill → prune → qat → convert → validate → vela → emit → link → report

Stages write into a private temporary folder beside the output folder; only when
every stage succeeded and every budget is met does that folder replace the output
folder, in one atomic exchange. A failure leaves the previous artifacts as they were.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgebuild import __version__
from edgebuild.budgets import budget_table, missed_summary
from edgebuild.cache import (
    CACHE_FORMAT,
    Entry,
    StageCache,
    cache_key,
    check_cache_root,
    default_max_bytes,
    default_root,
)
from edgebuild.context import BuildContext
from edgebuild.devices import DeviceSpec, parse_device
from edgebuild.errors import BudgetError, BuildError, ConfigError, EdgebuildError
from edgebuild.manifest import input_files, up_to_date, write_manifest
from edgebuild.memory import MemoryWatch
from edgebuild.progress import Reporter
from edgebuild.publish import check_out_folder, make_work_folder, protected_folders, publish
from edgebuild.results import Costs, StageResult, from_json, to_json
from edgebuild.runners import FIRMWARE_RUNNERS
from edgebuild.schema import Recipe, Target, find_file, load_recipe, load_target
from edgebuild.stages import baseline, convert, distill, emit, link, preflight, prune, qat, report, validate, vela
from edgebuild.tf import ONEDNN_MAX_CPU_ISA, build_threads, keras, seed_everything, versions


def folder_name(name: str) -> str:
    """A safe folder name for a recipe or target name (no separators, no leading dot)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".")
    return safe[:100] or "unnamed"


def default_out(recipe: Recipe, target: Target, root: Path) -> Path:
    """``root/build/<recipe>/<target>``."""
    return root / "build" / folder_name(recipe.name) / folder_name(target.name)


class CachedStage(Protocol):
    """A stage whose result the stage cache keeps (a stage module with these three functions)."""

    def cache_parts(self, ctx: BuildContext) -> list[Any]:
        """What the stage's result depends on beyond the stages before it."""
        ...

    def save(self, ctx: BuildContext) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The stage's result as arrays and JSON-able facts."""
        ...

    def restore(self, ctx: BuildContext, entry: Entry, need_model: bool) -> None:
        """Put a cached result back; the Keras model too when ``need_model``."""
        ...


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once."""

    name: str
    run: Callable[[BuildContext], StageResult]
    cache: CachedStage | None = None  # None: always runs (cheap, or writes files)
    trains: bool = False  # trains or converts the Keras model: cached stages before it restore their models
    seeded: bool = True  # seeded by the driver (preflight seeds itself once its checks pass)


# The pipeline, in order.
STAGES = (
    Stage("preflight", preflight.run, seeded=False),
    Stage("baseline", baseline.run, baseline, trains=True),
    Stage("distill", distill.run, distill, trains=True),
    Stage("prune", prune.run, prune, trains=True),
    Stage("qat", qat.run, qat, trains=True),
    Stage("convert", convert.run, convert, trains=True),
    Stage("validate", validate.run, validate),
    Stage("vela", vela.run),
    Stage("emit", emit.run),
    Stage("link", link.run),
    Stage("report", report.run),
)


def _cache_plan(ctx: BuildContext, cache: StageCache) -> dict[str, tuple[str, Entry | None]]:
    """Each cached stage's key (chained from the inputs and every stage before it) and its entry, if any."""
    recipe = ctx.recipe
    previous = cache_key(
        "inputs",
        ctx.data.sha256(),
        dataclasses.asdict(recipe.model),
        input_files(recipe).get("model"),
        recipe.seed,
        recipe.train.validation_fraction,
        versions(),
        __version__,
        CACHE_FORMAT,
        build_threads(),
        ONEDNN_MAX_CPU_ISA,
    )
    plan: dict[str, tuple[str, Entry | None]] = {}
    for stage in STAGES:
        if stage.cache is not None:
            previous = cache_key(stage.name, previous, stage.cache.cache_parts(ctx))
            plan[stage.name] = (previous, cache.load(previous))
    return plan


def _run_stage(ctx: BuildContext, stage: Stage, plan: dict[str, tuple[str, Entry | None]], cache: StageCache) -> str:
    """Run a stage, or restore its result from the cache; store what a cached stage computed.

    Besides the stage's own facts, an entry keeps what the stage added to
    ``ctx.stage_metrics`` and ``ctx.costs``.
    """
    if stage.cache is None:
        return stage.run(ctx).summary
    key, entry = plan[stage.name]
    if entry is not None:
        if not entry.meta["skipped"]:
            later = STAGES[STAGES.index(stage) + 1 :]
            need_model = any(s.trains and plan[s.name][1] is None for s in later)
            stage.cache.restore(ctx, entry, need_model)
        ctx.stage_metrics.update(entry.meta["stage_metrics"])
        ctx.stage_validation_metrics.update(entry.meta["stage_validation_metrics"])
        ctx.costs.update({name: from_json(Costs, costs) for name, costs in entry.meta["costs"].items()})
        return f"{entry.meta['summary']} (cached)"
    metrics, costs, validation = set(ctx.stage_metrics), set(ctx.costs), set(ctx.stage_validation_metrics)
    result = stage.run(ctx)
    arrays, meta = ({}, {}) if result.skipped else stage.cache.save(ctx)
    meta.update(
        summary=result.summary,
        skipped=result.skipped,
        stage_metrics={k: v for k, v in ctx.stage_metrics.items() if k not in metrics},
        stage_validation_metrics={k: v for k, v in ctx.stage_validation_metrics.items() if k not in validation},
        costs={k: to_json(v) for k, v in ctx.costs.items() if k not in costs},
    )
    cache.store(key, arrays, meta)
    return result.summary


@dataclass(frozen=True)
class BuildOptions:
    """The command line's choices for one build."""

    device: DeviceSpec | None = None  # also validate there; None: the target's validate.device
    benchmark_binary: Path | None = None  # for adb devices
    convert_sparsity: bool = False  # prune channels where the target's structure saves nothing
    allow_unsafe_model: bool = False  # load models with Lambda or custom layers
    max_memory_mb: int | None = None  # stop a build that uses more
    compare_kernels: bool = False  # with --device qemu on a TFLM target: both kernel families' instructions
    observer: Callable[[str, BuildContext], None] | None = None  # called after each stage (a search's trials)

    def recorded(self, target: Target) -> dict[str, Any]:
        """The choices that change a build's outputs, as the manifest records them."""
        device = self.device or parse_device(target.validate.device)
        return {
            "device": device.label,
            "convert_sparsity": self.convert_sparsity,
            "allow_unsafe_model": self.allow_unsafe_model,
            "compare_kernels": self.compare_kernels,
        }


def run_build(
    recipe: Recipe,
    target: Target,
    out: Path,
    reporter: Reporter,
    cache: StageCache | None = None,
    options: BuildOptions | None = None,
) -> dict[str, Any]:
    """Build ``recipe`` for ``target`` into ``out``; return the report.

    Reuses stage results from ``cache`` (none when it is None). Raises EdgebuildError
    (naming the stage) for user-facing failures and BudgetError (exit 3) when a budget
    is missed; ``out`` is untouched then.
    """
    options = options or BuildOptions()
    device = options.device or parse_device(target.validate.device)
    cache = cache or StageCache(Path("/nonexistent"), enabled=False)
    check_out_folder(out, protected_folders(recipe.source, target.source, cache.root if cache.enabled else None))
    new_folders = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    work = make_work_folder(out)
    ctx = BuildContext(
        recipe=recipe,
        target=target,
        out=out,
        work=work,
        reporter=reporter,
        device=device,
        benchmark_binary=options.benchmark_binary,
        convert_sparsity=options.convert_sparsity,
        allow_unsafe_model=options.allow_unsafe_model,
        compare_kernels=options.compare_kernels,
        observer=options.observer,
    )
    published = False
    limit = options.max_memory_mb * 1024 * 1024 if options.max_memory_mb else None
    try:
        with MemoryWatch(limit) as watch:
            try:
                _run_stages(ctx, cache)
            except KeyboardInterrupt:
                if watch.exceeded_at is None:
                    raise
                stage = STAGES[len(ctx.stages)].name
                raise BuildError(
                    f"{stage}: the build used {watch.exceeded_at / 2**20:,.0f} MB, more than the limit of "
                    f"{options.max_memory_mb:,} MB",
                    hint="raise --max-memory-mb, or lower train.batch_size",
                ) from None
        missed = [b for b in ctx.budgets if not b.ok]
        if missed:
            reporter.table(budget_table(ctx.budgets))
            error = BudgetError(
                f"{len(missed)} budget(s) missed for target {target.name}: {missed_summary(ctx.budgets)}",
                hint="see the table above; the previous artifacts were left as they were",
            )
            error.report = ctx.report
            raise error
        write_manifest(work, recipe, target, ctx.data.sha256(), options.recorded(target))
        left = publish(work, out)
        published = True
        for path in left:
            ctx.warn(f"{path} was not written by edgebuild, so it was kept; move it where it belongs")
    finally:
        if not published and work.exists():  # the private work folder: everything in it is edgebuild's
            shutil.rmtree(work, ignore_errors=True)
        if not published:  # leave no empty build/<recipe>/ behind a failed first build
            for folder in new_folders:
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
    return ctx.report


def _run_stages(ctx: BuildContext, cache: StageCache) -> None:
    """Every stage in order, timed and reported; errors get the stage's name and what ran before."""
    plan: dict[str, tuple[str, Entry | None]] | None = None
    for number, stage in enumerate(STAGES):
        name = stage.name
        ctx.reporter.stage_start(name)
        # Every stage starts from its own seed, so it gives the same bytes whatever ran before.
        if stage.seeded:
            seed_everything(ctx.recipe.seed * 100 + number)
        start = time.perf_counter()
        try:
            if number == 0 and "tf_keras" in sys.modules:
                # Keras numbers the layers it makes in a process, and the numbers end up in the .tflite's
                # tensor names: a cleared session makes a build in a process that used Keras before (a
                # search's trials in one Ray worker, the Python API) give a fresh process's bytes.
                keras().backend.clear_session()
            if plan is None and stage.cache is not None:  # keys need the data and settings preflight checked
                plan = _cache_plan(ctx, cache)
                for key in cache.corrupt:
                    ctx.warn(f"cache entry {key[:12]} was corrupt (hash mismatch); it was removed and rebuilt")
            summary = _run_stage(ctx, stage, plan or {}, cache)
        except EdgebuildError as e:
            if not e.message.startswith(f"{name}:"):
                e.message = f"{name}: {e.message}"
            if ctx.stages:
                done = ", ".join(s["name"] for s in ctx.stages)
                e.hint = (e.hint + "; " if e.hint else "") + f"stages completed: {done}"
            raise
        except OSError as e:
            if e.errno in (28, 122):  # ENOSPC, EDQUOT
                raise BuildError(f"{name}: no space left on the device ({e.filename or ctx.out.parent})") from None
            raise
        except MemoryError:
            raise BuildError(
                f"{name}: out of memory", hint="lower train.batch_size, use less data, or a smaller model"
            ) from None
        seconds = time.perf_counter() - start
        ctx.stages.append({"name": name, "seconds": round(seconds, 3), "summary": summary})
        ctx.reporter.stage_end(name, seconds, summary)
        if ctx.observer is not None:
            ctx.observer(name, ctx)


def current_report(out: Path, recipe: Recipe, target: Target, options: BuildOptions) -> dict[str, Any] | None:
    """The report of ``out`` when its outputs are current for these inputs (no TensorFlow), else None.

    Raises ConfigError when ``out`` is not a folder edgebuild may write (see ``check_out_folder``).
    """
    check_out_folder(out, protected_folders(recipe.source, target.source))
    if not up_to_date(out, recipe, target, options.recorded(target)):
        return None
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def resolve(recipe: str | Path | Recipe, target: str | Path | Target, project: Path) -> tuple[Recipe, Target]:
    """Turn names or paths into loaded Recipe and Target objects (ConfigError if not found)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(find_file("recipes", str(recipe), project))
    if not isinstance(target, Target):
        target = load_target(find_file("targets", str(target), project))
    return recipe, target


@dataclass(frozen=True)
class Built:
    """What ``build_in`` did: the report, where, and whether the outputs were already current."""

    report: dict[str, Any]
    recipe: Recipe
    target: Target
    out: Path
    up_to_date: bool


def check_options(target: Target, options: BuildOptions) -> None:
    """ConfigError for command-line choices that cannot work with this target."""
    device = options.device or parse_device(target.validate.device)
    if device.kind != "host" and target.runtime == "tflm":
        if device.kind not in FIRMWARE_RUNNERS:
            raise ConfigError(
                f"--device {device.label} runs LiteRT on Linux; target {target.name} runs TFLM firmware",
                hint="use --device qemu (the firmware on an emulated Cortex-M board), or this device with the "
                "rpi4 or android targets",
            )
        from edgebuild.mcu_firmware import check_tools

        check_tools(target)  # a missing qemu-system-arm or compiler, or a cpu no board has: now, not after training
    if options.compare_kernels and (target.runtime != "tflm" or device.kind == "host"):
        raise ConfigError(
            "--compare-kernels runs the firmware with both TFLM kernel families, so it needs a microcontroller "
            f"target and --device qemu (got target {target.name}, device {device.label})",
            hint="add --device qemu on a Cortex-M target, or leave --compare-kernels out",
        )
    if device.kind == "adb" and options.benchmark_binary is None:
        raise ConfigError("--device adb needs --benchmark-binary PATH (LiteRT's benchmark_model built for the phone)")


def build_in(
    project: Path,
    recipe: str | Path | Recipe,
    target: str | Path | Target,
    out: str | Path | None = None,
    *,
    reporter: Reporter | None = None,
    options: BuildOptions | None = None,
    cache: bool = True,
    cache_dir: Path | None = None,
    cache_max_bytes: int | None = None,
) -> Built:
    """The one build path of the command line and the Python API.

    Resolves names against ``project``; ``out`` defaults to ``project/build/<recipe>/<target>``.
    With ``cache``, current outputs are kept (no TensorFlow) and stage results come from the
    stage cache in ``cache_dir`` (default ``$EDGEBUILD_CACHE_DIR`` or ``~/.cache/edgebuild``).
    Raises EdgebuildError (with ``exit_code``) when the build fails or misses a budget.
    """
    options = options or BuildOptions()
    reporter = reporter or Reporter(quiet=True)
    loaded_recipe, loaded_target = resolve(recipe, target, project)
    out_path = Path(out) if out is not None else default_out(loaded_recipe, loaded_target, project)
    check_options(loaded_target, options)
    cache_root = cache_dir or default_root()
    stage_cache = StageCache(cache_root, cache_max_bytes or default_max_bytes(), enabled=cache)
    if cache:
        check_cache_root(cache_root)
        if (report := current_report(out_path, loaded_recipe, loaded_target, options)) is not None:
            return Built(report, loaded_recipe, loaded_target, out_path, up_to_date=True)
    reporter.note(f"building recipe {loaded_recipe.name} from {loaded_recipe.source} for {loaded_target.name}")
    report = run_build(loaded_recipe, loaded_target, out_path, reporter, stage_cache, options)
    return Built(report, loaded_recipe, loaded_target, out_path, up_to_date=False)


def build(
    recipe: str | Path | Recipe,
    target: str | Path | Target,
    out: str | Path | None = None,
    *,
    quiet: bool = True,
    cache: bool = True,
) -> dict[str, Any]:
    """Build a recipe for a target from Python and return the report (as in report.json).

    ``recipe`` and ``target`` are names, paths to TOML files, or loaded objects; ``out``
    defaults to ``build/<recipe>/<target>`` under the current folder. With ``cache``,
    current outputs are kept and stage results are reused from the stage cache.
    Raises EdgebuildError (with ``exit_code``) when the build fails or misses a budget.
    """
    return build_in(Path.cwd(), recipe, target, out, reporter=Reporter(quiet=quiet), cache=cache).report
