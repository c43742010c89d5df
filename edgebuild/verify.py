"""``edgebuild verify``: rebuild from a manifest in a temporary folder and compare the outputs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgebuild.cache import StageCache
from edgebuild.devices import parse_device
from edgebuild.errors import ConfigError
from edgebuild.manifest import NOT_REPRODUCIBLE, input_files, output_hashes, read_manifest, settings
from edgebuild.pipeline import BuildOptions, run_build
from edgebuild.progress import Reporter
from edgebuild.schema import load_recipe, load_target


def verify(manifest_path: Path) -> list[str]:
    """Rebuild the manifest's recipe for its target without the cache; return the outputs that differ.

    Outputs that hold timings (report.json, report.md, report.html) are not compared. Raises
    ConfigError when the manifest is unreadable or an input changed since the build.
    """
    manifest = read_manifest(manifest_path)
    if manifest is None or "inputs" not in manifest or "outputs" not in manifest:
        raise ConfigError(
            f"{manifest_path}: not an edgebuild manifest.json", hint="give build/<recipe>/<target>/manifest.json"
        )
    inputs = manifest["inputs"]
    options = manifest.get("options", {})
    recipe = load_recipe(Path(inputs["recipe"]["path"]))
    target = load_target(Path(inputs["target"]["path"]))
    for what, loaded in (("recipe", recipe), ("target", target)):
        if json.loads(json.dumps(settings(loaded), default=str)) != inputs[what]["settings"]:
            raise ConfigError(f"{manifest_path}: the {what} {inputs[what]['path']} changed since the build")
    for what, recorded in input_files(recipe).items():
        if inputs.get(what) != recorded:
            raise ConfigError(f"{manifest_path}: the {what} {recorded['spec']} changed since the build")
    with tempfile.TemporaryDirectory(prefix="edgebuild-verify-") as tmp:
        out = Path(tmp) / "out"
        run_build(
            recipe,
            target,
            out,
            Reporter(quiet=True),
            StageCache(Path(tmp) / "cache", enabled=False),
            BuildOptions(
                device=parse_device(options.get("device", target.validate.device)),
                convert_sparsity=bool(options.get("convert_sparsity", False)),
                allow_unsafe_model=bool(options.get("allow_unsafe_model", False)),
                compare_kernels=bool(options.get("compare_kernels", False)),
            ),
        )
        rebuilt = output_hashes(out)
    recorded_outputs: dict[str, str] = manifest["outputs"]
    names = sorted(set(rebuilt) | set(recorded_outputs))
    return [
        name
        for name in names
        if Path(name).name not in NOT_REPRODUCIBLE and rebuilt.get(name) != recorded_outputs.get(name)
    ]
