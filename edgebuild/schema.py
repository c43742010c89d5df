"""Target profiles and recipes: TOML in, frozen typed objects out, checked in one place.

Every table is a frozen dataclass. ``_parse_table`` turns a TOML table into one,
rejecting unknown keys (with the nearest valid key as a hint), wrong types and
out-of-range values; every message names the file and the dotted key. Ranges and
checks that span several fields run in ``__post_init__`` (``_Checked``), so an object
made any other way (``dataclasses.replace``, Python code) is checked too: they raise
``_Invalid``, a ``ConfigError`` with the key to blame, which the loader prefixes with
the file and the table.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgebuild.errors import ConfigError
from edgebuild.files import check_path_text, read_limited
from edgebuild.support import (
    BOARDS,
    MACHINE_KEYS,
    PRECISION_FOR_RUNTIME,
    RUNNER_FOR_RUNTIME,
    SPARSITY_WHY_NOT,
    TOOLCHAINS,
    Toolchain,
)

BUILTIN_ARCHITECTURES = ("small_cnn", "ds_cnn", "mlp", "autoencoder")
# Each built-in dataset and the task it is for.
BUILTIN_DATASETS = {
    "mnist": "classification",
    "digits": "classification",
    "diabetes": "regression",
    "digits-anomaly": "reconstruction",
}
MAX_TOML_BYTES = 1_000_000


class _Invalid(ConfigError):
    """A value or a combination of values is not allowed: ``key`` is the dotted key to blame."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        super().__init__(f"key '{key}': {message}", hint=hint)
        self.key = key
        self.detail = message


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Any:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


def _check_range(key: str, value: Any, bounds: Any) -> None:
    """_Invalid when a number lies outside the ``_range`` metadata of its field."""
    if "lo" not in bounds or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lo, hi = bounds["lo"], bounds["hi"]
    too_low = lo is not None and (value <= lo if bounds["lo_open"] else value < lo)
    if too_low or (hi is not None and value > hi) or value != value or value in (float("inf"), float("-inf")):
        low = "" if lo is None else f"{'>' if bounds['lo_open'] else '>='} {lo}"
        high = "" if hi is None else f"<= {hi}"
        raise _Invalid(key, f"{value!r} is out of range; expected {' and '.join(filter(None, [low, high]))}")


def _check_known(key: str, what: str, name: str, known: typing.Iterable[str]) -> None:
    """_Invalid naming the nearest known name when ``name`` is not one of ``known``."""
    if name not in known:
        raise _Invalid(key, f"unknown {what} {name!r}", _suggest(name, known, f"{what}s"))


class _Checked:
    """Every config table: its fields' ranges and its cross-field rules (``_check``) hold from construction on."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            _check_range(f.name, getattr(self, f.name), f.metadata)
        self._check()

    def _check(self) -> None:
        """Cross-field rules; raise _Invalid naming the key to blame."""


# ---------------------------------------------------------------- target profiles


@dataclass(frozen=True)
class Precision(_Checked):
    """Data types of the converted model: weights, activations, and the model's input/output."""

    weights: Literal["int8", "float16", "float32"] = "int8"
    activations: Literal["int8", "float32"] = "int8"
    io: Literal["int8", "uint8", "float32"] = "int8"

    def _check(self) -> None:
        if self.mode == "invalid":
            raise _Invalid(
                "precision",
                f"weights={self.weights!r} with activations={self.activations!r} "
                f"and io={self.io!r} is not a conversion TFLite offers",
                "use int8/int8 (full integer), int8/float32 (dynamic range), "
                "float16/float32 or float32/float32; only full integer may have int8 or uint8 io",
            )

    @property
    def mode(self) -> str:
        """The converter mode: ``int8``, ``dynamic``, ``float16``, ``float32`` or ``invalid``."""
        if self.weights == "int8" and self.activations == "int8":
            return "int8"
        if self.io != "float32":
            return "invalid"
        if self.activations == "float32":
            return {"int8": "dynamic", "float16": "float16", "float32": "float32"}[self.weights]
        return "invalid"


