"""MLPerf Tiny keyword spotting: the reference DS-CNN (the ``--kws`` folder) imported and
quantized for cortex-m4 by the recipe in ``bench/kws/``, calibrated on half the 1000
EEMBC inputs and scored on the other half, against the published int8 model.

The folder holds ``kws_ref_model/`` (Keras SavedModel), ``kws_ref_model.tflite`` (the
published int8 model) and ``kws01_test.npz`` (``x_int8``: the inputs as that model takes
them, ``y``: labels).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH, failure, read_report, run_edgebuild
from goals import Measurement, failed

from edgebuild.tflite import io_details, make_interpreter

GOAL_NAMES = ["kws.accuracy_diff", "kws.bytes_ratio", "kws.arena_ratio"]


@dataclasses.dataclass(frozen=True)
class KwsInputs:
    """The EEMBC inputs as the reference int8 model takes them, in float, and their labels."""

    quantized: np.ndarray
    floats: np.ndarray
    labels: np.ndarray
    scale: float  # the reference model's input quantization, read from the .tflite
    zero_point: int


def read_inputs(folder: Path) -> KwsInputs:
    """Read ``kws01_test.npz`` and dequantize it with ``kws_ref_model.tflite``'s input scale and zero point.

    Raises OSError when a file is missing, edgebuild's BuildError when LiteRT cannot load the model.
    """
    data = np.load(folder / "kws01_test.npz")
    model_input = io_details(make_interpreter((folder / "kws_ref_model.tflite").read_bytes()))[0][0]
    q = data["x_int8"]
    floats = ((q.astype(np.float32) - model_input.zero_point) * model_input.scale).astype(np.float32)
    return KwsInputs(q, floats, data["y"].astype(np.int64), model_input.scale, model_input.zero_point)


def _quantize(model: bytes, x: np.ndarray) -> np.ndarray:
    """``x`` in ``model``'s input type (int8 models take quantized inputs)."""
    return np.asarray(io_details(make_interpreter(model))[0][0].quantize(x))


def _tflm_accuracy(model: bytes, inputs: np.ndarray, labels: np.ndarray, arena: int) -> float:
    from edgebuild.runners.tflm_host import TflmHost

    outputs = TflmHost(arena_bytes=arena).run(model, inputs).outputs
    return float(np.mean(np.argmax(outputs, axis=-1) == labels))


def kws(folder: Path, project: Path) -> dict[str, Any]:
    """Import the reference DS-CNN from ``folder``, quantize it for cortex-m4 in ``project`` (calibrated
    on a seeded half of the inputs) and score it and the reference int8 model with TFLM on the other half.

    Returns bytes, minimal TFLM arena and accuracy of both, or ``{"error": ...}`` when the build failed.
    """
    from edgebuild.runners.litert_host import LiteRTHost
    from edgebuild.runners.tflm_host import find_min_arena

    inputs = read_inputs(folder)
    q, x, y = inputs.quantized, inputs.floats, inputs.labels
    order = np.random.default_rng(0).permutation(len(y))
    calibration, held = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2 :])
    np.savez(project / "kws.npz", x_train=x[calibration], y_train=y[calibration], x_test=x[held], y_test=y[held])
    shutil.copytree(folder / "kws_ref_model", project / "kws_ref_model")
    shutil.copy(BENCH / "kws" / "kws.toml", project / "kws.toml")
    # The stock cortex-m4 profile: the recipe has no [prune] (there is no training set to
    # fine-tune a pruned model on), so the pretrained model is quantized, not pruned. With TFLM's
    # sources at hand the firmware runs too, with both kernel families (instructions per inference).
    firmware = ["--device", "qemu", "--compare-kernels"] if os.environ.get("EDGEBUILD_THIRD_PARTY") else []
    run = run_edgebuild(project, "kws.toml", "cortex-m4", *firmware)
    if run.returncode:
        return failure(run, "edgebuild kws cortex-m4")
    report = read_report(project, "kws", "cortex-m4")
    ours = (project / "build" / "kws" / "cortex-m4" / "model.tflite").read_bytes()
    reference = (folder / "kws_ref_model.tflite").read_bytes()
    ours_q = _quantize(ours, x[held])
    ours_arena = find_min_arena(ours, ours_q[0])
    ref_arena = find_min_arena(reference, q[0])
    ref_litert_all = LiteRTHost().run(reference, q).outputs
    return {
        "calibration_inputs": len(calibration),
        "held_out_inputs": len(held),
        "input_scale": inputs.scale,
        "input_zero_point": inputs.zero_point,
        "edgebuild": {
            "tflite_bytes": len(ours),
            "arena_bytes": ours_arena,
            "accuracy_tflm_held_out": _tflm_accuracy(ours, ours_q, y[held], ours_arena),
            "float_accuracy_held_out": report["teacher"]["accuracy"],
            "report_accuracy": report["artifact"]["accuracy"],
            "wall_s": round(run.seconds, 1),
            "stages": {s["name"]: s["seconds"] for s in report["stages"]},
            "firmware": _firmware(report),
        },
        "reference": {
            "tflite_bytes": len(reference),
            "arena_bytes": ref_arena,
            "accuracy_tflm_held_out": _tflm_accuracy(reference, q[held], y[held], ref_arena),
            "accuracy_litert_all_1000": float(np.mean(np.argmax(ref_litert_all, axis=-1) == y)),
        },
    }


def _firmware(report: dict[str, Any]) -> dict[str, Any] | None:
    """The firmware run's figures per kernel family (None without --device qemu)."""
    run = (report["validation"].get("device_run") or {}).get("firmware")
    if not run:
        return None
    return {
        "machine": run["machine"],
        "inferences": run["inferences"],
        "flash_bytes": run["flash_bytes"],
        "ram_bytes": run["ram_bytes"],
        "kernels": {
            k["kernels"]: {
                "instructions_mean": k["instructions"]["mean"],
                "flash_bytes": k["flash_bytes"],
                "mismatched_vs_host_tflm": k["vs_host_tflm"]["mismatched_outputs"],
            }
            for k in run["kernel_comparison"]
        },
    }


def measure_goals(part: dict[str, Any] | None) -> dict[str, Measurement]:
    """The ``kws.*`` goals from ``kws``'s result; None (not run) and a failed build leave them unmeasured."""
    if part is None:
        return {name: Measurement(None, "not run: pass --kws PATH (the mlperf-tiny-kws folder)") for name in GOAL_NAMES}
    if "error" in part:
        return failed(part, GOAL_NAMES)
    ours, ref = part["edgebuild"], part["reference"]
    return {
        "kws.accuracy_diff": Measurement(
            round((ours["accuracy_tflm_held_out"] - ref["accuracy_tflm_held_out"]) * 100, 2)
        ),
        "kws.bytes_ratio": Measurement(round(ours["tflite_bytes"] / ref["tflite_bytes"], 3)),
        "kws.arena_ratio": Measurement(round(ours["arena_bytes"] / ref["arena_bytes"], 3)),
    }
