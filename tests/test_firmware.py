"""Firmware output: safe names, C that real compilers accept, the linker's fit check, the bundles."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from edgebuild.errors import BuildError
from edgebuild.firmware import (
    C_KEYWORDS,
    FirmwareModel,
    c_identifier,
    c_string,
    model_header,
    model_source,
    ops_header,
    resolver_method,
)
from edgebuild.runners.litert_host import LiteRTHost
from edgebuild.schema import find_file, load_target
from edgebuild.support import NPU_OP, TFLM_CUSTOM_OPS
from edgebuild.tflite import flatbuffer_ops, io_details, make_interpreter
from edgebuild.toolchain import compile_checks, link_check, parse_memory_usage
from tests.conftest import quick_project, run_cli
from tests.models import tiny_tflite

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")


@cache
def tflm_runtime() -> Path:
    """TFLM's own runtime: the ``_runtime.so`` of the tflite-micro wheel (its Python interpreter)."""
    spec = importlib.util.find_spec("tflite_micro.python.tflite_micro._runtime")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


@cache
def tflm_symbols() -> str:
    """The functions TFLM's runtime defines, demangled, one a line (``nm``)."""
    nm = ["nm", "--dynamic", "--demangle", "--defined-only", str(tflm_runtime())]
    return subprocess.run(nm, capture_output=True, text=True, check=True).stdout


def tflm_functions(prefix: str) -> set[str]:
    """The names after ``prefix`` of TFLM's ``tflite::micro::<prefix>...`` functions."""
    return set(re.findall(rf" tflite::micro::{prefix}(\w+)\(", tflm_symbols()))


def camel_case(op: str) -> str:
    """MAX_POOL_2D -> MaxPool2D, as TFLM writes op names in its function names."""
    return "".join(part if part[:1].isdigit() else part.capitalize() for part in op.split("_"))


# TFLM names each MicroMutableOpResolver method after its op's parse function: AddConv2D() is
# AddBuiltin(BuiltinOperator_CONV_2D, Register_CONV_2D(), ParseConv2D). The parse and Register_
# functions are in the runtime; the methods (inline, in micro_mutable_op_resolver.h) are not.
# Ops that share a parser (ParsePool, ParseReducer) have the op's name in CamelCase, like the
# others; AddCumSum, whose parser is ParseCumsum, is the header's one exception.
SHARED_PARSER = [
    "AVERAGE_POOL_2D",
    "L2_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "REDUCE_ALL",
    "REDUCE_MAX",
    "REDUCE_MIN",
    "SUM",
]