@dataclass(frozen=True)
class Sparsity(_Checked):
    """How much pruning removes, in which pattern, and which patterns this runtime turns into savings.

    ``target`` is the fraction of weights zeroed (unstructured, 2:4) or of channels
    removed (channel) when the recipe prunes; a recipe without [prune] builds unpruned
    unless ``required``. ``exploitable`` lists the structures the runtime cashes in;
    preflight refuses any other (or converts it to channel pruning on request).
    """

    target: float = field(default=0.0, metadata=_range(0.0, 0.95))
    structure: Literal["unstructured", "2:4", "channel"] = "channel"
    exploitable: tuple[str, ...] = ("channel",)
    required: bool = False  # refuse recipes without [prune] (a device that needs the savings)

    def _check(self) -> None:
        if self.structure == "2:4" and self.target not in (0.0, 0.5):
            raise _Invalid("sparsity.target", "2:4 sparsity removes exactly half the weights", "set target = 0.5")
        for structure in self.exploitable:
            _check_known("sparsity.exploitable", "structure", structure, SPARSITY_WHY_NOT)


@dataclass(frozen=True)
class Budgets(_Checked):
    """Limits the built artifact must meet; a miss fails the build with exit code 3."""

    max_accuracy_drop: float = field(metadata=_range(0.0, 1.0))  # classification, vs the float model
    model_bytes: int | None = field(default=None, metadata=_range(1))
    arena_bytes: int | None = field(default=None, metadata=_range(1))
    max_auc_drop: float = field(default=0.01, metadata=_range(0.0, 1.0))  # reconstruction with anomaly labels


@dataclass(frozen=True)
class TaskBudgets(_Checked):
    """A recipe's budgets on metrics in its own data's units (a target cannot know them).

    ``max_mae_increase``: regression, in the units of ``y``. ``max_mse_increase``:
    reconstruction, in the squared units of ``x`` (needed when the test split has no
    anomaly labels; with labels the target's ``max_auc_drop`` holds as well).
    """

    max_mae_increase: float | None = field(default=None, metadata=_range(0.0))
    max_mse_increase: float | None = field(default=None, metadata=_range(0.0))


@dataclass(frozen=True)
class Memory(_Checked):
    """A microcontroller's memory map: the model and arena share it with the runtime and the application.

    The link stage's fit counts, besides the model and its arena, the ``runtime_*`` bytes (TFLM,
    its kernels, the C library, TFLM's data and the stack: an estimate, replaced by the real
    firmware's measured sizes when ``--device qemu`` builds it) and the ``application_*`` bytes
    (the application's own code and data, which edgebuild never sees).
    """

    # A 32-bit microcontroller addresses 4 GiB in all: larger sizes are typos, and the linker refuses them.
    flash_bytes: int = field(metadata=_range(1, 2**32))
    ram_bytes: int = field(metadata=_range(1, 2**32))
    flash_origin: int = field(default=0x0800_0000, metadata=_range(0, 2**32 - 1))
    ram_origin: int = field(default=0x2000_0000, metadata=_range(0, 2**32 - 1))
    runtime_flash_bytes: int = field(default=0, metadata=_range(0, 2**32))
    runtime_ram_bytes: int = field(default=0, metadata=_range(0, 2**32))
    application_flash_bytes: int = field(default=0, metadata=_range(0, 2**32))
    application_ram_bytes: int = field(default=0, metadata=_range(0, 2**32))

    def _check(self) -> None:
        for region in ("flash", "ram"):
            runtime = getattr(self, f"runtime_{region}_bytes")
            application = getattr(self, f"application_{region}_bytes")
            if runtime + application >= getattr(self, f"{region}_bytes"):
                raise _Invalid(
                    f"memory.application_{region}_bytes",
                    f"runtime_{region}_bytes + application_{region}_bytes ({runtime + application:,}) leave nothing "
                    f"of {region}_bytes ({getattr(self, f'{region}_bytes'):,}) for the model",
                )


# Keys that were renamed: the old name gets a one-line error saying what it became.
RENAMED_KEYS = {
    "memory.reserved_flash_bytes": "split into memory.runtime_flash_bytes (TFLM, kernels, C library: an estimate "
    "--device qemu replaces with the measured size) and memory.application_flash_bytes (the application's own code)",
    "memory.reserved_ram_bytes": "split into memory.runtime_ram_bytes (TFLM's data and the stack: an estimate "
    "--device qemu replaces with the measured size) and memory.application_ram_bytes (the application's own data)",
}


