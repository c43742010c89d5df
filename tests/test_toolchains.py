"""Toolchains per target: arm and RISC-V compilers, checked in preflight, used by the link stage (real compilers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgebuild.errors import ConfigError
from edgebuild.firmware import FirmwareModel, c_identifier, model_header, model_source, ops_header
from edgebuild.schema import builtin_names, find_file, load_target
from edgebuild.support import TOOLCHAINS
from edgebuild.tflite import flatbuffer_ops, io_details, make_interpreter
from edgebuild.toolchain import check_machine, compile_checks, link_check, machine_flags
from tests.conftest import assert_one_line_error, quick_project, run_cli, shipped
from tests.models import tiny_tflite

needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs gcc-arm-none-eabi")
needs_riscv = pytest.mark.skipif(
    shutil.which("riscv64-unknown-elf-gcc") is None, reason="needs gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf"
)
RISCV_COMPILERS = ["gcc", "g++", "riscv64-unknown-elf-gcc", "riscv64-unknown-elf-g++"]


def write_target(project: Path, name: str, text: str) -> None:
    """``project/targets/NAME.toml`` from a profile's text, renamed to ``name``."""
    first = next(line for line in text.splitlines() if line.startswith("name = "))
    (project / "targets" / f"{name}.toml").write_text(text.replace(first, f'name = "{name}"'))


def tiny_firmware(folder: Path) -> FirmwareModel:
    """The tiny int8 model's firmware files, written to ``folder``."""
    data = tiny_tflite()
    inputs, outputs = io_details(make_interpreter(data))
    model = FirmwareModel(
        data=data,
        prefix=c_identifier("fit"),
        basename="model",
        arena_bytes=3000,
        arena_margin=0.1,
        section=".rodata.model",
        inputs=[t.as_dict() for t in inputs],
        outputs=[t.as_dict() for t in outputs],
        labels=("a", "b", "c", "d", "e"),
        ops=sorted(set(flatbuffer_ops(data))),
    )
    header, source, ops = model.files
    (folder / header).write_text(model_header(model))
    (folder / source).write_text(model_source(model))
    (folder / ops).write_text(ops_header(model))
    return model


@pytest.mark.parametrize("name", [n for n in builtin_names("targets") if n.startswith(("cortex-m", "esp32"))])
def test_shipped_microcontroller_profiles_pass_their_compiler_check(name: str) -> None:
    target = load_target(find_file("targets", name, Path("/")))
    expected = {
        "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
        "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"],
        "cortex-m55-u55": ["-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard", "-mfpu=auto"],
        "esp32-c3": ["-march=rv32imc", "-mabi=ilp32"],
    }
    assert machine_flags(target) == expected[name]  # the arm flags as they were before toolchains
    if shutil.which(target.toolchain.gcc) is None:
        pytest.skip(f"needs {target.toolchain.gcc}")
    assert check_machine(target) is True


@needs_riscv
def test_esp32_c3_compiles_and_links_a_32_bit_riscv_image(tmp_path: Path) -> None:
    target = load_target(find_file("targets", "esp32-c3", Path("/")))
    model = tiny_firmware(tmp_path)
    assert compile_checks(tmp_path, model, target, tmp_path) == RISCV_COMPILERS
    regions = {r.name: r for r in link_check(tmp_path, model, target, tmp_path)}
    memory = target.memory
    assert memory is not None
    assert (regions["FLASH"].total, regions["RAM"].total) == (memory.flash_bytes, memory.ram_bytes)
    flash = len(model.data) + memory.runtime_flash_bytes + memory.application_flash_bytes
    assert flash < regions["FLASH"].used < flash + 512  # the model, the placeholders and a little code
    ram = (model.arena_with_margin or 0) + memory.runtime_ram_bytes + memory.application_ram_bytes
    assert regions["RAM"].used >= ram
    header = subprocess.run(
        ["riscv64-unknown-elf-readelf", "--file-header", str(tmp_path / "fit.elf")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ELF32" in header and "RISC-V" in header and "RVC" in header and "soft-float ABI" in header


@pytest.mark.slow
@needs_riscv
def test_esp32_c3_quick_build_links_and_reports_regions(project: Path) -> None:
    quick_project(project, targets=("esp32-c3",))
    result = run_cli("--target", "esp32-c3-relaxed", "--quiet", cwd=project)
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "esp32-c3-relaxed" / "report.json").read_text())
    assert report["firmware"]["compilers"] == RISCV_COMPILERS
    regions = {r["name"]: r for r in report["firmware"]["regions"]}
    assert (regions["FLASH"]["total"], regions["RAM"]["total"]) == (4_194_304, 393_216)
    # The linker counts the model and the placeholders (and a little code); the arena with its margin and
    # the placeholders.
    assert 1_048_576 + report["artifact"]["tflite_bytes"] < regions["FLASH"]["used"] < 4_194_304
    assert 131_072 + report["firmware"]["arena_bytes"] <= regions["RAM"]["used"] < 393_216
    assert report["firmware"]["fit_from"] == "the profile's runtime estimate"
    assert regions["FLASH"]["parts"]["runtime (estimate)"] == 131_072


