"""Task kinds end to end: regression and reconstruction (anomaly detection) next to classification,
and a recipe without [prune] on the stock targets. Real training, conversion and runtimes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_one_line_error, quick_project, run_cli

RECONSTRUCTION = """name = "sensors"
task = "reconstruction"
dataset = "npz:sensors.npz"
seed = 0
[model]
architecture = "autoencoder"
width = 1.0
[train]
epochs = 100
batch_size = 32
learning_rate = 3e-3
[prune]
epochs = 10
[qat]
epochs = 2
"""

REGRESSION = """name = "load"
task = "regression"
dataset = "npz:load.npz"
seed = 0
[model]
architecture = "mlp"
width = 0.25
[train]
epochs = 40
batch_size = 32
learning_rate = 3e-3
[budgets]
max_mae_increase = 0.2
[qat]
epochs = 2
"""


def sensor_windows(n: int, rng: np.random.Generator, anomalous: bool) -> np.ndarray:
    """Windows of a 3-axis vibration signal: normal ones at 5 Hz, anomalous ones with a 13 Hz fault."""
    t = np.linspace(0, 1, 32, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    base = np.sin(2 * np.pi * 5 * t[None, :, None] + phase) * np.array([1.0, 0.6, 0.3])
    if anomalous:
        base = base + 0.5 * np.sin(2 * np.pi * 13 * t[None, :, None] + 2 * phase)
    return (0.5 + 0.4 * base + 0.05 * rng.standard_normal((n, 32, 3))).astype(np.float32)


@pytest.fixture
def sensors(project: Path) -> Path:
    rng = np.random.default_rng(0)
    x_test = np.concatenate([sensor_windows(80, rng, False), sensor_windows(40, rng, True)])
    labels = np.concatenate([np.zeros(80, np.int64), np.ones(40, np.int64)])
    np.savez(project / "sensors.npz", x_train=sensor_windows(400, rng, False), x_test=x_test, y_test=labels)
    quick_project(project)
    (project / "edgebuild.toml").write_text(RECONSTRUCTION)
    return project


@pytest.fixture
def load(project: Path) -> Path:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (500, 6)).astype(np.float32)
    y = 1.5 * x[:, 0] - x[:, 1] * x[:, 2] + 0.5 * np.sin(3 * x[:, 3]) + 0.05 * rng.standard_normal(500)
    y = y.astype(np.float32)
    np.savez(project / "load.npz", x_train=x[:400], y_train=y[:400], x_test=x[400:], y_test=y[400:])
    quick_project(project)
    (project / "edgebuild.toml").write_text(REGRESSION)
    return project


@pytest.mark.slow
def test_autoencoder_for_cortex_m4_keeps_its_auc(sensors: Path) -> None:
    result = run_cli("--target", "cortex-m4-relaxed", "--quiet", cwd=sensors)
    assert result.code == 0, result.err
    out = sensors / "build" / "sensors" / "cortex-m4-relaxed"
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "reconstruction"
    teacher, artifact = report["teacher"]["metrics"], report["artifact"]["metrics"]
    assert set(artifact) == {"mse", "auc"} and artifact["auc"] > 0.9
    assert teacher["auc"] - artifact["auc"] <= 0.01  # the target's max_auc_drop, as a promise
    assert {b["name"] for b in report["budgets"]} >= {"auc_drop", "model_bytes", "arena_bytes"}
    assert report["artifact"]["accuracy"] is None and report["teacher"]["accuracy"] is None
    threshold = report["artifact"]["anomaly_threshold"]
    header = (out / "model_data.h").read_text()
    assert "#define SENSORS_ANOMALY_THRESHOLD" in header and "#define SENSORS_INPUT_TRAINED_MIN" in header
    assert "g_sensors_labels" not in header  # no classes, no labels array
    assert threshold > 0 and report["artifact"]["input_contract"]["trained_max"] > 0.5
    assert "AUC" in (out / "report.md").read_text()


@pytest.mark.slow
def test_regression_for_rpi4_reports_mae_and_its_bundle_prints_values(load: Path) -> None:
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=load)
    assert result.code == 0, result.err
    assert "MAE" in result.out
    out = load / "build" / "load" / "rpi4-relaxed"
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "regression"
    assert set(report["artifact"]["metrics"]) == {"mae", "rmse"}
    assert [b["name"] for b in report["budgets"] if b["name"].startswith("mae")] == ["mae_increase"]
    # No [prune] table: the stock profile's 50 % is not applied and the report says so.
    assert "sparsity" not in {b["name"] for b in report["budgets"]}
    assert report["sparsity_note"].startswith("none applied: the recipe has no [prune] table")
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == "regression" and card["metrics"]["artifact"]["mae"] == report["artifact"]["metrics"]["mae"]
    np.save(load / "sample.npy", np.zeros((1, 6), np.float32))
    printed = subprocess.run(
        [sys.executable, str(out / "infer.py"), str(load / "sample.npy")], capture_output=True, text=True, check=True
    )
    assert len(printed.stdout.split()) == 1 and float(printed.stdout)  # one predicted value


@pytest.mark.slow
def test_classification_reports_per_class_accuracy_and_confusion(project: Path) -> None:
    quick_project(project)
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project)
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "rpi4-relaxed" / "report.json").read_text())
    artifact = report["artifact"]
    matrix = np.array(artifact["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == report["validation"]["test_samples"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(artifact["accuracy"])
    assert set(artifact["per_class_accuracy"]) == {str(i) for i in range(10)}


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (("max_mae_increase = 0.2\n", ""), ("budgets.max_mae_increase", "units of y")),
        (('dataset = "npz:load.npz"', 'dataset = "digits"'), ("'task'", "digits dataset is for classification")),
    ],
)
def test_bad_regression_recipes(load: Path, change: tuple[str, str], needles: tuple[str, ...]) -> None:
    text = (load / "edgebuild.toml").read_text()
    (load / "edgebuild.toml").write_text(text.replace(*change))
    assert_one_line_error(run_cli("--target", "rpi4-relaxed", "--quiet", cwd=load), 2, *needles)


def test_regression_targets_of_two_shapes(load: Path) -> None:
    with np.load(load / "load.npz") as npz:
        arrays = dict(npz)
    np.savez(load / "load.npz", **{**arrays, "y_train": np.stack([arrays["y_train"]] * 2, axis=1)})
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=load)
    assert_one_line_error(result, 2, "y_train rows have shape (2,) but y_test (1,)")


def test_float_labels_for_a_classifier_point_at_regression(load: Path) -> None:
    text = (load / "edgebuild.toml").read_text().replace('task = "regression"\n', "")
    (load / "edgebuild.toml").write_text(text.replace("[budgets]\nmax_mae_increase = 0.2\n", ""))
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=load)
    assert_one_line_error(result, 2, "y_train has dtype float32", "task = 'regression'")


@pytest.mark.slow
def test_reconstruction_without_labels_needs_an_error_budget(sensors: Path) -> None:
    with np.load(sensors / "sensors.npz") as npz:
        np.savez(sensors / "sensors.npz", x_train=npz["x_train"], x_test=npz["x_test"])
    result = run_cli("--target", "cortex-m4-relaxed", "--quiet", cwd=sensors)
    assert_one_line_error(result, 2, "budgets.max_mse_increase", "no anomaly labels")


@pytest.mark.slow
def test_a_profile_can_require_sparsity(load: Path) -> None:
    target = load / "targets" / "rpi4-relaxed.toml"
    target.write_text(target.read_text().replace("[sparsity]\n", "[sparsity]\nrequired = true\n"))
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=load)
    assert_one_line_error(result, 3, "sparsity.required", "no [prune] table")