@dataclass(frozen=True)
class Device(_Checked):
    """Where ``--device qemu`` runs a microcontroller target's firmware."""

    qemu_machine: str = ""  # qemu-system-arm -M; "" = the board QEMU has for the profile's cpu

    def _check(self) -> None:
        if self.qemu_machine:
            _check_known("device.qemu_machine", "QEMU machine", self.qemu_machine, BOARDS)


@dataclass(frozen=True)
class Firmware(_Checked):
    """How the model lands in a microcontroller firmware, and the compiler family that builds it.

    The machine flags come from the family's keys (``support.TOOLCHAINS``): arm takes the
    target's ``cpu`` (``-mcpu``) and ``fpu``; RISC-V takes ``arch`` and ``abi``.
    """

    section: str = ""  # linker section for the model array, e.g. ".rodata.model" ("" = the default)
    arena_margin: float = field(default=0.1, metadata=_range(0.0, 4.0))  # added to the measured arena
    toolchain: str = "arm-none-eabi"  # the compiler family, a key of support.TOOLCHAINS
    fpu: str = ""  # -mfpu for the arm toolchain ("" = no FPU flags)
    arch: str = ""  # -march for RISC-V, e.g. rv32imc
    abi: str = ""  # -mabi for RISC-V, e.g. ilp32
    kernels: Literal["cmsis-nn", "reference"] = "cmsis-nn"  # TFLM's kernels in the firmware --device qemu runs

    def _check(self) -> None:
        if not re.fullmatch(r"[.A-Za-z0-9_]*", self.section):
            raise _Invalid(
                "firmware.section", f"{self.section!r} is not a linker section name", "use letters, digits, . and _"
            )
        _check_known("firmware.toolchain", "toolchain", self.toolchain, TOOLCHAINS)
        for key in ("fpu", "arch", "abi"):
            value = getattr(self, key)
            if not re.fullmatch(r"[a-z0-9_.+-]*", value):
                raise _Invalid(
                    f"firmware.{key}", f"{value!r} is not an -m{key} value", f"e.g. {MACHINE_KEYS['firmware.' + key]}"
                )
            if value and f"firmware.{key}" not in TOOLCHAINS[self.toolchain].keys:
                raise _Invalid(
                    f"firmware.{key}",
                    f"the {self.toolchain} toolchain takes no -m{key}",
                    f"its flags come from {', '.join(TOOLCHAINS[self.toolchain].keys)}; leave firmware.{key} out",
                )


@dataclass(frozen=True)
class Npu(_Checked):
    """An Arm Ethos-U NPU: the int8 model is compiled for it with Vela."""

    accelerator: Literal[
        "ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512"
    ]
    system_config: str = "Ethos_U55_High_End_Embedded"  # a [System_Config.*] of Vela's Arm/vela.ini
    memory_mode: str = "Shared_Sram"  # a [Memory_Mode.*] of Vela's Arm/vela.ini
    optimise: Literal["Performance", "Size"] = "Performance"

    def _check(self) -> None:
        for key in ("system_config", "memory_mode"):
            if not re.fullmatch(r"[A-Za-z0-9_]+", getattr(self, key)):
                raise _Invalid(f"npu.{key}", f"{getattr(self, key)!r} is not a Vela configuration name")


@dataclass(frozen=True)
class Validate(_Checked):
    """How the artifact is validated: which runner, its threads, and the top-1 agreement with reference kernels."""

    runner: Literal["litert-host", "tflm-host"]
    threads: int = field(default=1, metadata=_range(1, 64))
    min_top1_agreement: float = field(default=0.99, metadata=_range(0.0, 1.0))
    device: str = "host"  # also run on: host | qemu | ssh://user@host[:port] | adb[:SERIAL]

    def _check(self) -> None:
        from edgebuild.devices import parse_device
        from edgebuild.errors import ConfigError

        try:
            parse_device(self.device)
        except ConfigError as e:
            raise _Invalid("validate.device", e.message, e.hint) from None


