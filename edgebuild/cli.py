"""The ``edgebuild`` command line: the only place exceptions become exit codes.

``edgebuild --target rpi4`` builds ``./edgebuild.toml`` (or the default recipe);
``edgebuild build``, ``edgebuild targets`` and ``edgebuild recipes`` do what they say.
This module must not import TensorFlow: ``--help`` and the listings stay fast.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from edgebuild import __version__
from edgebuild.errors import EXIT_BUILD, EXIT_CONFIG, ConfigError, EdgebuildError
from edgebuild.schema import all_names, find_file, load_recipe, load_target

DEFAULT_RECIPE = "mnist"
PROJECT_RECIPE = "edgebuild.toml"


def _build_flags(command: Any) -> Any:
    """The options of a build (the same on ``edgebuild`` and ``edgebuild build``)."""
    options = [
        click.option(
            "-d",
            "--device",
            help="Also validate on: qemu (emulated arm64 Linux), ssh://user@host[:port], adb[:SERIAL] "
            "[default: the target's validate.device].",
        ),
        click.option(
            "--benchmark-binary",
            type=click.Path(path_type=Path, dir_okay=False),
            help="For --device adb: LiteRT's benchmark_model built for the phone.",
        ),
        click.option(
            "--convert-sparsity",
            is_flag=True,
            help="Prune channels when the target's sparsity structure would save nothing on its runtime.",
        ),
        click.option(
            "--compare-kernels",
            is_flag=True,
            help="With --device qemu on a Cortex-M target: also run the firmware with the other TFLM kernel "
            "family (CMSIS-NN or reference) and report both's instructions per inference.",
        ),
        click.option(
            "--allow-unsafe-model",
            is_flag=True,
            help="Load a model with Lambda or custom layers (they run code from the file).",
        ),
        click.option(
            "--max-memory-mb",
            type=click.IntRange(min=64),
            help="Stop the build if it uses more memory than this [default: $EDGEBUILD_MAX_MEMORY_MB, else no limit].",
        ),
        click.option("--no-cache", is_flag=True, help="Rebuild every stage; neither read nor write the cache."),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path),
            help="Stage cache folder [default: $EDGEBUILD_CACHE_DIR or ~/.cache/edgebuild].",
        ),
        click.option(
            "--cache-max-mb",
            type=click.IntRange(min=1),
            help="Stage cache size bound [default: 2048 or $EDGEBUILD_CACHE_MAX_BYTES].",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _project_recipe(project: Path) -> str:
    """``./edgebuild.toml`` when there is one (anything by that name: a broken one is an error, never
    skipped), else the shipped default recipe."""
    path = project / PROJECT_RECIPE
    if path.is_symlink() and not path.exists():
        raise ConfigError(
            f"{path} is a broken symlink", hint="point it at a recipe, or remove it to build the default recipe"
        )
    if path.exists() or path.is_symlink():
        return str(path)
    return DEFAULT_RECIPE


def _memory_limit(flag: int | None) -> int | None:
    """--max-memory-mb, else $EDGEBUILD_MAX_MEMORY_MB, else no limit; ConfigError for a value that is not a number."""
    if flag is not None:
        return flag
    value = os.environ.get("EDGEBUILD_MAX_MEMORY_MB", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 64:
        raise ConfigError(
            f"$EDGEBUILD_MAX_MEMORY_MB is {value!r}, not a number of megabytes of at least 64",
            hint="set it to e.g. 4096, or unset it",
        )
    return int(value)


def _build(recipe: str | None, target: str, out: Path | None, quiet: bool, flags: dict[str, Any]) -> None:
    from edgebuild.budgets import budget_table
    from edgebuild.devices import parse_device
    from edgebuild.pipeline import BuildOptions, build_in
    from edgebuild.progress import Reporter
    from edgebuild.results import Budget, from_json
    from edgebuild.tasks import describe

    project = Path.cwd()
    options = BuildOptions(
        device=parse_device(flags["device"]) if flags["device"] else None,
        benchmark_binary=flags["benchmark_binary"],
        convert_sparsity=flags["convert_sparsity"],
        allow_unsafe_model=flags["allow_unsafe_model"],
        max_memory_mb=_memory_limit(flags["max_memory_mb"]),
        compare_kernels=flags["compare_kernels"],
    )
    reporter = Reporter(quiet=quiet)
    built = build_in(
        project,
        recipe if recipe is not None else _project_recipe(project),
        target,
        out,
        reporter=reporter,
        options=options,
        cache=not flags["no_cache"],
        cache_dir=flags["cache_dir"],
        cache_max_bytes=flags["cache_max_mb"] * 1024 * 1024 if flags["cache_max_mb"] else None,
    )
    names = f"{built.recipe.name} for {built.target.name}"
    if built.up_to_date:
        click.echo(f"{names} is up to date in {built.out}")
        return
    report = built.report
    reporter.note_table(budget_table(from_json(Budget, b) for b in report["budgets"]))
    artifact = report["artifact"]
    arena = f", arena {artifact['arena_bytes']:,} B" if artifact.get("arena_bytes") else ""
    click.echo(
        f"built {names} in {built.out}: model.tflite "
        f"{artifact['tflite_bytes']:,} B {artifact['precision']}{arena}, {describe(artifact['metrics'])} "
        f"(float {describe(report['teacher']['metrics'])}), sparsity {artifact['sparsity']:.1%}, all budgets met"
    )


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-t", "--target", help="Target profile: a name (see `edgebuild targets`) or a .toml path.")
@click.option("-r", "--recipe", help="Recipe: a name or a .toml path [default: ./edgebuild.toml, else mnist].")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output folder [default: build/<recipe>/<target>].")
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings, errors and the result line.")
@_build_flags
@click.version_option(__version__, prog_name="edgebuild")
@click.pass_context
def cli(
    ctx: click.Context, /, target: str | None, recipe: str | None, out: Path | None, quiet: bool, **flags: Any
) -> None:
    """Build, compress, convert and validate a model for an edge device.

    \b
    edgebuild --target rpi4              build ./edgebuild.toml (or the mnist recipe) for a Raspberry Pi 4
    edgebuild build -r digits -t cortex-m4
    edgebuild targets | edgebuild recipes
    edgebuild inspect model.tflite
    edgebuild verify build/mnist/rpi4/manifest.json | edgebuild clean [--cache]
    """
    if ctx.invoked_subcommand is not None:
        if target or recipe or out or any(flags.values()):
            raise click.UsageError("put build options after the subcommand")
        return
    if target is None:
        raise click.UsageError("no target given; try `edgebuild --target rpi4` (`edgebuild targets` lists them)")
    _build(recipe, target, out, quiet, flags)


@cli.command("build")
@click.option("-t", "--target", required=True, help="Target profile name or .toml path.")
@click.option("-r", "--recipe", help="Recipe name or .toml path [default: ./edgebuild.toml, else mnist].")
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Output folder [default: build/<recipe>/<target>].")
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings, errors and the result line.")
@_build_flags
def build_command(target: str, recipe: str | None, out: Path | None, quiet: bool, **flags: Any) -> None:
    """Build a recipe for a target."""
    _build(recipe, target, out, quiet, flags)


@cli.command("search")
@click.option("-t", "--target", required=True, help="Target profile name or .toml path.")
@click.option("-r", "--recipe", help="Recipe name or .toml path [default: ./edgebuild.toml, else mnist].")
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), help="Output folder [default: build/search/<recipe>/<target>]."
)
@click.option(
    "--trials", type=click.IntRange(min=1), help="Trials of a random or optuna search [default: search.trials]."
)
@click.option(
    "--algorithm",
    type=click.Choice(["grid", "random", "optuna"]),
    help="How plans are picked [default: the recipe's search.algorithm, else optuna].",
)
@click.option("--ray-address", help="Send the trials to this Ray cluster (e.g. 10.0.0.5:6379) [default: a local Ray].")
@click.option("-d", "--device", help="Also validate every trial there (e.g. qemu: the firmware on Cortex-M).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Stage cache shared by every trial (on shared storage for a cluster) [default: $EDGEBUILD_CACHE_DIR "
    "or ~/.cache/edgebuild].",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only warnings, errors and the result line.")
def search_command(
    target: str,
    recipe: str | None,
    out: Path | None,
    trials: int | None,
    algorithm: str | None,
    ray_address: str | None,
    device: str | None,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Search the recipe's compression plans (its [search] table) for the one that fits the target's budgets."""
    from edgebuild.cache import check_cache_root, default_root
    from edgebuild.devices import parse_device
    from edgebuild.pipeline import resolve
    from edgebuild.progress import Reporter
    from edgebuild.search import search, validation_text

    project = Path.cwd()
    loaded_recipe, loaded_target = resolve(recipe if recipe is not None else _project_recipe(project), target, project)
    if device:
        parse_device(device)
    root = cache_dir or default_root()
    check_cache_root(root)
    folder = out or project / "build" / "search" / loaded_recipe.name / loaded_target.name
    summary = search(
        project,
        loaded_recipe,
        loaded_target,
        folder,
        reporter=Reporter(quiet=quiet),
        cache_dir=root,
        trials=trials,
        algorithm=algorithm,
        ray_address=ray_address,
        device=device,
    )
    chosen = next(t for t in summary["trials"] if t["name"] == summary["chosen"])
    click.echo(
        f"searched {len(summary['trials'])} plans of {loaded_recipe.name} for {loaded_target.name} in "
        f"{summary['seconds'] / 60:.1f} min: chosen {chosen['name']}, {chosen['tflite_bytes']:,} B, "
        f"{validation_text(chosen, summary['metric'])} (test {summary['metric']} {chosen['test_metric']:.4g}); "
        f"front of {len(summary['front_bytes'])} in {folder / 'search.html'}; build it with: edgebuild build --recipe "
        f"{summary['best_recipe']} --target {target}"
    )


