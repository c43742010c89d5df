"""The TensorFlow Lite Micro interpreter (the ``tflite-micro`` package) on this machine.

These are TFLM's own kernels and memory planner, so the tensor arena found here is
the arena the firmware needs (for the same TFLM version and the reference kernels).

TFLM aborts the process on some models (an all-zero channel can make it abort while
preparing a kernel) and on some arenas a little too small for the model (a segfault in its
temporary allocator, at a size that depends on the model), so every TFLM call runs in a
child process: a crash there becomes a BuildError here, except in the arena search, where a
size that crashes once a larger one has worked is a size that does not work.
"""

from __future__ import annotations

import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgebuild.errors import BuildError
from edgebuild.runners import OUTPUTS, RunResult

ARENA_ALIGN = 16
MAX_ARENA_BYTES = 256 * 1024 * 1024
# The search starts large (doubling until a size works), then bisects down to no lower
# than just under the total TFLM's recording allocator reports.
FIRST_PROBE_BYTES = 256 * 1024
CHILD_TIMEOUT_S = 1800
# The arena search restarts after a probe that crashed; each restart knows one more size.
MAX_ARENA_CRASHES = 16


class TflmCrash(BuildError):
    """The TFLM child process died of a signal; ``journal`` is what it wrote of its arena probes."""

    journal = ""


# ---------------------------------------------------------------- in the child process


def _interpreter(model: bytes, arena_bytes: int, keep_all: bool = False) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    config = (
        runtime.InterpreterConfig.kPreserveAllTensors if keep_all else runtime.InterpreterConfig.kAllocationRecording
    )
    return runtime.Interpreter.from_bytes(model, arena_size=arena_bytes, intrepreter_config=config)


def try_arena(model: bytes, arena_bytes: int, sample: np.ndarray) -> bool:
    """Whether one inference works with this arena (in this process: call it in a child)."""
    try:
        interpreter = _interpreter(model, arena_bytes)
        interpreter.set_input(sample[None], 0)
        interpreter.invoke()
    except RuntimeError:
        return False
    return True


def _recorded_total(interpreter: Any) -> int | None:
    """The arena TFLM's recording allocator says it used (printed to fd 2)."""
    from edgebuild.capture import captured_stderr

    with captured_stderr() as log:
        interpreter.print_allocations()
    match = re.search(r"Arena allocation total (\d+) bytes", log[0])
    return int(match.group(1)) if match else None