@dataclass(frozen=True)
class Target(_Checked):
    """A device profile: what runs the model there and what the model must fit in."""

    name: str
    description: str
    runtime: Literal["litert", "tflm"]
    cpu: str
    precision: Precision
    budgets: Budgets
    validate: Validate
    sparsity: Sparsity = Sparsity()
    memory: Memory | None = None
    firmware: Firmware = Firmware()
    npu: Npu | None = None
    device: Device = Device()
    source: str = field(default="", metadata={"internal": True})

    @property
    def toolchain(self) -> Toolchain:
        """The compiler family that builds this target's firmware."""
        return TOOLCHAINS[self.firmware.toolchain]

    def machine_value(self, key: str) -> str:
        """The value of one of ``MACHINE_KEYS``: ``cpu`` or a ``firmware.*`` key."""
        assert key in MACHINE_KEYS, key
        return self.cpu if key == "cpu" else str(getattr(self.firmware, key.removeprefix("firmware.")))

    def _check(self) -> None:
        if self.validate.runner not in RUNNER_FOR_RUNTIME[self.runtime]:
            raise _Invalid(
                "validate.runner",
                f"runner {self.validate.runner!r} cannot run the {self.runtime!r} runtime",
                f"use {' or '.join(RUNNER_FOR_RUNTIME[self.runtime])}",
            )
        if self.precision.mode not in PRECISION_FOR_RUNTIME[self.runtime]:
            raise _Invalid(
                "precision",
                f"the {self.runtime!r} runtime has no kernels for {self.precision.mode} models",
                f"use one of: {', '.join(PRECISION_FOR_RUNTIME[self.runtime])}",
            )
        if self.runtime == "tflm" and self.validate.device not in ("host", "qemu"):
            raise _Invalid(
                "validate.device",
                f"{self.validate.device!r} runs LiteRT on Linux; a TFLM target validates on the TFLM interpreter",
                "use device = 'host', or 'qemu' to also run the firmware on an emulated Cortex-M board",
            )
        machine = self.device.qemu_machine
        if machine and (self.runtime != "tflm" or BOARDS[machine].cpu != self.cpu):
            raise _Invalid(
                "device.qemu_machine",
                f"{machine} emulates a {BOARDS[machine].cpu}, not this target's {self.runtime} {self.cpu}",
                "boards: " + ", ".join(f"{b.machine} ({b.cpu})" for b in BOARDS.values()),
            )
        if self.runtime == "tflm" and self.memory is None:
            raise _Invalid("memory", "a TFLM target needs a [memory] table", "add flash_bytes and ram_bytes")
        for key in self.toolchain.required if self.runtime == "tflm" else ():
            if not self.machine_value(key).strip():
                raise _Invalid(key, f"the {self.firmware.toolchain} toolchain needs {key}", f"e.g. {MACHINE_KEYS[key]}")
        if self.npu is not None and (self.runtime != "tflm" or self.precision.mode != "int8"):
            raise _Invalid("npu", "an Ethos-U NPU needs runtime = 'tflm' and full-integer int8 precision")
        if self.memory is not None:
            if self.budgets.model_bytes is not None and self.budgets.model_bytes > self.memory.flash_bytes:
                raise _Invalid(
                    "budgets.model_bytes",
                    f"model_bytes {self.budgets.model_bytes} is more than the device's "
                    f"flash_bytes {self.memory.flash_bytes}",
                )
            if self.budgets.arena_bytes is not None and self.budgets.arena_bytes > self.memory.ram_bytes:
                raise _Invalid(
                    "budgets.arena_bytes",
                    f"arena_bytes {self.budgets.arena_bytes} is more than the device's "
                    f"ram_bytes {self.memory.ram_bytes}",
                )


# ---------------------------------------------------------------- recipes


@dataclass(frozen=True)
class ModelSpec(_Checked):
    """The float model: a built-in architecture at a width, or a saved Keras model."""

    architecture: str | None = None
    width: float = field(default=1.0, metadata=_range(0.05, 16.0))
    path: str | None = None

    def _check(self) -> None:
        if (self.architecture is None) == (self.path is None):
            raise _Invalid(
                "model",
                "give exactly one of model.architecture and model.path",
                f"architectures: {', '.join(BUILTIN_ARCHITECTURES)}; or a .keras / .h5 / SavedModel path",
            )
        if self.architecture is not None:
            _check_known("model.architecture", "architecture", self.architecture, BUILTIN_ARCHITECTURES)


