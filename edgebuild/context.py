"""The build context: what every stage reads and writes, in one typed object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.datasets import Dataset
from edgebuild.devices import DeviceSpec
from edgebuild.firmware import FirmwareModel
from edgebuild.progress import Reporter
from edgebuild.schema import Recipe, Target
from edgebuild.training import Teacher


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

    # preflight
    dataset: Dataset | None = None
    x_fit: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_fit: np.ndarray = field(default_factory=lambda: np.empty(0))
    x_val: np.ndarray = field(default_factory=lambda: np.empty(0))
    y_val: np.ndarray = field(default_factory=lambda: np.empty(0))
    float_model: Any = None  # the model of [model], built or loaded, not yet trained

    # baseline
    teacher: Any = None
    teacher_accuracy: float = float("nan")
    teacher_tflite_bytes: int = 0
    teacher_parameters: int = 0

    # distill, prune, qat
    soft_targets: Teacher | None = None
    model: Any = None  # the model being compressed (the student when distilling)
    pruning: dict[str, Any] = field(default_factory=dict)  # structure, measured sparsity, channels
    qat_model: Any = None
    stage_accuracy: dict[str, float] = field(default_factory=dict)
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)  # each stage's model: size, MACs, latency

    # convert
    tflite: bytes = b""
    conversion: dict[str, Any] = field(default_factory=dict)

    # validate
    validation: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)

    # vela, emit, link
    deploy_tflite: bytes = b""  # what ships: the converted model, or Vela's for an NPU
    npu: dict[str, Any] = field(default_factory=dict)
    firmware_model: FirmwareModel | None = None
    firmware: dict[str, Any] = field(default_factory=dict)

    # report
    budgets: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def data(self) -> Dataset:
        assert self.dataset is not None, "preflight loads the dataset"
        return self.dataset

    def warn(self, message: str) -> None:
        """A warning shown now and kept in the report."""
        self.warnings.append(message)
        self.reporter.warn(message)
