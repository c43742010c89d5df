"""End to end with real TensorFlow, TF-MOT, LiteRT and TFLM on small real models."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgebuild
from edgebuild.errors import BudgetError
from edgebuild.schema import Target, find_file, load_target
from tests.conftest import assert_one_line_error, quick_project, run_cli, shipped

REPORT_KEYS = {
    "recipe",
    "target",
    "teacher",
    "artifact",
    "validation",
    "budgets",
    "stages",
}


def check_report(report: dict, target: str) -> None:  # type: ignore[type-arg]
    assert set(report) >= REPORT_KEYS
    assert report["target"] == target
    for key in ("accuracy", "tflite_bytes"):
        assert key in report["teacher"]
    for key in ("accuracy", "tflite_bytes", "sparsity", "arena_bytes"):
        assert key in report["artifact"]
    for key in ("runner", "mismatched_outputs", "max_lsb_diff"):
        assert key in report["validation"]
    assert [s["name"] for s in report["stages"]] == [
        "preflight",
        "baseline",
        "distill",
        "prune",
        "qat",
        "convert",
        "validate",
        "vela",
        "emit",
        "link",
        "report",
    ]
    assert all({"name", "limit", "actual", "ok"} <= set(b) for b in report["budgets"])
    assert all(b["ok"] for b in report["budgets"])


def _shipped_target(name: str) -> Target:
    return load_target(find_file("targets", name, Path("/")))


def compile_c_array(folder: Path, tmp_path: Path) -> None:
    main = tmp_path / "main.cc"
    main.write_text(
        '#include "model_data.h"\n'
        "int main() { return g_digits_model_data_len > 0 && "
        "(reinterpret_cast<unsigned long>(g_digits_model_data) % 16) == 0 ? 0 : 1; }\n"
    )
    exe = tmp_path / "main"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{folder}",
            str(main),
            str(folder / "model_data.cc"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    subprocess.run([str(exe)], check=True)


@pytest.mark.slow
def test_digits_for_rpi4_from_the_cli(project: Path, tmp_path: Path) -> None:
    result = run_cli("build", "--recipe", "digits", "--target", "rpi4", "--quiet", cwd=project)
    assert result.code == 0, result.err
    out = project / "build" / "digits" / "rpi4"
    assert sorted(p.name for p in out.iterdir()) == [
        "infer.py",
        "labels.txt",
        "manifest.json",
        "model.json",
        "model.tflite",
        "model_data.cc",
        "model_data.h",
        "report.html",
        "report.json",
        "report.md",
    ]
    report = json.loads((out / "report.json").read_text())
    check_report(report, "rpi4")
    artifact = report["artifact"]
    assert artifact["tflite_bytes"] == (out / "model.tflite").stat().st_size
    assert artifact["arena_bytes"] is None
    assert abs(artifact["sparsity"] - 0.5) <= 0.02
    assert artifact["tflite_bytes"] * 2 < report["teacher"]["tflite_bytes"]
    assert report["teacher"]["accuracy"] - artifact["accuracy"] <= _shipped_target("rpi4").budgets.max_accuracy_drop
    assert report["validation"]["max_op_lsb_diff"] <= 1
    assert artifact["inputs"][0]["dtype"] == "int8"
    assert f"built digits for rpi4 in {out}" in result.out
    assert not list(out.parent.glob(".*"))  # no temporary folders left behind
    compile_c_array(out, tmp_path)


@pytest.mark.slow
def test_digits_for_cortex_m4_from_python(tmp_path: Path) -> None:
    report = edgebuild.build("digits", "cortex-m4", out=tmp_path / "out")
    check_report(report, "cortex-m4")
    target = _shipped_target("cortex-m4")
    validation = report["validation"]
    assert validation["runner"] == "tflm-host"
    assert "TFLM" in validation["device"]
    assert validation["top1_agreement"] >= target.validate.min_top1_agreement
    assert validation["max_op_lsb_diff"] <= 1
    assert {row["op"] for row in validation["ops"]} >= {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"}
    assert all(row["judged"] > 0 for row in validation["ops"])
    arena = report["artifact"]["arena_bytes"]
    assert 1000 < arena <= (target.budgets.arena_bytes or 0)
    assert any(b["name"] == "arena_bytes" and b["actual"] == arena for b in report["budgets"])
    assert (tmp_path / "out" / "report.md").read_text().count("arena") >= 1


def _tight_target(project: Path, model_bytes: int) -> None:
    text = shipped("targets", "rpi4").replace("model_bytes = 8_388_608", f"model_bytes = {model_bytes}")
    (project / "targets" / "tight.toml").write_text(text.replace('name = "rpi4"', 'name = "tight"'))


@pytest.mark.slow
def test_budget_missed_exits_3_and_keeps_previous_artifacts(project: Path) -> None:
    # 5,000 bytes passes preflight (at least 13,706 / 4 int8 weights after removing half the
    # channels) but not the built file (~9 kB).
    _tight_target(project, 5_000)
    out = project / "out"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"previous good build")
    (out / "manifest.json").write_text('{"outputs": {"model.tflite": "its sha256"}}')  # a previous build's
    result = run_cli("build", "-r", "digits", "-t", "tight", "-o", str(out), "-q", cwd=project)
    assert result.code == 3, result.err
    assert "model_bytes" in result.err and "MISSED" in result.err
    assert "Traceback" not in result.err
    assert result.err.strip().splitlines()[-1].startswith("edgebuild: error: 1 budget(s) missed")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.tflite"]
    assert (out / "model.tflite").read_bytes() == b"previous good build"
    assert [p.name for p in project.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_impossible_budget_fails_in_preflight(project: Path) -> None:
    _tight_target(project, 1_000)
    result = run_cli("build", "-r", "digits", "-t", "tight", "-q", cwd=project)
    assert_one_line_error(result, 3, "preflight", "budgets.model_bytes", "13706 parameters")
    assert not (project / "build").exists()


def test_budget_error_from_python(project: Path) -> None:
    _tight_target(project, 1_000)
    with pytest.raises(BudgetError) as e:
        edgebuild.build("digits", project / "targets" / "tight.toml", out=project / "out")
    assert e.value.exit_code == 3
    assert str(e.value) == (
        f"preflight: {project}/targets/tight.toml: key 'budgets.model_bytes': the model to deploy has 13706 "
        "parameters, so its int8 .tflite is at least 3426 bytes even after pruning, more than the budget of 1000 "
        "(use a narrower model (model.width or distill.student_width) or a larger budget)"
    )
    assert not (project / "out").exists()


@pytest.mark.slow
def test_distilled_mlp_on_npz_for_float16(project: Path) -> None:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 16)) * 3
    y_train, y_test = np.arange(300) % 3, np.arange(90) % 3
    np.savez(
        project / "blobs.npz",
        x_train=(centers[y_train] + rng.normal(size=(300, 16))).astype(np.float32),
        y_train=y_train,
        x_test=(centers[y_test] + rng.normal(size=(90, 16))).astype(np.float32),
        y_test=y_test,
        labels=np.array(["a", "b", "c"]),
    )
    (project / "edgebuild.toml").write_text(
        'name = "blobs"\ndataset = "npz:blobs.npz"\n[model]\narchitecture = "mlp"\nwidth = 1.0\n'
        "[train]\nepochs = 5\nbatch_size = 32\n[distill]\nstudent_width = 0.25\nepochs = 5\n"
    )
    target = shipped("targets", "rpi4").replace('name = "rpi4"', 'name = "phone-f16"')
    target = target.replace(
        'weights = "int8"\nactivations = "int8"\nio = "int8"',
        'weights = "float16"\nactivations = "float32"\nio = "float32"',
    )
    target = target.replace("target = 0.5", "target = 0.0").replace(
        "max_accuracy_drop = 0.01", "max_accuracy_drop = 0.05"
    )
    (project / "targets" / "phone-f16.toml").write_text(target)
    result = run_cli("--target", "phone-f16", "--quiet", cwd=project)
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "blobs" / "phone-f16" / "report.json").read_text())
    stages = {s["name"]: s["summary"] for s in report["stages"]}
    assert stages["distill"].startswith("student mlp width 0.25")
    assert stages["prune"].startswith("skipped")
    assert stages["qat"].startswith("skipped")
    assert report["artifact"]["precision"] == "float16"
    assert report["artifact"]["inputs"][0]["dtype"] == "float32"
    assert report["validation"]["max_lsb_diff"] is None
    # float16 weights: about half the float32 student's bytes, far less than the teacher's.
    assert report["artifact"]["tflite_bytes"] < report["teacher"]["tflite_bytes"] / 4
    shutil.rmtree(project / "build")


@pytest.mark.slow
@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
def test_magnitude_pruning_then_prune_preserving_qat(project: Path, structure: str) -> None:
    """TF-MOT's prune_low_magnitude, strip_pruning, then QAT on the stripped model (which once broke
    the activation-range calibration with a disconnected graph)."""
    quick_project(project)
    text = (project / "targets" / "rpi4-relaxed.toml").read_text()
    text = text.replace('structure = "channel"', f'structure = "{structure}"')
    text = text.replace('exploitable = ["channel"]', f'exploitable = ["{structure}"]')
    (project / "targets" / "magnitude.toml").write_text(text.replace('"rpi4-relaxed"', '"magnitude"'))
    result = run_cli("build", "--target", "magnitude", "--quiet", cwd=project)
    assert result.code == 0, result.err
    report = json.loads((project / "build" / "quick" / "magnitude" / "report.json").read_text())
    stages = {s["name"]: s["summary"] for s in report["stages"]}
    assert ("2:4 pattern" if structure == "2:4" else "polynomial schedule to 50%") in stages["prune"]
    assert stages["qat"].startswith("prune-preserving QAT")
    assert report["artifact"]["sparsity"] >= 0.45
    if structure == "2:4":  # XNNPACK refuses the sparse encoding of int8 FULLY_CONNECTED: stored dense, said so
        assert "sparse_encoding_refused" in report["conversion"]
        assert any("2:4 sparse encoding" in w for w in report["warnings"])