@dataclass(frozen=True)
class Train(_Checked):
    """Float training of the model in [model] (the teacher, when the recipe distills)."""

    epochs: int = field(default=10, metadata=_range(0, 10_000))
    batch_size: int = field(default=64, metadata=_range(1, 65_536))
    learning_rate: float = field(default=1e-3, metadata=_range(0.0, 10.0, lo_open=True))
    validation_fraction: float = field(default=0.1, metadata=_range(0.0, 0.5))


@dataclass(frozen=True)
class Distill(_Checked):
    """Knowledge distillation: a narrower student learns from the float model's soft labels."""

    student_width: float = field(metadata=_range(0.05, 16.0))
    student_architecture: str | None = None
    temperature: float = field(default=4.0, metadata=_range(0.0, 100.0, lo_open=True))
    alpha: float = field(default=0.1, metadata=_range(0.0, 1.0))
    epochs: int = field(default=10, metadata=_range(1, 10_000))
    learning_rate: float | None = field(default=None, metadata=_range(0.0, 10.0, lo_open=True))

    def _check(self) -> None:
        arch = self.student_architecture
        if arch is not None:
            _check_known("distill.student_architecture", "architecture", arch, BUILTIN_ARCHITECTURES)


@dataclass(frozen=True)
class Prune(_Checked):
    """Pruning to the target's sparsity: channel removal in steps, or TF-MOT magnitude pruning."""

    schedule: Literal["polynomial", "constant"] = "polynomial"  # magnitude pruning's sparsity schedule
    epochs: int = field(default=4, metadata=_range(1, 10_000))  # fine-tuning epochs in all
    learning_rate: float | None = field(default=None, metadata=_range(0.0, 10.0, lo_open=True))
    criterion: Literal["l1", "l2", "taylor"] = "l2"  # channel importance
    steps: int = field(default=2, metadata=_range(1, 20))  # channel pruning in this many steps
    sparsity: float | None = field(default=None, metadata=_range(0.0, 0.95, lo_open=True))  # None: the target's


@dataclass(frozen=True)
class Qat(_Checked):
    """TF-MOT quantization-aware training with the prune-preserving scheme."""

    epochs: int = field(default=3, metadata=_range(1, 10_000))
    learning_rate: float | None = field(default=None, metadata=_range(0.0, 10.0, lo_open=True))


@dataclass(frozen=True)
class Search(_Checked):
    """The compression plans ``edgebuild search`` explores, and how (see ``search.py``)."""

    student_width: tuple[float, ...] = (0.5, 0.75, 1.0)
    sparsity: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)  # of the channels; 0 = no pruning
    quantization: tuple[Literal["ptq", "qat"], ...] = ("ptq", "qat")
    precision: tuple[str, ...] = ()  # converter modes (int8, dynamic, float16, float32); () = the target's
    algorithm: Literal["grid", "random", "optuna"] = "optuna"
    trials: int = field(default=12, metadata=_range(1, 10_000))  # random and optuna (a grid runs all)
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1))
    stop_margin: float = field(default=0.02, metadata=_range(0.0, 1.0))  # early stop: past the budget by this
    choose: Literal["most_accurate", "smallest"] = "most_accurate"  # of the plans that meet every budget

    def _check(self) -> None:
        for key in ("student_width", "sparsity", "quantization"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                raise _Invalid(f"search.{key}", "needs one value or more, each once")
        for width in self.student_width:
            _check_range("search.student_width", width, _range(0.05, 16.0))
        for sparsity in self.sparsity:
            _check_range("search.sparsity", sparsity, _range(0.0, 0.95))
        for mode in self.precision:
            _check_known("search.precision", "precision", mode, ("int8", "dynamic", "float16", "float32"))


@dataclass(frozen=True)
class FirmwareNames(_Checked):
    """Names in the generated C: the identifier prefix and the file base name."""

    prefix: str | None = None  # C identifier prefix; default: made from the recipe name
    basename: str = "model"  # files <basename>_data.h, <basename>_data.cc, <basename>_ops.h

    def _check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.basename):
            raise _Invalid(
                "firmware.basename", f"{self.basename!r} is not a safe file base name", "use letters, digits, _ and -"
            )


