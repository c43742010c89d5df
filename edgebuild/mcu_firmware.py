"""Firmware for the Cortex-M boards QEMU emulates: the build's own model files, TFLM and a test harness.

What goes in: ``<basename>_data.cc``, ``_data.h`` and ``_ops.h`` exactly as emit wrote them (the arena
is the header's ``…_TENSOR_ARENA_BYTES``), ``mcu/harness.cc`` (runs the model on every input with
semihosting file I/O) and ``mcu/startup.c`` (vectors, reset, faults), and TFLM's library for the
target: TFLM's own Makefile (``TARGET=cortex_m_generic``, ``TARGET_ARCH`` from the profile's cpu
and fpu, ``OPTIMIZED_KERNEL_DIR=cmsis_nn`` unless reference kernels are asked for) with the host's
``arm-none-eabi-gcc``. The result is linked against a linker script made from the board's memory
map (where QEMU has memory) with the profile's region sizes (what the device has), so a firmware
that does not fit the device fails the link (exit 3).

The library is cached under ``<firmware_root>/tflm/<key>/`` per (pinned sources, TARGET_ARCH, FPU,
kernels, compiler version), and only the objects the firmware needs are compiled: the linker says
which symbols are still undefined, edgebuild finds the TFLM or CMSIS-NN sources that define them
and has TFLM's Makefile compile exactly those objects, and repeats until the firmware links (for
the KWS DS-CNN 86 of TFLM's 315 objects with CMSIS-NN). When a symbol cannot be traced to a source,
every object is compiled (the whole ``libtensorflow-microlite.a``), so the result never depends
on the tracing being clever. Objects accumulate: a later model compiles only what it adds. The
set a firmware needed is kept (``closures/``), so a warm build compiles nothing and links once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgebuild.errors import BuildError, ConfigError
from edgebuild.firmware import FirmwareModel
from edgebuild.schema import Target
from edgebuild.support import BOARDS, MACHINE_FOR_CPU, Board
from edgebuild.third_party import firmware_root, locked, sources_id, tflm_tree
from edgebuild.toolchain import Region, parse_memory_usage

LIBRARY_FORMAT = 1  # bump when what a library folder holds changes: older ones are not read
STACK_BYTES = 16 * 1024
# The parts of a firmware that are the runtime (what memory.runtime_* estimates); the harness is
# the few lines that call it, as an application's would.
RUNTIME_PARTS = ("tflm", "cmsis-nn", "c library", "harness", "stack")
PARTS = ("model", "arena", *RUNTIME_PARTS, "application")  # every part, in the order reports list them
MAX_TRACE_STEPS = 16
MCU = Path(__file__).with_name("mcu")
HARNESS, STARTUP = MCU / "harness.cc", MCU / "startup.c"
MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"
# TFLM's example, test and benchmark makefiles run Python generators (numpy, Pillow) while make
# parses; none of them is part of the library, so they are left out.
NO_EXAMPLES = (
    "MICRO_LITE_EXAMPLE_TESTS=",
    "MICRO_LITE_INTEGRATION_TESTS=",
    "MICRO_LITE_GEN_MUTABLE_OP_RESOLVER_TEST=",
    "MICRO_LITE_LAYER_BY_LAYER_OUTPUT=",
    "OLD_MICRO_LITE_BENCHMARKS=",
    "MICRO_LITE_BENCHMARKS=",
)
INSTALL_ARM = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib make"

Progress = Callable[[str, int, int], None]  # what, done, total


def board_for(target: Target) -> Board:
    """The board QEMU runs ``target``'s firmware on: the profile's ``device.qemu_machine``, else the
    board that has its cpu (``MACHINE_FOR_CPU``).

    Raises ConfigError when no board has that cpu, or when the profile's FLASH or RAM is larger
    than the board's memory for it (the firmware would be proven on less than the device has)."""
    where = target.source or target.name
    machine = target.device.qemu_machine or MACHINE_FOR_CPU.get(target.cpu)
    if target.toolchain.gcc != "arm-none-eabi-gcc" or machine is None:
        raise ConfigError(
            f"{where}: --device qemu runs firmware on an emulated Arm Cortex-M board, and there is none "
            f"for cpu {target.cpu!r}",
            hint=f"boards: {', '.join(f'{b.machine} ({b.cpu})' for b in BOARDS.values())}",
        )
    board = BOARDS[machine]
    memory = target.memory
    assert memory is not None, "TFLM targets have a [memory] table"
    for key, asked, has, what in (
        ("memory.flash_bytes", memory.flash_bytes, board.flash_bytes, "code"),
        ("memory.ram_bytes", memory.ram_bytes, board.ram_bytes, "data"),
    ):
        if asked > has:
            raise ConfigError(
                f"{where}: key '{key}': {asked:,} bytes is more than the {has:,} bytes of {what} memory "
                f"QEMU's {board.machine} has for {target.cpu}",
                hint="the firmware would be checked on less memory than the device has; lower the key to test",
            )
    return board


# ---------------------------------------------------------------- tools


def check_tools(target: Target) -> Board:
    """Everything ``--device qemu`` needs on a Cortex-M target, checked before any training.

    Returns the board. Raises ConfigError (exit 2) for a cpu no board has, a profile larger than the
    board, and a missing ``qemu-system-arm``, ``make``, arm compiler or C++ library, each with the
    packages to install.
    """
    board = board_for(target)
    if shutil.which("qemu-system-arm") is None:
        raise ConfigError(
            "--device qemu on a Cortex-M target needs qemu-system-arm, which is not installed",
            hint="install it with: apt-get install qemu-system-arm",
        )
    for tool in ("make", "arm-none-eabi-gcc", "arm-none-eabi-g++"):
        if shutil.which(tool) is None:
            raise ConfigError(
                f"--device qemu on a Cortex-M target builds firmware with {tool}, which is not installed",
                hint=f"install it with: {INSTALL_ARM}",
            )
    if not _has_cxx_library():
        raise ConfigError(
            "arm-none-eabi-g++ has no C++ standard library (<cstddef> not found); TFLM needs it",
            hint="install it with: apt-get install libstdc++-arm-none-eabi-newlib",
        )
    return board


@cache
def _has_cxx_library() -> bool:
    proc = subprocess.run(
        ["arm-none-eabi-g++", "-x", "c++", "-mcpu=cortex-m4", "-mthumb", "-fsyntax-only", "-"],
        input="#include <cstddef>\n",
        capture_output=True,
        text=True,
    )
    return proc.returncode == 0


@cache
def compiler_version() -> str:
    """``arm-none-eabi-gcc --version``'s first line (part of the library's key)."""
    proc = subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0].strip() if proc.stdout else "unknown"


# ---------------------------------------------------------------- the TFLM library


@dataclass(frozen=True)
class LibraryConfig:
    """What one TFLM library is built for: TFLM's TARGET_ARCH and FPU, the kernels and the compiler."""

    arch: str  # TFLM's TARGET_ARCH, e.g. cortex-m4+fp
    fpu: str  # TFLM's FPU ("" = its default for the arch)
    kernels: str  # cmsis-nn | reference
    compiler: str

    @property
    def key(self) -> str:
        """The library folder's name: readable, and a digest of everything the objects depend on."""
        parts = [sources_id(), self.arch, self.fpu, self.kernels, self.compiler, LIBRARY_FORMAT]
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
        return f"{self.arch}-{self.kernels}-{digest}"

    def make_variables(self) -> list[str]:
        """TFLM's Makefile variables for this configuration."""
        gcc = shutil.which("arm-none-eabi-gcc")
        assert gcc is not None, "check_tools found it"
        variables = [
            "TARGET=cortex_m_generic",
            f"TARGET_ARCH={self.arch}",
            "BUILD_TYPE=release",
            # the host's compiler: otherwise the Makefile downloads its own
            f"TARGET_TOOLCHAIN_ROOT={Path(gcc).resolve().parent}/",
            *NO_EXAMPLES,
        ]
        if self.fpu:
            variables.append(f"FPU={self.fpu}")
        if self.kernels == "cmsis-nn":
            variables.append("OPTIMIZED_KERNEL_DIR=cmsis_nn")
        return variables


def library_config(target: Target, kernels: str = "cmsis-nn") -> LibraryConfig:
    """TFLM's TARGET_ARCH and FPU for the profile's cpu and fpu (hard-float with an FPU, as the link stage)."""
    cpu, fpu = target.cpu, target.firmware.fpu
    explicit = fpu if fpu and fpu != "auto" else ""
    if cpu in ("cortex-m4", "cortex-m7"):
        arch = f"{cpu}+fp" if fpu else cpu
    elif cpu == "cortex-m55":
        arch = "cortex-m55" if fpu else "cortex-m55+nofp"
    else:
        arch = cpu
    return LibraryConfig(arch, explicit if fpu else "", kernels, compiler_version())


def _make_env() -> dict[str, str]:
    """make's environment: this Python first on PATH (TFLM's Makefile runs ``python3`` scripts that need
    only the standard library), and no MAKEFLAGS inherited from a make that runs edgebuild."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GNUMAKEFLAGS")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["LC_ALL"] = "C"
    return env


_INFO_VARIABLES = (
    "CXX",
    "CC",
    "CXXFLAGS",
    "CCFLAGS",
    "INCLUDES",
    "CORE_OPTIMIZATION_LEVEL",
    "MICROLITE_CC_SRCS",
    "MICROLITE_CC_KERNEL_SRCS",
    "THIRD_PARTY_CC_SRCS",
    "THIRD_PARTY_KERNEL_CC_SRCS",
    "MICROLITE_LIB_OBJS",
    "MICROLITE_KERNEL_OBJS",
    "MICROLITE_THIRD_PARTY_OBJS",
    "MICROLITE_THIRD_PARTY_KERNEL_OBJS",
    "MICROLITE_LIBS",
)


@dataclass(frozen=True)
class LibraryInfo:
    """What TFLM's Makefile says about a configuration: compilers, flags, and every object with its source."""

    cxx: str
    cc: str
    cxxflags: tuple[str, ...]
    ccflags: tuple[str, ...]
    includes: tuple[str, ...]  # relative to the TFLM root
    core_optimization: tuple[str, ...]
    objects: dict[str, str]  # object path (absolute) -> source (relative to the TFLM root)
    cmsis_nn: tuple[str, ...]  # the objects that are CMSIS-NN's
    libs: tuple[str, ...]

    @property
    def machine_flags(self) -> list[str]:
        """The flags that choose the CPU and ABI (for compiling the harness and linking)."""
        return [f for f in self.cxxflags if f.startswith(("-mcpu=", "-mfpu=", "-mfloat-abi=", "-mthumb", "-mlittle"))]


class TflmLibrary:
    """TFLM's objects for one LibraryConfig, compiled on demand with TFLM's Makefile and kept.

    Lives in ``<firmware_root>/tflm/<key>/``: ``gen/`` (the Makefile's GENDIR), ``info.json``
    (``LibraryInfo``), ``built.json`` (objects known complete: one a killed compile left half
    written is not listed, so it is compiled again) and ``closures/`` (the objects each firmware
    needed). Everything that writes holds the folder's lock.
    """

    def __init__(self, config: LibraryConfig, tree: Path, progress: Progress | None = None):
        self.config = config
        self.tree = tree
        self.folder = firmware_root() / "tflm" / config.key
        self.gen = self.folder / "gen"
        self.progress = progress or (lambda what, done, total: None)
        self.compiled_now = 0  # objects compiled by this process
        self.compile_seconds = 0.0
        self.rounds = 0

    def _make(self, extra: list[str], targets: list[str], jobs: int = 1) -> subprocess.Popen[str]:
        command = ["make", "-f", MAKEFILE, f"-j{jobs}", *self.config.make_variables(), f"GENDIR={self.gen}/"]
        return subprocess.Popen(
            [*command, *extra, *targets],
            cwd=self.tree,
            env=_make_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def info(self) -> LibraryInfo:
        """The configuration's ``LibraryInfo``, asked of TFLM's Makefile once and kept in ``info.json``."""
        path = self.folder / "info.json"
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text())
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
            return LibraryInfo(**fields)
        rule = "edgebuild-info: ; @:" + "".join(f" $(info EDGEBUILD {v}=$({v}))" for v in _INFO_VARIABLES)
        proc = self._make([f"--eval={rule}"], ["edgebuild-info"])
        out, _ = proc.communicate()
        values = dict(re.findall(r"^EDGEBUILD (\w+)=(.*)$", out, flags=re.MULTILINE))
        if proc.returncode != 0 or set(values) != set(_INFO_VARIABLES):
            raise BuildError(
                f"TFLM's Makefile refused {self.config.arch} ({self.config.kernels} kernels): {_first_error(out)}",
                hint=f"the TFLM tree is {self.tree}",
            )
        objects: dict[str, str] = {}
        cmsis_nn: list[str] = []
        for sources, objs in (
            ("MICROLITE_CC_SRCS", "MICROLITE_LIB_OBJS"),
            ("MICROLITE_CC_KERNEL_SRCS", "MICROLITE_KERNEL_OBJS"),
            ("THIRD_PARTY_CC_SRCS", "MICROLITE_THIRD_PARTY_OBJS"),
            ("THIRD_PARTY_KERNEL_CC_SRCS", "MICROLITE_THIRD_PARTY_KERNEL_OBJS"),
        ):
            names, paths = values[sources].split(), values[objs].split()
            assert len(names) == len(paths), (sources, len(names), len(paths))
            objects.update(zip(paths, names, strict=True))
            if sources == "THIRD_PARTY_KERNEL_CC_SRCS":
                cmsis_nn += paths
        info = LibraryInfo(
            cxx=values["CXX"],
            cc=values["CC"],
            cxxflags=tuple(shlex.split(values["CXXFLAGS"])),
            ccflags=tuple(shlex.split(values["CCFLAGS"])),
            includes=tuple(shlex.split(values["INCLUDES"])),
            core_optimization=tuple(shlex.split(values["CORE_OPTIMIZATION_LEVEL"])),
            objects=objects,
            cmsis_nn=tuple(cmsis_nn),
            libs=tuple(values["MICROLITE_LIBS"].split()),
        )
        _write_json(path, dataclasses.asdict(info))
        return info

    def _built(self) -> set[str]:
        path = self.folder / "built.json"
        return set(json.loads(path.read_text())) if path.is_file() else set()

    def compile(self, objects: list[str]) -> None:
        """Have TFLM's Makefile compile ``objects`` (those not yet known complete), showing progress.

        The caller holds the folder's lock. Raises BuildError with the compiler's first error.
        """
        built = self._built()
        todo = sorted(o for o in set(objects) if o not in built or not Path(o).is_file())
        if not todo:
            return
        for path in todo:  # a half-written object of a killed compile must not look up to date
            Path(path).unlink(missing_ok=True)
        start = time.perf_counter()
        proc = self._make(["V=1"], todo, jobs=os.cpu_count() or 1)  # V=1: each compile is echoed
        assert proc.stdout is not None
        done, lines = 0, []
        self.rounds += 1  # each round of tracing gets a progress bar of its own
        what = f"compiling TFLM for {self.config.arch} ({self.config.kernels}), round {self.rounds}"
        self.progress(what, 0, len(todo))
        for line in proc.stdout:
            lines.append(line)
            if " -c " in line and " -o " in line:
                done += 1
                self.progress(what, done, len(todo))
        proc.wait()
        if proc.returncode != 0:
            text = "".join(lines)
            hint = "install it with: apt-get install libstdc++-arm-none-eabi-newlib" if "cstddef" in text else None
            raise BuildError(f"compiling TFLM for {self.config.arch} failed: {_first_error(text)}", hint=hint)
        _write_json(self.folder / "built.json", sorted(built | set(todo)))
        self.compiled_now += len(todo)
        self.compile_seconds += time.perf_counter() - start

    def objects_for(self, name: str, link: Callable[[list[str]], list[str]]) -> list[str]:
        """The objects a firmware needs, compiled: those kept under ``name`` (``closures/``), or found by
        linking with ``link`` (objects -> the symbols still undefined) and compiling what defines them."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with locked(self.folder / ".lock"):
            info = self.info()
            kept = self.folder / "closures" / f"{name}.json"
            if kept.is_file():
                objects: list[str] = json.loads(kept.read_text())
                self.compile(objects)
                return objects
            chosen: list[str] = []
            index = _definitions(self.tree, info)
            for _ in range(MAX_TRACE_STEPS):
                undefined = link(chosen)
                if not undefined:
                    _write_json(kept, chosen)
                    return chosen
                found = {obj for symbol in undefined for key in _symbol_keys(symbol) for obj in index.get(key, ())}
                new = sorted(found - set(chosen))
                if not new:
                    break  # symbols no source is known to define: compile everything
                self.compile(new)
                chosen += new
            everything = sorted(info.objects)
            self.compile(everything)
            _write_json(kept, everything)
            return everything


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error" in line.lower() and "already exists" not in line:
            return " ".join(line.split())[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return " ".join(lines[-1].split())[:300] if lines else "no output"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


# Definitions start in column 0 in TFLM (Google style, namespaces not indented) and CMSIS-NN:
# ``ReturnType Class::method(``, ``ReturnType function(`` (or the name alone on its line after
# the return type), ``const int8_t kTable[] = ``. Calls are indented, so they do not match.
_MEMBER = re.compile(r"^(?!\s|#|//|/\*|return\b).*?\b(\w+)::(~?\w+)\s*\(", re.MULTILINE)
_FUNCTION = re.compile(r"^(?!\s|#|//|/\*|return\b|if\b|else\b|for\b|while\b|switch\b)(?:[\w*&<>,:]+\s+)*\**(\w+)\s*\(")
_VARIABLE = re.compile(r"^(?!\s|#|//|/\*|return\b)(?:[\w*&<>,:]+\s+)+\**(\w+)\s*(?:\[[^\]]*\]\s*)*=", re.MULTILINE)


def _definitions(tree: Path, info: LibraryInfo) -> dict[str, set[str]]:
    """Which objects' sources define each name: ``member:Class::method``, ``class:Class``, ``name:function``."""
    index: dict[str, set[str]] = {}
    for obj, source in info.objects.items():
        try:
            text = (tree / source).read_text(errors="replace")
        except OSError:
            continue
        keys = {f"name:{Path(source).stem}"}
        for cls, member in _MEMBER.findall(text):
            keys |= {f"member:{cls}::{member}", f"class:{cls}"}
        for line in text.splitlines():
            if line.rstrip().endswith(";") and "=" not in line:
                continue  # a declaration
            match = _FUNCTION.match(line)
            if match:
                keys.add(f"name:{match.group(1)}")
        keys |= {f"name:{name}" for name in _VARIABLE.findall(text)}
        for key in keys:
            index.setdefault(key, set()).add(obj)
    return index


