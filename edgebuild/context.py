"""The build context: what every stage reads and writes, in one typed object.

Keras models and arrays pass between stages here; everything a stage measures is a
frozen result (``edgebuild.results``), written once by the stage that measures it and
read through the accessors below, which fail loudly when a stage runs out of order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgebuild.datasets import Dataset
from edgebuild.devices import DeviceSpec
from edgebuild.firmware import FirmwareModel
from edgebuild.progress import Reporter
from edgebuild.results import (
    Artifact,
    Budget,
    Conversion,
    Costs,
    Firmware,
    NpuEstimate,
    Pruning,
    QatLayer,
    Teacher,
    Validation,
)
from edgebuild.schema import Recipe, Sparsity, Target
from edgebuild.tasks import Metric, headline
from edgebuild.training import SoftTargets, evaluate_model

T = TypeVar("T")


def _present(value: T | None, why: str) -> T:
    """``value``, which an earlier stage must have set (``why`` says which): a stage run out of order fails loudly."""
    assert value is not None, why
    return value


@dataclass
class BuildContext:
    """State of one build of a recipe for a target, filled in stage by stage.

    ``work`` is a private temporary folder the stages write artifacts into; the
    driver moves it to ``out`` only when the whole build succeeded.
    """

    recipe: Recipe
    target: Target
    out: Path
    work: Path
    reporter: Reporter
    device: DeviceSpec = field(default_factory=lambda: DeviceSpec("host"))  # validation also runs there
    benchmark_binary: Path | None = None  # for adb devices
    convert_sparsity: bool = False  # prune channels when the target's structure saves nothing
    allow_unsafe_model: bool = False  # load a model with Lambda or custom layers (runs its code)
    compare_kernels: bool = False  # --device qemu on TFLM: also run the firmware with the other kernel family
    observer: Callable[[str, BuildContext], None] | None = None  # called after each stage with its name

    # preflight
    dataset: Dataset | None = None
    sparsity: Sparsity = field(default_factory=Sparsity)  # what pruning aims for: the target's, or channels
    x_fit: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_fit: np.ndarray = field(default_factory=lambda: np.empty(0))
    x_val: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_val: np.ndarray = field(default_factory=lambda: np.empty(0))
    float_model: Any = None  # the model of [model], built or loaded, not yet trained

    # baseline, distill, prune, qat: Keras models
    teacher_model: Any = None
    soft_targets: SoftTargets | None = None
    model: Any = None  # the model being compressed (the student when distilling)
    qat_model: Any = None
    tflite: bytes = b""  # convert: the validated model
    deploy_tflite: bytes = b""  # vela: what ships (the converted model, or Vela's for an NPU)
    firmware_model: FirmwareModel | None = None  # emit

    # what the stages measured, in pipeline order
    teacher_facts: Teacher | None = None
    stage_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # on the test split, by stage
    stage_validation_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # the validation split's
    costs: dict[str, Costs] = field(default_factory=dict)  # each stage's model, by stage ("artifact" for validate)
    pruning: Pruning | None = None
    qat_layers: tuple[QatLayer, ...] = ()  # what QAT did with each layer; () when it did not run
    qat_refused: str | None = None  # why QAT could not take the model (post-training quantization only)
    conversion: Conversion | None = None
    artifact_facts: Artifact | None = None
    validation_facts: Validation | None = None
    npu: NpuEstimate | None = None
    firmware: Firmware | None = None
    budgets: tuple[Budget, ...] = ()

    # the driver and report
    report: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def data(self) -> Dataset:
        return _present(self.dataset, "preflight loads the dataset")

    @property
    def teacher(self) -> Teacher:
        return _present(self.teacher_facts, "baseline measures the teacher")

    @property
    def artifact(self) -> Artifact:
        return _present(self.artifact_facts, "validate measures the artifact")

    @property
    def validation(self) -> Validation:
        return _present(self.validation_facts, "validate runs the artifact")

    @property
    def headline(self) -> Metric:
        """The task's metric that budgets and choices use."""
        return headline(self.recipe.task, self.data.anomaly_test is not None)

    def score(self, model: Any, what: str) -> dict[str, float]:
        """The task's metrics of a Keras model on the test split (BuildError for a dead model)."""
        data = self.data
        return evaluate_model(model, data.x_test, data.y_test, data.task, what, data.anomaly_test)

    def score_stage(self, stage: str, model: Any, what: str) -> dict[str, float]:
        """A stage's model scored on the test split (returned, and kept in ``stage_metrics``) and on the
        validation split (kept in ``stage_validation_metrics``; what a search decides by)."""
        metrics = self.stage_metrics[stage] = self.score(model, what)
        self.stage_validation_metrics[stage] = evaluate_model(model, self.x_val, self.y_val, self.data.task, what)
        return metrics

    @property
    def pruned_structure(self) -> str:
        """The sparsity structure pruning applied, or ``none``."""
        return self.pruning.structure if self.pruning is not None else "none"

    def warn(self, message: str) -> None:
        """A warning shown now and kept in the report."""
        self.warnings.append(message)
        self.reporter.warn(message)
