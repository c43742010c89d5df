"""edgebuild's benchmarks in one command: every goal measured side by side in one run.

    python bench/run.py --kws ../shared/data/mlperf-tiny-kws [--quick] [--out bench]

Writes ``results.json`` and ``RESULTS.md`` into ``--out`` (``bench/`` by default;
``bench/quick/`` with ``--quick``). Every build is a fresh ``edgebuild`` process in a
temporary project with its own stage cache, as a user runs it.

1. Against the hand-written way: ``bench/tfmot_script.py`` (the TF-MOT tutorials'
   train, ``prune_low_magnitude``, QAT, int8) and edgebuild on a recipe with exactly
   those stages, both cold: wall time, bytes, accuracy. Then the default recipe's full
   plan (distillation, channel pruning) against the same script.
2. The default recipe on every shipped target: teacher and artifact bytes and
   accuracy, sparsity, TFLM arena, host latency of the int8 artifact against the same
   model in float32. Also the rebuild figures (no-op, second target) and channel
   pruning against the same recipe unpruned on cortex-m4.
3. MLPerf Tiny keyword spotting: the reference DS-CNN (the ``--kws`` folder) imported
   and quantized for cortex-m4 by the recipe in ``bench/kws/``, calibrated on half the
   1000 EEMBC inputs and scored on the other half, against the published int8 model.
4. Build cost: wall time per stage, peak memory, and their growth with dataset size
   (1x, 2x, 4x) and model width (0.5x, 1x, 2x).

``--quick`` is a smoke run, not the figures to quote: the 8x8 digits recipe with 40 % of
its epochs, one seed, two targets, and no growth builds.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.datasets import Dataset, load_dataset
from edgebuild.schema import find_file, load_recipe
from edgebuild.tf import versions

BENCH = Path(__file__).resolve().parent
SHIPPED_TARGETS = ("rpi4", "cortex-m4", "android", "cortex-m7", "cortex-m55-u55")
# The scaling builds run the default plan with a fifth of its epochs: per-epoch cost is
# what grows with data and width, and the full plan at 4x data would take most of an hour.
SCALING_EPOCH_FRACTION = 0.2
# --quick: the digits recipe with 40 % of its epochs, so that the smoke run takes minutes.
QUICK_EPOCH_FRACTION = 0.4


# ---------------------------------------------------------------- running things


@dataclasses.dataclass
class Run:
    """One process: its wall time, exit code, peak resident memory and last stderr line."""

    seconds: float
    returncode: int
    peak_rss_bytes: int
    error: str


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``python args`` in ``cwd``; its own peak RSS comes from wait4's rusage."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return Run(seconds, process.returncode, usage.ru_maxrss * 1024, lines[-1] if lines else "")


def _edgebuild(project: Path, recipe: str, target: str, *extra: str) -> Run:
    env = {**os.environ, "EDGEBUILD_CACHE_DIR": str(project / "cache")}
    return _run(["-m", "edgebuild", "build", "--recipe", recipe, "--target", target, "--quiet", *extra], project, env)


def _report(project: Path, recipe: str, target: str) -> dict[str, Any]:
    return dict(json.loads((project / "build" / recipe / target / "report.json").read_text()))


def _toml(table: dict[str, Any]) -> str:
    """TOML for a recipe or target table (scalars, lists and one level of sub-tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    lines = [f"{k} = {value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for name, sub in table.items():
        if isinstance(sub, dict):
            lines += ["", f"[{name}]", *(f"{k} = {value(v)}" for k, v in sub.items())]
    return "\n".join(lines) + "\n"


def _shipped(kind: str, name: str) -> dict[str, Any]:
    return tomllib.loads(find_file(kind, name, Path("/")).read_text())


def _scaled_epochs(recipe: dict[str, Any], fraction: float) -> dict[str, Any]:
    """A copy of a recipe table with every stage's epochs times ``fraction`` (at least 1)."""
    scaled = {k: dict(v) if isinstance(v, dict) else v for k, v in recipe.items()}
    for stage in ("train", "distill", "prune", "qat"):
        if stage in scaled and "epochs" in scaled[stage]:
            scaled[stage]["epochs"] = max(1, round(scaled[stage]["epochs"] * fraction))
    return scaled


def _write(project: Path, kind: str, name: str, table: dict[str, Any]) -> None:
    folder = project / kind
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(_toml({**table, "name": name}))


def _goal(name: str, value: float | None, limit: float, kind: str = "max", unit: str = "") -> dict[str, Any]:
    met = value is not None and (value <= limit if kind == "max" else value >= limit)
    return {"goal": name, "value": value, "limit": limit, "kind": kind, "unit": unit, "met": bool(met)}


def _failed(run: Run, what: str) -> dict[str, Any]:
    return {"error": f"{what}: exit {run.returncode}: {run.error}"}


# ---------------------------------------------------------------- 1. against the script


def _same_stages(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    """The recipe cut down to the script's stages: its deployed model trained, magnitude-pruned, QAT."""
    same = {k: v for k, v in recipe.items() if k not in ("distill", "description")}
    if "distill" in recipe:  # the script trains the deployed (student) model directly
        same["model"] = {**recipe["model"], "width": recipe["distill"]["student_width"]}
    same["prune"] = {"epochs": recipe.get("prune", {}).get("epochs", 2), "schedule": "polynomial"}
    same["qat"] = {"epochs": recipe.get("qat", {}).get("epochs", 1)}
    return {**same, "name": name}


def _artifact(report: dict[str, Any], run: Run) -> dict[str, Any]:
    return {
        "tflite_bytes": report["artifact"]["tflite_bytes"],
        "accuracy": report["artifact"]["accuracy"],
        "wall_s": round(run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes,
        "stages": {s["name"]: s["seconds"] for s in report["stages"]},
    }


def against_script(
    recipe: dict[str, Any], project: Path, seeds: tuple[int, ...], full_plan_first: dict[str, Any] | None
) -> dict[str, Any]:
    """For each seed, cold and one after the other: the TF-MOT tutorial script, edgebuild with the same
    stages, and (except for the first seed, which ``every_target`` built) the recipe's full plan."""
    tfmot_target = _shipped("targets", "rpi4")
    tfmot_target["sparsity"] = {"target": 0.5, "structure": "unstructured", "exploitable": ["unstructured"]}
    tfmot_target["budgets"] = {"max_accuracy_drop": 1.0}  # measured, not gated
    _write(project, "targets", "rpi4-tfmot", tfmot_target)
    _write(project, "targets", "rpi4-measure", {**_shipped("targets", "rpi4"), "budgets": {"max_accuracy_drop": 1.0}})
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        seeded = {**recipe, "seed": seed, "name": f"{recipe['name']}-seed{seed}"}
        _write(project, "recipes", seeded["name"], seeded)
        same = _same_stages(seeded, f"tfmot-stages-seed{seed}")
        _write(project, "recipes", same["name"], same)
        out = f"script-seed{seed}"
        script = _run(
            [str(BENCH / "tfmot_script.py"), "--recipe", seeded["name"], "--out", out], project, {**os.environ}
        )
        if script.returncode:
            return _failed(script, f"tfmot_script.py seed {seed}")
        ours = _edgebuild(project, same["name"], "rpi4-tfmot", "--no-cache")
        if ours.returncode:
            return _failed(ours, f"edgebuild {same['name']}")
        if seed == seeds[0] and full_plan_first:
            full = full_plan_first
        else:
            run = _edgebuild(project, seeded["name"], "rpi4-measure")
            if run.returncode:
                return _failed(run, f"edgebuild {seeded['name']}")
            full = _artifact(_report(project, seeded["name"], "rpi4-measure"), run)
        script_result = json.loads((project / out / "result.json").read_text())
        runs.append(
            {
                "seed": seed,
                "script": {
                    **script_result,
                    "wall_s": round(script.seconds, 1),
                    "peak_rss_bytes": script.peak_rss_bytes,
                },
                "edgebuild": _artifact(_report(project, same["name"], "rpi4-tfmot"), ours),
                "full_plan": full,
            }
        )

    def mean(who: str, key: str) -> float:
        return float(np.mean([run[who][key] for run in runs]))

    return {
        "runs": runs,
        "test_samples": runs[0]["script"]["test_samples"],
        "wall_ratio": round(sum(r["edgebuild"]["wall_s"] for r in runs) / sum(r["script"]["wall_s"] for r in runs), 3),
        "bytes_ratio": round(mean("edgebuild", "tflite_bytes") / mean("script", "tflite_bytes"), 3),
        "accuracy_diff_points": round((mean("edgebuild", "accuracy") - mean("script", "accuracy")) * 100, 2),
        "full_plan_bytes_ratio": round(mean("full_plan", "tflite_bytes") / mean("script", "tflite_bytes"), 3),
        "full_plan_accuracy_diff_points": round((mean("full_plan", "accuracy") - mean("script", "accuracy")) * 100, 2),
        "mean_accuracy": {who: round(mean(who, "accuracy"), 4) for who in ("script", "edgebuild", "full_plan")},
    }


# ---------------------------------------------------------------- 2. every target


def _target_row(report: dict[str, Any], run: Run) -> dict[str, Any]:
    artifact, profiles = report["artifact"], report["profiles"]
    float_ms = (profiles.get("prune") or profiles.get("distill") or {}).get("host_latency_ms")
    int8_ms = (profiles.get("artifact") or {}).get("host_latency_ms")
    drop = (report["teacher"]["accuracy"] - artifact["accuracy"]) * 100
    return {
        "teacher_bytes": report["teacher"]["tflite_bytes"],
        "teacher_accuracy": report["teacher"]["accuracy"],
        "artifact_bytes": artifact["tflite_bytes"],
        "artifact_accuracy": artifact["accuracy"],
        "precision": artifact["precision"],
        "sparsity": artifact["sparsity"],
        "arena_bytes": artifact["arena_bytes"],
        "float_latency_ms": float_ms,
        "int8_latency_ms": int8_ms,
        "int8_speedup": round(float_ms / int8_ms, 2) if float_ms and int8_ms else None,
        "compression": round(report["teacher"]["tflite_bytes"] / artifact["tflite_bytes"], 1),
        "drop_points": round(drop, 2),
        "wall_s": round(run.seconds, 1),
        "peak_rss_bytes": run.peak_rss_bytes,
    }


def every_target(table: dict[str, Any], targets: tuple[str, ...], project: Path, no_op_runs: int) -> dict[str, Any]:
    """The recipe on each target in one project (shared cache), with no-op rebuilds and an unpruned cortex-m4."""
    recipe = table["name"]
    _write(project, "recipes", recipe, table)
    rows: dict[str, Any] = {}
    first = targets[0]
    cold = _edgebuild(project, recipe, first)
    if cold.returncode:
        return {"rows": {first: _failed(cold, f"edgebuild {recipe} {first}")}}
    cold_report = _report(project, recipe, first)
    rows[first] = _target_row(cold_report, cold)
    no_op = [_edgebuild(project, recipe, first).seconds for _ in range(no_op_runs)]
    second_seconds = None
    for target in targets[1:]:
        run = _edgebuild(project, recipe, target)
        second_seconds = second_seconds or run.seconds
        rows[target] = (
            _target_row(_report(project, recipe, target), run) if not run.returncode else _failed(run, target)
        )
    dense = _shipped("targets", "cortex-m4")
    dense["sparsity"] = {**dense["sparsity"], "target": 0.0}
    dense["budgets"] = {"max_accuracy_drop": 1.0}
    _write(project, "targets", "cortex-m4-dense", dense)
    run = _edgebuild(project, recipe, "cortex-m4-dense")
    unpruned = _target_row(_report(project, recipe, "cortex-m4-dense"), run) if not run.returncode else None
    return {
        "rows": rows,
        "cold_stages": [{k: s[k] for k in ("name", "seconds", "summary")} for s in cold_report["stages"]],
        "cold_peak_memory_bytes": cold_report["build"]["peak_memory_bytes"],
        "rebuild": {
            "first_target": first,
            "cold_s": round(cold.seconds, 2),
            "no_op_s": [round(s, 3) for s in no_op],
            "no_op_median_s": round(statistics.median(no_op), 3),
            "second_target": targets[1] if len(targets) > 1 else None,
            "second_target_s": round(second_seconds, 2) if second_seconds else None,
            "second_target_ratio": round(second_seconds / cold.seconds, 3) if second_seconds else None,
        },
        "cortex_m4_unpruned": unpruned if unpruned else _failed(run, "cortex-m4-dense"),
    }


# ---------------------------------------------------------------- 3. MLPerf Tiny KWS


def kws(folder: Path, project: Path) -> dict[str, Any]:
    """Import the reference DS-CNN, quantize it for cortex-m4, compare with the reference int8 model."""
    from edgebuild.runners.litert_host import LiteRTHost
    from edgebuild.runners.tflm_host import TflmHost, find_min_arena

    data = np.load(folder / "kws01_test.npz")
    q, y = data["x_int8"], data["y"].astype(np.int64)
    x = ((q.astype(np.float32) - 83) * 0.584703).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    calibration, held = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2 :])
    np.savez(project / "kws.npz", x_train=x[calibration], y_train=y[calibration], x_test=x[held], y_test=y[held])
    shutil.copytree(folder / "kws_ref_model", project / "kws_ref_model")
    shutil.copy(BENCH / "kws" / "kws.toml", project / "kws.toml")
    # cortex-m4 without its sparsity budget: the pretrained model is quantized, not pruned
    # (there is no training set to fine-tune a pruned model on).
    target = _shipped("targets", "cortex-m4")
    target["sparsity"] = {**target["sparsity"], "target": 0.0}
    _write(project, "targets", "cortex-m4-ptq", target)
    run = _edgebuild(project, "kws.toml", "cortex-m4-ptq")
    if run.returncode:
        return _failed(run, "edgebuild kws cortex-m4-ptq")
    report = _report(project, "kws", "cortex-m4-ptq")
    ours = (project / "build" / "kws" / "cortex-m4-ptq" / "model.tflite").read_bytes()
    reference = (folder / "kws_ref_model.tflite").read_bytes()

    def tflm_accuracy(model: bytes, inputs: np.ndarray, labels: np.ndarray, arena: int) -> float:
        outputs = TflmHost(arena_bytes=arena).run(model, inputs).outputs
        return float(np.mean(np.argmax(outputs, axis=-1) == labels))

    ours_q = _quantize(ours, x[held])
    ours_arena = find_min_arena(ours, ours_q[0])
    ref_arena = find_min_arena(reference, q[0])
    ref_litert_all = LiteRTHost().run(reference, q).outputs
    return {
        "calibration_inputs": len(calibration),
        "held_out_inputs": len(held),
        "edgebuild": {
            "tflite_bytes": len(ours),
            "arena_bytes": ours_arena,
            "accuracy_tflm_held_out": tflm_accuracy(ours, ours_q, y[held], ours_arena),
            "float_accuracy_held_out": report["teacher"]["accuracy"],
            "report_accuracy": report["artifact"]["accuracy"],
            "wall_s": round(run.seconds, 1),
            "stages": {s["name"]: s["seconds"] for s in report["stages"]},
        },
        "reference": {
            "tflite_bytes": len(reference),
            "arena_bytes": ref_arena,
            "accuracy_tflm_held_out": tflm_accuracy(reference, q[held], y[held], ref_arena),
            "accuracy_litert_all_1000": float(np.mean(np.argmax(ref_litert_all, axis=-1) == y)),
        },
    }


def _quantize(model: bytes, x: np.ndarray) -> np.ndarray:
    """``x`` in the model's input type (int8 models take quantized inputs)."""
    from edgebuild.tflite import io_details, make_interpreter

    return np.asarray(io_details(make_interpreter(model))[0][0].quantize(x))


# ---------------------------------------------------------------- 4. build cost


def _scaled_npz(data: Dataset, factor: int, path: Path) -> int:
    """Write ``data`` with ``factor`` times the training images (shifted copies), same test split.

    Returns the number of training images written.
    """
    rng = np.random.default_rng(factor)
    xs, ys = [data.x_train], [data.y_train]
    for _ in range(factor - 1):
        shifts = rng.integers(-1, 2, size=(len(data.x_train), 2))
        xs.append(np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(data.x_train, shifts, strict=True)]))
        ys.append(data.y_train)
    order = rng.permutation(sum(len(a) for a in ys))
    np.savez(
        path,
        x_train=np.concatenate(xs)[order],
        y_train=np.concatenate(ys)[order],
        x_test=data.x_test,
        y_test=data.y_test,
    )
    return len(order)


