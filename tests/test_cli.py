"""The command line: fast listings without TensorFlow, one-line errors with the right exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import assert_error, assert_one_line_error, run_cli, shipped


def _imports_tensorflow(*args: str, cwd: Path) -> bool:
    code = (
        "import sys\n"
        "from edgebuild.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return proc.stdout.strip().splitlines()[-1] == "True"


def test_help_and_listings_do_not_import_tensorflow(tmp_path: Path) -> None:
    assert not _imports_tensorflow("--help", cwd=tmp_path)
    assert not _imports_tensorflow("targets", cwd=tmp_path)
    assert not _imports_tensorflow("recipes", cwd=tmp_path)


def test_targets_lists_one_line_each(tmp_path: Path) -> None:
    result = run_cli("targets", cwd=tmp_path)
    assert result.code == 0, result.err
    names = [line.split()[0] for line in result.out.splitlines()]
    assert {"android", "rpi4", "cortex-m4", "cortex-m7"} <= set(names)
    assert len(names) == len(set(names))


def test_recipes_lists_project_recipes_too(project: Path) -> None:
    (project / "recipes" / "mine.toml").write_text(
        shipped("recipes", "digits").replace('name = "digits"', 'name = "mine"')
    )
    result = run_cli("recipes", cwd=project)
    assert result.code == 0, result.err
    assert {"mnist", "digits", "mine"} <= {line.split()[0] for line in result.out.splitlines()}


def test_misspelled_recipe_key_exits_2_with_suggestion(project: Path) -> None:
    text = shipped("recipes", "digits").replace("batch_size", "batch_sise")
    (project / "edgebuild.toml").write_text(text)
    result = run_cli("--target", "rpi4", cwd=project)
    assert_one_line_error(result, 2, "edgebuild.toml", "train.batch_sise", "did you mean 'batch_size'")
    assert not (project / "build").exists()


def test_unknown_target_exits_2(project: Path) -> None:
    result = run_cli("--target", "cortex-m9", cwd=project)
    assert_one_line_error(result, 2, "unknown target 'cortex-m9'", "did you mean")


def test_unknown_recipe_exits_2(project: Path) -> None:
    result = run_cli("build", "--recipe", "mnits", "--target", "rpi4", cwd=project)
    assert_one_line_error(result, 2, "unknown recipe 'mnits'", "did you mean 'mnist'")


def test_missing_recipe_file_exits_2(project: Path) -> None:
    result = run_cli("build", "--recipe", "nowhere/r.toml", "--target", "rpi4", cwd=project)
    assert_error(result, 2, "recipe file 'nowhere/r.toml' does not exist")


def test_no_target_is_a_usage_error(project: Path) -> None:
    result = run_cli(cwd=project)
    assert_error(
        result,
        2,
        "no target given; try `edgebuild --target rpi4` (`edgebuild targets` lists them) (see edgebuild --help)",
    )


def test_bad_option_is_a_usage_error(project: Path) -> None:
    result = run_cli("--frobnicate", cwd=project)
    assert_error(result, 2, "No such option '--frobnicate'. (see edgebuild --help)")
