"""``edgebuild.inspect`` on small real models in every precision, and on files that are not models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgebuild.errors import EXIT_CONFIG, ConfigError
from edgebuild.inspect import MAX_TFLITE_BYTES, format_inspection, inspect_tflite
from edgebuild.tflite import io_details, make_interpreter
from tests.models import MACS, OPS, tiny_keras, tiny_tflite

MODES = ("int8", "float32", "dynamic", "float16")
EXPECTED_OPS = dict(Counter(OPS))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], int]:
    """The shared tiny CNN in every mode, and int8 with float32 io; its Keras parameter count."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for mode in MODES:
        paths[mode] = folder / f"{mode}.tflite"
        paths[mode].write_bytes(tiny_tflite(mode))
    paths["int8-float-io"] = folder / "int8-float-io.tflite"
    paths["int8-float-io"].write_bytes(tiny_tflite("int8", "float32"))
    return paths, int(tiny_keras().count_params())


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
        assert info["macs"] == sum(MACS.values()), mode
        assert {op: m for op, m in info["macs_by_op"].items() if m} == MACS, mode
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
    assert info["tflm"] == {  # TFLM's own words, from its interpreter
        "ok": False,
        "arena_bytes": None,
        "error": "Input type: FLOAT32 with filter type: INT8 not supported.; "
        "Node FULLY_CONNECTED (number 4) failed to prepare with status 1",
        "missing_ops": [],
    }
    hybrid = "hybrid ops (int8 weights, float activations), which TFLM has no kernels for: FULLY_CONNECTED"
    float_ops = (
        "float ops on an int8 target: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED ×2, SOFTMAX"
    )
    m4 = _target(info, "cortex-m4")
    assert not m4["ok"] and m4["reasons"] == [hybrid, float_ops], m4
    mcu_float = _target(info, "mcu-float")  # a float32 TFLM board has no hybrid kernels either
    assert not mcu_float["ok"] and mcu_float["reasons"] == [hybrid], mcu_float
    rpi4 = _target(info, "rpi4")  # LiteRT runs it, but rpi4 wants int8
    assert not rpi4["ok"] and rpi4["reasons"] == [float_ops], rpi4
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


def _config_error(path: Path) -> str:
    """The one-line ConfigError (exit 2) that inspecting ``path`` raises."""
    with pytest.raises(ConfigError) as caught:
        inspect_tflite(path, path.parent)
    assert caught.value.exit_code == EXIT_CONFIG
    return str(caught.value)


def test_files_that_are_not_models(built: tuple[dict[str, Path], int], tmp_path: Path) -> None:
    good = built[0]["int8"].read_bytes()
    not_tflite = "not a .tflite model (no TFL3 flatbuffer identifier at byte 4) (is this the right file?)"
    verifier = "TFLite's flatbuffer verifier rejects it (convert or download the model again)"
    cases = {
        "missing.tflite": (None, ".tflite file {path} does not exist"),
        "empty.tflite": (b"", "{path}: file is empty (0 bytes) (was the conversion interrupted?)"),
        "garbage.tflite": (np.random.default_rng(1).bytes(4096), f"{{path}}: {not_tflite}"),
        "text.tflite": (b"hello, world\n", f"{{path}}: {not_tflite}"),
        "truncated.tflite": (
            good[: len(good) // 2],
            f"{{path}}: corrupt or truncated .tflite ({len(good) // 2:,} bytes): {verifier}",
        ),
        "header-only.tflite": (good[:64], f"{{path}}: corrupt or truncated .tflite (64 bytes): {verifier}"),
        "bad-body.tflite": (
            good[:8] + np.random.default_rng(2).bytes(len(good) - 8),
            f"{{path}}: corrupt or truncated .tflite ({len(good):,} bytes): {verifier}",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        assert _config_error(path) == message.format(path=path)
    assert _config_error(tmp_path) == f"{tmp_path} is a folder, expected a .tflite file"
    huge = tmp_path / "huge.tflite"
    with huge.open("wb") as f:  # sparse: takes no disk space
        f.truncate(MAX_TFLITE_BYTES + 1)
    assert _config_error(huge) == (
        f"{huge} is {MAX_TFLITE_BYTES + 1:,} bytes, more than the {MAX_TFLITE_BYTES:,} edgebuild reads "
        "as a .tflite file (is this the right file?)"
    )


# Root reads a file of mode 000 through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: without them
# (setpriv drops them from the inherited and bounding sets) root is held to the mode like anyone.
WITHOUT_READ_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search"]
WITHOUT_READ_OVERRIDE += ["--bounding-set=-dac_override,-dac_read_search"]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.tflite"
    path.write_bytes(b"\x00" * 64)
    path.chmod(0)
    code = (
        "import sys\nfrom pathlib import Path\nfrom edgebuild.inspect import inspect_tflite\n"
        "try:\n    inspect_tflite(Path(sys.argv[1]), Path(sys.argv[1]).parent)\n"
        "except Exception as error:\n    print(type(error).__name__, error.exit_code, error)\n"
    )
    prefix = WITHOUT_READ_OVERRIDE if os.geteuid() == 0 else []
    proc = subprocess.run([*prefix, sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert proc.stdout == f"ConfigError 2 {path}: permission denied (make the file readable)\n", proc.stderr


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
