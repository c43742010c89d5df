"""What every benchmark shares: running a command as a timed process with its peak memory,
running the edgebuild CLI in a temporary project, and writing recipes and targets there.

Bench code uses edgebuild only through its CLI, the report.json it writes, and a few
stable imports (``edgebuild.schema``, ``edgebuild.datasets``, ``edgebuild.tf.versions``,
``edgebuild.tflite`` and the host runners).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from edgebuild.schema import find_file
from edgebuild.tf import versions

BENCH = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Run:
    """One process: its wall time, exit code, peak resident memory and last stderr line."""

    seconds: float
    returncode: int
    peak_rss_bytes: int
    error: str


def run_python(args: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``python args`` in ``cwd`` with ``env``, stdout discarded, and time it.

    Returns its Run; the peak RSS is the process's own, from wait4's rusage.
    """
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return Run(seconds, process.returncode, usage.ru_maxrss * 1024, lines[-1] if lines else "")


def run_edgebuild(project: Path, recipe: str, target: str, *extra: str) -> Run:
    """``edgebuild build --recipe RECIPE --target TARGET --quiet [extra]`` in ``project``,
    with the stage cache in ``project/cache``; returns its Run."""
    env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(project / "cache")}
    return run_python(
        ["-m", "edgebuild", "build", "--recipe", recipe, "--target", target, "--quiet", *extra], project, env
    )


def read_report(project: Path, recipe: str, target: str) -> dict[str, Any]:
    """The report.json of a build in ``project``; raises OSError when the build wrote none."""
    return dict(json.loads((project / "build" / recipe / target / "report.json").read_text()))


def failure(run: Run, what: str) -> dict[str, Any]:
    """A benchmark part's result when ``what`` (the process ``run``) failed: ``{"error": ...}``."""
    return {"error": f"{what}: exit {run.returncode}: {run.error}"}


def toml_text(table: dict[str, Any]) -> str:
    """TOML for a recipe or target table."""
    return tomli_w.dumps(table)


def shipped(kind: str, name: str) -> dict[str, Any]:
    """A shipped recipe or target (``kind`` "recipes" or "targets") as a TOML table."""
    return tomllib.loads(find_file(kind, name, Path("/")).read_text())


def write_table(project: Path, kind: str, name: str, table: dict[str, Any]) -> None:
    """Write ``table`` as ``project/KIND/NAME.toml``, with ``name`` set to NAME."""
    folder = project / kind
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(toml_text({**table, "name": name}))


def scaled_epochs(recipe: dict[str, Any], fraction: float) -> dict[str, Any]:
    """A copy of a recipe table with every stage's epochs times ``fraction`` (at least 1)."""
    scaled = {k: dict(v) if isinstance(v, dict) else v for k, v in recipe.items()}
    for stage in ("train", "distill", "prune", "qat"):
        if stage in scaled and "epochs" in scaled[stage]:
            scaled[stage]["epochs"] = max(1, round(scaled[stage]["epochs"] * fraction))
    return scaled


def measuring(target: dict[str, Any]) -> dict[str, Any]:
    """``target`` with an accuracy budget wide enough that the bench measures misses instead of stopping."""
    return {**target, "budgets": {"max_accuracy_drop": 1.0}}


def describe_machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, SIMD flags, memory, platform and versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith(("flags", "Features"))), [])
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = next((int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal")), None)
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "simd": sorted(set(flags) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp"}),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }
