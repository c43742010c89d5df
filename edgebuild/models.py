"""Built-in architectures with a width multiplier, and loading of saved Keras models.

Every built-in model ends in a linear ``Dense`` followed by a separate ``Softmax``
layer, so distillation can read the logits and the deployed model still outputs
probabilities.
"""

from __future__ import annotations

import json
import math
import stat
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

from edgebuild.errors import ConfigError
from edgebuild.files import read_limited, regular_file, stat_path
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


def _autoencoder(layers: Any, shape: tuple[int, ...], classes: int, width: float) -> list[Any]:
    # Dense layers around a narrow bottleneck, as MLPerf Tiny's anomaly-detection model.
    return [
        layers.Flatten(),
        layers.Dense(_channels(64, width), activation="relu"),
        layers.Dense(_channels(16, width), activation="relu"),
        layers.Dense(_channels(64, width), activation="relu"),
    ]


ARCHITECTURES = {"small_cnn": _small_cnn, "ds_cnn": _ds_cnn, "mlp": _mlp, "autoencoder": _autoencoder}


def _head(k: Any, outputs: int | tuple[int, ...], task: str) -> list[Any]:
    """The last layers: a linear Dense and a separate Softmax for classifiers (distillation reads the
    logits); a linear Dense reshaped to the target's shape for regression and reconstruction."""
    if task == "classification":
        assert isinstance(outputs, int)
        return [k.layers.Dense(outputs), k.layers.Softmax()]
    shape = (outputs,) if isinstance(outputs, int) else outputs
    dense = k.layers.Dense(math.prod(shape))
    return [dense] if len(shape) == 1 else [dense, k.layers.Reshape(shape)]


def build_model(
    architecture: str,
    input_shape: tuple[int, ...],
    outputs: int | tuple[int, ...],
    width: float,
    task: str = "classification",
) -> Any:
    """Build an untrained built-in model as a tf_keras Sequential.

    ``outputs`` is the number of classes (classification) or the shape of one output
    (regression; the input's shape for reconstruction). Raises ConfigError when the
    architecture cannot take inputs of this shape.
    """
    k = keras()
    if architecture in ("small_cnn", "ds_cnn") and len(input_shape) != 3:
        raise ConfigError(
            f"architecture {architecture!r} needs image inputs (height, width, channels), "
            f"the dataset has samples of shape {input_shape}",
            hint="use architecture = 'mlp' for vector data",
        )
    body = ARCHITECTURES[architecture](k.layers, input_shape, 0, width)
    return k.Sequential(
        [k.Input(shape=input_shape), *body, *_head(k, outputs, task)],
        name=f"{architecture}_w{width:g}".replace(".", "_"),
    )


# A saved model is read as data first: its config is bounded and checked before tf_keras sees it.
MAX_MODEL_BYTES = 2 * 1024**3  # a .keras or .h5 file, a .keras archive unpacked, saved_model.pb (protobuf's limit)
MAX_CONFIG_BYTES = 64 * 1024**2  # config.json, an .h5 model_config, keras_metadata.pb
MAX_CONFIG_DEPTH = 200  # real configs nest a few dozen levels; tf_keras recurses several frames per level
UNSAFE_LAYERS = ("Lambda",)
# tf_keras's markers for plain data in saved configs: tuples, tensors, arrays, shapes, type specs.
DATA_MARKERS = ("__tuple__", "__ellipsis__", "__tensor__", "__numpy__", "__bytes__", "TensorShape", "TypeSpec")
MAX_NAMES_SHOWN = 8


@cache
def _known_names() -> frozenset[str]:
    """The names of tf_keras's own classes and functions a config may use (layers, initializers, ...), not Lambda."""
    k = keras()
    spaces = [k.layers, k.activations, k.initializers, k.regularizers, k.constraints, k.losses, k.metrics]
    spaces += [k.optimizers, k.optimizers.schedules, k.mixed_precision]
    names = {name for space in spaces for name in dir(space) if not name.startswith("_")}
    # tf_keras registers some of its own classes under other names, such as "Custom>Adam".
    registry = k.saving.get_custom_objects().items()
    names |= {name for name, obj in registry if getattr(obj, "__module__", "").startswith("tf_keras.")}
    return frozenset(names | {"Functional", "Sequential", "Model", *DATA_MARKERS}) - frozenset(UNSAFE_LAYERS)


def _shown(name: object) -> str:
    text = str(name)[:80]
    return text if text.isprintable() else ascii(text)


