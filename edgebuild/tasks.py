"""Task kinds, in one place: what a model's outputs mean, how they are scored, and which budget holds.

- ``classification`` (the default): integer class labels, a softmax over classes; accuracy,
  per-class accuracy and a confusion matrix; budget ``max_accuracy_drop`` (target).
- ``regression``: float targets shaped like the model's output; MAE and RMSE; budget
  ``max_mae_increase`` (recipe ``[budgets]``, in the units of ``y``).
- ``reconstruction`` (autoencoders, anomaly detection): the model reproduces its input; the
  anomaly score is the reconstruction error (mean squared error over a sample's features).
  MSE, and with 0/1 labels for the test split (1 = anomalous) the ROC AUC of the error;
  budgets ``max_auc_drop`` (target, with labels) and ``max_mse_increase`` (recipe, in the
  squared units of ``x``).

Every metric, budget, validation and report line reads this module instead of asking
"which task?" in each stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "regression", "reconstruction")
ANOMALY_PERCENTILE = 99.0  # the firmware's threshold: this percentile of the normal validation data's error


@dataclass(frozen=True)
class Metric:
    """A task's headline metric: its name, and whether higher is better."""

    name: str
    higher_is_better: bool

    def change(self, before: float, after: float) -> float:
        """How much worse ``after`` is than ``before`` (positive: worse), in the metric's units."""
        return before - after if self.higher_is_better else after - before

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b


def headline(task: str, has_anomaly_labels: bool = False) -> Metric:
    """The metric budgets and choices use for ``task``."""
    if task == "classification":
        return Metric("accuracy", True)
    if task == "regression":
        return Metric("mae", False)
    return Metric("auc", True) if has_anomaly_labels else Metric("mse", False)


def reconstruction_errors(outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per sample, the mean squared difference between the model's output and its input."""
    diff = outputs.reshape(len(outputs), -1).astype(np.float64) - inputs.reshape(len(inputs), -1)
    return np.asarray(np.mean(diff**2, axis=1))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` (higher = more anomalous) against 0/1 ``labels``; nan with one class only."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def evaluate(
    task: str, outputs: np.ndarray, targets: np.ndarray, anomaly_labels: np.ndarray | None = None
) -> dict[str, float]:
    """The task's metrics of float ``outputs`` (one row per sample) against ``targets``.

    ``targets`` are class indices (classification), float targets (regression) or the
    inputs themselves (reconstruction); ``anomaly_labels`` (0/1, reconstruction only)
    add the ROC AUC of the reconstruction error. Returns {} for an empty set.
    """
    if len(outputs) == 0:
        return {}
    if task == "classification":
        return {"accuracy": float(np.mean(np.argmax(outputs, axis=-1) == targets))}
    if task == "regression":
        diff = outputs.reshape(targets.shape).astype(np.float64) - targets
        return {"mae": float(np.mean(np.abs(diff))), "rmse": float(np.sqrt(np.mean(diff**2)))}
    errors = reconstruction_errors(outputs, targets)
    metrics = {"mse": float(np.mean(errors))}
    if anomaly_labels is not None:
        metrics["auc"] = roc_auc(errors, anomaly_labels)
    return metrics


def log_loss(outputs: np.ndarray, labels: np.ndarray) -> float:
    """The mean cross-entropy of a classifier's outputs against integer ``labels``: a finer score of
    the same predictions than accuracy (it counts how sure each answer was): what a search ranks
    a classifier's plans by. Rows that are probabilities (non-negative, summing to 1 within int8's resolution)
    are taken as they are, other rows as logits (softmax). A probability under 1e-4 counts as
    1e-4 (an int8 softmax has steps of 1/256: its 0 is "under 1/512", not "impossible")."""
    outputs = outputs.reshape(len(outputs), -1).astype(np.float64)
    if not (np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=0.05)):
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        outputs = shifted / shifted.sum(axis=1, keepdims=True)
    picked = outputs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-4, 1.0))))


def confusion(outputs: np.ndarray, labels: np.ndarray, classes: int) -> list[list[int]]:
    """The confusion matrix of a classifier: rows are true classes, columns predicted ones."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, np.argmax(outputs, axis=-1)), 1)
    return [[int(v) for v in row] for row in matrix]


def anomaly_threshold(errors: np.ndarray) -> float:
    """The reconstruction error above which the firmware calls a sample anomalous."""
    return float(np.percentile(errors, ANOMALY_PERCENTILE))


def describe(metrics: dict[str, float]) -> str:
    """``accuracy 97.10%`` or ``MAE 41.2, RMSE 52.9``: metrics as a report line says them."""
    parts = []
    for name, value in metrics.items():
        parts.append(f"{name} {value:.2%}" if name == "accuracy" else f"{name.upper()} {value:.4g}")
    return ", ".join(parts) or "no metrics (empty set)"
