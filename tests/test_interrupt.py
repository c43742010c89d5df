"""Builds killed at random moments leave either the previous or the new complete set of artifacts.

``EDGEBUILD_KILLS`` sets how many kills (default 20) and ``EDGEBUILD_KILLS_SEED`` the
random moments. Odd rounds rebuild without the cache (kills land in training);
even rounds change a budget so that most stages come from the cache and the kill
lands anywhere up to and including the final move into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import quick_project, run_cli

REPRODUCIBLE = ("model.tflite", "model_data.h", "model_data.cc")


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_complete(out: Path, first: dict[str, str]) -> None:
    """Every file the manifest lists is there with its hash, nothing else is, and the model is the same."""
    manifest = json.loads((out / "manifest.json").read_text())
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert present == set(manifest["outputs"]), present ^ set(manifest["outputs"])
    for name, digest in manifest["outputs"].items():
        assert _hash(out / name) == digest, name
    assert {name: _hash(out / name) for name in REPRODUCIBLE} == first


@pytest.mark.slow
def test_random_kills_never_leave_a_half_written_output(project: Path, tmp_path: Path) -> None:
    quick_project(project)
    target = project / "targets" / "rpi4-relaxed.toml"
    env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    command = [sys.executable, "-m", "edgebuild", "--target", "rpi4-relaxed", "--quiet"]
    assert subprocess.run(command, cwd=project, env=env, capture_output=True).returncode == 0
    out = project / "build" / "quick" / "rpi4-relaxed"
    first = {name: _hash(out / name) for name in REPRODUCIBLE}

    rng = random.Random(int(os.environ.get("EDGEBUILD_KILLS_SEED", "0")))
    kills = interrupted = 0
    budget = 8_388_608
    while kills < int(os.environ.get("EDGEBUILD_KILLS", "20")):
        if kills % 2 == 0:  # a budget change: cached stages, then validate .. publish
            budget -= 16
            target.write_text(re.sub(r"model_bytes = [\d_]+", f"model_bytes = {budget}", target.read_text()))
            args, window = command, 6.0
        else:
            args, window = [*command, "--no-cache"], 12.0
        proc = subprocess.Popen(args, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=rng.uniform(1.0, window))  # (not inside the interpreter's own start-up)
        except subprocess.TimeoutExpired:
            kind = rng.choice([signal.SIGINT, signal.SIGKILL])
            proc.send_signal(kind)
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:  # (0: the build ended between the timeout and the signal)
                kills += 1
            if proc.returncode != 0 and kind == signal.SIGINT:
                interrupted += 1
                assert proc.returncode == 130, err
                assert err.strip().splitlines() == [
                    "edgebuild: interrupted; the previous artifacts were left as they were"
                ], err
            elif proc.returncode != 0:
                assert proc.returncode == -signal.SIGKILL
        else:
            proc.communicate()
            assert proc.returncode == 0
        _assert_complete(out, first)

    # The rerun completes, gives the same bytes and clears what killed builds left behind.
    result = run_cli("--target", "rpi4-relaxed", "--quiet", "--no-cache", cwd=project, env=env)
    assert result.code == 0, result.err
    _assert_complete(out, first)
    assert [p.name for p in out.parent.iterdir()] == ["rpi4-relaxed"]
    assert interrupted > 0


def test_work_folders_of_running_builds_are_kept_and_of_dead_ones_cleared(tmp_path: Path) -> None:
    from edgebuild.publish import WORK_MARKER, make_work_folder

    out = tmp_path / "build" / "cortex-m4"  # a dash in the name, as most targets have
    out.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = out.parent / f".cortex-m4.tmp-{os.getpid()}-abc"
    gone = out.parent / f".cortex-m4.tmp-{dead.pid}-def"
    users = out.parent / f".cortex-m4.tmp-{dead.pid}-mine"  # the user's own folder of that name: no marker
    for folder in (live, gone, users):
        folder.mkdir()
        (folder / "file").write_text("x")
    for folder in (live, gone):
        (folder / WORK_MARKER).write_text("")
    work = make_work_folder(out)
    assert work.name.startswith(f".cortex-m4.tmp-{os.getpid()}-")
    assert (work / WORK_MARKER).is_file()
    assert live.exists() and not gone.exists()
    assert (users / "file").read_text() == "x"