def _symbol_keys(symbol: str) -> list[str]:
    """Index keys for one undefined symbol as ld prints it, demangled: ``tflite::Foo::bar(int)``,
    ``vtable for tflite::Foo``, ``arm_fully_connected_s8``."""
    vtable = symbol.startswith(("vtable for ", "typeinfo for ", "VTT for "))
    text = re.sub(
        r"^(vtable for|typeinfo for|VTT for|non-virtual thunk to|virtual thunk to|guard variable for) ", "", symbol
    )
    depth, cut = 0, []
    for char in text:  # drop template arguments and the parameter list
        if char == "<":
            depth += 1
        elif char == ">":
            depth -= 1
        elif char == "(" and depth == 0:
            break
        elif depth == 0:
            cut.append(char)
    parts = [p for p in "".join(cut).split("::") if p]
    if not parts:
        return []
    if vtable:
        return [f"class:{parts[-1]}"]
    keys = [f"name:{parts[-1]}"]
    if len(parts) >= 2:
        keys.insert(0, f"member:{parts[-2]}::{parts[-1]}")
    return keys[:1] if len(parts) >= 2 and parts[-2][:1].isupper() else keys


# ---------------------------------------------------------------- the firmware


@dataclass(frozen=True)
class FirmwareImage:
    """A linked firmware: the ELF, its board and library, and what it takes of FLASH and RAM."""

    elf: Path
    board: Board
    config: LibraryConfig
    flash_bytes: int  # the image: vectors, code, read-only data and .data's initial values
    ram_bytes: int  # .data, .bss (the arena among it) and the stack
    sections: dict[str, int]
    flash_by_part: dict[str, int]  # model, tflm, cmsis-nn, c library, harness, application
    ram_by_part: dict[str, int]  # arena, stack, tflm, cmsis-nn, c library, harness, application
    library_objects: int
    compiled_objects: int  # objects compiled for this firmware (0: the library was cached)
    compile_seconds: float
    regions: tuple[Region, ...]  # FLASH and RAM against the profile's sizes, by part

    @property
    def fits(self) -> bool:
        """Whether the firmware fits the profile's FLASH and RAM (when not, the ELF is the board-sized one)."""
        return all(region.margin >= 0 for region in self.regions)


def linker_script(board: Board, target: Target, *, all_of_board: bool = False) -> str:
    """The board's memory at the profile's sizes (or, with ``all_of_board``, at the board's, to measure a
    firmware that may not fit the profile): FLASH and RAM (and BOOT, where the CPU resets from). The
    application's placeholders (``application.o``) are kept whatever refers to them."""
    memory = target.memory
    assert memory is not None
    flash, ram = (board.flash_bytes, board.ram_bytes) if all_of_board else (memory.flash_bytes, memory.ram_bytes)
    regions = [
        f"  FLASH (rx) : ORIGIN = {board.flash_origin:#010x}, LENGTH = {flash}",
        f"  RAM (rwx)  : ORIGIN = {board.ram_origin:#010x}, LENGTH = {ram}",
    ]
    vectors = "FLASH"
    if board.boot_origin is not None:
        regions.insert(0, f"  BOOT (rx)  : ORIGIN = {board.boot_origin:#010x}, LENGTH = 1024")
        vectors = "BOOT"
    section = target.firmware.section
    extra = f" KEEP(*({section}))" if section and not section.startswith((".rodata", ".text")) else ""
    sizes = "the board's own sizes" if all_of_board else "the sizes of the target profile"
    return f"""/* Generated by edgebuild: {board.machine}'s memory at {sizes}. */
ENTRY(Reset_Handler)
MEMORY
{{
{chr(10).join(regions)}
}}
SECTIONS
{{
  .vectors : {{ KEEP(*(.vectors)) }} > {vectors}
  .text : {{ *(.text*) }} > FLASH
  .rodata : {{ KEEP(*(.rodata.edgebuild_application)) *(.rodata*){extra} }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx* .gnu.linkonce.armexidx.*) }} > FLASH
  .init_array : {{
    __init_array_start = .;
    KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array*))
    __init_array_end = .;
  }} > FLASH
  .data : ALIGN(4) {{ __data_start = .; *(.data*) . = ALIGN(4); __data_end = .; }} > RAM AT > FLASH
  __data_load = LOADADDR(.data);
  .bss (NOLOAD) : ALIGN(4) {{
    __bss_start = .; KEEP(*(.bss.edgebuild_application)) *(.bss*) *(COMMON) . = ALIGN(4); __bss_end = .;
  }} > RAM
  .stack (NOLOAD) : ALIGN(8) {{ __stack_limit = .; . += {STACK_BYTES}; __stack_top = .; }} > RAM
  end = .;
  /DISCARD/ : {{ *(.comment) *(.ARM.attributes) }}
}}
"""


