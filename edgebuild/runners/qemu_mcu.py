"""Run firmware on an emulated Cortex-M board: ``qemu-system-arm`` with semihosting and ``-icount``.

The firmware (``mcu_firmware.build_firmware``: the build's emitted model files, TFLM and the
harness) reads ``inputs.bin`` and writes ``outputs.bin``, ``ticks.bin`` and ``result.bin`` in a
private folder that is QEMU's working folder (semihosting file I/O). ``-icount shift=0`` makes
every instruction take 1 ns of virtual time, so SysTick ticks count instructions (DWT's cycle
counter is not emulated): the figures are instructions, not cycles, and emulated. A run that
outlasts its wall-clock limit is stopped; a fault or a firmware error comes back in one line
with the last thing the firmware wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgebuild.errors import BuildError, ConfigError
from edgebuild.firmware import FirmwareModel
from edgebuild.mcu_firmware import FirmwareImage
from edgebuild.runners import OUTPUTS, RunResult
from edgebuild.runners.text import last_line

RESULT_MAGIC = 0xEDB0F1A5
QEMU = "qemu-system-arm"
ARENA_TOO_SMALL = 5  # the harness's exit code when AllocateTensors() fails


class ArenaTooSmall(BuildError):
    """TFLM on the board could not allocate the model's tensors in the firmware's arena."""


class QemuMcu:
    """A Cortex-M board emulated by ``qemu-system-arm``, running the firmware built for it."""

    label = "qemu"
    capabilities = frozenset({OUTPUTS})

    def __init__(self, image: FirmwareImage, model: FirmwareModel, *, timeout_s: float | None = None):
        """``image`` runs ``model`` (its data must be what ``run`` is given); a run stops after
        ``timeout_s`` seconds (default: 60 s plus 0.25 s per input)."""
        self.image = image
        self.model = model
        self.timeout_s = timeout_s

    @property
    def device(self) -> str:
        board = self.image.board
        kernels = "CMSIS-NN" if self.image.config.kernels == "cmsis-nn" else "reference"
        return f"qemu-system-arm -M {board.machine} ({board.cpu}, TFLM with {kernels} kernels, emulated)"

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Run every input through the firmware, one ``Invoke()`` each.

        Returns the first output of each input, no latency (emulated time says nothing), and in
        ``extra``: ``instructions`` per inference, ``arena_used_bytes``, ``arena_bytes``,
        ``stack_used_bytes`` and ``stack_bytes``. Raises ConfigError without ``qemu-system-arm``,
        BuildError when the firmware faults, fails, or runs past the wall-clock limit (ArenaTooSmall
        when TFLM cannot allocate the tensors in the firmware's arena).
        """
        if reference:
            raise ValueError("the firmware runs TFLM, not LiteRT's reference kernels")
        if model != self.model.data:
            raise ValueError("this firmware was built for another model")
        if shutil.which(QEMU) is None:
            raise ConfigError(
                f"--device qemu on a Cortex-M target needs {QEMU}, which is not installed",
                hint="install it with: apt-get install qemu-system-arm",
            )
        board = self.image.board
        limit = self.timeout_s if self.timeout_s is not None else 60.0 + 0.25 * len(inputs)
        output = self.model.outputs[0]
        with tempfile.TemporaryDirectory(prefix="edgebuild-qemu-") as tmp:
            folder = Path(tmp)
            np.ascontiguousarray(inputs).tofile(folder / "inputs.bin")
            command = [
                QEMU,
                "-M",
                board.machine,
                "-nographic",
                "-monitor",
                "none",
                "-semihosting-config",
                "enable=on,target=native",
                "-icount",
                "shift=0",
                "-kernel",
                str(self.image.elf),
            ]
            try:
                proc = subprocess.run(
                    command, cwd=folder, capture_output=True, text=True, errors="replace", timeout=limit
                )
            except subprocess.TimeoutExpired as e:
                said = _text(e.stdout) + _text(e.stderr)
                raise BuildError(
                    f"the firmware ran past the {limit:.0f} s limit on qemu-system-arm -M {board.machine} and was "
                    f"stopped (last output: {last_line(said) or 'none'})",
                    hint="a firmware that hangs: run it by hand with the command in the build's log",
                ) from None
            said = proc.stdout + proc.stderr
            if proc.returncode == ARENA_TOO_SMALL:
                raise ArenaTooSmall(
                    f"TFLM on qemu-system-arm -M {board.machine} cannot allocate the model's tensors in the "
                    "firmware's tensor arena"
                )
            if proc.returncode != 0:
                raise BuildError(
                    f"the firmware stopped with exit code {proc.returncode} on qemu-system-arm -M {board.machine}: "
                    f"{last_line(said) or 'no output'}",
                    hint="exit 3 is a CPU fault, 2 TFLM refusing the model, 4 semihosting file I/O",
                )
            result = np.fromfile(folder / "result.bin", dtype="<u4") if (folder / "result.bin").is_file() else None
            if result is None or len(result) != 6 or result[0] != RESULT_MAGIC or result[1] != len(inputs):
                raise BuildError(
                    f"the firmware on {board.machine} did not run every input "
                    f"(last output: {last_line(said) or 'none'})"
                )
            raw = np.fromfile(folder / "outputs.bin", dtype=np.dtype(output["dtype"]))
            outputs = raw.reshape(len(inputs), *[int(d) for d in output["shape"]][1:])
            ticks = np.fromfile(folder / "ticks.bin", dtype="<u8")
        instructions = [float(t) * board.instructions_per_tick for t in ticks]
        return RunResult(
            outputs=outputs,
            latency_ms=[],
            device=self.device,
            emulated=True,
            peak_memory_bytes=None,
            extra={
                "instructions": instructions,
                "arena_used_bytes": int(result[2]),
                "arena_bytes": int(result[3]),
                "stack_used_bytes": int(result[4]),
                "stack_bytes": int(result[5]),
            },
        )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