def build_cost(
    base: dict[str, Any], project: Path, factors: tuple[int, ...], widths: tuple[float, ...]
) -> dict[str, Any]:
    """Cold builds (no cache) of the recipe, shortened, at each dataset size and width, on rpi4."""
    _write(project, "recipes", base["name"], base)
    recipe = _scaled_epochs(base, SCALING_EPOCH_FRACTION)
    target = _shipped("targets", "rpi4")
    target["budgets"] = {"max_accuracy_drop": 1.0}  # measured, not gated
    _write(project, "targets", "rpi4-measure", target)
    data = load_dataset(load_recipe(project / "recipes" / f"{base['name']}.toml"))
    variants: list[tuple[str, int, float]] = [(f"data-{f}x", f, 1.0) for f in factors]
    variants += [(f"width-{w:g}x", factors[0], w) for w in widths if w != 1.0]
    rows: dict[str, Any] = {}
    for name, factor, width in variants:
        train_images = _scaled_npz(data, factor, project / f"{name}.npz")
        table = {**recipe, "dataset": f"npz:{name}.npz"}
        table["model"] = {**recipe["model"], "width": recipe["model"]["width"] * width}
        if "distill" in recipe:
            table["distill"] = {**recipe["distill"], "student_width": recipe["distill"]["student_width"] * width}
        (project / f"{name}.toml").write_text(_toml({**table, "name": name}))
        run = _edgebuild(project, f"{name}.toml", "rpi4-measure", "--no-cache")
        if run.returncode:
            rows[name] = _failed(run, f"edgebuild {name}")
            continue
        report = _report(project, name, "rpi4-measure")
        rows[name] = {
            "train_images": train_images,
            "width": width,
            "wall_s": round(run.seconds, 1),
            "peak_rss_bytes": run.peak_rss_bytes,
            "stages": {s["name"]: s["seconds"] for s in report["stages"]},
        }
    return {
        "epoch_fraction": SCALING_EPOCH_FRACTION,
        "plan": {k: recipe.get(k) for k in ("train", "distill", "prune", "qat")},
        "rows": rows,
    }