def _run(command: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed: {_first_error(proc.stdout + proc.stderr)}")
    return proc.stdout + proc.stderr


def build_firmware(
    folder: Path,
    model: FirmwareModel,
    target: Target,
    work: Path,
    *,
    kernels: str = "cmsis-nn",
    arena_bytes: int | None = None,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
) -> FirmwareImage:
    """Build the firmware from the model files in ``folder`` (as emitted) into ``work``.

    Lays out the pinned TFLM sources (``third_party.tflm_tree``), compiles the harness, the start-up
    code and ``<basename>_data.cc`` with the library's own flags, links them with the TFLM objects
    the firmware needs (compiled on first use, then cached) and the profile's application
    placeholders (``memory.application_*``), on all of the board's memory (to measure it) and at the
    profile's sizes (``linker_script``). ``arena_bytes`` replaces the header's arena (to find out how
    much TFLM needs on the device). The image's ``regions`` say whether it fits the profile (only then
    is its ELF the profile-sized one to run). Raises ConfigError (missing tools, a profile the board
    cannot hold) and BuildError (sources, compiler, a firmware larger than the board).
    """
    board = check_tools(target)
    folder, work = folder.resolve(), work.resolve()  # the compilers run in the TFLM tree
    say = note or (lambda _: None)
    tree = tflm_tree(say)
    config = library_config(target, kernels)
    library = TflmLibrary(config, tree, progress)
    library.folder.mkdir(parents=True, exist_ok=True)
    with locked(library.folder / ".lock"):
        info = library.info()
    header, source, ops = model.files
    p, m = model.prefix, model.prefix.upper()
    defines = [
        f'-DEDGEBUILD_MODEL_HEADER="{header}"',
        f'-DEDGEBUILD_OPS_HEADER="{ops}"',
        f"-DEDGEBUILD_MODEL_DATA=g_{p}_model_data",
        f"-DEDGEBUILD_ARENA_BYTES={arena_bytes if arena_bytes is not None else f'{m}_TENSOR_ARENA_BYTES'}",
        f"-DEDGEBUILD_RESOLVER={p}_op_resolver_t",
        f"-DEDGEBUILD_REGISTER_OPS={p}_register_ops",
    ]
    includes = [*info.includes, f"-I{folder}"]
    cxx = [info.cxx, *[f for f in info.cxxflags if f != "-MD"], *info.core_optimization, *includes]
    memory = target.memory
    assert memory is not None
    application = _application_source(memory.application_flash_bytes, memory.application_ram_bytes)
    (work / "application.c").write_text(application)
    cc = [info.cc, *[f for f in info.ccflags if f != "-MD"], *info.core_optimization]
    objects = {
        "harness.o": [*cxx, *defines, "-c", str(HARNESS)],
        f"{Path(source).stem}.o": [*cxx, "-c", str(folder / source)],
        "startup.o": [*cc, "-c", str(STARTUP)],
        "application.o": [*cc, "-c", str(work / "application.c")],
    }
    for name, command in objects.items():
        _run([*command, "-o", str(work / name)], f"compiling {Path(command[-1]).name} for {board.machine}", tree)
    (work / "board.ld").write_text(linker_script(board, target, all_of_board=True))
    (work / "firmware.ld").write_text(linker_script(board, target))

    def link(tflm: list[str], script: str = "board.ld") -> subprocess.CompletedProcess[str]:
        archives = []
        for name, members in (
            ("libtflm.a", [o for o in tflm if o not in info.cmsis_nn]),
            ("libcmsis_nn.a", [o for o in tflm if o in info.cmsis_nn]),
        ):
            (work / name).unlink(missing_ok=True)
            if members:
                _run(["arm-none-eabi-ar", "rcs", str(work / name), *members], f"archiving {name}")
                archives.append(str(work / name))
        command = [
            info.cxx,
            *info.machine_flags,
            "-nostartfiles",
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-T",
            str(work / script),
            "-Wl,--gc-sections",
            f"-Wl,-Map={work / 'firmware.map'}",
            "-Wl,--print-memory-usage",
            *(str(work / name) for name in objects),
            "-Wl,--start-group",
            *archives,
            "-Wl,--end-group",
            *info.libs,
            "-o",
            str(work / "firmware.elf"),
        ]
        return subprocess.run(command, capture_output=True, text=True, cwd=work)

    def undefined(tflm: list[str]) -> list[str]:
        proc = link(tflm)
        return sorted(set(re.findall(r"undefined reference to [`']([^'\n]+)'", proc.stdout + proc.stderr)))

    harness_hash = hashlib.sha256(HARNESS.read_bytes() + STARTUP.read_bytes()).hexdigest()
    closure = hashlib.sha256(json.dumps([sorted(model.ops), harness_hash]).encode()).hexdigest()[:16]
    tflm = library.objects_for(closure, undefined)
    # Linked on all of the board's memory first, so that what it takes is measured even when it
    # does not fit the profile; then at the profile's sizes, the image that runs.
    measured = link(tflm)
    if measured.returncode != 0:
        raise BuildError(f"linking the firmware for {board.machine} failed: {_first_error(measured.stderr)}")
    used = {r.name: r.used for r in parse_memory_usage(measured.stdout + measured.stderr)}
    flash_parts, ram_parts = _parts(work / "firmware.map", f"{Path(source).stem}.o")
    arena = _symbol_size(work / "firmware.elf", "g_arena")
    if arena:
        ram_parts["harness"] = ram_parts.get("harness", 0) - arena
        ram_parts["arena"] = arena
    ram_parts["stack"] = STACK_BYTES
    sections = _sections(work / "firmware.elf")
    fitted = link(tflm, "firmware.ld")
    output = fitted.stdout + fitted.stderr
    overflows = {region: int(n) for region, n in re.findall(r"region `(\w+)' overflowed by (\d+) bytes", output)}
    if fitted.returncode != 0 and not overflows:
        raise BuildError(f"linking the firmware for {board.machine} failed: {_first_error(output)}")
    flash_used, ram_used = used.get("FLASH", 0) + used.get("BOOT", 0), used.get("RAM", 0)
    regions = (
        Region(
            "FLASH",
            max(flash_used, memory.flash_bytes + overflows.get("FLASH", -memory.flash_bytes)),
            memory.flash_bytes,
            {part: flash_parts[part] for part in PARTS if flash_parts.get(part)},
        ),
        Region(
            "RAM",
            max(ram_used, memory.ram_bytes + overflows.get("RAM", -memory.ram_bytes)),
            memory.ram_bytes,
            {part: ram_parts[part] for part in PARTS if ram_parts.get(part)},
        ),
    )
    return FirmwareImage(
        elf=work / "firmware.elf",
        board=board,
        config=config,
        flash_bytes=flash_used,
        ram_bytes=ram_used,
        sections=sections,
        flash_by_part=regions[0].parts,
        ram_by_part=regions[1].parts,
        library_objects=len(tflm),
        compiled_objects=library.compiled_now,
        compile_seconds=round(library.compile_seconds, 1),
        regions=regions,
    )


def _application_source(flash_bytes: int, ram_bytes: int) -> str:
    """C for the profile's ``application_*`` placeholders: arrays that take the application's share."""
    lines = ["/* The application's own code and data, which edgebuild does not see: the profile's sizes. */"]
    if flash_bytes:
        lines.append(
            f'__attribute__((used, section(".rodata.edgebuild_application"))) '
            f"const unsigned char edgebuild_application_flash[{flash_bytes}] = {{1}};"
        )
    if ram_bytes:
        lines.append(
            f'__attribute__((used, section(".bss.edgebuild_application"))) '
            f"unsigned char edgebuild_application_ram[{ram_bytes}];"
        )
    return "\n".join(lines) + "\n"


def _sections(elf: Path) -> dict[str, int]:
    """The ELF's allocated sections and their sizes (``arm-none-eabi-size -A``)."""
    text = _run(["arm-none-eabi-size", "-A", str(elf)], "reading the firmware's sections")
    sizes = {}
    for name, size, _addr in re.findall(r"^(\.\S+)\s+(\d+)\s+(\d+)$", text, flags=re.MULTILINE):
        if int(size) and not name.startswith((".debug", ".comment", ".ARM.attributes")):
            sizes[name] = int(size)
    return sizes


def _symbol_size(elf: Path, name: str) -> int:
    text = _run(["arm-none-eabi-nm", "-S", "-C", str(elf)], "reading the firmware's symbols")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[-1].endswith(name):
            return int(fields[1], 16)
    return 0


def _parts(map_file: Path, model_object: str) -> tuple[dict[str, int], dict[str, int]]:
    """FLASH and RAM bytes by origin, from the linker map's input sections: the model array, TFLM,
    CMSIS-NN, the C and C++ libraries, and the harness (its start-up code among it)."""
    lines = map_file.read_text().split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("Linker script and memory map")), 0)
    flash: dict[str, int] = {}
    ram: dict[str, int] = {}
    pending = None  # a long section name is printed alone, its address, size and file on the next line
    for line in lines[start:]:
        match = re.match(r"^ (\.\S+)\s*$", line)
        if match:
            pending = match.group(1)
            continue
        match = re.match(r"^ (\.\S+|COMMON)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", line)
        if not match:
            pending = None
            continue
        name, pending = match.group(1) or pending, None
        size, origin = int(match.group(3), 16), match.group(4)
        if not name or not size or name.startswith((".debug", ".comment", ".ARM.attributes")):
            continue
        if origin.endswith(model_object):
            part = "model"
        elif "libcmsis_nn.a" in origin:
            part = "cmsis-nn"
        elif "libtflm.a" in origin:
            part = "tflm"
        elif origin.endswith(("harness.o", "startup.o")):
            part = "harness"
        elif origin.endswith("application.o"):
            part = "application"
        else:
            part = "c library"
        if name.startswith((".bss", "COMMON")):
            ram[part] = ram.get(part, 0) + size
        elif name.startswith(".data"):
            ram[part] = ram.get(part, 0) + size
            flash[part] = flash.get(part, 0) + size
        else:
            flash[part] = flash.get(part, 0) + size
    return flash, ram
