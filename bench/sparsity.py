"""Sparsity benchmark: what channel pruning and 2:4 sparsity buy, measured side by side.

    python bench/sparsity.py [--kws ../shared/data/mlperf-tiny-kws] [--quick]

1. The default recipe for cortex-m4 with the profile's 50 % channel budget against the
   same recipe without pruning: int8 bytes, TFLM arena, host LiteRT latency (one
   thread, median of 1000 invocations) and accuracy drop vs the float teacher.
   Goals: the ``channels.*`` rows of the goal table in ``bench/goals.py``.
2. The three channel-importance criteria (l1, l2, taylor) on the same recipe.
3. 2:4 sparsity on LiteRT (rpi4's runtime), int8 and float32, against dense models:
   whether XNNPACK loads the sparse encoding and what it does to latency.
4. The MLPerf Tiny DS-CNN reference (a folder path): channel-pruned, rebuilt,
   fine-tuned on half the 1000 EEMBC inputs and evaluated on the other half.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from goals import Measurement, judge_goals
from mlperf_kws import read_inputs

from edgebuild.cache import StageCache
from edgebuild.errors import EdgebuildError
from edgebuild.pipeline import run_build
from edgebuild.progress import Reporter
from edgebuild.schema import Recipe, Target, find_file, load_recipe, load_target


def _target(name: str, **sparsity: Any) -> Target:
    target = load_target(find_file("targets", name, Path("/")))
    # Measurements, not budgets: the bench reports misses instead of stopping at them.
    budgets = dataclasses.replace(target.budgets, max_accuracy_drop=1.0, model_bytes=None, arena_bytes=None)
    return dataclasses.replace(target, budgets=budgets, sparsity=dataclasses.replace(target.sparsity, **sparsity))


def _build(recipe: Recipe, target: Target, work: Path, cache: StageCache, tag: str) -> dict[str, Any]:
    return run_build(recipe, target, work / tag, Reporter(quiet=True), cache)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    artifact = report["profiles"]["artifact"]
    return {
        "accuracy": report["artifact"]["accuracy"],
        "teacher_accuracy": report["teacher"]["accuracy"],
        "drop_points": round((report["teacher"]["accuracy"] - report["artifact"]["accuracy"]) * 100, 2),
        "tflite_bytes": artifact["tflite_bytes"],
        "arena_bytes": artifact["arena_bytes"],
        "host_latency_ms": artifact["host_latency_ms"],
        "parameters": artifact["parameters"],
        "macs": artifact["macs"],
        "sparsity": report["artifact"]["sparsity"],
        "prune_float_accuracy": report["stage_accuracy"].get("prune"),
    }


def channel_vs_dense(recipe: Recipe, work: Path, cache: StageCache) -> dict[str, Any]:
    """The default recipe for cortex-m4, 50 % channel pruning against no pruning."""
    pruned = _summary(_build(recipe, _target("cortex-m4"), work, cache, "channel"))
    dense = _summary(_build(recipe, _target("cortex-m4", target=0.0), work, cache, "dense"))
    ratios = {
        "bytes": pruned["tflite_bytes"] / dense["tflite_bytes"],
        "arena": pruned["arena_bytes"] / dense["arena_bytes"],
        "latency": pruned["host_latency_ms"] / dense["host_latency_ms"],
    }
    return {
        "pruned": pruned,
        "dense": dense,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "goals": _channel_goals(ratios, pruned["drop_points"]),
    }


def _channel_goals(ratios: dict[str, float], drop_points: float) -> list[dict[str, Any]]:
    """The ``channels.*`` goals of the goal table, judged on these figures."""
    measured = {f"channels.{k}_ratio": Measurement(round(v, 4)) for k, v in ratios.items()}
    measured["channels.drop"] = Measurement(drop_points)
    return [goal for goal in judge_goals(measured, quick=False) if goal["name"] in measured]


def criteria(recipe: Recipe, work: Path, cache: StageCache) -> dict[str, Any]:
    """l1, l2 and taylor importance on the same recipe and budget."""
    assert recipe.prune is not None
    found = {}
    for criterion in ("l1", "l2", "taylor"):
        variant = dataclasses.replace(recipe, prune=dataclasses.replace(recipe.prune, criterion=criterion))
        found[criterion] = _summary(_build(variant, _target("cortex-m4"), work, cache, f"criterion-{criterion}"))
    return found


def two_four(recipe: Recipe, work: Path, cache: StageCache) -> dict[str, Any]:
    """2:4 sparsity on LiteRT against dense, for int8 and float32 models."""
    found: dict[str, Any] = {}
    for precision in ("int8", "float32"):
        base = _target("rpi4", target=0.5, structure="2:4", exploitable=("2:4",))
        same: dict[str, Any] = {"weights": precision, "activations": precision, "io": precision}
        base = dataclasses.replace(base, precision=dataclasses.replace(base.precision, **same))
        dense_target = dataclasses.replace(base, sparsity=dataclasses.replace(base.sparsity, target=0.0))
        dense = _summary(_build(recipe, dense_target, work, cache, f"dense-{precision}"))
        try:
            sparse = _summary(_build(recipe, base, work, cache, f"24-{precision}"))
        except EdgebuildError as e:  # e.g. the default kernels refuse the sparse encoding
            found[precision] = {"dense": dense, "sparse_2_4": {"error": str(e)}}
            continue
        found[precision] = {
            "sparse_2_4": sparse,
            "dense": dense,
            "latency_ratio": round(sparse["host_latency_ms"] / dense["host_latency_ms"], 3),
            "bytes_ratio": round(sparse["tflite_bytes"] / dense["tflite_bytes"], 3),
        }
    return found


def kws_reference(folder: Path) -> dict[str, Any]:
    """Channel-prune the MLPerf Tiny DS-CNN, rebuild it, fine-tune on half the inputs, score the rest."""
    from edgebuild.surgery import prune_channels
    from edgebuild.tf import keras, seed_everything
    from edgebuild.tflite import convert_keras
    from edgebuild.training import fit_model

    seed_everything(0)
    inputs = read_inputs(folder)  # dequantized with the reference int8 model's input scale and zero point
    x, y = inputs.floats, inputs.labels
    order = np.random.default_rng(0).permutation(len(y))
    fit, held = order[: len(y) // 2], order[len(y) // 2 :]
    model = keras().models.load_model(str(folder / "kws_ref_model"), compile=False)

    def score(m: Any) -> float:
        return float(np.mean(np.argmax(m.predict(x[held], verbose=0), axis=-1) == y[held]))

    before = {"parameters": int(model.count_params()), "accuracy": score(model)}
    pruned, layers = prune_channels(model, 0.5, criterion="taylor", data=(x[fit], y[fit]))
    after_surgery = score(pruned)
    fit_model(
        pruned,
        x[fit],
        y[fit],
        epochs=10,
        batch_size=32,
        learning_rate=5e-4,
        seed=0,
        reporter=Reporter(quiet=True),
        what="",
    )
    int8 = convert_keras(pruned, "int8", "int8", x[fit])
    original_int8 = (folder / "kws_ref_model.tflite").read_bytes()
    return {
        "reference": before,
        "pruned": {
            "parameters": int(pruned.count_params()),
            "accuracy_right_after_surgery": after_surgery,
            "accuracy_after_fine_tuning": score(pruned),
            "int8_bytes": len(int8),
        },
        "reference_int8_bytes": len(original_int8),
        "layers": [dataclasses.asdict(layer) for layer in layers],
        "note": "fine-tuned on 500 of the 1000 EEMBC inputs, scored on the other 500: no training set is shipped",
    }


def measure(quick: bool, kws: Path | None) -> dict[str, Any]:
    """Every part; ``quick`` uses the digits recipe and leaves out the criteria and 2:4 parts."""
    recipe = load_recipe(find_file("recipes", "digits" if quick else "mnist", Path("/")))
    with tempfile.TemporaryDirectory(prefix="edgebuild-bench-sparsity-") as tmp:
        work = Path(tmp)
        cache = StageCache(Path(os.environ.get("EDGEBUILD_BENCH_CACHE", work / "cache")))
        result: dict[str, Any] = {"recipe": recipe.name, "channel_vs_dense": channel_vs_dense(recipe, work, cache)}
        if not quick:
            result["criteria"] = criteria(recipe, work, cache)
            result["two_four_on_litert"] = two_four(recipe, work, cache)
    if kws is not None:
        result["kws_reference"] = kws_reference(kws)
    result["goals"] = result["channel_vs_dense"]["goals"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kws", type=Path, help="the mlperf-tiny-kws folder (reference DS-CNN and inputs)")
    parser.add_argument("--quick", action="store_true", help="digits instead of mnist; channel vs dense only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = measure(args.quick, args.kws)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
