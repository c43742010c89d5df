"""Property-based fuzzing: whatever the bytes, only EdgebuildError may escape.

The loaders get TOML built from the real keys with values of every type (and raw
text); the inspector gets real .tflite files with bytes flipped, cut, spliced and
repeated. The default run is short; the long run is documented in the README:

    EDGEBUILD_FUZZ_EXAMPLES=10000 .venv/bin/pytest tests/test_fuzz.py
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgebuild.errors import EdgebuildError
from edgebuild.inspect import inspect_tflite
from edgebuild.schema import load_recipe, load_target
from tests.conftest import shipped
from tests.models import tiny_tflite

EXAMPLES = int(os.environ.get("EDGEBUILD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 150,  # the short run in CI is the same every time
)

RECIPE_KEYS = {
    "": ["name", "dataset", "description", "seed"],
    "model": ["architecture", "width", "path"],
    "train": ["epochs", "batch_size", "learning_rate", "validation_fraction"],
    "distill": ["student_width", "student_architecture", "temperature", "alpha", "epochs", "learning_rate"],
    "prune": ["schedule", "epochs", "learning_rate", "criterion", "steps"],
    "qat": ["epochs", "learning_rate"],
    "firmware": ["prefix", "basename"],
}
TARGET_KEYS = {
    "": ["name", "description", "runtime", "cpu"],
    "precision": ["weights", "activations", "io"],
    "sparsity": ["target", "structure", "exploitable"],
    "memory": [
        "flash_bytes",
        "ram_bytes",
        "flash_origin",
        "ram_origin",
        "runtime_flash_bytes",
        "runtime_ram_bytes",
        "application_flash_bytes",
        "application_ram_bytes",
    ],
    "firmware": ["section", "arena_margin", "toolchain", "fpu", "arch", "abi"],
    "npu": ["accelerator", "system_config", "memory_mode", "optimise"],
    "budgets": ["max_accuracy_drop", "model_bytes", "arena_bytes"],
    "validate": ["runner", "threads", "min_top1_agreement", "device"],
}
WORDS = ["mnist", "digits", "npz:data.npz", "small_cnn", "mlp", "int8", "float16", "float32", "litert", "tflm",
         "channel", "2:4", "unstructured", "litert-host", "tflm-host", "qemu", "ssh://a@b:22", "adb", "taylor",
         "ethos-u55-128", "riscv64-unknown-elf", "rv32imc", "../x", "/etc/passwd", "", "a\"; int x; //"]  # fmt: skip

scalars = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4))


def toml_value(value: Any) -> str:
    """A TOML literal for a scalar or a list of scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 2**63 else json.dumps(str(value))
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def documents(draw: st.DrawFn, keys: dict[str, list[str]]) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=200))  # raw text: mostly not TOML at all
    lines = []
    for table, names in keys.items():
        if table and draw(st.booleans()):
            continue
        if table:
            lines.append(f"[{table}]")
        for name in draw(st.lists(st.sampled_from([*names, "unknown_key"]), unique=True, max_size=len(names) + 1)):
            lines.append(f"{name} = {toml_value(draw(values))}")
    return "\n".join(lines) + "\n"


def _load(loader: Any, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(EdgebuildError):
            loader(path)


@FUZZ
@given(documents(RECIPE_KEYS))
def test_recipe_loader(text: str) -> None:
    _load(load_recipe, text)


@FUZZ
@given(documents(TARGET_KEYS))
def test_target_loader(text: str) -> None:
    _load(load_target, text)


@FUZZ
@given(st.data())
def test_mutated_shipped_files(data: st.DataObject) -> None:
    kind, name = data.draw(st.sampled_from([("recipes", "mnist"), ("targets", "cortex-m55-u55"), ("targets", "rpi4")]))
    text = shipped(kind, name)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    text = text[:start] + data.draw(st.text(max_size=20)) + text[end:]
    _load(load_recipe if kind == "recipes" else load_target, text)


def seed_models() -> list[bytes]:
    """Real .tflite files: the shared tiny CNN in int8 and float32 (conv, depthwise, pool, dense, softmax)."""
    return [tiny_tflite("int8"), tiny_tflite("float32")]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "splice", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            data = data[:at]
        elif kind == "splice":
            data[at:at] = draw(st.binary(max_size=16))
        elif kind == "repeat" and data:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(st.data())
def test_tflite_inspector(data: st.DataObject) -> None:
    model = data.draw(mutated(seed_models()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(model)
        with contextlib.suppress(EdgebuildError):
            inspect_tflite(path, Path(tmp), tflm=False)
