"""``edgebuild.inspect`` on small real models in every precision, and on files that are not models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebuild.errors import EXIT_CONFIG, ConfigError
from edgebuild.inspect import MAX_TFLITE_BYTES, format_inspection, inspect_tflite
from edgebuild.tf import keras, seed_everything
from edgebuild.tflite import convert_keras, io_details, make_interpreter

MODES = ("int8", "float32", "dynamic", "float16")
# Conv2D(8, 3) on 10x10x1 -> 8x8x8 (512 outputs x 9 MACs), DepthwiseConv2D(3) -> 6x6x8 (288 x 9),
# Dense(8) on 288 inputs (8 x 288). The dense kernel has over 1024 weights, so dynamic-range
# conversion makes it int8 (a hybrid FULLY_CONNECTED); the small convolutions stay float.
EXPECTED_MACS = {"CONV_2D": 512 * 9, "DEPTHWISE_CONV_2D": 288 * 9, "FULLY_CONNECTED": 8 * 288}
EXPECTED_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1}


def _write_models(folder: Path) -> tuple[dict[str, Path], int]:
    """A small CNN with random non-zero weights (so no bias is dropped or shared), in every mode."""
    seed_everything(0)
    k = keras()
    model = k.Sequential(
        [
            k.Input((10, 10, 1)),
            k.layers.Conv2D(8, 3, activation="relu"),
            k.layers.DepthwiseConv2D(3),
            k.layers.Flatten(),
            k.layers.Dense(8),
            k.layers.Softmax(),
        ]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        layer.set_weights([rng.normal(0.0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()])
    x = rng.random((32, 10, 10, 1)).astype(np.float32)
    paths = {}
    for mode in MODES:
        paths[mode] = folder / f"{mode}.tflite"
        paths[mode].write_bytes(convert_keras(model, mode, "int8", x if mode == "int8" else None))
    paths["int8-float-io"] = folder / "int8-float-io.tflite"
    paths["int8-float-io"].write_bytes(convert_keras(model, "int8", "float32", x))
    return paths, int(model.count_params())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], int]:
    return _write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with two target profiles of its own: a float32 TFLM board and a very small one."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "targets").mkdir()
    common = """
