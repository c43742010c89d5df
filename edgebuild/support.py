"""What each runtime supports, in one table that schema, preflight, inspect, vela and firmware read.

A new runtime, NPU or compiler family is a new row here, not a new check in every module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The host runner that validates each runtime's artifacts.
RUNNER_FOR_RUNTIME = {"litert": ("litert-host",), "tflm": ("tflm-host",)}

# Conversion modes each runtime has kernels for.
PRECISION_FOR_RUNTIME = {
    "litert": ("int8", "dynamic", "float16", "float32"),
    "tflm": ("int8", "float32"),  # no float16 or hybrid (dynamic-range) kernels
}

# Why a sparsity structure pays off or not on a runtime that does not list it as exploitable.
SPARSITY_WHY_NOT = {
    "unstructured": "zeros scattered through the weights are stored and computed like any other weight",
    "2:4": "its kernels have no 2:4 sparse path, so the zeros are stored and computed",
    "channel": "nothing: removing channels makes every tensor smaller",
}

# Custom ops the host build of TFLM registers (its AllOpsResolver); any other custom op is missing.
TFLM_CUSTOM_OPS = ("TFLite_Detection_PostProcess",)

# The custom op Vela puts the Ethos-U command stream in; a target's TFLM has it when the
# profile has an [npu] table (TFLM built with the Ethos-U driver).
NPU_OP = "ethos-u"
NPU_CUSTOM_OPS = (NPU_OP,)

# How TFLM says it has no kernel for an op.
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


def missing_ops(message: str) -> list[str]:
    """The builtin ops a TFLM error message says it has no kernel for, sorted, without repeats."""
    return sorted(set(_MISSING_OP.findall(message)))


@dataclass(frozen=True)
class Toolchain:
    """A GCC cross-compiler family for microcontroller firmware; ``[firmware] toolchain`` names one.

    ``flags`` are its machine flags as (template, profile key) pairs: ``{}`` is filled
    with the key's value, a flag whose key is empty in the profile is left out, and a
    flag with no key is always given. A profile must set the ``required`` keys and leave
    empty the machine keys the family does not read (``MACHINE_KEYS``).
    """

    gcc: str  # the C compiler; the C++ compiler has the same name ending in g++
    packages: tuple[str, ...]  # the Debian packages that install it and a C library for it
    flags: tuple[tuple[str, str], ...]
    required: tuple[str, ...]
    c_library: tuple[str, ...] = ()  # compiler flags that find the C library's headers

    @property
    def gxx(self) -> str:
        """The C++ compiler's name."""
        return self.gcc.removesuffix("gcc") + "g++"

    @property
    def keys(self) -> tuple[str, ...]:
        """The profile keys its flags are made from."""
        return tuple(dict.fromkeys(key for _, key in self.flags if key))

    @property
    def install(self) -> str:
        """The command that installs it."""
        return "apt-get install " + " ".join(self.packages)


# The profile keys any family's machine flags may be made from, each with an example value.
MACHINE_KEYS = {"cpu": "cortex-m4", "firmware.fpu": "fpv4-sp-d16", "firmware.arch": "rv32imc", "firmware.abi": "ilp32"}

TOOLCHAINS = {
    "arm-none-eabi": Toolchain(
        gcc="arm-none-eabi-gcc",
        packages=("gcc-arm-none-eabi", "libnewlib-arm-none-eabi"),
        flags=(
            ("-mcpu={}", "cpu"),
            ("-mthumb", ""),
            ("-mfloat-abi=hard", "firmware.fpu"),
            ("-mfpu={}", "firmware.fpu"),
        ),
        required=("cpu",),
    ),
    # Debian's picolibc has no rv32imc library: GCC picks its rv32im one for -march=rv32imc
    # (the same code without compressed instructions, which an rv32imc core runs).
    "riscv64-unknown-elf": Toolchain(
        gcc="riscv64-unknown-elf-gcc",
        packages=("gcc-riscv64-unknown-elf", "picolibc-riscv64-unknown-elf"),
        flags=(("-march={}", "firmware.arch"), ("-mabi={}", "firmware.abi")),
        required=("firmware.arch", "firmware.abi"),
        c_library=("--specs=picolibc.specs",),  # this gcc comes without a C library; picolibc's specs add it
    ),
}


KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Board:
    """A board QEMU emulates: the CPU, where it has memory for code and data, and its clock.

    ``boot_origin`` is where the CPU reads its vector table at reset when that is not the code
    memory's start (the vector table then goes there, the rest in the code memory).
    """

    machine: str  # qemu-system-arm -M
    cpu: str
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int
    clock_hz: int  # SysTick's clock: with -icount shift=0, 1e9 / clock_hz instructions per tick
    boot_origin: int | None = None
    boot_bytes: int = 0

    @property
    def instructions_per_tick(self) -> float:
        """SysTick ticks to instructions under ``-icount shift=0`` (1 ns of virtual time each)."""
        return 1e9 / self.clock_hz


# QEMU 7.2's maps: mps2-an386/an500 have 4 MB of SSRAM for code at 0 and 4 MB for data at
# 0x20000000 (25 MHz); mps3-an547 (Corstone-300 class, 32 MHz) resets from its 512 KB ITCM at 0
# and has 2 MB of SRAM at 0x01000000 and 512 KB of DTCM at 0x20000000. It starts in Secure state
# with the SAU off, so every address is Secure and these aliases work (as NuttX and Zephyr use them).
BOARDS = {
    "mps2-an386": Board("mps2-an386", "cortex-m4", 0x0, 4 * MiB, 0x2000_0000, 4 * MiB, 25_000_000),
    "mps2-an500": Board("mps2-an500", "cortex-m7", 0x0, 4 * MiB, 0x2000_0000, 4 * MiB, 25_000_000),
    "mps3-an547": Board(
        "mps3-an547", "cortex-m55", 0x0100_0000, 2 * MiB, 0x2000_0000, 512 * KiB, 32_000_000, 0x0, 512 * KiB
    ),
}
MACHINE_FOR_CPU = {board.cpu: name for name, board in BOARDS.items()}
