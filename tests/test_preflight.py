"""Preflight asks the real TFLM interpreter whether it has a kernel for every op, before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebuild.errors import ConfigError
from edgebuild.stages.preflight import check_tflm_ops
from edgebuild.tf import keras, tf
from tests.conftest import assert_one_line_error, quick_project, run_cli


def test_op_tflm_lacks_is_named_with_its_layer() -> None:
    k = keras()
    model = k.Sequential(
        [
            k.Input((8,)),
            k.layers.Dense(8),
            k.layers.Lambda(lambda x: tf().math.abs(tf().signal.rfft(x)), name="spectrum"),
        ]
    )
    with pytest.raises(ConfigError, match=r"here: TFLM has no kernel for op RFFT2D.*spectrum"):
        check_tflm_ops(model, "here")


def test_supported_model_passes() -> None:
    k = keras()
    model = k.Sequential([k.Input((6, 6, 1)), k.layers.Conv2D(2, 3), k.layers.Flatten(), k.layers.Dense(3)])
    check_tflm_ops(model, "here")


@pytest.mark.slow
def test_sparsity_the_runtime_cannot_cash_in(project: Path) -> None:
    quick_project(project)
    relaxed = (project / "targets" / "rpi4-relaxed.toml").read_text()
    (project / "targets" / "zeros.toml").write_text(
        relaxed.replace('structure = "channel"', 'structure = "unstructured"').replace('"rpi4-relaxed"', '"zeros"')
    )
    result = run_cli("--target", "zeros", "-q", cwd=project)
    assert_one_line_error(
        result, 2, "zeros.toml", "sparsity.structure", "cannot cash in unstructured sparsity", "--convert-sparsity"
    )
    assert not (project / "build").exists()

    result = run_cli("--target", "zeros", "-q", "--convert-sparsity", cwd=project)
    assert result.code == 0, result.err
    assert "pruning 50% of the channels instead" in result.err
    report = json.loads((project / "build" / "quick" / "zeros" / "report.json").read_text())
    assert report["pruning"]["structure"] == "channel"
    assert report["artifact"]["sparsity_structure"] == "channel"
    assert abs(report["artifact"]["sparsity"] - 0.5) <= 0.02
    layers = {layer["layer"]: layer for layer in report["pruning"]["layers"]}
    assert all(layer["after"] <= layer["before"] for layer in layers.values())
    assert "Channel pruning" in (project / "build" / "quick" / "zeros" / "report.md").read_text()