def tflm_resolver_methods() -> dict[str, str]:
    """TFLM's resolver method for each builtin op its runtime has a kernel (a ``Register_<OP>()``) for."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    builtin = {name for name in vars(schema.BuiltinOperator) if name.isupper()}
    parsers = {name.lower(): name for name in tflm_functions("Parse")}
    methods = {}
    for op in tflm_functions("Register_") & builtin:
        parser = parsers.get(op.replace("_", "").lower())
        methods[op] = "AddCumSum" if op == "CUMSUM" else f"Add{parser or camel_case(op)}"
    assert sorted(op for op in methods if op.replace("_", "").lower() not in parsers) == SHARED_PARSER
    return methods


HOSTILE_NAMES = [
    'a"; int x; //',
    "a-b",
    "a_b",
    "A_B",
    "int",
    "class",
    "9lives",
    "",
    "__reserved",
    "_Upper",
    "ünïcødé",
    "*/ #include <evil.h> /*",
    "name\nwith\nnewlines",
    "x" * 200,
]


def test_identifiers_are_valid_and_never_collide() -> None:
    made = [c_identifier(name) for name in HOSTILE_NAMES]
    for ident in made:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", ident), ident
        assert ident not in C_KEYWORDS
        assert "__" not in ident
        assert len(ident) <= 60
    assert len(set(made)) == len(made)
    assert c_identifier("mnist") == "mnist"  # a clean name stays as it is


@pytest.mark.parametrize("text", ['say "hi"', "back\\slash", "new\nline", "*/ /* ??= ??/", "ünï €", "tab\tend\0x"])
def test_c_string_round_trips_through_a_real_compiler(text: str, tmp_path: Path) -> None:
    source = tmp_path / "s.c"
    source.write_text(
        "#include <stdio.h>\n"
        f"static const char s[] = {c_string(text)};\n"
        "int main(void) { fwrite(s, 1, sizeof s - 1, stdout); return 0; }\n"
    )
    subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-Wtrigraphs", str(source), "-o", str(tmp_path / "s")], check=True
    )
    out = subprocess.run([str(tmp_path / "s")], capture_output=True, check=True).stdout
    assert out == text.encode("utf-8")


def test_resolver_methods_are_tflm_methods() -> None:
    methods = tflm_resolver_methods()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"} <= set(methods)  # read
    assert {op: resolver_method(op) for op in methods} == methods
    # Custom ops TFLM registers by name, AddDetectionPostprocess() being
    # AddCustom("TFLite_Detection_PostProcess", Register_DETECTION_POSTPROCESS()): the names are strings in the runtime.
    runtime = tflm_runtime().read_bytes()
    for op in TFLM_CUSTOM_OPS:
        assert b"\0" + op.encode() + b"\0" in runtime, op
    assert "DETECTION_POSTPROCESS" in tflm_functions("Register_")
    assert resolver_method("TFLite_Detection_PostProcess") == "AddDetectionPostprocess"
    # Vela's op: this runtime is built without the Ethos-U driver (its GetString_ETHOSU() is empty),
    # so only the kernel function is there; test_cortex_m55_u55_reports_vela checks the op's name.
    assert "ETHOSU" in tflm_functions("Register_") and resolver_method(NPU_OP) == "AddEthosU"
    with pytest.raises(BuildError, match="custom op"):
        resolver_method("my_custom; evil()")


def firmware(name: str, section: str = "", arena: int | None = 3000) -> FirmwareModel:
    data = tiny_tflite()
    inputs, outputs = io_details(make_interpreter(data))
    return FirmwareModel(
        data=data,
        prefix=c_identifier(name),
        basename="model",
        arena_bytes=arena,
        arena_margin=0.1,
        section=section,
        inputs=[t.as_dict() for t in inputs],
        outputs=[t.as_dict() for t in outputs],
        labels=("cat", 'dog "rex"', "*/ bird"),
        ops=sorted(set(flatbuffer_ops(data))),
    )


def write(folder: Path, model: FirmwareModel) -> None:
    header, source, ops = model.files
    (folder / header).write_text(model_header(model))
    (folder / source).write_text(model_source(model))
    (folder / ops).write_text(ops_header(model))


def test_header_describes_the_model(tmp_path: Path) -> None:
    model = firmware("kws")
    text = model_header(model)
    assert f"#define KWS_MODEL_BYTES {len(model.data)}" in text
    assert "#define KWS_TENSOR_ARENA_MIN_BYTES 3000" in text
    assert "#define KWS_TENSOR_ARENA_BYTES 3312" in text  # +10 %, rounded up to 16
    assert "#define KWS_INPUT_SHAPE {1, 10, 10, 1}" in text
    assert f"#define KWS_INPUT_ZERO_POINT {model.inputs[0]['zero_point']}" in text
    assert "kws_quantize_input(float x)" in text and "kws_dequantize_output(int8_t q)" in text
    assert model.sha256 in text and "edgebuild" in text
    source = model_source(model)
    assert "alignas(16) const unsigned char g_kws_model_data[KWS_MODEL_BYTES]" in source
    ops = ops_header(model)
    assert "#define KWS_OP_COUNT 6" in ops
    assert re.findall(r"resolver\.(\w+)\(\)", ops) == [
        "AddConv2D",
        "AddDepthwiseConv2D",
        "AddFullyConnected",
        "AddMaxPool2D",
        "AddReshape",
        "AddSoftmax",
    ]


def test_quantize_helpers_agree_with_the_model(tmp_path: Path) -> None:
    model = firmware("q")
    write(tmp_path, model)
    scale, zero = model.inputs[0]["scale"], model.inputs[0]["zero_point"]
    values = [-1.0, 0.0, 0.25, 0.5, 0.999, 1.0, 3.0]
    main = tmp_path / "main.c"
    main.write_text(
        '#include <stdio.h>\n#include "model_data.h"\n'
        "int main(void) { const float v[] = {" + ", ".join(f"{v}f" for v in values) + "};\n"
        '  for (unsigned i = 0; i < sizeof v / sizeof v[0]; ++i) printf("%d\\n", q_quantize_input(v[i]));\n'
        '  printf("%.6f\\n", q_dequantize_output(10)); return 0; }\n'
    )
    subprocess.run(
        [
            "gcc",
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{tmp_path}",
            str(main),
            "-x",
            "c",
            str(tmp_path / "model_data.cc"),
            "-o",
            str(tmp_path / "q"),
        ],
        check=True,
    )
    lines = subprocess.run([str(tmp_path / "q")], capture_output=True, text=True, check=True).stdout.split()
    expected = np.clip(np.round(np.array(values) / scale + zero), -128, 127).astype(int)
    assert [int(v) for v in lines[:-1]] == expected.tolist()
    out_scale, out_zero = model.outputs[0]["scale"], model.outputs[0]["zero_point"]
    assert float(lines[-1]) == pytest.approx((10 - out_zero) * out_scale, rel=1e-5)


@pytest.mark.parametrize("name", [*HOSTILE_NAMES[:6], "*/ #include <evil.h> /*"])
def test_any_name_compiles_as_c_and_cpp(name: str, tmp_path: Path) -> None:
    model = firmware(name, section=".rodata.model")
    write(tmp_path, model)
    target = load_target(find_file("targets", "cortex-m4", Path("/")))
    used = compile_checks(tmp_path, model, target, tmp_path)
    assert used[:2] == ["gcc", "g++"]
    for text in (model_header(model), model_source(model), ops_header(model)):
        assert "<evil.h>" not in text and "int x;" not in text


def test_ops_header_compiles_against_tflm_resolver_declarations(tmp_path: Path) -> None:
    model = firmware("ops")
    write(tmp_path, model)
    tflm = tmp_path / "tensorflow" / "lite" / "micro"
    tflm.mkdir(parents=True)
    methods = "\n".join(f"  TfLiteStatus {m}();" for m in sorted(set(tflm_resolver_methods().values())))
    (tflm / "micro_mutable_op_resolver.h").write_text(
        "typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;\n"
        "namespace tflite {\ntemplate <unsigned int tOpCount> class MicroMutableOpResolver {\n public:\n"
        f"{methods}\n}};\n}}\n"
    )
    main = tmp_path / "main.cc"
    main.write_text('#include "model_ops.h"\nint main() { ops_op_resolver_t r; return ops_register_ops(r); }\n')
    subprocess.run(
        ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", f"-I{tmp_path}", str(main)], check=True
    )


@needs_arm
@pytest.mark.parametrize("target_name", ["cortex-m4", "cortex-m7"])
def test_arm_compile_and_link_report(target_name: str, tmp_path: Path) -> None:
    target = load_target(find_file("targets", target_name, Path("/")))
    model = firmware("fit", section=".rodata.model")
    write(tmp_path, model)
    assert compile_checks(tmp_path, model, target, tmp_path) == ["gcc", "g++", "arm-none-eabi-gcc", "arm-none-eabi-g++"]
    regions = {r.name: r for r in link_check(tmp_path, model, target, tmp_path)}
    memory = target.memory
    assert memory is not None
    assert regions["FLASH"].total == memory.flash_bytes
    assert regions["RAM"].total == memory.ram_bytes
    # The linker counts the model, the runtime's estimate, the application and a little code; the
    # arena, the runtime's and the application's data in RAM. Each is a part of its region.
    reserve = memory.runtime_flash_bytes + memory.application_flash_bytes
    assert len(model.data) + reserve < regions["FLASH"].used < len(model.data) + reserve + 512
    ram = (model.arena_with_margin or 0) + memory.runtime_ram_bytes + memory.application_ram_bytes
    assert regions["RAM"].used >= ram
    assert regions["FLASH"].margin == regions["FLASH"].total - regions["FLASH"].used
    flash_parts = regions["FLASH"].parts
    assert flash_parts["model"] == len(model.data)
    assert flash_parts["runtime (estimate)"] == memory.runtime_flash_bytes
    assert flash_parts["application"] == memory.application_flash_bytes
    assert sum(flash_parts.values()) == regions["FLASH"].used
    assert regions["RAM"].parts["arena"] == model.arena_with_margin
    assert sum(regions["RAM"].parts.values()) == regions["RAM"].used


def test_memory_usage_table_parsing() -> None:
    text = (
        "Memory region         Used Size  Region Size  %age Used\n"
        "           FLASH:       39012 B         1 MB      3.72%\n"
        "             RAM:          64 KB       256 KB     25.00%\n"
    )
    regions = parse_memory_usage(text)
    assert [(r.name, r.used, r.total) for r in regions] == [("FLASH", 39012, 1048576), ("RAM", 65536, 262144)]


def _tiny_flash_target(project: Path) -> None:
    text = (project / "targets" / "cortex-m4-relaxed.toml").read_text()
    text = text.replace('name = "cortex-m4-relaxed"', 'name = "tiny-flash"')
    text = text.replace("flash_bytes = 1_048_576", "flash_bytes = 40_000").replace(
        "model_bytes = 524_288", "model_bytes = 30_000"
    )
    text = text.replace("runtime_flash_bytes = 98_304", "runtime_flash_bytes = 30_000")
    text = text.replace("application_flash_bytes = 32_768", "application_flash_bytes = 6_000")
    (project / "targets" / "tiny-flash.toml").write_text(text)


@pytest.mark.slow
@needs_arm
def test_tiny_flash_region_fails_with_exit_3_and_the_overflow(project: Path) -> None:
    quick_project(project)
    _tiny_flash_target(project)
    result = run_cli("--target", "tiny-flash", "--quiet", cwd=project)
    assert result.code == 3, result.err
    line = result.err.strip().splitlines()[-1]
    match = re.search(r"flash_region over by ([\d,]+) bytes", line)
    assert match, line
    assert int(match.group(1).replace(",", "")) > 0
    assert "MISSED" in result.err and "Traceback" not in result.err
    assert not (project / "build").exists()


@pytest.mark.slow
@needs_arm
def test_hostile_recipe_name_builds_compiling_c_and_bundles(project: Path, tmp_path: Path) -> None:
    quick_project(project, name='a"; int x; //')
    result = run_cli("--target", "cortex-m4-relaxed", "--quiet", cwd=project)
    assert result.code == 0, result.err
    (out,) = (project / "build").iterdir()
    out = out / "cortex-m4-relaxed"
    assert re.fullmatch(r"[A-Za-z0-9._-]+", out.parent.name)
    report = json.loads((out / "report.json").read_text())
    firmware_info = report["firmware"]
    assert firmware_info["compilers"] == ["gcc", "g++", "arm-none-eabi-gcc", "arm-none-eabi-g++"]
    assert {r["name"] for r in firmware_info["regions"]} == {"FLASH", "RAM"}
    prefix = firmware_info["prefix"]
    assert re.fullmatch(r"a_int_x_[0-9a-f]{8}", prefix)
    header = (out / "model_data.h").read_text()
    assert f"#define {prefix.upper()}_TENSOR_ARENA_MIN_BYTES {report['artifact']['arena_bytes']}" in header

    # Arduino library
    library = out / "arduino" / f"{prefix}_model"
    properties = dict(line.split("=", 1) for line in (library / "library.properties").read_text().splitlines())
    assert properties["name"] == f"{prefix}_model" and properties["includes"] == "model_data.h"
    assert sorted(p.name for p in (library / "src").iterdir()) == ["model_data.cc", "model_data.h", "model_ops.h"]
    sketch = (library / "examples" / f"{prefix}_inference" / f"{prefix}_inference.ino").read_text()
    assert f"{prefix}_register_ops(resolver)" in sketch and "void setup()" in sketch and "void loop()" in sketch

    # CMake target, used the way a firmware project uses it: add_subdirectory + link.
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\nproject(app C CXX)\n"
        f"add_subdirectory({out / 'cmake'} model)\nadd_executable(app main.cc)\n"
        f"target_link_libraries(app PRIVATE {prefix}_model)\n"
    )
    (app / "main.cc").write_text(
        '#include <cstdint>\n#include "model_data.h"\n'
        f"int main() {{ return g_{prefix}_model_data_len == {prefix.upper()}_MODEL_BYTES && "
        f"reinterpret_cast<std::uintptr_t>(g_{prefix}_model_data) % 16 == 0 ? 0 : 1; }}\n"
    )
    subprocess.run(["cmake", "-S", str(app), "-B", str(app / "build")], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(app / "build")], check=True, capture_output=True)
    subprocess.run([str(app / "build" / "app")], check=True)


@pytest.mark.slow
def test_rpi4_bundle_runs_its_inference_script(project: Path) -> None:
    quick_project(project)
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project)
    assert result.code == 0, result.err
    out = project / "build" / "quick" / "rpi4-relaxed"
    assert (out / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    card = json.loads((out / "model.json").read_text())
    assert card["inputs"][0]["dtype"] == "int8" and card["labels"][0] == "0"
    assert {"artifact", "float_teacher"} <= set(card["accuracy"])
    assert any(b["name"] == "accuracy_drop" for b in card["budgets"])
    from sklearn.datasets import load_digits

    digits = load_digits()
    sample = project / "seven.npy"
    np.save(sample, (digits.images[digits.target == 7][0] / 16.0).reshape(8, 8, 1).astype(np.float32))
    proc = subprocess.run(
        [sys.executable, str(out / "infer.py"), str(sample)], capture_output=True, text=True, check=True
    )
    # It prints the class the model gives (whether that is 7 depends on the trained weights).
    model = (out / "model.tflite").read_bytes()
    x = io_details(make_interpreter(model))[0][0].quantize(np.load(sample)[None])
    scores = LiteRTHost().run(model, x).outputs[0]
    assert scores[int(proc.stdout.split()[0])] == scores.max()


@pytest.mark.slow
def test_cortex_m55_u55_reports_vela(project: Path) -> None:
    quick_project(project)
    result = run_cli("--target", "cortex-m55-u55-relaxed", "--quiet", cwd=project)
    assert result.code == 0, result.err
    out = project / "build" / "quick" / "cortex-m55-u55-relaxed"
    npu = json.loads((out / "report.json").read_text())["npu"]
    assert npu["accelerator"] == "ethos-u55-128"
    assert npu["npu_cycles"] > 0 and npu["total_cycles"] >= npu["npu_cycles"]
    assert npu["sram_bytes"] > 0 and npu["cpu_ops"] == []
    assert flatbuffer_ops((out / "model.tflite").read_bytes()) == ["ethos-u"]
    assert "resolver.AddEthosU()" in (out / "model_ops.h").read_text()
    assert "NPU cycles" in (out / "report.md").read_text()
    assert '__attribute__((section(".rodata.model")))' in (out / "model_data.cc").read_text()


@pytest.mark.slow
def test_missing_arm_toolchain_warns_and_completes(project: Path, tmp_path: Path) -> None:
    quick_project(project)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcc", "g++", "cc", "as", "ld"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    env_path = os.environ["PATH"]
    os.environ["PATH"] = str(bin_dir)
    try:
        result = run_cli("--target", "cortex-m4-relaxed", cwd=project)
    finally:
        os.environ["PATH"] = env_path
    assert result.code == 0, result.err
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi" in result.err
    report = json.loads((project / "build" / "quick" / "cortex-m4-relaxed" / "report.json").read_text())
    assert report["firmware"]["link"].startswith("skipped")
    assert report["firmware"]["compilers"] == ["gcc", "g++"]