def _min_arena(model: bytes, sample: np.ndarray, known: dict[int, bool], journal: Path) -> int:
    """The smallest working arena, probing sizes not in ``known`` (size -> works).

    Each probe is written to ``journal`` before it starts ("size ?") and when it ends
    ("size 1" or "size 0"), so that the parent can tell which size crashed this process.
    """

    def works_with(size: int) -> bool:
        if size not in known:
            with journal.open("a") as log:
                log.write(f"{size} ?\n")
            known[size] = try_arena(model, size, sample)
            with journal.open("a") as log:
                log.write(f"{size} {int(known[size])}\n")
        return known[size]

    works = FIRST_PROBE_BYTES
    while not works_with(works):
        if works >= MAX_ARENA_BYTES:
            raise RuntimeError(f"no arena up to {MAX_ARENA_BYTES} bytes works")
        works *= 2
    interpreter = _interpreter(model, works)
    interpreter.set_input(sample[None], 0)
    interpreter.invoke()
    recorded = _recorded_total(interpreter) or works
    low = max(recorded // ARENA_ALIGN * ARENA_ALIGN - ARENA_ALIGN, ARENA_ALIGN)
    if works_with(low):
        return low  # less than TFLM recorded using: never seen, but then this is the answer
    while works - low > ARENA_ALIGN:  # invariant: low fails, works works
        middle = (low + works) // 2 // ARENA_ALIGN * ARENA_ALIGN
        if middle <= low:
            break
        if works_with(middle):
            works = middle
        else:
            low = middle
    return works


def _child(job: str, folder: Path) -> None:
    """Run one job on ``folder/model.tflite`` and ``folder/inputs.npy``; write ``folder/result.npz``."""
    model = (folder / "model.tflite").read_bytes()
    inputs = np.load(folder / "inputs.npy")
    args = json.loads((folder / "args.json").read_text())
    result: dict[str, np.ndarray] = {}
    if job == "arena":
        known = {int(size): bool(works) for size, works in args["known"]}
        result["arena_bytes"] = np.array(_min_arena(model, inputs[0], known, folder / "journal.txt"))
    elif job == "load":
        interpreter = _interpreter(model, MAX_ARENA_BYTES // 4)
        interpreter.set_input(inputs[0][None], 0)
        interpreter.invoke()
    elif job == "run":
        interpreter = _interpreter(model, args["arena_bytes"])
        outputs, latency = [], []
        for sample in inputs:
            interpreter.set_input(sample[None], 0)
            start = time.perf_counter()
            interpreter.invoke()
            latency.append((time.perf_counter() - start) * 1000.0)
            outputs.append(np.array(interpreter.get_output(0))[0])
        result["outputs"], result["latency_ms"] = np.stack(outputs), np.array(latency)
    elif job == "tensors":
        interpreter = _interpreter(model, args["arena_bytes"], keep_all=True)
        for n, sample in enumerate(inputs):
            interpreter.set_input(sample[None], 0)
            interpreter.invoke()
            for index in args["tensors"]:
                result[f"{n}_{index}"] = np.asarray(interpreter.GetTensor(index, 0)["tensor_data"])
    np.savez(folder / "result.npz", **result)  # type: ignore[arg-type]


# ---------------------------------------------------------------- in the build process


def _tflm_reason(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return "; ".join(lines[:3]) or "TFLM gave no reason"


def in_child(job: str, model: bytes, inputs: np.ndarray, **args: Any) -> dict[str, np.ndarray]:
    """Run a TFLM job in a child process and return its arrays.

    Raises BuildError naming the signal when TFLM crashes, or TFLM's own words when it fails.
    """
    with tempfile.TemporaryDirectory(prefix="edgebuild-tflm-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(model)
        np.save(folder / "inputs.npy", inputs)
        (folder / "args.json").write_text(json.dumps(args))
        proc = subprocess.run(
            [sys.executable, "-m", "edgebuild.runners.tflm_host", job, str(folder)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            crash = TflmCrash(
                f"the TFLM interpreter crashed ({name}) on this model: {_tflm_reason(proc.stderr)}",
                hint="TFLM aborts on some models, for example one with an all-zero channel",
            )
            journal = folder / "journal.txt"
            crash.journal = journal.read_text() if journal.is_file() else ""
            raise crash
        if proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr:
            # TFLM's own failures come back as one RuntimeError line; anything else is a bug in edgebuild.
            raise RuntimeError(f"the TFLM child process failed:\n{proc.stderr.strip()}")
        if proc.returncode != 0:
            raise BuildError(f"TFLM cannot run the model: {_tflm_reason(proc.stderr)}")
        with np.load(folder / "result.npz") as result:
            return {key: result[key] for key in result.files}


def find_min_arena(model: bytes, sample: np.ndarray) -> int:
    """The smallest tensor arena (a multiple of 16 bytes) with which TFLM runs the model.

    TFLM segfaults on some sizes just under the one it needs: a probe that crashed after a
    larger arena worked counts as a size that does not work, and the search goes on in a new
    child process. Raises BuildError when TFLM cannot run the model at all (an unsupported
    op, say) or crashes before any arena worked.
    """
    known: dict[int, bool] = {}
    for _ in range(MAX_ARENA_CRASHES):
        try:
            return int(in_child("arena", model, sample[None], known=sorted(known.items()))["arena_bytes"])
        except TflmCrash as crash:
            probes = [line.split() for line in crash.journal.splitlines()]
            known.update((int(size), ended == "1") for size, ended in probes if ended != "?")
            crashed = [int(size) for size, ended in probes if ended == "?"]
            if not crashed or not any(known.values()):
                raise
            known[crashed[-1]] = False
    raise BuildError(f"the TFLM interpreter crashed on {MAX_ARENA_CRASHES} arena sizes while finding the smallest")


def check_loads(model: bytes, sample: np.ndarray) -> None:
    """Raise BuildError (with TFLM's reason, e.g. a missing op) unless TFLM runs one inference."""
    in_child("load", model, sample[None])


def intermediate_tensors(
    model: bytes, inputs: np.ndarray, tensors: list[int], arena_bytes: int
) -> list[dict[int, np.ndarray]]:
    """Per input, the values TFLM computed for the given tensor indices (an arena that keeps them all)."""
    result = in_child("tensors", model, inputs, tensors=tensors, arena_bytes=arena_bytes)
    return [{index: result[f"{n}_{index}"] for index in tensors} for n in range(len(inputs))]


class TflmHost:
    """Runs a model in TFLM with a given tensor arena, one input at a time."""

    label = "tflm-host"
    capabilities = frozenset({OUTPUTS})

    def __init__(self, *, arena_bytes: int):
        self.arena_bytes = arena_bytes

    def run(self, model: bytes, inputs: np.ndarray, reference: bool = False) -> RunResult:
        """Run every input; returns the first output per input. Raises BuildError if TFLM fails."""
        if reference:
            raise ValueError("TFLM has no LiteRT reference kernels")
        result = in_child("run", model, inputs, arena_bytes=self.arena_bytes)
        return RunResult(
            outputs=result["outputs"],
            latency_ms=result["latency_ms"].tolist(),
            device=f"host {platform.machine()} TFLM interpreter (tflite-micro), arena {self.arena_bytes} bytes",
            peak_memory_bytes=self.arena_bytes,
        )


if __name__ == "__main__":
    try:
        _child(sys.argv[1], Path(sys.argv[2]))
    except (RuntimeError, ValueError) as e:  # TFLM's own failure: its log on fd 2 says why
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