@cli.command("targets")
def targets_command() -> None:
    """List the target profiles, one line each."""
    project = Path.cwd()
    for name in all_names("targets", project):
        target = load_target(find_file("targets", name, project))
        sparsity = f"{target.sparsity.target:.0%} {target.sparsity.structure}" if target.sparsity.target else "none"
        click.echo(
            f"{target.name:<15} {target.runtime:<7} {target.precision.mode:<8} sparsity {sparsity:<17} "
            f"{target.description}"
        )


@cli.command("recipes")
def recipes_command() -> None:
    """List the recipes, one line each."""
    project = Path.cwd()
    for name in all_names("recipes", project):
        recipe = load_recipe(find_file("recipes", name, project))
        click.echo(f"{name:<12} {recipe.description}")


@cli.group("device")
def device_group() -> None:
    """Set up the devices validation can run on."""


@device_group.command("setup")
@click.argument("kind", type=click.Choice(["qemu"]))
@click.option("--force", is_flag=True, help="Rebuild the emulated root even if one is cached.")
def device_setup_command(kind: str, force: bool) -> None:
    """Build (once) and cache the emulated arm64 Linux root that --device qemu runs in."""
    from edgebuild.runners.arm64_root import setup_root

    root = setup_root(force=force)
    click.echo(f"emulated arm64 Linux ready in {root}")