# ---------------------------------------------------------------- goals and RESULTS.md


def goals(result: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Every goal of the benchmark issues, with the value measured in this run."""
    found: list[dict[str, Any]] = []
    script = result["against_script"]
    if "error" not in script:
        found.append(_goal("edgebuild / TF-MOT script wall time, same stages, cold", script["wall_ratio"], 1.10))
        found.append(_goal("edgebuild / script artifact bytes, same stages", script["bytes_ratio"], 1.0))
        found.append(
            _goal("edgebuild - script accuracy, same stages", script["accuracy_diff_points"], 0.0, "min", " points")
        )
        found.append(_goal("default recipe's full plan / script bytes", script["full_plan_bytes_ratio"], 1.0))
        found.append(
            _goal(
                "default recipe's full plan - script accuracy",
                script["full_plan_accuracy_diff_points"],
                0.0,
                "min",
                " points",
            )
        )
    targets = result["every_target"]
    for name, row in targets["rows"].items():
        if "error" in row:
            found.append(_goal(f"{name}: build", None, 0))
            continue
        if row["int8_speedup"] is not None:
            found.append(_goal(f"{name}: host latency float / int8", row["int8_speedup"], 2.0, "min", "x"))
        ok = row["compression"] if row["drop_points"] <= 1.0 else None
        found.append(_goal(f"{name}: teacher / artifact bytes at <= 1.0 point drop", ok, 10.0, "min", "x"))
    rebuild = targets.get("rebuild", {})
    if rebuild:
        found.append(_goal("no-op rebuild, median wall", rebuild["no_op_median_s"], 1.5, "max", " s"))
        found.append(_goal("second target / cold build wall", rebuild["second_target_ratio"], 0.35))
    pruned, dense = targets["rows"].get("cortex-m4", {}), targets.get("cortex_m4_unpruned", {})
    if "error" not in pruned and "error" not in dense and pruned:
        found.append(
            _goal(
                "cortex-m4 channel-pruned / unpruned int8 bytes",
                round(pruned["artifact_bytes"] / dense["artifact_bytes"], 3),
                0.55,
            )
        )
        found.append(
            _goal(
                "cortex-m4 channel-pruned / unpruned TFLM arena",
                round(pruned["arena_bytes"] / dense["arena_bytes"], 3),
                0.7,
            )
        )
        found.append(
            _goal(
                "cortex-m4 channel-pruned / unpruned host latency",
                round(pruned["int8_latency_ms"] / dense["int8_latency_ms"], 3),
                0.7,
            )
        )
        found.append(
            _goal("cortex-m4 channel-pruned accuracy drop vs teacher", pruned["drop_points"], 1.0, "max", " points")
        )
    k = result.get("kws")
    if k and "error" not in k:
        ours, ref = k["edgebuild"], k["reference"]
        found.append(
            _goal(
                "KWS accuracy (TFLM, held-out half) - reference's",
                round((ours["accuracy_tflm_held_out"] - ref["accuracy_tflm_held_out"]) * 100, 2),
                0.0,
                "min",
                " points",
            )
        )
        found.append(_goal("KWS int8 bytes", ours["tflite_bytes"], ref["tflite_bytes"], "max", " B"))
        found.append(_goal("KWS TFLM arena", ours["arena_bytes"], ref["arena_bytes"], "max", " B"))
    elif k:
        found.append(_goal("KWS build", None, 0))
    limit = 180 if quick else 1200
    found.append(_goal("whole benchmark wall time", round(result["wall_s"]), limit, "max", " s"))
    return found


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        None,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd": sorted(set(_cpu_flags()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp"}),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(),
    }


def _cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("flags", "Features")):
            return line.split(":", 1)[1].split()
    return []


def _difference_se(accuracy: float, samples: int) -> float:
    """Standard error, in points, of the difference of two accuracies near ``accuracy`` on ``samples`` images."""
    return float(np.sqrt(2 * accuracy * (1 - accuracy) / samples) * 100)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.4g}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _mb(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:,.0f} MB"


def markdown(result: dict[str, Any]) -> str:
    """RESULTS.md: the machine, every goal met or not, then each part's tables."""
    m = result["machine"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items())
    lines = [
        "# edgebuild benchmarks",
        "",
        f"Measured {result['date']} with `{result['command']}` ({'quick smoke run' if result['quick'] else 'full run'},"
        f" {result['wall_s'] / 60:.1f} min).",
        f"Machine: {m['cpu']}, {m['cores']} cores, {_mb(m['memory_bytes'])} RAM, {m['platform']},"
        f" Python {m['python']}.",
        f"Versions: {v}.",
        "",
        "## Goals",
        "",
        "| goal | measured | limit | met |",
        "|---|---|---|---|",
    ]
    for g in result["goals"]:
        limit = f"{'≤' if g['kind'] == 'max' else '≥'} {_fmt(g['limit'], g['unit'])}"
        lines.append(f"| {g['goal']} | {_fmt(g['value'], g['unit'])} | {limit} | {'yes' if g['met'] else '**no**'} |")

    s = result["against_script"]
    lines += ["", "## 1. Against the hand-written TF-MOT script", ""]
    if "error" in s:
        lines.append(f"Failed: {s['error']}")
    else:
        lines += [
            f"`bench/tfmot_script.py` follows the TF-MOT tutorials on the `{result['recipe']}` recipe's data, deployed"
            " model and epochs; edgebuild builds recipe `tfmot-stages` (the same stages: train, unstructured"
            " `prune_low_magnitude` to 50 %, prune-preserving QAT, int8) for rpi4. Both cold, fresh processes,"
            " one after the other.",
            "",
            "The full plan (distillation, channel pruning) is the recipe as shipped, for rpi4. Every row is one"
            " seed of the whole pipeline (initialisation, shuffling).",
            "",
            "| seed | | wall | peak memory | int8 bytes | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        who = (("script", "script"), ("edgebuild", "edgebuild, same stages"), ("full_plan", "edgebuild, full plan"))
        for run in s["runs"]:
            lines += [
                f"| {run['seed']} | {label} | {run[key]['wall_s']} s | {_mb(run[key]['peak_rss_bytes'])}"
                f" | {run[key]['tflite_bytes']:,} | {_pct(run[key]['accuracy'])} |"
                for key, label in who
            ]
        n, acc = s["test_samples"], s["mean_accuracy"]["script"]
        means = ", ".join(f"{label} {_pct(s['mean_accuracy'][key])}" for key, label in who)
        lines += [
            "",
            f"Mean accuracy over the seeds: {means}. Accuracy is on the {n:,} held-out images: one image is"
            f" {100 / n:.2g} point, and the standard error of a difference between two single runs near {acc:.1%}"
            f" is about {_difference_se(acc, n):.1f} point (before seed-to-seed variation).",
            f"edgebuild's stage times, same stages, seed {s['runs'][0]['seed']}:"
            f" {_stage_list(s['runs'][0]['edgebuild']['stages'])}.",
        ]

    t = result["every_target"]
    lines += [
        "",
        f"## 2. The `{result['recipe']}` recipe on every target",
        "",
        "Float latency is the same pruned model converted to float32; both on LiteRT's default kernels (XNNPACK)"
        f" on this machine (SIMD: {', '.join(m['simd']) or 'none found'}), one thread, median of 1000 invocations.",
        "",
        "| target | teacher bytes | teacher acc. | artifact bytes | artifact acc. | drop | sparsity | TFLM arena"
        " | float / int8 latency | compression |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = dict(t["rows"])
    if t.get("cortex_m4_unpruned") and "error" not in t["cortex_m4_unpruned"]:
        rows["cortex-m4, unpruned"] = t["cortex_m4_unpruned"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} |||||||||")
            continue
        latency = (
            f"{row['float_latency_ms']:.4f} / {row['int8_latency_ms']:.4f} ms ({row['int8_speedup']}×)"
            if row["int8_speedup"]
            else _fmt(row["int8_latency_ms"], " ms int8")
        )
        lines.append(
            f"| {name} | {row['teacher_bytes']:,} | {_pct(row['teacher_accuracy'])} | {row['artifact_bytes']:,}"
            f" | {_pct(row['artifact_accuracy'])} | {row['drop_points']} pt | {row['sparsity']:.0%}"
            f" | {_fmt(row['arena_bytes'], ' B')}"
            f" | {latency} | {row['compression']}× |"
        )
    if "rebuild" in t:
        r = t["rebuild"]
        lines += [
            "",
            f"Rebuilds: cold {r['first_target']} {r['cold_s']} s; no-op rebuilds"
            f" {', '.join(str(x) for x in r['no_op_s'])} s (median {r['no_op_median_s']} s); then"
            f" {r['second_target']} sharing teacher and student {r['second_target_s']} s"
            f" ({r['second_target_ratio']}× cold).",
        ]

    k = result.get("kws")
    lines += ["", "## 3. MLPerf Tiny keyword spotting (external reference)", ""]
    if not k:
        lines.append("Not run: pass `--kws PATH` (the mlperf-tiny-kws folder).")
    elif "error" in k:
        lines.append(f"Failed: {k['error']}")
    else:
        ours, ref = k["edgebuild"], k["reference"]
        lines += [
            f"Recipe `bench/kws/kws.toml`: the reference DS-CNN (Keras SavedModel) imported and post-training"
            f" quantized for cortex-m4, calibrated on {k['calibration_inputs']} of the 1000 EEMBC inputs; both models"
            f" scored with TFLM on the other {k['held_out_inputs']}.",
            "",
            "| | int8 bytes | TFLM arena | accuracy, held-out half (TFLM) |",
            "|---|---|---|---|",
            *(
                f"| {who} | {x['tflite_bytes']:,} | {x['arena_bytes']:,} B | {_pct(x['accuracy_tflm_held_out'])} |"
                for who, x in (("edgebuild", ours), ("reference int8", ref))
            ),
            "",
            f"Reference on all 1000 inputs with LiteRT: {_pct(ref['accuracy_litert_all_1000'])} (published: 90.2 %)."
            f" The float model on the held-out half: {_pct(ours['float_accuracy_held_out'])}."
            f" edgebuild's build: {ours['wall_s']} s.",
        ]

    lines += ["", "## 4. Build cost", "", f"The cold `{result['recipe']}` build for rpi4, per stage:", ""]
    lines += ["| stage | seconds | what it did |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {s['summary']} |" for s in t.get("cold_stages", [])]
    lines += ["", f"Peak memory of that build process: {_mb(t.get('cold_peak_memory_bytes'))}."]
    c = result.get("build_cost")
    if not c:
        return "\n".join(lines) + "\n"
    stage_names = next((list(row["stages"]) for row in c["rows"].values() if "stages" in row), [])  # build order
    lines += [
        "",
        f"Growth with dataset size and width: cold builds (no cache) for rpi4 of the same plan with"
        f" {c['epoch_fraction']:.0%} of its epochs ({_plan(c['plan'])}); larger datasets are the training images"
        " plus copies shifted by up to one pixel, the held-out split unchanged.",
        "",
        "| variant | train images | wall | peak memory | " + " | ".join(stage_names) + " |",
        "|---|---|---|---|" + "---|" * len(stage_names),
    ]
    for name, row in c["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | {row['error']} |")
            continue
        stages = " | ".join(f"{row['stages'].get(n, 0):.1f}" for n in stage_names)
        lines.append(
            f"| {name} | {row['train_images']:,} | {row['wall_s']} s | {_mb(row['peak_rss_bytes'])} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def _stage_list(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items())


def _plan(plan: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v['epochs']} epochs" for k, v in plan.items() if v)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kws", type=Path, help="the mlperf-tiny-kws folder (reference DS-CNN, int8 model, inputs)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on the digits recipe (a few minutes)")
    parser.add_argument("--out", type=Path, help="where results.json and RESULTS.md go [bench/, or bench/quick/]")
    args = parser.parse_args()
    out = args.out or (BENCH / "quick" if args.quick else BENCH)
    recipe = _shipped("recipes", "digits" if args.quick else "mnist")
    if args.quick:
        recipe = {**_scaled_epochs(recipe, QUICK_EPOCH_FRACTION), "name": "digits-quick"}
    started = time.perf_counter()
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py" + (" --quick" if args.quick else "") + (" --kws PATH" if args.kws else ""),
        "quick": args.quick,
        "recipe": recipe["name"],
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-") as tmp:
        work = Path(tmp)
        parts = {name: work / name for name in ("script", "targets", "kws", "cost")}
        for folder in parts.values():
            folder.mkdir()
        print("the default recipe on every target ...", flush=True)
        targets = SHIPPED_TARGETS[:2] if args.quick else SHIPPED_TARGETS
        result["every_target"] = every_target(recipe, targets, parts["targets"], 3 if args.quick else 5)
        first = result["every_target"]["rows"].get("rpi4", {})
        full_plan_first = None
        if first and "error" not in first:
            full_plan_first = {
                "tflite_bytes": first["artifact_bytes"],
                "accuracy": first["artifact_accuracy"],
                "wall_s": first["wall_s"],
                "peak_rss_bytes": first["peak_rss_bytes"],
                "stages": {s["name"]: s["seconds"] for s in result["every_target"]["cold_stages"]},
            }
        print("against the TF-MOT script ...", flush=True)
        seeds = (0,) if args.quick else (0, 1, 2)
        result["against_script"] = against_script(recipe, parts["script"], seeds, full_plan_first)
        print("MLPerf Tiny KWS ...", flush=True)
        if args.kws:
            result["kws"] = kws(args.kws.resolve(), parts["kws"])
        if not args.quick:  # the growth builds take minutes; quick has the per-stage table of part 1
            print("build cost ...", flush=True)
            result["build_cost"] = build_cost(recipe, parts["cost"], (1, 2, 4), (0.5, 2.0))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["goals"] = goals(result, args.quick)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "RESULTS.md").write_text(markdown(result))
    met = sum(g["met"] for g in result["goals"])
    print(f"{met} of {len(result['goals'])} goals met in {result['wall_s'] / 60:.1f} min: {out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
