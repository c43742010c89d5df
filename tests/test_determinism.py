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

import pytest

from edgebuild.tf import ONEDNN_MAX_CPU_ISA
from tests.conftest import Build, quick_project, run_cli

pytestmark = pytest.mark.slow

REPRODUCIBLE = ("model.tflite", "model_data.h", "model_data.cc", "model_ops.h")


def test_the_callers_onednn_isa_does_not_change_the_bytes(clean_quick_build: Build, project: Path) -> None:
    # The session's clean build of the quick recipe for cortex-m4-relaxed was made under
    # ONEDNN_MAX_CPU_ISA=AVX512_CORE_AMX; this one, the same way, under SSE41.
    quick_project(project)
    result = run_cli(
        "--target",
        "cortex-m4-relaxed",
        "--no-cache",
        "--quiet",
        cwd=project,
        env={"ONEDNN_MAX_CPU_ISA": "SSE41"},
    )
    assert result.code == 0, result.err
    widest, narrowest = clean_quick_build.out, project / "build" / "quick" / "cortex-m4-relaxed"
    for name in REPRODUCIBLE:
        digests = [hashlib.sha256((out / name).read_bytes()).hexdigest() for out in (widest, narrowest)]
        assert digests[0] == digests[1], name
    for out in (widest, narrowest):
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["determinism"]["onednn_max_cpu_isa"] == ONEDNN_MAX_CPU_ISA == "AVX2"
