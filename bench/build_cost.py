"""Build cost: wall time per stage and peak memory of cold builds, and their growth with
dataset size (1x, 2x, 4x) and model width (0.5x, 1x, 2x). No goals, figures only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import failure, measuring, read_report, run_edgebuild, scaled_epochs, shipped, toml_text, write_table

from edgebuild.datasets import Dataset, load_dataset
from edgebuild.schema import load_recipe

# The growth builds run the plan with a fifth of its epochs: per-epoch cost is what grows
# with data and width, and the full plan at 4x data would take most of an hour.
EPOCH_FRACTION = 0.2


def write_scaled_npz(data: Dataset, factor: int, path: Path) -> int:
    """Write ``data`` to ``path`` with ``factor`` times the training images (copies shifted by up to
    one pixel), the test split unchanged. Returns the number of training images written."""
    rng = np.random.default_rng(factor)
    xs, ys = [data.x_train], [data.y_train]
    for _ in range(factor - 1):
        shifts = rng.integers(-1, 2, size=(len(data.x_train), 2))
        xs.append(np.stack([np.roll(img, tuple(s), axis=(0, 1)) for img, s in zip(data.x_train, shifts, strict=True)]))
        ys.append(data.y_train)
    order = rng.permutation(sum(len(a) for a in ys))
    np.savez(
        path,
        x_train=np.concatenate(xs)[order],
        y_train=np.concatenate(ys)[order],
        x_test=data.x_test,
        y_test=data.y_test,
    )
    return len(order)


def build_cost(
    base: dict[str, Any], project: Path, factors: tuple[int, ...], widths: tuple[float, ...]
) -> dict[str, Any]:
    """Cold builds (no cache) for rpi4 of the recipe ``base`` with EPOCH_FRACTION of its epochs, at each
    dataset size in ``factors`` (width 1) and each width in ``widths`` (first factor).

    Returns per variant its training images, wall time, peak memory and stage times (or its error).
    """
    write_table(project, "recipes", base["name"], base)
    recipe = scaled_epochs(base, EPOCH_FRACTION)
    write_table(project, "targets", "rpi4-measure", measuring(shipped("targets", "rpi4")))
    data = load_dataset(load_recipe(project / "recipes" / f"{base['name']}.toml"))
    variants: list[tuple[str, int, float]] = [(f"data-{f}x", f, 1.0) for f in factors]
    variants += [(f"width-{w:g}x", factors[0], w) for w in widths if w != 1.0]
    rows: dict[str, Any] = {}
    for name, factor, width in variants:
        train_images = write_scaled_npz(data, factor, project / f"{name}.npz")
        table = {**recipe, "dataset": f"npz:{name}.npz"}
        table["model"] = {**recipe["model"], "width": recipe["model"]["width"] * width}
        if "distill" in recipe:
            table["distill"] = {**recipe["distill"], "student_width": recipe["distill"]["student_width"] * width}
        (project / f"{name}.toml").write_text(toml_text({**table, "name": name}))
        run = run_edgebuild(project, f"{name}.toml", "rpi4-measure", "--no-cache")
        if run.returncode:
            rows[name] = failure(run, f"edgebuild {name}")
            continue
        report = read_report(project, name, "rpi4-measure")
        rows[name] = {
            "train_images": train_images,
            "width": width,
            "wall_s": round(run.seconds, 1),
            "peak_rss_bytes": run.peak_rss_bytes,
            "stages": {s["name"]: s["seconds"] for s in report["stages"]},
        }
    return {
        "epoch_fraction": EPOCH_FRACTION,
        "plan": {k: recipe.get(k) for k in ("train", "distill", "prune", "qat")},
        "rows": rows,
    }
