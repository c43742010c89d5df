"""``edgebuild search``: compression plans searched on Ray Tune, on a real local two-node Ray cluster.

The cluster is ``ray start --head`` on 127.0.0.1 (one CPU) and a second ``ray start --address``
worker node process (one CPU), with a token of the test's own (``RAY_AUTH_TOKEN``), each start
bounded in time and both stopped by the fixture. A tiny recipe (digits, an MLP, a grid of four
plans) is searched through ``--ray-address`` first (the trials train, spread over both nodes),
then again on a local Ray with the same stage cache: the same trials, the same fronts, the same
chosen plan. The chosen plan's recipe then builds for the target and meets every budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebuild.search import pareto
from tests.conftest import QUICK_RECIPE, assert_one_line_error, run_cli, shipped

RAY = Path(sys.executable).with_name("ray")
SEARCHED = (
    QUICK_RECIPE.format(name="tiny")
    + """[distill]
student_width = 1.0
epochs = 2
[search]
student_width = [0.5, 1.0]
sparsity = [0.25, 0.5]
quantization = ["ptq"]
algorithm = "grid"
"""
)

needs_ray = pytest.mark.skipif(not RAY.is_file(), reason="needs Ray Tune: pip install 'edgebuild[ray]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project(folder: Path, max_drop: str = "0.05", model_bytes: str = "524_288") -> Path:
    (folder / "targets").mkdir(parents=True)
    (folder / "edgebuild.toml").write_text(SEARCHED)
    text = shipped("targets", "cortex-m4").replace('name = "cortex-m4"', 'name = "m4"')
    text = text.replace("max_accuracy_drop = 0.01", f"max_accuracy_drop = {max_drop}")
    text = text.replace("model_bytes = 524_288", f"model_bytes = {model_bytes}")
    (folder / "targets" / "m4.toml").write_text(text)
    return folder


def _session_pids(session: int) -> list[int]:
    """The live processes of one session (fields 3 and 6 of /proc/PID/stat: state, session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while we looked
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _stop_session(session: int) -> None:
    """SIGTERM every process of the session, then SIGKILL what is left after 15 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 15
        while _session_pids(session) and time.monotonic() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A two-node Ray cluster on 127.0.0.1: its address and the environment that reaches it.

    Each ``ray start`` runs in a session of its own, and the fixture ends by stopping the processes
    of those two sessions only (``ray stop`` would stop every Ray on the machine, a user's too).
    """
    if not RAY.is_file():
        pytest.skip("needs Ray Tune: pip install 'edgebuild[ray]'")
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"]
    sessions: list[int] = []
    try:
        for command in ([*head, *common], [str(RAY), "start", f"--address={address}", *common]):
            start = subprocess.Popen(
                command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            sessions.append(start.pid)  # a session leader's pid is its session id
            out, _ = start.communicate(timeout=120)
            assert start.returncode == 0, out.decode(errors="replace")
        deadline = time.monotonic() + 120  # the autoscaler reports the nodes a little after they start
        while True:
            status = subprocess.run(
                [str(RAY), "status", f"--address={address}"], env=env, capture_output=True, text=True, timeout=60
            )
            if status.stdout.count(" node_") == 2 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert status.stdout.count(" node_") == 2, status.stdout + status.stderr  # two nodes are up
        yield address, env
    finally:
        for session in sessions:
            _stop_session(session)


def _search(project: Path, env: dict[str, str], *args: str) -> dict:  # type: ignore[type-arg]
    result = run_cli("search", "--target", "m4", *args, cwd=project, env=env, timeout=1800)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return dict(json.loads((project / "build" / "search" / "tiny" / "m4" / "search.json").read_text()))


@pytest.mark.slow
@needs_ray
def test_the_same_search_on_a_two_node_cluster_and_locally_gives_the_same_front(
    ray_cluster: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    address, env = ray_cluster
    env = {**env, "EDGEBUILD_CACHE_DIR": str(tmp_path / "cache")}  # shared by every trial (one machine here)
    project = _project(tmp_path / "project")
    remote = _search(project, env, "--ray-address", address)
    trials = remote["trials"]
    assert sorted(t["name"] for t in trials) == sorted(
        f"w{w}-s{s}-ptq-int8" for w in ("0.5", "1") for s in ("0.25", "0.5")
    )
    assert {t["status"] for t in trials} <= {"done", "stopped"}
    for t in trials:
        if t["status"] == "done":
            assert t["tflite_bytes"] > 0 and 0 < t["validation_metric"] <= 1 and 0 < t["test_metric"] <= 1
            assert t["budgets_met"] == (not t["missed"])
        else:
            assert t["budgets_met"] is False and t["reason"]
    done = {t["name"] for t in trials if t["status"] == "done"}
    for t in trials:  # the build publishes a trial that meets its budgets on the test split
        published = (project / "build" / "search" / "tiny" / "m4" / "trials" / t["name"] / "report.json").is_file()
        if t["status"] == "done" and (published or t["budgets_met"]):
            assert (t["test_missed"] == []) == published, t
    assert set(remote["front_bytes"]) <= done and remote["front_bytes"]
    chosen = next(t for t in trials if t["name"] == remote["chosen"])
    assert chosen["budgets_met"]
    feasible = [t for t in trials if t["budgets_met"]]
    for t in feasible:  # a classifier's validation log-loss, from the int8 model's softmax
        assert 0 < t["validation_log_loss"] < 10
    # Of the plans that fit, the lowest validation log-loss, then the best accuracy, then the smallest.
    best = min(t["validation_log_loss"] for t in feasible)
    assert chosen["validation_log_loss"] == best
    tied = [t for t in feasible if t["validation_log_loss"] == best]
    assert chosen["validation_metric"] == max(t["validation_metric"] for t in tied)
    html = (project / "build" / "search" / "tiny" / "m4" / "search.html").read_text()
    assert "<svg" in html and chosen["name"] in html

    # The same search on a local Ray: every stage from the shared cache, the same trials and fronts.
    local = _search(project, env)
    same = ("name", "status", "tflite_bytes", "arena_bytes", "validation_metric", "validation_log_loss")
    same += ("test_metric", "budgets_met")
    assert [{k: t.get(k) for k in same} for t in local["trials"]] == [{k: t.get(k) for k in same} for t in trials]
    assert (local["front_bytes"], local["front_arena"], local["chosen"]) == (
        remote["front_bytes"],
        remote["front_arena"],
        remote["chosen"],
    )
    assert pareto(local["trials"], "tflite_bytes", True) == local["front_bytes"]

    # The chosen plan as a recipe: it builds for the target and meets every budget.
    best = Path(local["best_recipe"])
    assert best.is_file() and best.read_text().startswith("# Written by edgebuild search:")
    shutil.copy(best, project / "best.toml")
    built = run_cli("build", "--recipe", "best.toml", "--target", "m4", "--quiet", cwd=project, env=env)
    assert built.code == 0, built.err
    report = json.loads((project / "build" / "tiny-m4-searched" / "m4" / "report.json").read_text())
    local_chosen = next(t for t in local["trials"] if t["name"] == local["chosen"])
    assert report["artifact"]["tflite_bytes"] == local_chosen["tflite_bytes"]
    assert all(b["ok"] for b in report["budgets"])


@pytest.mark.slow
@needs_ray
def test_no_plan_that_fits_is_exit_3_naming_the_closest(tmp_path: Path) -> None:
    project = _project(tmp_path / "project", model_bytes="2_000")  # no MLP of these fits 2 kB
    env = {"EDGEBUILD_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("search", "--target", "m4", "--quiet", cwd=project, env=env, timeout=1800)
    assert result.code == 3, result.err
    assert "Traceback" not in result.err
    line = result.err.strip().splitlines()[-1]
    assert "no plan of 4 met every budget of m4" in line and "the closest" in line and "model_bytes" in line
    summary = json.loads((project / "build" / "search" / "tiny" / "m4" / "search.json").read_text())
    assert summary["chosen"] is None and len(summary["trials"]) == 4
    assert not (project / "build" / "search" / "tiny" / "m4" / "best.toml").exists()


def test_a_bad_search_table_is_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    cases = {
        "sparsity = [0.25, 0.5]": ("sparsity = []", "search.sparsity", "one value or more"),
        'quantization = ["ptq"]': ('quantization = ["fp16"]', "search.quantization", "'fp16' is not allowed"),
        'algorithm = "grid"': ('algorithm = "grid"\nprecision = ["int4"]', "search.precision", "unknown precision"),
    }
    for old, (new, key, what) in cases.items():
        (project / "edgebuild.toml").write_text(SEARCHED.replace(old, new))
        result = run_cli("search", "--target", "m4", cwd=project)
        assert_one_line_error(result, 2, key, what)
    (project / "edgebuild.toml").write_text(SEARCHED.replace("[train]", "[train]\nvalidation_fraction = 0.0"))
    result = run_cli("search", "--target", "m4", cwd=project)
    assert_one_line_error(result, 2, "train.validation_fraction", "validation split")
    (project / "edgebuild.toml").write_text(SEARCHED)
    (project / "build" / "search" / "tiny" / "m4").mkdir(parents=True)
    (project / "build" / "search" / "tiny" / "m4" / "notes.txt").write_text("mine")
    result = run_cli("search", "--target", "m4", cwd=project)
    assert_one_line_error(result, 2, "notes.txt", "edgebuild did not write")
    assert (project / "build" / "search" / "tiny" / "m4" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
@needs_ray
def test_ctrl_c_stops_the_trials_and_keeps_what_finished(tmp_path: Path) -> None:
    project = _project(tmp_path / "project")
    env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    command = [sys.executable, "-m", "edgebuild", "search", "--target", "m4"]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the first trial that ends: then Ctrl-C
        seen.append(line)
        if line.strip().startswith("trial "):
            process.send_signal(signal.SIGINT)
            break
    try:
        _, rest = process.communicate(timeout=300)
    finally:
        process.kill()
    err = "".join(seen) + rest
    assert process.returncode == 130, err
    assert "search interrupted: " in err and "Traceback" not in err
    summary = json.loads((project / "build" / "search" / "tiny" / "m4" / "search.json").read_text())
    statuses = {t["name"]: t["status"] for t in summary["trials"]}
    assert set(statuses.values()) - {"interrupted"}  # the trial that ended is kept
    assert len(statuses) < 4 or "interrupted" in statuses.values()  # the others were cut short or never started


@needs_ray
def test_optuna_never_runs_a_plan_twice() -> None:
    # Optuna's NSGA-II (real, seeded) over 4 plans, asked for 8 trials: 4 distinct plans, then done.
    from ray.tune.search import Searcher

    from edgebuild.search import _search_algorithm
    from edgebuild.tasks import Metric

    space = {"student_width": [0.5, 1.0], "sparsity": [0.0, 0.5]}
    searcher = _search_algorithm("optuna", space, 0, Metric("accuracy", True), 1, 8)
    plans = []
    for n in range(8):
        config = searcher.suggest(f"t{n}")
        if config == Searcher.FINISHED:
            break
        plans.append((config["student_width"], config["sparsity"]))
        result = {"val_metric": 0.9 - config["sparsity"] / 10, "tflite_bytes": 1000 * config["student_width"]}
        if n == 0:
            result["val_metric"] = float("nan")  # stopped before it was scored
        searcher.on_trial_complete(f"t{n}", result)
    assert sorted(plans) == sorted((w, s) for w in (0.5, 1.0) for s in (0.0, 0.5))


@needs_ray
def test_random_search_draws_distinct_plans_with_its_seed() -> None:
    from ray import tune

    from edgebuild.search import _param_space

    space = {"student_width": [0.5, 0.75, 1.0], "sparsity": [0.0, 0.25, 0.5, 0.75]}
    drawn = [_param_space(space, "random", 6, seed, tune)["plan"]["grid_search"] for seed in (0, 0, 1)]
    assert len(drawn[0]) == 6 and len({tuple(p.items()) for p in drawn[0]}) == 6
    assert drawn[0] == drawn[1] and drawn[0] != drawn[2]
    assert len(_param_space(space, "random", 40, 0, tune)["plan"]["grid_search"]) == 12  # every plan, once


def test_the_chosen_plan_has_the_lowest_log_loss_or_the_fewest_bytes() -> None:
    from types import SimpleNamespace
    from typing import cast

    from edgebuild.search import Setup, choose

    def trial(name: str, accuracy: float, loss: float | None, size: int, met: bool = True) -> dict[str, object]:
        return {"name": name, "validation_metric": accuracy, "validation_log_loss": loss, "tflite_bytes": size,
                "budgets_met": met}  # fmt: skip

    records = [
        trial("lucky", 0.9725, 0.21, 20_000),  # the best accuracy, but unsure of its answers
        trial("sure", 0.9650, 0.12, 24_000),
        trial("sure-too", 0.9675, 0.12, 38_000),
        trial("small", 0.9675, 0.19, 10_000),
        trial("over-budget", 0.99, 0.01, 1_000, met=False),
    ]
    accurate = cast(Setup, SimpleNamespace(higher_is_better=True, choose="most_accurate"))
    smallest = cast(Setup, SimpleNamespace(higher_is_better=True, choose="smallest"))
    assert (choose(records, accurate) or {})["name"] == "sure-too"  # a tie in log-loss: the better accuracy
    assert (choose(records, smallest) or {})["name"] == "small"
    for r in records:  # no log-loss (a regression, a reconstruction): the metric, then the bytes
        r["validation_log_loss"] = None
    assert (choose(records, accurate) or {})["name"] == "lucky"


def test_log_loss_of_probabilities_and_of_logits() -> None:
    import numpy as np

    from edgebuild.tasks import log_loss

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 2, 1])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(probabilities[np.arange(3), labels]))
    assert abs(log_loss(probabilities, labels) - expected) < 1e-9
    assert abs(log_loss(logits, labels) - expected) < 1e-9  # not probabilities: a softmax first
    int8_softmax = np.array([[1.0, 0.0], [0.5, 0.5]])  # an int8 output of 0 for the true class
    assert abs(log_loss(int8_softmax, np.array([1, 0])) - (-np.log(1e-4) - np.log(0.5)) / 2) < 1e-9


def test_a_node_with_other_versions_is_named() -> None:
    from edgebuild.search import node_versions, version_mismatch

    here = node_versions()
    assert here["edgebuild"] and here["tensorflow"] != "not installed"
    assert version_mismatch(here) is None
    reason = version_mismatch({**here, "tensorflow": "2.0.0"})
    assert reason is not None and f"tensorflow {here['tensorflow']} (the search's 2.0.0)" in reason
    assert "every node of the cluster needs the same" in reason


@pytest.mark.slow
@needs_ray
def test_a_search_with_a_node_of_other_versions_is_exit_2_naming_it(tmp_path: Path) -> None:
    # The driver (this process's edgebuild, told it has another TensorFlow) against the Ray workers'
    # real versions: every trial fails on that node, and the search ends as a setup error.
    project = _project(tmp_path / "project")
    driver = (
        "import sys, edgebuild.search as search; real = search.node_versions; "
        "search.node_versions = lambda: {**real(), 'tensorflow': '2.0.0'}; "
        "from edgebuild.cli import run; sys.argv[0] = 'edgebuild'; run()"
    )
    env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", driver, "search", "--target", "m4", "--quiet"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "(the search's 2.0.0)" in line and "every node of the cluster needs the same" in line, line
    assert "4 trial(s) failed there" in line, line
    summary = json.loads((project / "build" / "search" / "tiny" / "m4" / "search.json").read_text())
    assert {t["status"] for t in summary["trials"]} == {"failed"}
