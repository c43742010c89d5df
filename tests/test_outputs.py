"""Output folders edgebuild owns: every --out it may not replace is refused before any work,
and no file edgebuild did not write is ever deleted, moved or overwritten (publish, clean).

Each refused case compares the sha256 of every file under the test's folder (a canary
project, a fake home, the folder pointed at) before and after the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebuild.errors import ConfigError
from edgebuild.publish import check_out_folder, clean_builds, publish, remove_build
from tests.conftest import assert_one_line_error, quick_project, run_cli


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by sha256, links by target, folders by their mode."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[key] = f"dir:{path.stat().st_mode:o}"
            else:
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def fake_build(folder: Path, *extra: str) -> None:
    """A folder as a previous build leaves it: files and a manifest listing them (``extra`` files unlisted)."""
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for name in ("model.tflite", "report.json", "cmake/CMakeLists.txt"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(os.urandom(64))
        outputs[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps({"outputs": outputs}))
    for name in extra:
        (folder / name).write_text("the user's own file")


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """``tmp_path/home/work/project``: a quick project with data and notes, inside a home folder with canaries."""
    home = tmp_path / "home"
    project = home / "work" / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "targets").mkdir()
    quick_project(project)
    (project / "data.npz").write_bytes(os.urandom(256))
    (project / "notes.txt").write_text("keep me")
    (home / ".bashrc").write_text("export KEEP=1")
    (home / "thesis").mkdir()
    (home / "thesis" / "chapter1.tex").write_text("\\chapter{One}")
    return tmp_path


# Each case prepares the world and returns the --out value and the words the error line must hold.
OutCase = Callable[[Path], tuple[str, tuple[str, ...]]]
OUT_CASES: dict[str, OutCase] = {
    "the project folder, as .": lambda w: (".", ("is the current folder",)),
    "the project folder": lambda w: (str(w / "home" / "work" / "project"), ("is the current folder",)),
    "a parent of the project": lambda w: (str(w / "home" / "work"), ("contains the current folder",)),
    "the home folder": lambda w: (str(w / "home"), ("is your home folder",)),
    "the root folder": lambda w: ("/", ("output folder / is the root folder",)),
    "an existing file": lambda w: ("notes.txt", ("notes.txt", "is a file")),
    "a folder holding other files": lambda w: (str(w / "home" / "thesis"), ("chapter1.tex", "did not write")),
}


def _symlink_to_a_folder(w: Path) -> tuple[str, tuple[str, ...]]:
    (w / "empty").mkdir()
    (w / "home" / "work" / "project" / "link").symlink_to(w / "empty")
    return "link", ("link", "is a symlink")


def _read_only_folder_with_files(w: Path) -> tuple[str, tuple[str, ...]]:
    folder = w / "home" / "readonly"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2,3")
    folder.chmod(0o555)
    return str(folder), ("data.csv", "did not write")


def _previous_build_with_a_users_file(w: Path) -> tuple[str, tuple[str, ...]]:
    fake_build(w / "home" / "work" / "project" / "fw", "main.c")
    return "fw", ("main.c", "did not write")


def _the_recipe_folder(w: Path) -> tuple[str, tuple[str, ...]]:
    recipes = w / "home" / "work" / "project" / "recipes"
    (recipes / "r.toml").write_text((w / "home" / "work" / "project" / "edgebuild.toml").read_text())
    return str(recipes), ("is the recipe's folder",)


OUT_CASES |= {
    "a symlink to a folder": _symlink_to_a_folder,
    "a read-only folder with files": _read_only_folder_with_files,
    "a previous build with a user's file added": _previous_build_with_a_users_file,
    "the recipe's folder": _the_recipe_folder,
}


@pytest.mark.parametrize("name", sorted(OUT_CASES))
def test_out_folders_edgebuild_may_not_replace_are_refused(name: str, world: Path) -> None:
    out, needles = OUT_CASES[name](world)
    recipe = ["--recipe", "recipes/r.toml"] if name == "the recipe's folder" else []
    before = snapshot(world)
    project = world / "home" / "work" / "project"
    env = {"HOME": str(world / "home")}
    result = run_cli("build", "--target", "rpi4-relaxed", *recipe, "--out", out, "--quiet", cwd=project, env=env)
    assert_one_line_error(result, 2, "output folder", *needles)
    assert snapshot(world) == before


def test_publish_keeps_a_file_that_appeared_during_the_build(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / ".out.tmp-1-x"
    fake_build(out)
    fake_build(work)
    (out / "notes.txt").write_text("written while the build ran")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="gained 'notes.txt'"):
        publish(work, out)
    assert snapshot(out.parent / "out") == {
        k.removeprefix("out/"): v for k, v in before.items() if k.startswith("out/")
    }


def test_publish_replaces_a_previous_build_and_removes_only_its_files(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / ".out.tmp-1-x"
    fake_build(out)
    fake_build(work)
    new = snapshot(work)
    assert publish(work, out) == []
    assert snapshot(out) == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden leftovers


def test_remove_build_deletes_by_the_manifest_only(tmp_path: Path) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("not edgebuild's")
    folder = tmp_path / "old"
    fake_build(folder, "notes.txt")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"]["../precious.txt"] = "listed by a hostile manifest"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert remove_build(folder) == ["notes.txt"]
    assert outside.read_text() == "not edgebuild's"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_check_accepts_new_empty_and_previous_build_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    fake_build(tmp_path / "previous")
    for name in ("new", "empty", "previous", "new/deeper"):
        check_out_folder(tmp_path / name, [])


def test_clean_removes_builds_and_keeps_everything_else(world: Path) -> None:
    project = world / "home" / "work" / "project"
    fake_build(project / "build" / "mnist" / "rpi4")
    fake_build(project / "build" / "mnist" / "cortex-m4", "main.c")
    (project / "build" / "README").write_text("the user's")
    cache = world / "cache"
    (cache / "ab").mkdir(parents=True)
    (cache / "ab" / "thesis.tex").write_text("not a cache entry")
    result = run_cli("clean", "--cache", "--cache-dir", str(cache), cwd=project)
    assert result.code == 0, result.err
    assert "removed 2 build(s)" in result.out
    assert "kept README and 1 more" in result.err
    left = sorted(str(p.relative_to(project / "build")) for p in (project / "build").rglob("*") if p.is_file())
    assert left == ["README", "mnist/cortex-m4/main.c"]
    assert (cache / "ab" / "thesis.tex").read_text() == "not a cache entry"
    assert clean_builds(project / "build") == (0, ["README", "mnist/cortex-m4/main.c"])


@pytest.mark.slow
def test_a_build_into_an_empty_folder_then_a_user_file_then_a_rebuild(world: Path) -> None:
    project = world / "home" / "work" / "project"
    (project / "fw").mkdir()
    result = run_cli("--target", "rpi4-relaxed", "--out", "fw", "--quiet", cwd=project)
    assert result.code == 0, result.err
    built = snapshot(project / "fw")
    assert "model.tflite" in built and "manifest.json" in built
    (project / "fw" / "main.c").write_text("int main(void) { return 0; }")
    result = run_cli("--target", "rpi4-relaxed", "--out", "fw", "--quiet", cwd=project)
    assert_one_line_error(result, 2, "main.c", "did not write")
    assert snapshot(project / "fw") == {**built, "main.c": snapshot(project / "fw")["main.c"]}
    (project / "fw" / "main.c").unlink()
    target = project / "targets" / "rpi4-relaxed.toml"
    target.write_text(target.read_text().replace("max_accuracy_drop = 0.2", "max_accuracy_drop = 0.25"))
    result = run_cli("--target", "rpi4-relaxed", "--out", "fw", "--quiet", cwd=project)
    assert result.code == 0, result.err
    assert sorted(snapshot(project / "fw")) == sorted(built)
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".")) == []
