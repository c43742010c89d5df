"""The real compilers: check the generated C and prove the model fits the device's memory map.

The target's compiler family (``[firmware] toolchain``: arm-none-eabi, riscv64-unknown-elf)
comes from ``support.TOOLCHAINS``. Preflight asks that compiler whether it takes the
profile's machine flags before any training. The model array and a static tensor arena
of the size the header asks for are linked, with placeholders for the flash and RAM the
target reserves for everything else, against a linker script made from the profile's
FLASH and RAM regions; the linker's own ``--print-memory-usage`` table is the answer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from edgebuild.errors import BuildError, ConfigError
from edgebuild.firmware import FirmwareModel
from edgebuild.schema import Target
from edgebuild.support import TOOLCHAINS

WARNINGS = ["-Wall", "-Wextra", "-Werror"]
_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


@dataclass(frozen=True)
class Region:
    """One memory region as the linker reported it."""

    name: str
    used: int
    total: int
    parts: dict[str, int] = field(default_factory=dict)  # what takes the used bytes, by part
    margin: int = field(init=False)  # bytes free

    def __post_init__(self) -> None:
        object.__setattr__(self, "margin", self.total - self.used)


def machine_flags(target: Target) -> list[str]:
    """The target's machine flags for its compiler family, e.g. ``-mcpu=cortex-m4 -mthumb`` or
    ``-march=rv32imc -mabi=ilp32``, made from the profile keys the family's table names."""
    flags = []
    for template, key in target.toolchain.flags:
        value = target.machine_value(key) if key else ""
        if not key or value:
            flags.append(template.format(value))
    return flags


def install_hint(target: Target) -> str:
    """How to install the target's compiler family, e.g. ``install it with: apt-get install ...``."""
    return f"install it with: {target.toolchain.install}"


def have_compiler(target: Target) -> bool:
    """Whether the target's cross-compiler (e.g. ``arm-none-eabi-gcc``) is on PATH."""
    return shutil.which(target.toolchain.gcc) is not None


@cache
def _refusal(gcc: str, flags: tuple[str, ...]) -> str | None:
    """None when ``gcc`` compiles an empty C file with ``flags``, else its first error line. Cached per process."""
    proc = subprocess.run(
        [gcc, "-x", "c", *flags, "-c", "-", "-o", os.devnull], input="", capture_output=True, text=True
    )
    if proc.returncode == 0:
        return None
    lines = proc.stderr.splitlines()
    error = next((line for line in lines if "error" in line), proc.stderr.strip()[:300] or f"exit {proc.returncode}")
    # gcc's own suggestion ("did you mean 'ilp32'?"); its lists of every valid value are too long to repeat
    note = next((line.split("note: ", 1)[1] for line in lines if "note: " in line and "did you mean" in line), "")
    return f"{error.split('error: ', 1)[-1]}{'; ' + note if note else ''}"


def check_machine(target: Target) -> bool:
    """Check, before any training, that the target's compiler takes its machine flags.

    Compiles an empty C file with the family's compiler and ``machine_flags`` (the
    answer is cached per process). Returns False when the compiler is not installed
    (the link stage then warns and skips the fit check), True when it took the flags.
    Raises ConfigError (exit 2) naming the profile key whose value the compiler refuses.
    """
    toolchain = target.toolchain
    if not have_compiler(target):
        return False
    flags = machine_flags(target)
    refusal = _refusal(toolchain.gcc, (*flags, *toolchain.c_library))
    if refusal is None:
        return True
    # Blame the key whose flag gcc names; if it names none (an -march/-mabi mismatch), all of them.
    named = [key for template, key in toolchain.flags if key and template.split("=")[0] in refusal]
    keys = list(dict.fromkeys(named)) or list(toolchain.keys)
    values = ", ".join(f"{key} = {target.machine_value(key)!r}" for key in keys)
    others = "; ".join(f"{name} ({tc.install})" for name, tc in TOOLCHAINS.items() if tc != toolchain)
    raise ConfigError(
        f"{target.source or target.name}: key '{keys[0]}': {toolchain.gcc} refuses {values} "
        f"({' '.join(flags)}): {refusal}",
        hint=f"set {' and '.join(keys)} to a value {toolchain.gcc} accepts, or name this chip's compiler "
        f"family in firmware.toolchain: {others}",
    )