runtime = "tflm"
cpu = "cortex-m4"
[memory]
flash_bytes = 1_048_576
ram_bytes = 262_144
[validate]
runner = "tflm-host"
"""
    (folder / "targets" / "mcu-float.toml").write_text(
        'name = "mcu-float"\ndescription = "float32 TFLM board"\n'
        + common
        + '[precision]\nweights = "float32"\nactivations = "float32"\nio = "float32"\n'
        + "[budgets]\nmodel_bytes = 524_288\narena_bytes = 163_840\nmax_accuracy_drop = 0.01\n"
    )
    (folder / "targets" / "mcu-tiny.toml").write_text(
        'name = "mcu-tiny"\ndescription = "a board too small for anything"\n'
        + common
        + "[precision]\n[budgets]\nmodel_bytes = 1_000\narena_bytes = 512\nmax_accuracy_drop = 0.01\n"
    )
    return folder


@pytest.fixture(scope="module")
def inspected(built: tuple[dict[str, Path], int], project: Path) -> dict[str, dict[str, Any]]:
    paths, _ = built
    return {mode: inspect_tflite(path, project) for mode, path in paths.items()}


def _target(info: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in info["targets"] if t["name"] == name)


def test_ops_parameters_and_macs(built: tuple[dict[str, Path], int], inspected: dict[str, dict[str, Any]]) -> None:
    _, keras_params = built
    for mode in MODES:
        info = inspected[mode]
        ops = {op: n for op, n in info["ops"].items() if op != "DEQUANTIZE"}
        assert ops == EXPECTED_OPS, mode
        assert info["parameters"] == keras_params, mode
        assert info["macs"] == sum(EXPECTED_MACS.values()), mode
        assert {op: m for op, m in info["macs_by_op"].items() if m} == EXPECTED_MACS, mode
        assert info["tensors"]["count"] > info["tensors"]["constant"] > 0
        json.dumps(info)  # JSON-able as it is
    assert inspected["float16"]["ops"]["DEQUANTIZE"] >= 3  # float16 weights, dequantized at load
    # int8 weights are a quarter of float32 ones (int32 biases aside).
    assert (
        inspected["int8"]["weight_bytes"] < inspected["float16"]["weight_bytes"] < inspected["float32"]["weight_bytes"]
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("int8", "int8"),
        ("int8-float-io", "int8"),
        ("float32", "float32"),
        ("float16", "float16"),
        ("dynamic", "dynamic"),
    ],
)
def test_precision(inspected: dict[str, dict[str, Any]], mode: str, expected: str) -> None:
    precision = inspected[mode]["precision"]
    assert precision["mode"] == expected
    assert (precision["hybrid_ops"] == {"FULLY_CONNECTED": 1}) == (mode == "dynamic")
    assert bool(precision["float_ops"]) == (mode in ("float32", "float16", "dynamic"))


def test_io_matches_litert(built: tuple[dict[str, Path], int], inspected: dict[str, dict[str, Any]]) -> None:
    paths, _ = built
    for mode in ("int8", "int8-float-io", "float32"):
        inputs, outputs = io_details(make_interpreter(paths[mode].read_bytes()))
        mine_all = [*inspected[mode]["inputs"], *inspected[mode]["outputs"]]
        for mine, litert in zip(mine_all, [*inputs, *outputs], strict=True):
            assert (mine["name"], tuple(mine["shape"]), mine["dtype"]) == (litert.name, litert.shape, litert.dtype)
            q = mine["quantization"]
            if litert.scale == 0:
                assert q is None
            else:
                assert q["kind"] == "per-tensor" and q["zero_point"] == litert.zero_point
                assert q["scale"] == pytest.approx(litert.scale)
    assert inspected["int8"]["inputs"][0]["dtype"] == "int8"
    assert inspected["int8-float-io"]["inputs"][0]["dtype"] == "float32"


def test_int8_runs_on_every_shipped_target(inspected: dict[str, dict[str, Any]]) -> None:
    for mode in ("int8", "int8-float-io"):
        info = inspected[mode]
        assert info["tflm"]["ok"] and info["tflm"]["arena_bytes"] > 0, info["tflm"]
        assert info["litert"]["ok"]
        for name in ("android", "rpi4", "cortex-m4", "cortex-m7"):
            assert _target(info, name)["ok"], (mode, _target(info, name))
    assert _target(inspected["int8-float-io"], "cortex-m4")["notes"]  # float io on an int8-io profile


def test_dynamic_range_is_refused_by_tflm_targets(inspected: dict[str, dict[str, Any]]) -> None:
    info = inspected["dynamic"]
    assert not info["tflm"]["ok"] and info["tflm"]["arena_bytes"] is None and info["tflm"]["error"]
    m4 = _target(info, "cortex-m4")
    assert not m4["ok"]
    assert any("hybrid" in reason and "FULLY_CONNECTED" in reason for reason in m4["reasons"]), m4
    assert not _target(info, "mcu-float")["ok"]  # a float32 TFLM board has no hybrid kernels either
    assert not _target(info, "rpi4")["ok"]  # LiteRT runs it, but rpi4 wants int8
    assert info["litert"]["ok"]


def test_float_models_on_targets(inspected: dict[str, dict[str, Any]]) -> None:
    f32, f16 = inspected["float32"], inspected["float16"]
    assert f32["tflm"]["ok"] and f32["tflm"]["arena_bytes"] > 0
    assert _target(f32, "mcu-float")["ok"], _target(f32, "mcu-float")
    assert any("float ops" in reason for reason in _target(f32, "cortex-m4")["reasons"])
    assert f16["litert"]["ok"] and not f16["tflm"]["ok"]
    assert any("float16" in reason for reason in _target(f16, "mcu-float")["reasons"])


def test_budgets_of_a_project_target(inspected: dict[str, dict[str, Any]]) -> None:
    tiny = _target(inspected["int8"], "mcu-tiny")
    assert not tiny["ok"]
    assert any(r.startswith("arena ") and "512 B" in r for r in tiny["reasons"]), tiny
    assert any(r.startswith("model ") and "1,000 B" in r for r in tiny["reasons"]), tiny


def test_format_inspection(inspected: dict[str, dict[str, Any]]) -> None:
    text = format_inspection(inspected["int8"])
    arena = inspected["int8"]["tflm"]["arena_bytes"]
    for needle in ("precision: int8", "CONV_2D", "4,608 MACs", f"arena of {arena:,} B", "cortex-m4", "mcu-tiny"):
        assert needle in text, needle
    assert "hybrid" in format_inspection(inspected["dynamic"])


def _rewrite_opcodes(source: bytes, change: Any) -> bytes:
    """The model with ``change(operator_code)`` applied to each operator code, written with the schema's builder."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(source, 0))
    for code in model.operatorCodes:
        change(code)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_custom_ops_and_old_style_op_codes(built: tuple[dict[str, Path], int], tmp_path: Path) -> None:
    source = built[0]["int8"].read_bytes()

    def old_style(code: Any) -> None:  # op codes under 127 as old converters wrote them
        code.deprecatedBuiltinCode, code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode), 0

    def softmax_to_custom(code: Any) -> None:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == 25:  # SOFTMAX
            code.builtinCode = code.deprecatedBuiltinCode = 32  # CUSTOM
            code.customCode = b"MY_CUSTOM_OP"

    old = tmp_path / "old.tflite"
    old.write_bytes(_rewrite_opcodes(source, old_style))
    assert inspect_tflite(old, tmp_path)["ops"] == EXPECTED_OPS

    custom = tmp_path / "custom.tflite"
    custom.write_bytes(_rewrite_opcodes(source, softmax_to_custom))
    info = inspect_tflite(custom, tmp_path)
    assert info["ops"] == {**{op: n for op, n in EXPECTED_OPS.items() if op != "SOFTMAX"}, "MY_CUSTOM_OP": 1}
    assert info["custom_ops"] == ["MY_CUSTOM_OP"]
    assert not info["litert"]["ok"] and "MY_CUSTOM_OP" in info["litert"]["error"]
    for name in ("rpi4", "cortex-m4"):
        target = _target(info, name)
        assert not target["ok"] and any("MY_CUSTOM_OP" in r for r in target["reasons"]), target