def _judge(node: dict[str, Any]) -> str | None:
    """What would run or import code in one serialized object (a dict with ``class_name``), or None.

    tf_keras imports the object's ``module`` (any module, in safe mode too), then looks up
    ``class_name`` or ``registered_name`` in it; the class ``"function"`` names its function
    in ``config``. So: a Lambda or lambda, a module outside keras/tf_keras, or a name tf_keras lacks.
    """
    cls, module, registered = node["class_name"], node.get("module"), node.get("registered_name")
    name = node.get("config") if cls == "function" else cls
    if cls in UNSAFE_LAYERS or registered in UNSAFE_LAYERS:
        return "Lambda"
    if cls == "__lambda__":  # a Python lambda saved in place of a function (an activation, say)
        return "a Python lambda"
    if cls == "function" and module == "builtins":  # tf_keras's own activations, losses, ... saved by name
        module = None
    if module is not None and not (
        isinstance(module, str) and (module in ("keras", "tf_keras") or module.startswith(("keras.", "tf_keras.")))
    ):
        return f"{_shown(module)}.{_shown(name)}"
    for candidate in (name, registered):
        if candidate is not None and not (isinstance(candidate, str) and candidate in _known_names()):
            return _shown(candidate)
    return None


def unsafe_objects(configs: list[Any], path: Path, where: str) -> list[str]:
    """The objects in a saved model's configs that would run or import code from outside tf_keras.

    Walks every dict and list of ``configs`` (so layers inside wrappers such as
    TimeDistributed and Bidirectional, sub-models, initializers, activations, ...) and
    returns sorted names: ``Lambda``, ``module.name`` for an object from another module,
    a class or function tf_keras does not have, or a layer that carries a Python lambda.
    Raises ConfigError when a config nests more than MAX_CONFIG_DEPTH levels.
    """
    found: set[str] = set()

    def walk(node: Any, depth: int, owner: object) -> None:
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(
                f"{where}: {path}: the model config nests more than {MAX_CONFIG_DEPTH} levels deep",
                hint="is this a Keras model?",
            )
        if isinstance(node, list):
            for item in node:
                walk(item, depth + 1, owner)
        elif isinstance(node, dict):
            if "class_name" in node:
                owner = node["class_name"]
                problem = _judge(node)
                if problem:
                    found.add(problem)
            for key, value in node.items():
                # Lambda and the RNN cell wrappers keep marshalled bytecode under "<what>_type": "lambda".
                if key.endswith("_type") and value == "lambda" and owner not in UNSAFE_LAYERS:
                    found.add(f"{_shown(owner)} (Python code in {key!r})")
                walk(value, depth + 1, owner)

    for config in configs:
        walk(config, 0, None)
    return sorted(found)