def _run(command: list[str], what: str) -> str:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = next((line for line in proc.stderr.splitlines() if "error" in line), proc.stderr.strip()[:300])
        raise BuildError(f"{what} failed: {detail}", hint=f"command: {' '.join(command)}")
    return proc.stdout + proc.stderr


def compile_checks(folder: Path, model: FirmwareModel, target: Target, work: Path) -> list[str]:
    """Compile the generated source as C11 and C++ with every compiler present, warnings as errors.

    The compilers: the host's ``gcc``/``g++`` and the target's cross-compilers (its
    family's, with its machine flags and C library). Returns the compilers used.
    Raises BuildError with the compiler's first error.
    """
    _, source, _ops = model.files
    used = []
    c, cxx = ["-x", "c", "-std=c11"], ["-x", "c++", "-std=c++11"]
    toolchain = target.toolchain
    cross = [*machine_flags(target), *toolchain.c_library]
    for compiler, language, flags in (
        ("gcc", c, []),
        ("g++", cxx, []),
        (toolchain.gcc, c, cross),
        (toolchain.gxx, cxx, cross),
    ):
        if shutil.which(compiler) is None:
            continue
        _run(
            [compiler, *language, *flags, *WARNINGS, "-c", str(folder / source), "-o", str(work / f"{compiler}.o")],
            f"compiling {source} with {compiler}",
        )
        used.append(compiler)
    return used


def linker_script(target: Target) -> str:
    """A linker script with the target's FLASH and RAM regions, for arm and RISC-V alike.

    RISC-V compilers put small variables in ``.sdata``/``.sbss``/``.srodata``; the
    placeholders are KEEP so that a ``--gc-sections`` (picolibc's specs add it) keeps them.
    """
    memory = target.memory
    assert memory is not None, "TFLM targets have a [memory] table"
    return f"""/* Generated by edgebuild for {re.sub(r"[^A-Za-z0-9._-]", "_", target.name)}. */
ENTRY(Reset_Handler)
MEMORY
{{
  FLASH (rx) : ORIGIN = {memory.flash_origin:#010x}, LENGTH = {memory.flash_bytes}
  RAM (rwx)  : ORIGIN = {memory.ram_origin:#010x}, LENGTH = {memory.ram_bytes}
}}
SECTIONS
{{
  .text : {{ KEEP(*(.text.Reset_Handler)) *(.text*) }} > FLASH
  .rodata : {{ *(.rodata*) *(.srodata*) KEEP(*(.edgebuild_flash*)) }} > FLASH
  .data : {{ *(.data*) *(.sdata*) }} > RAM AT > FLASH
  .bss (NOLOAD) : {{ *(.bss*) *(.sbss*) *(COMMON) KEEP(*(.edgebuild_ram*)) }} > RAM
  /DISCARD/ : {{ *(.ARM.exidx*) *(.comment) }}
}}
"""


def _fit_program(model: FirmwareModel, target: Target) -> str:
    """A bare-metal program that keeps the model, a static arena, and placeholders of the profile's
    sizes for the runtime (TFLM, kernels, C library, stack: estimated) and the application."""
    memory = target.memory
    assert memory is not None
    p, m = model.prefix, model.prefix.upper()
    keep = "__attribute__((used, section"
    placeholders = ""
    for part in ("runtime", "application"):
        flash, ram = getattr(memory, f"{part}_flash_bytes"), getattr(memory, f"{part}_ram_bytes")
        if flash:
            placeholders += f'{keep}(".edgebuild_flash"))) const unsigned char {part}_flash[{flash}] = {{1}};\n'
        if ram:
            placeholders += f'{keep}(".edgebuild_ram"))) unsigned char {part}_ram[{ram}];\n'
    return f"""#include "{model.files[0]}"
{placeholders}__attribute__((aligned(16))) unsigned char tensor_arena[{m}_TENSOR_ARENA_BYTES];
volatile unsigned char sink;
__attribute__((section(".text.Reset_Handler"))) void Reset_Handler(void) {{
  sink = g_{p}_model_data[g_{p}_model_data_len - 1];
  tensor_arena[{m}_TENSOR_ARENA_BYTES - 1] = sink;
  for (;;) {{
  }}
}}
"""


