"""What one stage hands another, as frozen dataclasses: mypy checks every read.

Each stage writes its result once into the build context; later stages and the report
read its fields. ``to_json`` turns a result into what ``report.json`` and the stage
cache hold; ``from_json`` reads a cached one back.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from edgebuild.surgery import LayerChannels
from edgebuild.tflite import TensorInfo
from edgebuild.toolchain import Region

T = TypeVar("T")
Json = Any  # what json.loads gives: only read through from_json into a typed result


@dataclass(frozen=True)
class StageResult:
    """What the driver shows and caches for a stage: its one-line summary, and whether it did nothing."""

    summary: str
    skipped: bool = False


def skipped(reason: str) -> StageResult:
    """A stage that had nothing to do, and why."""
    return StageResult(f"skipped: {reason}", skipped=True)


@dataclass(frozen=True)
class Teacher:
    """The float model every budget is measured against (baseline)."""

    accuracy: float | None  # classification only
    tflite_bytes: int
    parameters: int
    metrics: dict[str, float]  # the task's metrics on the test split


@dataclass(frozen=True)
class Pruning:
    """What pruning removed (prune): channels, or weights zeroed in a pattern."""

    structure: str  # channel | unstructured | 2:4
    measured: float  # channels removed, of the layers pruned or skipped (not the output's); or kernel weights zero
    criterion: str | None = None
    parameters_before: int | None = None
    parameters_after: int | None = None
    layers: tuple[LayerChannels, ...] = ()


@dataclass(frozen=True)
class QatLayer:
    """What quantization-aware training did with one layer (qat).

    ``action``: ``tf-mot`` (TF-MOT's own quantize config), ``output-quantized`` (edgebuild's
    config: the output is fake-quantized), ``pass-through`` (edgebuild's config: nothing is
    quantized, the output keeps its input's scale) or ``float`` (left float during QAT; the
    converter quantizes it after training). ``reason`` says why a layer was left float.
    """

    layer: str
    kind: str
    action: str
    reason: str = ""


@dataclass(frozen=True)
class Candidate:
    """One conversion the convert stage scored on the validation split."""

    name: str  # qat | ptq | float32
    bytes: int
    selection_accuracy: float


@dataclass(frozen=True)
class Conversion:
    """How the artifact was converted and chosen (convert)."""

    mode: str
    io: str
    chosen: str
    candidates: tuple[Candidate, ...]
    sparse_encoding_refused: str | None = None


@dataclass(frozen=True)
class InputContract:
    """What the model expects as input: the float data it was trained on, per channel (last axis) and in
    all, and the float range its quantized input can represent (None for a float input)."""

    channel_min: tuple[float, ...]
    channel_max: tuple[float, ...]
    channel_mean: tuple[float, ...]
    trained_min: float
    trained_max: float
    quantized_min: float | None
    quantized_max: float | None


@dataclass(frozen=True)
class Artifact:
    """The validated model's facts (validate); ``accuracy`` and ``metrics`` are the device's when a
    device measured them (the host's are kept beside them then)."""

    accuracy: float | None  # classification only
    tflite_bytes: int
    sha256: str
    precision: str
    sparsity: float  # the budget's measure: channels removed, or zero weights
    sparsity_structure: str
    zero_weights: float
    weights: int
    arena_bytes: int | None
    ops: dict[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the task's metrics on the test split
    host_accuracy: float | None = None  # the host's, when a device measured ``accuracy``
    host_metrics: dict[str, float] | None = None  # the host's, when a device measured ``metrics``
    anomaly_threshold: float | None = None  # reconstruction: the error above which a sample is anomalous
    per_class_accuracy: dict[str, float] | None = None  # classification, on the test split (host)
    confusion_matrix: tuple[tuple[int, ...], ...] | None = None  # classification: rows true, columns predicted
    input_contract: InputContract | None = None
    validation_metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # on the validation split (host)


@dataclass(frozen=True)
class OpCheck:
    """One op's kernel against LiteRT's reference kernel, judged on samples with bit-identical inputs."""

    index: int
    op: str
    judged: int
    max_own_lsb: int
    max_lsb: int


@dataclass(frozen=True)
class Comparison:
    """Two runs' outputs: differing elements, the largest difference and top-1 agreement."""

    compared_outputs: int
    mismatched_outputs: int
    max_lsb_diff: int | None  # integer outputs only
    max_abs_diff: float
    top1_agreement: float


@dataclass(frozen=True)
class KernelRun:
    """The same firmware built with one family of TFLM kernels (``--compare-kernels``)."""

    kernels: str  # cmsis-nn | reference
    instructions: dict[str, float]  # per inference: mean, min, max
    flash_bytes: int
    arena_used_bytes: int
    vs_host_tflm: Comparison


@dataclass(frozen=True)
class FirmwareRun:
    """The firmware built from the emitted C (with TFLM) and run on an emulated board (link, with
    ``--device qemu`` on a TFLM target). Instruction counts are QEMU's (``-icount``), not cycles."""

    machine: str  # qemu-system-arm -M
    cpu: str
    kernels: str  # cmsis-nn | reference
    model_source: str  # which C array ran: the emitted files, or the CPU model on NPU targets
    sources_sha256: dict[str, str]  # the model files the firmware compiled, by name
    tflm_commit: str
    inferences: int
    instructions: dict[str, float]  # per inference: mean, min, max
    flash_bytes: int  # the firmware image (vectors, code, read-only data, .data's initial values)
    ram_bytes: int  # .data, .bss (the arena among it) and the stack
    sections: dict[str, int]  # by ELF section
    flash_by_part: dict[str, int]  # model, tflm, cmsis-nn, c library, harness, application
    ram_by_part: dict[str, int]  # arena, stack, tflm, cmsis-nn, c library, harness, application
    arena_bytes: int  # the header's arena
    arena_used_bytes: int  # what TFLM used of it on the board
    stack_bytes: int
    stack_used_bytes: int  # the deepest the stack went (painted and checked)
    library_objects: int  # TFLM and CMSIS-NN objects the firmware links
    library_compiled_objects: int  # of which compiled by this build (0: all cached)
    library_compile_seconds: float
    kernel_comparison: tuple[KernelRun, ...] = ()  # both kernel families, with --compare-kernels


@dataclass(frozen=True)
class DeviceRun:
    """The artifact on a device (validate with --device): where, how fast, and how close to the host."""

    device: str
    measured_on: str
    emulated: bool
    latency: dict[str, float]
    latency_note: str
    peak_memory_bytes: int | None
    accuracy: float | None  # None where the runner measures latency only, or the task is not classification
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # {} where the runner measures latency only
    vs_host_reference: Comparison | None = None
    reference_kernels_vs_host: Comparison | None = None
    vs_host_tflm: Comparison | None = None  # firmware runs: against the host's TFLM interpreter
    firmware: FirmwareRun | None = None  # firmware runs: the firmware and what it measured


@dataclass(frozen=True)
class Validation(Comparison):
    """The artifact on the target's runner against LiteRT's reference kernels (validate): the
    comparison end to end, op by op, and on ``--device``."""

    runner: str
    device: str
    emulated: bool
    reference: str
    test_samples: int
    latency: dict[str, float]
    ops: tuple[OpCheck, ...] = ()
    max_op_lsb_diff: int | None = None
    device_run: DeviceRun | None = None


@dataclass(frozen=True)
class NpuEstimate:
    """Vela's compilation for an Ethos-U NPU (vela)."""

    accelerator: str
    system_config: str
    memory_mode: str
    vela_tflite_bytes: int
    npu_cycles: int
    total_cycles: int
    inference_time_s: float
    sram_bytes: int
    off_chip_flash_bytes: int
    on_chip_flash_bytes: int
    macs: int
    npu_ops: int
    cpu_ops: tuple[str, ...]


@dataclass(frozen=True)
class Firmware:
    """The generated C (emit) and, on microcontroller targets, the compile and link checks (link)."""

    prefix: str
    files: tuple[str, ...]
    arena_bytes: int | None  # the header's arena: measured, plus the profile's margin
    compilers: tuple[str, ...] = ()
    link: str | None = None  # why the fit was not checked, when it was not
    regions: tuple[Region, ...] = ()
    fit_from: str = ""  # what the runtime's share of the fit is: the profile's estimate, or the firmware measured


@dataclass(frozen=True)
class Costs:
    """What a stage's model costs on the host: parameters, MACs, bytes, TFLM arena, latency."""

    parameters: int
    macs: int
    tflite_bytes: int
    host_latency_ms: float
    arena_bytes: int | None
    accuracy: float | None = None


@dataclass(frozen=True)
class Budget:
    """One budget of the target against what the build measured (report)."""

    name: str
    kind: str  # max | min
    unit: str  # bytes | fraction
    limit: float
    actual: float
    margin: float
    ok: bool


def to_json(value: Any) -> Any:
    """A result (or a dict, list or tuple of them) as JSON-able data; dataclasses become dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(cls: type[T], data: Json) -> T:
    """Read back what ``to_json`` wrote for a ``cls`` (nested results, tuples and optionals included)."""
    return typing.cast(T, _read(cls, data))


def _read(tp: Any, data: Json) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _read(options[0], data)
    if origin is tuple:
        return tuple(_read(typing.get_args(tp)[0], item) for item in data)
    if origin is dict:
        return {key: _read(typing.get_args(tp)[1], item) for key, item in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{name: _read(hints[name], data[name]) for name in names if name in data})
    if tp is float and isinstance(data, int):
        return float(data)
    return data
