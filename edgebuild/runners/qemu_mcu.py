"""Run firmware on an emulated Cortex-M board: ``qemu-system-arm`` with semihosting and ``-icount``.

The firmware (``mcu_firmware.build_firmware``: the build's emitted model files, TFLM and the
harness) reads ``inputs.bin`` and writes ``outputs.bin``, ``ticks.bin`` and ``result.bin`` in a
private folder that is QEMU's working folder (semihosting file I/O). ``-icount shift=0`` makes
every instruction take 1 ns of virtual time, so SysTick ticks count instructions (DWT's cycle
counter is not emulated): the figures are instructions, not cycles, and emulated. A run that
takes longer than its wall-clock limit per inference is stopped (the firmware writes each
inference's ticks as it goes, so progress is seen from outside); a fault or a firmware error
comes back in one line with the last thing the firmware wrote.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
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
STALL_S = 120.0  # the wall-clock limit on each inference (and on the start-up before the first)


class ArenaTooSmall(BuildError):
    """TFLM on the board could not allocate the model's tensors in the firmware's arena."""


class QemuMcu:
    """A Cortex-M board emulated by ``qemu-system-arm``, running the firmware built for it."""

    label = "qemu"
    capabilities = frozenset({OUTPUTS})

    def __init__(self, image: FirmwareImage, model: FirmwareModel, *, timeout_s: float = STALL_S):
        """``image`` runs ``model`` (its data must be what ``run`` is given); a run that finishes no
        inference (or, at the start, none yet) for ``timeout_s`` seconds of wall-clock time is stopped."""
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
        BuildError when the firmware faults, fails, or an inference takes longer than the limit (ArenaTooSmall
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
        limit = self.timeout_s
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
            code, said = _run_watched(command, folder, limit)
            if code is None:
                done = (folder / "ticks.bin").stat().st_size // 8 if (folder / "ticks.bin").is_file() else 0
                raise BuildError(
                    f"the firmware on qemu-system-arm -M {board.machine} finished no inference for {limit:.0f} s "
                    f"(at input {done + 1} of {len(inputs)}) and was stopped "
                    f"(last output: {last_line(said) or 'none'})",
                    hint="a firmware that hangs, or a model far slower than the limit allows",
                )
            if code == ARENA_TOO_SMALL:
                raise ArenaTooSmall(
                    f"TFLM on qemu-system-arm -M {board.machine} cannot allocate the model's tensors in the "
                    "firmware's tensor arena"
                )
            if code != 0:
                raise BuildError(
                    f"the firmware stopped with exit code {code} on qemu-system-arm -M {board.machine}: "
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


def _run_watched(command: list[str], folder: Path, limit: float) -> tuple[int | None, str]:
    """Run QEMU in ``folder``; its exit code and output, or None for the code when an inference (or the
    start-up) took longer than ``limit`` seconds: each finished inference grows ``ticks.bin``."""
    ticks = folder / "ticks.bin"
    with (folder / "qemu.out").open("w+b") as out:
        proc = subprocess.Popen(command, cwd=folder, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        seen, since, stalled = -1, time.monotonic(), False
        try:
            while proc.poll() is None:
                size = ticks.stat().st_size if ticks.is_file() else 0
                if size != seen:
                    seen, since = size, time.monotonic()
                elif time.monotonic() - since > limit:
                    stalled = True
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        said = out.read().decode(errors="replace")
    return (None if stalled else proc.returncode), said
