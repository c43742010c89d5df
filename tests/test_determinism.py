"""Builds agree across instruction sets: oneDNN's is pinned, whatever the caller's environment says.

oneDNN (TensorFlow's float matrix products) picks its kernels by instruction set, and other kernels
train other weights from the same seed. Measured on an AVX-512 machine without the pin:
this very build gave a different ``model.tflite`` under ``ONEDNN_MAX_CPU_ISA=SSE41`` than
under ``AVX512_CORE_AMX`` (and a third one under ``AVX2``). Capping the instruction set in
the caller's environment stands in for machines with other instruction sets.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgebuild.tf import ONEDNN_MAX_CPU_ISA
from tests.conftest import quick_project, run_cli

REPRODUCIBLE = ("model.tflite", "model_data.h", "model_data.cc")


def _build(project: Path, isa: str) -> Path:
    """A clean build of the quick recipe for rpi4-relaxed, ``ONEDNN_MAX_CPU_ISA=isa`` in the caller's environment."""
    out = project / f"out-{isa}"
    result = run_cli(
        "--target",
        "rpi4-relaxed",
        "--no-cache",
        "--quiet",
        "--out",
        str(out),
        cwd=project,
        env={"ONEDNN_MAX_CPU_ISA": isa},
    )
    assert result.code == 0, result.err
    return out


def test_the_callers_onednn_isa_does_not_change_the_bytes(project: Path) -> None:
    quick_project(project)
    widest, narrowest = _build(project, "AVX512_CORE_AMX"), _build(project, "SSE41")
    for name in REPRODUCIBLE:
        digests = [hashlib.sha256((out / name).read_bytes()).hexdigest() for out in (widest, narrowest)]
        assert digests[0] == digests[1], name
    for out in (widest, narrowest):
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["determinism"]["onednn_max_cpu_isa"] == ONEDNN_MAX_CPU_ISA == "AVX2"
