"""Built-in architectures with a width multiplier, and loading of saved Keras models.

Every built-in model ends in a linear ``Dense`` followed by a separate ``Softmax``
layer, so distillation can read the logits and the deployed model still outputs
probabilities.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from edgebuild.errors import ConfigError
from edgebuild.tf import keras


def _channels(base: int, width: float) -> int:
    return max(1, round(base * width))


def _small_cnn(layers: Any, shape: tuple[int, ...], classes: int, width: float) -> list[Any]:
    # Small inputs (8x8 digits) keep their size through the convolutions.
    padding = "same" if min(shape[:2]) < 16 else "valid"
    return [
        layers.Conv2D(_channels(16, width), 3, padding=padding, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(_channels(32, width), 3, padding=padding, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(_channels(64, width), activation="relu"),
    ]


def _ds_cnn(layers: Any, shape: tuple[int, ...], classes: int, width: float) -> list[Any]:
    stride = 2 if min(shape[:2]) >= 16 else 1
    stack: list[Any] = [layers.Conv2D(_channels(32, width), 3, strides=stride, padding="same", activation="relu")]
    for filters in (32, 64):
        stack += [
            layers.DepthwiseConv2D(3, padding="same", activation="relu"),
            layers.Conv2D(_channels(filters, width), 1, activation="relu"),
        ]
    return [*stack, layers.GlobalAveragePooling2D()]


def _mlp(layers: Any, shape: tuple[int, ...], classes: int, width: float) -> list[Any]:
    return [
        layers.Flatten(),
        layers.Dense(_channels(128, width), activation="relu"),
        layers.Dense(_channels(64, width), activation="relu"),
    ]


ARCHITECTURES = {"small_cnn": _small_cnn, "ds_cnn": _ds_cnn, "mlp": _mlp}


def build_model(architecture: str, input_shape: tuple[int, ...], num_classes: int, width: float) -> Any:
    """Build an untrained built-in model as a tf_keras Sequential.

    Raises ConfigError when the architecture cannot take inputs of this shape.
    """
    k = keras()
    if architecture in ("small_cnn", "ds_cnn") and len(input_shape) != 3:
        raise ConfigError(
            f"architecture {architecture!r} needs image inputs (height, width, channels), "
            f"the dataset has samples of shape {input_shape}",
            hint="use architecture = 'mlp' for vector data",
        )
    body = ARCHITECTURES[architecture](k.layers, input_shape, num_classes, width)
    return k.Sequential(
        [k.Input(shape=input_shape), *body, k.layers.Dense(num_classes), k.layers.Softmax()],
        name=f"{architecture}_w{width:g}".replace(".", "_"),
    )


UNSAFE_LAYERS = ("Lambda",)


def _layer_classes(config: Any) -> list[str]:
    """Class names of every layer in a Keras model config (nested models included)."""
    found = []
    if isinstance(config, dict):
        inner = config.get("config", {})
        layers = inner.get("layers") if isinstance(inner, dict) else None
        if isinstance(layers, list):
            for layer in layers:
                found.append(str(layer.get("class_name", "")) if isinstance(layer, dict) else "")
                found += _layer_classes(layer)
    return found


def saved_layer_classes(path: Path) -> list[str]:
    """The layer classes a saved model declares, read from its config without loading any code.

    Raises ConfigError when the file cannot be read as that format.
    """
    try:
        if path.is_dir():
            metadata = path / "keras_metadata.pb"
            text = metadata.read_bytes().decode("utf-8", "replace") if metadata.is_file() else ""
            return re.findall(r'"class_name": "([^"]+)"', text)
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                return _layer_classes(json.loads(archive.read("config.json")))
        import h5py

        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            if raw is None:
                raise ConfigError(f"{path}: an .h5 file without a model (only weights?)", hint="save the whole model")
            return _layer_classes(json.loads(raw.decode() if isinstance(raw, bytes) else raw))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"{path}: not a readable {path.suffix or 'SavedModel'} model ({type(e).__name__}: {e})"
        ) from None


def load_model(path: Path, where: str, *, allow_unsafe: bool = False) -> Any:
    """Load a ``.keras``, ``.h5`` or SavedModel folder as a tf_keras model (uncompiled), safely.

    A model with a Lambda layer or custom classes runs code from the file when loaded,
    so it is refused unless ``allow_unsafe``. Raises ConfigError when the file is
    missing, unsafe, or cannot be read as a Keras model.
    """
    if not path.exists():
        raise ConfigError(f"{where}: model file {path} does not exist")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise ConfigError(f"{where}: {path} is a folder without saved_model.pb", hint="give a SavedModel folder")
    if path.is_file() and path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ConfigError(
            f"{where}: {path} is not a .keras, .h5 or SavedModel", hint="save the model with model.save()"
        )
    k = keras()
    known = {name for name in dir(k.layers) if not name.startswith("_")} | {"Functional", "Sequential", "Model"}
    classes = saved_layer_classes(path)
    unsafe = sorted({c for c in classes if c in UNSAFE_LAYERS or c.startswith("Custom>") or (c and c not in known)})
    if path.is_dir():  # SavedModel metadata also names initializers and the like: judge Lambda and Custom> only
        unsafe = sorted({c for c in classes if c in UNSAFE_LAYERS or c.startswith("Custom>")})
    if unsafe and not allow_unsafe:
        raise ConfigError(
            f"{where}: {path} has layers that run code from the file when loaded: {', '.join(unsafe)}",
            hint="rebuild the model from standard layers, or pass --allow-unsafe-model if you trust this file",
        )
    try:
        if path.suffix == ".keras":
            model = k.models.load_model(str(path), compile=False, safe_mode=not allow_unsafe)
        else:
            model = k.models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        detail = " ".join(str(e).split())[:300]
        raise ConfigError(f"{where}: cannot load {path} as a Keras model: {type(e).__name__}: {detail}") from None
    if not isinstance(model, k.Model):
        raise ConfigError(f"{where}: {path} loads as {type(model).__name__}, not a Keras model")
    return model