@pytest.mark.slow
@needs_riscv
def test_missing_riscv_toolchain_warns_and_completes(project: Path, tmp_path: Path) -> None:
    quick_project(project, targets=("esp32-c3",))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcc", "g++", "cc", "as", "ld"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    result = run_cli("--target", "esp32-c3-relaxed", cwd=project, env={"PATH": str(bin_dir)})
    assert result.code == 0, result.err
    assert "apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf" in result.err
    report = json.loads((project / "build" / "quick" / "esp32-c3-relaxed" / "report.json").read_text())
    assert report["firmware"]["link"] == "skipped: riscv64-unknown-elf-gcc not found"
    assert report["firmware"]["compilers"] == ["gcc", "g++"]


@needs_arm
def test_cpu_the_compiler_refuses_fails_in_preflight_in_seconds(project: Path) -> None:
    quick_project(project, targets=())
    text = shipped("targets", "cortex-m4").replace('cpu = "cortex-m4"', 'cpu = "esp32s3"')
    write_target(project, "s3", text.replace('qemu_machine = "mps2-an386"', ""))
    start = time.monotonic()
    result = run_cli("--target", "s3", "--quiet", cwd=project)
    elapsed = time.monotonic() - start
    assert_one_line_error(
        result, 2, "preflight", "s3.toml: key 'cpu'", "arm-none-eabi-gcc refuses cpu = 'esp32s3'", "apt-get install"
    )
    assert elapsed < 20, elapsed  # before the data is loaded or anything trains
    assert not (project / "build").exists()


@needs_riscv
def test_arch_the_compiler_refuses_fails_in_preflight(project: Path) -> None:
    quick_project(project, targets=())
    write_target(project, "c3", shipped("targets", "esp32-c3").replace('arch = "rv32imc"', 'arch = "rv32imcq"'))
    result = run_cli("--target", "c3", "--quiet", cwd=project)
    assert_one_line_error(result, 2, "preflight", "key 'firmware.arch'", "riscv64-unknown-elf-gcc refuses")


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (('toolchain = "riscv64-unknown-elf"', 'toolchain = "riscv32-unknown-elf"'), "firmware.toolchain",
         "unknown toolchain 'riscv32-unknown-elf' (did you mean 'riscv64-unknown-elf'?)"),
        (('abi = "ilp32"', 'fpu = "fpv4-sp-d16"'), "firmware.fpu", "the riscv64-unknown-elf toolchain takes no -mfpu"),
        (('abi = "ilp32"', ""), "firmware.abi", "the riscv64-unknown-elf toolchain needs firmware.abi"),
        (('arch = "rv32imc"', 'arch = "rv32imc -O0"'), "firmware.arch", "'rv32imc -O0' is not an -march value"),
    ],
)  # fmt: skip
def test_schema_checks_the_toolchain_keys(tmp_path: Path, change: tuple[str, str], key: str, message: str) -> None:
    (tmp_path / "targets").mkdir()
    text = shipped("targets", "esp32-c3")
    assert change[0] in text
    write_target(tmp_path, "bad", text.replace(change[0], change[1]))
    with pytest.raises(ConfigError) as raised:
        load_target(tmp_path / "targets" / "bad.toml")
    assert f"key '{key}': " in str(raised.value) and message in str(raised.value), str(raised.value)


def test_arm_profiles_default_to_the_arm_toolchain_and_refuse_riscv_keys(tmp_path: Path) -> None:
    m4 = load_target(find_file("targets", "cortex-m4", Path("/")))
    assert m4.firmware.toolchain == "arm-none-eabi" and m4.toolchain is TOOLCHAINS["arm-none-eabi"]
    (tmp_path / "targets").mkdir()
    write_target(
        tmp_path, "m4", shipped("targets", "cortex-m4").replace("[firmware]\n", '[firmware]\narch = "rv32imc"\n')
    )
    with pytest.raises(ConfigError, match=r"key 'firmware.arch': the arm-none-eabi toolchain takes no -march"):
        load_target(tmp_path / "targets" / "m4.toml")
