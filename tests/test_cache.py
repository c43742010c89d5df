"""The stage cache, no-op rebuilds, determinism and `edgebuild verify`, on real builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgebuild.cache import StageCache, cache_key
from tests.conftest import Build, assert_error, assert_one_line_error, quick_project, run_cli

REPRODUCIBLE = ("model.tflite", "model_data.h", "model_data.cc", "model_ops.h")


def stages(out: Path) -> dict[str, str]:
    report = json.loads((out / "report.json").read_text())
    return {s["name"]: s["summary"] for s in report["stages"]}


def test_store_load_and_corruption(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    key = cache_key("stage", 1, {"a": [1, 2]})
    assert key == cache_key("stage", 1, {"a": [1, 2]}) != cache_key("stage", 2, {"a": [1, 2]})
    cache.store(key, {"w0000": np.arange(6, dtype=np.float32)}, {"summary": "done"})
    entry = cache.load(key)
    assert entry is not None and entry.meta == {"summary": "done"}
    assert entry.arrays["w0000"].tolist() == [0, 1, 2, 3, 4, 5]
    arrays = next(tmp_path.glob("??/*/arrays.npz"))
    arrays.write_bytes(arrays.read_bytes()[:-9] + b"corrupted")
    assert cache.load(key) is None
    assert cache.corrupt == [key]
    assert not arrays.parent.exists()  # removed, so the next build rebuilds it


def test_lru_eviction_and_clear(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, max_bytes=10**9)
    keys = [cache_key(i) for i in range(3)]
    for key in keys:
        cache.store(key, {"w0000": np.zeros(10_000, dtype=np.uint8)}, {})
    sizes = [size for _, size, _ in cache.entries()]
    cache.load(keys[0])  # now the most recently used
    cache.max_bytes = sum(sizes) - 1
    removed = cache.evict()
    assert [p.name for p in removed] == [keys[1]]
    assert cache.load(keys[0]) is not None and cache.load(keys[2]) is not None
    assert cache.clear() > 0 and cache.entries() == []


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, enabled=False)
    cache.store("k" * 64, {}, {})
    assert cache.load("k" * 64) is None and not tmp_path.joinpath("kk").exists()


def _imports_tensorflow(cwd: Path, env: dict[str, str], *args: str) -> tuple[bool, str]:
    code = (
        "import sys\nfrom edgebuild.cli import main\ntry:\n"
        f"    main({list(args)!r})\nexcept SystemExit as e:\n    print('exit', e.code)\n"
        "print('tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, check=True)
    lines = proc.stdout.strip().splitlines()
    return lines[-1] == "True", proc.stdout


@pytest.mark.slow
def test_cache_reuse_no_op_and_budget_change(project: Path, tmp_path: Path) -> None:
    import os

    env = {"EDGEBUILD_CACHE_DIR": str(tmp_path / "cache")}
    quick_project(project)
    assert run_cli("--target", "rpi4-relaxed", "-q", cwd=project, env=env).code == 0
    rpi4 = project / "build" / "quick" / "rpi4-relaxed"
    assert not any(s.endswith("(cached)") for s in stages(rpi4).values())

    # Everything current: says so, and never imports TensorFlow.
    imported, stdout = _imports_tensorflow(project, {**os.environ, **env}, "--target", "rpi4-relaxed")
    assert "is up to date" in stdout and "exit 0" in stdout
    assert not imported

    # A second target with the same precision and sparsity reuses teacher, pruning, QAT and conversion.
    assert run_cli("--target", "cortex-m4-relaxed", "-q", cwd=project, env=env).code == 0
    m4 = project / "build" / "quick" / "cortex-m4-relaxed"
    cached = {name for name, summary in stages(m4).items() if summary.endswith("(cached)")}
    assert cached == {"baseline", "distill", "prune", "qat", "convert"}
    assert (m4 / "model.tflite").read_bytes() == (rpi4 / "model.tflite").read_bytes()

    # Changing only a budget re-runs validation-free stages only: validate comes from the cache too.
    target = project / "targets" / "cortex-m4-relaxed.toml"
    target.write_text(target.read_text().replace("arena_bytes = 163_840", "arena_bytes = 100_000"))
    result = run_cli("--target", "cortex-m4-relaxed", "-q", cwd=project, env=env)
    assert result.code == 0, result.err
    cached = {name for name, summary in stages(m4).items() if summary.endswith("(cached)")}
    assert cached == {"baseline", "distill", "prune", "qat", "convert", "validate"}
    budgets = json.loads((m4 / "report.json").read_text())["budgets"]
    assert next(b for b in budgets if b["name"] == "arena_bytes")["limit"] == 100_000

    # A corrupt entry is found by its hash, removed and rebuilt; the result is the same.
    before = {name: (m4 / name).read_bytes() for name in REPRODUCIBLE}
    for arrays in (tmp_path / "cache").glob("??/*/arrays.npz"):
        arrays.write_bytes(b"\0" * arrays.stat().st_size)
    target.write_text(target.read_text().replace("arena_bytes = 100_000", "arena_bytes = 100_016"))
    result = run_cli("--target", "cortex-m4-relaxed", cwd=project, env=env)
    assert result.code == 0, result.err
    assert "was corrupt" in result.err
    assert not any(s.endswith("(cached)") for s in stages(m4).values())
    assert {name: (m4 / name).read_bytes() for name in REPRODUCIBLE} == before

    # clean --cache empties it.
    result = run_cli("clean", "--cache", cwd=project, env=env)
    assert result.code == 0 and "emptied the stage cache" in result.out
    assert not (project / "build").exists()
    assert StageCache(tmp_path / "cache").entries() == []


@pytest.mark.slow
def test_a_build_after_other_models_in_the_process_gives_the_same_bytes(
    clean_quick_build: Build, tmp_path: Path
) -> None:
    # A search's trials build one after another in one Ray worker process. Keras numbers the layers
    # it makes in a process (dense, dense_1, ...) and the numbers end up in the .tflite's tensor
    # names: each build starts from a cleared Keras session, so it gives a fresh process's bytes.
    from edgebuild.pipeline import build_in
    from tests.models import tiny_keras

    tiny_keras()  # layers made before the build advance Keras's counters
    out = tmp_path / "out"
    build_in(
        clean_quick_build.project, clean_quick_build.project / "edgebuild.toml", "cortex-m4-relaxed", out, cache=False
    )
    for name in ("model.tflite", "model_data.cc"):
        assert (out / name).read_bytes() == (clean_quick_build.out / name).read_bytes(), name


@pytest.mark.slow
def test_clean_builds_are_byte_identical_and_verify(clean_quick_build: Build, tmp_path: Path) -> None:
    assert not clean_quick_build.cache.exists()  # --no-cache neither reads nor writes
    out = tmp_path / "out"
    shutil.copytree(clean_quick_build.out, out)  # the session's build, read by test_determinism too
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(REPRODUCIBLE) <= set(manifest["outputs"])
    assert manifest["inputs"]["dataset"]["spec"] == "digits"
    assert {"tensorflow", "tf-keras", "tensorflow-model-optimization"} <= set(manifest["tools"])
    timestamps = [p for p in REPRODUCIBLE if b"2026" in (out / p).read_bytes()]
    assert timestamps == []

    # verify rebuilds in a fresh process, without the cache, and compares every file.
    env = {"EDGEBUILD_CACHE_DIR": str(tmp_path / "cache")}
    result = run_cli("verify", str(out / "manifest.json"), cwd=tmp_path, env=env)
    assert result.code == 0, result.err
    assert result.out == f"{out / 'manifest.json'}: identical: every reproducible output matches the rebuild\n"

    # A recorded hash that no longer matches is named.
    manifest["outputs"]["model.tflite"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("verify", str(out / "manifest.json"), cwd=tmp_path, env=env)
    assert_error(result, 1, f"{out / 'manifest.json'}: 1 output(s) differ from the rebuild: model.tflite")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("content", ["", "{not json", '{"inputs": {}}'])
def test_verify_refuses_a_bad_manifest(tmp_path: Path, content: str) -> None:
    (tmp_path / "manifest.json").write_text(content)
    result = run_cli("verify", str(tmp_path / "manifest.json"), cwd=tmp_path)
    assert_one_line_error(result, 2, "not an edgebuild manifest.json")