def _parse_json(text: str | bytes, path: Path, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # json's C parser recurses once per nested list or dict
        raise ConfigError(
            f"{where}: {path}: the model config nests too deeply to read", hint="is this a Keras model?"
        ) from None


def _keras_config(path: Path, where: str) -> bytes:
    """The ``config.json`` of a ``.keras`` archive, its announced sizes checked before reading."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("config.json")
        if info.file_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{where}: {path}: its config.json unpacks to {info.file_size:,} bytes, "
                f"more than the {MAX_CONFIG_BYTES:,} edgebuild reads",
                hint="is this a Keras model?",
            )
        unpacked = sum(member.file_size for member in archive.infolist())
        if unpacked > MAX_MODEL_BYTES:  # tf_keras reads the weights member whole into memory
            raise ConfigError(
                f"{where}: {path} unpacks to {unpacked:,} bytes, more than the {MAX_MODEL_BYTES:,} edgebuild loads"
            )
        with archive.open(info) as member:
            return member.read(MAX_CONFIG_BYTES + 1)  # zipfile stops at the announced size


def _h5_config(path: Path, where: str) -> str | bytes:
    """The ``model_config`` attribute of an ``.h5`` file, its size checked before reading."""
    import h5py

    with h5py.File(path, "r") as h5:
        if "model_config" not in h5.attrs:
            raise ConfigError(
                f"{where}: {path}: an .h5 file without a model (only weights?)", hint="save the whole model"
            )
        # A fixed-length string announces its size here; a variable-length one lies in the
        # file's heap, so the file's own size (checked before opening) bounds it.
        announced = h5.attrs.get_id("model_config").get_storage_size()
        raw = h5.attrs["model_config"] if announced <= MAX_CONFIG_BYTES else None
    if not isinstance(raw, str | bytes) or len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: {path}: its model_config is not a text of at most {MAX_CONFIG_BYTES:,} bytes")
    return raw


def _saved_model_metadata(folder: Path, where: str) -> list[str]:
    """The Keras metadata (JSON text) of each object in a SavedModel folder, where tf_keras reads it."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    # TensorFlow opens the files the folder holds (variables, assets): a FIFO or device would block it.
    for entry in sorted(folder.rglob("*")):
        if not entry.is_dir():
            regular_file(entry, where, max_bytes=MAX_MODEL_BYTES, what="SavedModel file")
    keras_pb = folder / "keras_metadata.pb"
    if stat_path(keras_pb, where) is not None:
        metadata = saved_metadata_pb2.SavedMetadata()
        metadata.ParseFromString(read_limited(keras_pb, where, max_bytes=MAX_CONFIG_BYTES, what="keras_metadata.pb"))
        return [node.metadata for node in metadata.nodes]
    # Before TF 2.5 Keras kept the same metadata inside saved_model.pb, and tf_keras still reads it there.
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(
        read_limited(folder / "saved_model.pb", where, max_bytes=MAX_MODEL_BYTES, what="saved_model.pb")
    )
    nodes = [node for graph in saved.meta_graphs for node in graph.object_graph_def.nodes]
    return [node.user_object.metadata for node in nodes if node.HasField("user_object")]


def read_model_configs(path: Path, where: str) -> list[Any]:
    """The parsed JSON configs of a saved model, read without running or importing any of its code.

    One config for a ``.keras`` archive (its ``config.json``) or an ``.h5`` file (its
    ``model_config`` attribute); one per Keras object for a SavedModel folder
    (``keras_metadata.pb``, or ``saved_model.pb`` for models saved before TF 2.5). Sizes
    are checked before reading. Raises ConfigError when a file is too large, not a
    regular file, or cannot be read as that format.
    """
    from google.protobuf.message import DecodeError

    try:
        if path.is_dir():
            return [_parse_json(text, path, where) for text in _saved_model_metadata(path, where) if text]
        if path.suffix == ".keras":
            return [_parse_json(_keras_config(path, where), path, where)]
        return [_parse_json(_h5_config(path, where), path, where)]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, DecodeError) as e:
        detail = " ".join(str(e).split())[:300]
        kind = f"{path.suffix} model" if path.suffix else "SavedModel"
        raise ConfigError(
            f"{where}: cannot load {path}: not a readable {kind} ({type(e).__name__}: {detail})"
        ) from None


def load_model(path: Path, where: str, *, allow_unsafe: bool = False) -> Any:
    """Load a ``.keras``, ``.h5`` or SavedModel folder as a tf_keras model (uncompiled), safely.

    Reads the model's config first (``read_model_configs``): a Lambda layer, or a class or
    function from outside tf_keras, at any depth, runs or imports code from the file when
    loaded, so such a model is refused unless ``allow_unsafe``. Loading then runs in
    tf_keras's safe mode for every format. Raises ConfigError when the path is missing, not
    a regular file or folder (a FIFO, device, socket, symlink loop, NUL byte), too large,
    unsafe, or cannot be read as a Keras model.
    """
    info = stat_path(path, where)
    if info is None:
        raise ConfigError(f"{where}: model file {path} does not exist")
    if stat.S_ISDIR(info.st_mode):
        if stat_path(path / "saved_model.pb", where) is None:
            raise ConfigError(f"{where}: {path} is a folder without saved_model.pb", hint="give a SavedModel folder")
    elif path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ConfigError(
            f"{where}: {path} is not a .keras, .h5 or SavedModel", hint="save the model with model.save()"
        )
    else:
        regular_file(path, where, max_bytes=MAX_MODEL_BYTES, what="Keras model")
    k = keras()
    unsafe = unsafe_objects(read_model_configs(path, where), path, where)
    if unsafe and not allow_unsafe:
        more = f" and {len(unsafe) - MAX_NAMES_SHOWN} more" if len(unsafe) > MAX_NAMES_SHOWN else ""
        raise ConfigError(
            f"{where}: {path} names objects that run or import code when loaded: "
            f"{', '.join(unsafe[:MAX_NAMES_SHOWN])}{more}",
            hint="rebuild the model from standard layers, or pass --allow-unsafe-model if you trust this file",
        )
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    try:
        # The .h5 and SavedModel loaders ignore safe_mode=; Lambda layers consult the scope in every format.
        with SafeModeScope(not allow_unsafe):
            model = k.models.load_model(str(path), compile=False, safe_mode=not allow_unsafe)
    except Exception as e:  # Keras raises many types for unreadable files
        detail = " ".join(str(e).split())[:300]
        raise ConfigError(f"{where}: cannot load {path} as a Keras model: {type(e).__name__}: {detail}") from None
    if not isinstance(model, k.Model):
        raise ConfigError(f"{where}: {path} loads as {type(model).__name__}, not a Keras model")
    return model