@cli.command("clean")
@click.option("--cache", "clear_cache", is_flag=True, help="Also empty the stage cache.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), help="The stage cache folder.")
def clean_command(clear_cache: bool, cache_dir: Path | None) -> None:
    """Remove the builds in ./build (with --cache, every stage cache entry); never a file edgebuild did not write."""
    from edgebuild.cache import StageCache, default_root
    from edgebuild.publish import clean_builds

    build = Path.cwd() / "build"
    if build.is_dir() and not build.is_symlink():
        removed, kept = clean_builds(build)
        click.echo(f"removed {removed} build(s) from {build}")
        if kept:
            more = f" and {len(kept) - 1} more" if len(kept) > 1 else ""
            click.echo(f"edgebuild: kept {kept[0]}{more}: edgebuild did not write them", err=True)
    if clear_cache:
        root = cache_dir or default_root()
        freed = StageCache(root).clear()
        click.echo(f"emptied the stage cache {root} ({freed:,} bytes)")


@cli.command("sources")
@click.option(
    "--into",
    type=click.Path(path_type=Path),
    help="Also copy the verified archives into this folder (a container image's or an offline mirror's).",
)
def sources_command(into: Path | None) -> None:
    """Lay out TFLM's pinned sources for --device qemu on Cortex-M targets (from $EDGEBUILD_THIRD_PARTY or
    GitHub), each tree checked against its pinned hash."""
    from edgebuild.third_party import copy_archives, tflm_tree

    def say(line: str) -> None:
        click.echo(line, err=True)

    if into is not None:
        copied = copy_archives(into, say)
        click.echo(f"{into}: {len(copied)} archive(s) copied, every pinned archive verified")
    click.echo(f"TFLM sources laid out and verified in {tflm_tree(say)}")


@cli.command("verify")
@click.argument("manifest", type=click.Path(path_type=Path))
def verify_command(manifest: Path) -> None:
    """Rebuild from a manifest.json in a temporary folder and report identical outputs or which differ."""
    from edgebuild.verify import verify

    differing = verify(manifest)
    if differing:
        raise EdgebuildError(
            f"{manifest}: {len(differing)} output(s) differ from the rebuild: " + ", ".join(differing),
            exit_code=EXIT_BUILD,
        )
    click.echo(f"{manifest}: identical: every reproducible output matches the rebuild")


@cli.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON instead of text.")
def inspect_command(model: Path, as_json: bool) -> None:
    """Inspect any .tflite: ops, tensors, quantization, parameters, MACs, TFLM arena, which targets can run it."""
    import json

    from edgebuild.inspect import format_inspection, inspect_tflite

    info = inspect_tflite(model, Path.cwd())
    click.echo(json.dumps(info, indent=2) if as_json else format_inspection(info))


def _interrupted() -> NoReturn:
    """One line and exit 130. The build's own clean-up has run by now; os._exit because an
    interrupt that landed inside a C extension's embedded Python run can leave the interpreter
    marked to re-raise SIGINT at shutdown (exit -2 instead of 130)."""
    click.echo("edgebuild: interrupted; the previous artifacts were left as they were", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def run() -> NoReturn:
    """The ``edgebuild`` command: ``main``, then leave at once with its exit code.

    Leaving through ``os._exit`` skips the interpreter's finalization (TensorFlow's teardown
    takes seconds), during which a Ctrl-C would kill the process by SIGINT (exit -2) after
    the build had already finished.
    """
    code = 1
    try:
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
    except KeyboardInterrupt:
        _interrupted()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; map user-facing errors to one line on stderr and an exit code."""
    sigints = []

    def on_sigint(signum: int, frame: object) -> None:
        sigints.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        cli.main(args=argv, prog_name="edgebuild", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        hint = " (see edgebuild --help)" if isinstance(e, click.UsageError) else ""
        click.echo(f"edgebuild: error: {' '.join(e.format_message().split())}{hint}", err=True)
        sys.exit(EXIT_CONFIG if e.exit_code == 2 else e.exit_code)
    except EdgebuildError as e:
        click.echo(f"edgebuild: error: {e}", err=True)
        sys.exit(e.exit_code)
    except Exception:
        # Ctrl-C landing inside a C extension (TensorFlow's nest utilities, say) can come out
        # as a SystemError or TypeError instead of KeyboardInterrupt: still an interruption.
        if sigints:
            _interrupted()
        raise
    sys.exit(0)
