"""Shared helpers: run the real CLI in a subprocess, write small TOML files, and the builds that several
tests read, made once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None) -> Result:
    """Run ``python -m edgebuild ARGS`` in ``cwd`` (with extra ``env``) and capture everything."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "edgebuild", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, code: int, *needles: str) -> None:
    """Exit code as expected, exactly one line on stderr, no traceback, each needle in it."""
    assert result.code == code, (result.code, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_error(result: Result, code: int, message: str) -> None:
    """Exit code as expected and stderr exactly one line, ``edgebuild: error: MESSAGE``."""
    assert (result.code, result.err.strip().splitlines()) == (code, [f"edgebuild: error: {message}"]), result.err


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stage cache for the whole test session, never the user's own."""
    folder = tmp_path_factory.mktemp("edgebuild-cache")
    os.environ["EDGEBUILD_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder with recipes/ and targets/."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "targets").mkdir()
    return tmp_path


def shipped(kind: str, name: str) -> str:
    return (REPO / "edgebuild" / kind / f"{name}.toml").read_text()


QUICK_RECIPE = """name = "{name}"
dataset = "digits"
seed = 0
[model]
architecture = "mlp"
width = 0.5
[train]
epochs = 6
batch_size = 32
learning_rate = 3e-3
[prune]
epochs = 1
[qat]
epochs = 1
"""


QUICK_TARGETS = ("rpi4", "cortex-m4", "cortex-m7", "cortex-m55-u55")


def quick_project(project: Path, name: str = "quick", targets: tuple[str, ...] = QUICK_TARGETS) -> None:
    """A fast recipe (digits, a small MLP, one epoch each of pruning and QAT) as edgebuild.toml,
    and relaxed copies of the shipped ``targets`` (accuracy drop up to 20 points) as ``<name>-relaxed``."""
    (project / "edgebuild.toml").write_text(QUICK_RECIPE.format(name=name.replace("\\", "\\\\").replace('"', '\\"')))
    for target in targets:
        text = shipped("targets", target).replace("max_accuracy_drop = 0.01", "max_accuracy_drop = 0.2")
        text = text.replace(f'name = "{target}"', f'name = "{target}-relaxed"')
        (project / "targets" / f"{target}-relaxed.toml").write_text(text)


@dataclass(frozen=True)
class Build:
    """A build made once per session for several tests to read: never change it, copy it."""

    project: Path
    out: Path
    result: Result
    cache: Path  # the build's own EDGEBUILD_CACHE_DIR


def _new_project(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    folder = tmp_path_factory.mktemp(name)
    (folder / "recipes").mkdir()
    (folder / "targets").mkdir()
    return folder


@pytest.fixture(scope="session")
def clean_quick_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The quick recipe built for cortex-m4-relaxed with ``--no-cache``: every stage trained in this build.

    Its own EDGEBUILD_CACHE_DIR, which --no-cache must leave uncreated (test_cache checks). The caller's
    environment asks oneDNN for its widest instruction set (ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX),
    which edgebuild must override with its pinned one: test_determinism builds again under SSE41
    and compares the bytes.
    """
    project = _new_project(tmp_path_factory, "clean-quick-build")
    quick_project(project)
    cache = project / "cache"
    env = {"EDGEBUILD_CACHE_DIR": str(cache), "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}
    result = run_cli("--target", "cortex-m4-relaxed", "--no-cache", "--quiet", cwd=project, env=env)
    assert result.code == 0, result.err
    return Build(project, project / "build" / "quick" / "cortex-m4-relaxed", result, cache)


# What the default-recipe builds run under, on the host and in the container (test_docker): the
# same locale, time zone, hash seed and terminal width. (edgebuild fixes TensorFlow's thread
# count itself: with one thread instead of two, training gives other weights and other bytes.)
BUILD_ENVIRONMENT = {"LANG": "C.UTF-8", "TZ": "UTC", "PYTHONHASHSEED": "0", "COLUMNS": "200"}


@pytest.fixture(scope="session")
def default_recipe_build(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Callable[[str], Build]:
    """``edgebuild --target TARGET`` in an empty folder (the default recipe, MNIST) as a user runs it, made
    once per target and session. A clean environment (BUILD_ENVIRONMENT, an empty HOME, the session's
    stage cache), so that test_docker can compare the container's bytes with these."""
    folder = tmp_path_factory.mktemp("default-recipe")
    (folder / "home").mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(folder / "home"),
        "PYTHONPATH": str(REPO),
        "EDGEBUILD_CACHE_DIR": str(session_cache),
        **BUILD_ENVIRONMENT,
    }

    @cache
    def build(target: str) -> Build:
        command = [sys.executable, "-m", "edgebuild", "--target", target, "--quiet"]
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=1800, env=env)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        assert result.code == 0, result.err
        return Build(folder, folder / "build" / "mnist" / target, result, session_cache)

    return build
