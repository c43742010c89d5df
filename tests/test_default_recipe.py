"""The headline promise, on the default recipe (MNIST, distilled, pruned, QAT), as a user runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgebuild.schema import Target, find_file, load_target
from tests.conftest import Build

pytestmark = pytest.mark.slow


def _target(name: str) -> Target:
    """A shipped target profile."""
    return load_target(find_file("targets", name, Path("/")))


def test_default_recipe_for_rpi4_and_cortex_m4(default_recipe_build: Callable[[str], Build]) -> None:
    # edgebuild --target rpi4: int8 at most 1/8 of the float teacher, no more accuracy lost
    # than the profile's budget (1 point), sparsity within 2 points of the profile's 50 %.
    report = json.loads((default_recipe_build("rpi4").out / "report.json").read_text())
    teacher, artifact = report["teacher"], report["artifact"]
    assert report["recipe"] == "mnist"
    assert artifact["precision"] == "int8"
    assert artifact["tflite_bytes"] * 8 <= teacher["tflite_bytes"]
    assert teacher["accuracy"] - artifact["accuracy"] <= _target("rpi4").budgets.max_accuracy_drop
    assert abs(artifact["sparsity"] - 0.5) <= 0.02
    skipped = {s["name"] for s in report["stages"] if s["summary"].startswith("skipped")}
    assert skipped == {"vela", "link"}  # the whole compression plan ran

    # edgebuild --target cortex-m4: validated on TFLM with the arena found, no op more than
    # 1 LSB from LiteRT's reference kernel on identical inputs, top-1 agreement at least the
    # profile's minimum. Not the end-to-end LSB: 1-LSB roundings (FULLY_CONNECTED, SOFTMAX)
    # grow through later layers by amounts that depend on the trained weights (6 LSB seen).
    m4 = default_recipe_build("cortex-m4")
    report = json.loads((m4.out / "report.json").read_text())
    validation = report["validation"]
    assert validation["runner"] == "tflm-host"
    assert validation["max_op_lsb_diff"] <= 1
    assert validation["top1_agreement"] >= _target("cortex-m4").validate.min_top1_agreement
    assert report["artifact"]["arena_bytes"] > 0
    assert f"arena {report['artifact']['arena_bytes']:,} B" in m4.result.out
