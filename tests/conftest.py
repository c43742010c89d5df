"""Shared helpers: run the real CLI in a subprocess, write small TOML files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
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


def quick_project(project: Path, name: str = "quick") -> None:
    """A fast recipe (digits, a small MLP, one epoch each of pruning and QAT) as edgebuild.toml,
    and relaxed copies of the shipped targets (accuracy drop up to 20 points) as ``<name>-relaxed``."""
    (project / "edgebuild.toml").write_text(QUICK_RECIPE.format(name=name.replace("\\", "\\\\").replace('"', '\\"')))
    for target in ("rpi4", "cortex-m4", "cortex-m7", "cortex-m55-u55"):
        text = shipped("targets", target).replace("max_accuracy_drop = 0.01", "max_accuracy_drop = 0.2")
        text = text.replace(f'name = "{target}"', f'name = "{target}-relaxed"')
        (project / "targets" / f"{target}-relaxed.toml").write_text(text)
