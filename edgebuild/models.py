"""Built-in architectures with a width multiplier, and loading of saved Keras models.

Every built-in model ends in a linear ``Dense`` followed by a separate ``Softmax``
layer, so distillation can read the logits and the deployed model still outputs
probabilities.
"""

from __future__ import annotations

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


def load_model(path: Path, where: str) -> Any:
    """Load a ``.keras``, ``.h5`` or SavedModel folder as a tf_keras model (uncompiled).

    Raises ConfigError when the file is missing or cannot be read as a Keras model.
    """
    if not path.exists():
        raise ConfigError(f"{where}: model file {path} does not exist")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise ConfigError(f"{where}: {path} is a folder without saved_model.pb", hint="give a SavedModel folder")
    if path.is_file() and path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ConfigError(
            f"{where}: {path} is not a .keras, .h5 or SavedModel", hint="save the model with model.save()"
        )
    try:
        model = keras().models.load_model(str(path), compile=False)
    except Exception as e:  # Keras raises many types for unreadable files
        raise ConfigError(f"{where}: cannot load {path} as a Keras model: {type(e).__name__}: {e}") from None
    if not isinstance(model, keras().Model):
        raise ConfigError(f"{where}: {path} loads as {type(model).__name__}, not a Keras model")
    return model