@dataclass(frozen=True)
class Recipe(_Checked):
    """What to build: a model, a dataset, and the compression plan."""

    name: str
    dataset: str
    model: ModelSpec
    description: str = ""
    task: Literal["classification", "regression", "reconstruction"] = "classification"
    seed: int = field(default=0, metadata=_range(0, 2**31 - 1))
    train: Train = Train()
    budgets: TaskBudgets = TaskBudgets()
    distill: Distill | None = None
    prune: Prune | None = None
    qat: Qat | None = None
    firmware: FirmwareNames = FirmwareNames()
    search: Search | None = None
    source: str = field(default="", metadata={"internal": True})

    def _check(self) -> None:
        if not self.name.strip():
            raise _Invalid("name", "the recipe name is empty")
        if self.dataset in BUILTIN_DATASETS and BUILTIN_DATASETS[self.dataset] != self.task:
            raise _Invalid(
                "task",
                f"the {self.dataset} dataset is for {BUILTIN_DATASETS[self.dataset]}, not {self.task}",
                f"set task = '{BUILTIN_DATASETS[self.dataset]}', or use a dataset for {self.task}",
            )
        if self.task != "classification" and self.prune is not None and self.prune.criterion == "taylor":
            raise _Invalid(
                "prune.criterion",
                f"the taylor importance is measured with the cross-entropy of class labels, which a {self.task} "
                "model does not have",
                "use criterion = 'l1' or 'l2'",
            )
        if self.task == "regression" and self.budgets.max_mae_increase is None:
            raise _Invalid(
                "budgets.max_mae_increase",
                "a regression recipe needs a budget on how much the MAE may grow, in the units of y",
                "add [budgets] max_mae_increase = ...",
            )
        kind, _, arg = self.dataset.partition(":")
        if not ((self.dataset in BUILTIN_DATASETS) or (kind == "npz" and arg)):
            raise _Invalid(
                "dataset",
                f"unknown dataset {self.dataset!r}",
                _suggest(self.dataset, BUILTIN_DATASETS, "datasets") + " or npz:PATH",
            )
        if self.distill is not None and self.distill.student_architecture is None and self.model.path:
            raise _Invalid(
                "distill.student_architecture",
                "a recipe that loads its model from a file must name the student's architecture",
                f"set distill.student_architecture to one of: {', '.join(BUILTIN_ARCHITECTURES)}",
            )

    @property
    def student_architecture(self) -> str | None:
        """The architecture of the model that gets deployed when the recipe distills."""
        if self.distill is None:
            return None
        return self.distill.student_architecture or self.model.architecture

    def resolve_path(self, value: str, key: str) -> Path:
        """A path from the recipe, relative to the recipe's folder (the project), symlinks resolved.

        Raises ConfigError for an absolute path, one that leaves the project (through
        ``..`` or a symlink), or one inside the project's ``build/`` output folder.
        """
        where = f"{self.source}: key '{key}'"
        check_path_text(value, where)
        project = Path(self.source).parent.resolve()
        raw = Path(value)
        if raw.is_absolute() or value.startswith("~"):
            raise ConfigError(
                f"{where}: {value!r} is an absolute path",
                hint="paths in a recipe are relative to its folder: keep the file in the project",
            )
        try:
            resolved = (project / raw).resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            raise ConfigError(f"{where}: {value!r} is a symlink loop", hint="point the link at a real file") from None
        if not resolved.is_relative_to(project):
            raise ConfigError(
                f"{where}: {value!r} leads outside the project folder {project}",
                hint="keep data and models inside the project (no .. and no links out of it)",
            )
        if resolved.is_relative_to(project / "build"):
            raise ConfigError(
                f"{where}: {value!r} is inside the build output folder, which every build replaces",
                hint="keep inputs elsewhere in the project",
            )
        return resolved


# ---------------------------------------------------------------- loading


