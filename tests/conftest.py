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


def run_cli(*args: str, cwd: Path, timeout: float = 900) -> Result:
    """Run ``python -m edgebuild ARGS`` in ``cwd`` and capture everything."""
    env = {**os.environ, "COLUMNS": "200"}
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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project folder with recipes/ and targets/."""
    (tmp_path / "recipes").mkdir()
    (tmp_path / "targets").mkdir()
    return tmp_path


def shipped(kind: str, name: str) -> str:
    return (REPO / "edgebuild" / kind / f"{name}.toml").read_text()