def _assert_config_error(path: Path, *needles: str) -> None:
    with pytest.raises(ConfigError) as caught:
        inspect_tflite(path, path.parent)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_files_that_are_not_models(built: tuple[dict[str, Path], int], tmp_path: Path) -> None:
    good = built[0]["int8"].read_bytes()
    cases = {
        "missing.tflite": (None, "does not exist"),
        "empty.tflite": (b"", "empty"),
        "garbage.tflite": (np.random.default_rng(1).bytes(4096), "not a .tflite"),
        "text.tflite": (b"hello, world\n", "not a .tflite"),
        "truncated.tflite": (good[: len(good) // 2], "truncated"),
        "header-only.tflite": (good[:64], "truncated"),
        "bad-body.tflite": (good[:8] + np.random.default_rng(2).bytes(len(good) - 8), "corrupt"),
    }
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        _assert_config_error(path, needle)
    _assert_config_error(tmp_path, "folder")
    huge = tmp_path / "huge.tflite"
    with huge.open("wb") as f:  # sparse: takes no disk space
        f.truncate(MAX_TFLITE_BYTES + 1)
    _assert_config_error(huge, f"more than the {MAX_TFLITE_BYTES:,} edgebuild reads")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.tflite"
    path.write_bytes(b"\x00" * 64)
    path.chmod(0)
    _assert_config_error(path, "permission denied")


def test_inspect_does_not_import_tensorflow(built: tuple[dict[str, Path], int], tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from edgebuild.inspect import inspect_tflite\n"
        f"inspect_tflite(Path({str(built[0]['int8'])!r}), Path({str(tmp_path)!r}))\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert proc.stdout.strip().splitlines()[-1] == "False"