def _suggest(word: str, choices: typing.Iterable[str], what: str) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid {what}: {', '.join(choices)}"


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type):
        return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}.get(
            tp.__name__, f"a [{tp.__name__.lower()}] table"
        )
    return str(tp)


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(value, options[0], key)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Invalid(key, f"expected a list, got {type(value).__name__} {value!r}")
        item_type = typing.get_args(tp)[0]
        return tuple(_convert(item, item_type, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = _suggest(str(value), [str(c) for c in choices], "values")
            raise _Invalid(key, f"{value!r} is not allowed; expected {_type_name(tp)}", hint)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Invalid(key, f"expected a [{key}] table, got {type(value).__name__}")
        return _parse_table(tp, value, key + ".")  # type: ignore[arg-type]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, bool) and tp is not bool) or not isinstance(value, tp):
        raise _Invalid(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if tp is float and value != value:
        raise _Invalid(key, "nan is not a number this key accepts")
    return value


def _parse_table(cls: type, table: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in table:
        if prefix + key in RENAMED_KEYS:
            raise _Invalid(prefix + key, "this key was renamed", RENAMED_KEYS[prefix + key])
        if key not in fields:
            raise _Invalid(prefix + key, "unknown key", _suggest(key, fields, "keys"))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in table:
            if f.default is dataclasses.MISSING:
                raise _Invalid(key, "missing required key", f"add {key} ({_type_name(hints[name])})")
            continue
        values[name] = _convert(table[name], hints[name], key)
    try:
        return cls(**values)
    except _Invalid as e:
        raise _Invalid(e.key if e.key.startswith(prefix) else prefix + e.key, e.detail, e.hint) from None


def _read_toml(path: Path) -> dict[str, Any]:
    data = read_limited(path, "", max_bytes=MAX_TOML_BYTES, what=".toml file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})", hint="save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}", hint="fix the syntax at that line") from None
    except RecursionError:
        raise ConfigError(
            f"{path}: arrays or tables nested too deeply to read", hint="is this the right file?"
        ) from None


def _load(cls: type, path: Path) -> Any:
    table = _read_toml(path)
    try:
        obj = _parse_table(cls, table)
    except _Invalid as e:
        raise ConfigError(f"{path}: key '{e.key}': {e.detail}", hint=e.hint) from None
    return dataclasses.replace(obj, source=str(path))


def load_target(path: Path) -> Target:
    """Read and check a target profile. Raises ConfigError naming the file and key."""
    return typing.cast(Target, _load(Target, path))


def load_recipe(path: Path) -> Recipe:
    """Read and check a recipe. Raises ConfigError naming the file and key."""
    return typing.cast(Recipe, _load(Recipe, path))


# ---------------------------------------------------------------- finding by name


def _data_dir(kind: str) -> Path:
    return Path(__file__).parent / kind


def builtin_names(kind: str) -> list[str]:
    """The names of the shipped ``targets`` or ``recipes``."""
    return sorted(p.stem for p in _data_dir(kind).glob("*.toml"))


def all_names(kind: str, project: Path) -> list[str]:
    """Names of the shipped ``targets`` or ``recipes`` and those in ``project/<kind>/``."""
    return sorted(set(builtin_names(kind)) | {p.stem for p in (project / kind).glob("*.toml")})


def find_file(kind: str, name_or_path: str, project: Path) -> Path:
    """Resolve a target or recipe given by path or by name.

    A value that looks like a path (has a slash or ends in .toml) is taken as one.
    A name is looked up in ``project/<kind>/`` first, then among the shipped files.
    Raises ConfigError with the nearest name when nothing matches.
    """
    check_path_text(name_or_path, f"--{kind[:-1]}")
    if "/" in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not (path.exists() or path.is_symlink()):
            raise ConfigError(f"{kind[:-1]} file {name_or_path!r} does not exist")
        return path  # the loader says what is wrong with anything that is not a readable .toml file
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name_or_path):
        raise ConfigError(f"{name_or_path!r} is not a valid {kind[:-1]} name")
    for folder in (project / kind, _data_dir(kind)):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.exists() or candidate.is_symlink():
            return candidate
    known = all_names(kind, project)
    raise ConfigError(
        f"unknown {kind[:-1]} {name_or_path!r}",
        hint=_suggest(name_or_path, known, kind) + f"; `edgebuild {kind}` lists them",
    )
