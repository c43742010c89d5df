"""The headline promise, on the default recipe (MNIST, distilled, pruned, QAT), as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli


def test_default_recipe_for_rpi4_and_cortex_m4(tmp_path: Path) -> None:
    # edgebuild --target rpi4: int8 at most 1/8 of the float teacher, at most 1 point lost,
    # sparsity within 2 points of the profile's 50 %.
    result = run_cli("--target", "rpi4", "--quiet", cwd=tmp_path)
    assert result.code == 0, result.err
    out = tmp_path / "build" / "mnist" / "rpi4"
    report = json.loads((out / "report.json").read_text())
    teacher, artifact = report["teacher"], report["artifact"]
    assert report["recipe"] == "mnist"
    assert artifact["precision"] == "int8"
    assert artifact["tflite_bytes"] * 8 <= teacher["tflite_bytes"]
    assert teacher["accuracy"] - artifact["accuracy"] <= 0.01
    assert abs(artifact["sparsity"] - 0.5) <= 0.02
    skipped = {s["name"] for s in report["stages"] if s["summary"].startswith("skipped")}
    assert skipped == {"vela", "link"}  # the whole compression plan ran

    # edgebuild --target cortex-m4: validated on TFLM with the arena found, no output more
    # than 1 LSB from the reference kernels, top-1 agreement at least 99 %.
    result = run_cli("--target", "cortex-m4", "--quiet", cwd=tmp_path)
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "build" / "mnist" / "cortex-m4" / "report.json").read_text())
    validation = report["validation"]
    assert validation["runner"] == "tflm-host"
    assert validation["max_lsb_diff"] <= 1
    assert validation["max_op_lsb_diff"] <= 1
    assert validation["top1_agreement"] >= 0.99
    assert report["artifact"]["arena_bytes"] > 0
    assert f"arena {report['artifact']['arena_bytes']:,} B" in result.out