def parse_memory_usage(text: str) -> list[Region]:
    """The regions of GNU ld's ``--print-memory-usage`` table."""
    regions = []
    for name, used, used_unit, total, total_unit in re.findall(
        r"^\s*(\w+):\s+(\d+)\s*(B|KB|MB|GB)\s+(\d+)\s*(B|KB|MB|GB)\s+[\d.]+%", text, flags=re.MULTILINE
    ):
        regions.append(Region(name, int(used) * _UNITS[used_unit], int(total) * _UNITS[total_unit]))
    return regions


def link_check(folder: Path, model: FirmwareModel, target: Target, work: Path) -> list[Region]:
    """Link the model and its arena with the profile's runtime and application placeholders for the
    target; return FLASH and RAM as the linker counts them, with their parts (model, arena, the
    runtime's estimate, the application, and what the linker adds: vectors, alignment).

    A region the image does not fit in comes back with ``used`` above ``total`` (the
    linker's "overflowed by N bytes"). Raises BuildError for any other link failure.
    """
    memory = target.memory
    assert memory is not None
    (work / "fit.ld").write_text(linker_script(target))
    (work / "fit.c").write_text(_fit_program(model, target))
    command = [
        target.toolchain.gcc,
        "-x",
        "c",
        "-std=c11",
        *machine_flags(target),
        *target.toolchain.c_library,
        *WARNINGS,
        "-Os",
        f"-I{folder}",
        str(work / "fit.c"),
        "-x",
        "c",
        str(folder / model.files[1]),
        "-nostdlib",
        "-nostartfiles",
        "-T",  # the driver's -T, so that a C library's specs add no linker script of their own
        str(work / "fit.ld"),
        "-Wl,--print-memory-usage",
        "-o",
        str(work / "fit.elf"),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    parts = {
        "FLASH": {
            "model": len(model.data),
            "runtime (estimate)": memory.runtime_flash_bytes,
            "application": memory.application_flash_bytes,
        },
        "RAM": {
            "arena": model.arena_with_margin or 0,
            "runtime (estimate)": memory.runtime_ram_bytes,
            "application": memory.application_ram_bytes,
        },
    }
    if proc.returncode == 0:
        regions = {r.name: r for r in parse_memory_usage(output)}
        if set(regions) >= {"FLASH", "RAM"}:
            return [_with_parts(regions[name], parts[name]) for name in ("FLASH", "RAM")]
        raise BuildError(f"the linker printed no memory-usage table for FLASH and RAM: {output.strip()[:300]}")
    overflows = dict(re.findall(r"region `(\w+)' overflowed by (\d+) bytes", output))
    if not overflows:
        detail = next((line for line in output.splitlines() if "error" in line), output.strip()[:300])
        raise BuildError(f"linking the model for {target.name} failed: {detail}", hint=f"command: {' '.join(command)}")
    totals = {"FLASH": memory.flash_bytes, "RAM": memory.ram_bytes}
    used = {name: total + int(overflows.get(name, 0)) for name, total in totals.items()}
    # A region that did not overflow is not known exactly here: count what edgebuild put in it.
    for name in ("FLASH", "RAM"):
        if name not in overflows:
            used[name] = sum(parts[name].values())
    return [_with_parts(Region(name, used[name], totals[name]), parts[name]) for name in ("FLASH", "RAM")]


def _with_parts(region: Region, parts: dict[str, int]) -> Region:
    """``region`` with its parts; what the linker used beyond them (vectors, alignment) is ``other``."""
    known = {name: size for name, size in parts.items() if size}
    other = region.used - sum(known.values())
    return Region(region.name, region.used, region.total, {**known, **({"other": other} if other > 0 else {})})
