"""The one door to TensorFlow, tf_keras and TF-MOT.

Importing TensorFlow costs seconds, so nothing else in edgebuild imports it at
module level: stages call ``tf()``, ``keras()`` or ``tfmot()`` when they run.
TF-MOT needs Keras 2, so this module selects the legacy ``tf_keras`` world before
TensorFlow is first imported and quietens TensorFlow's C++ start-up logging.
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from typing import Any

DEFAULT_THREADS = 2


@cache
def tf() -> Any:
    """Import and return the ``tensorflow`` module, set up for edgebuild."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from edgebuild.tflite import captured_stderr

    # The libraries' own deprecation and converter warnings are not the user's to act on.
    warnings.filterwarnings("ignore", module=r"(tensorflow|tf_keras|tensorflow_model_optimization)(\.|$)")
    with captured_stderr():  # TensorFlow's C++ start-up chatter (CUDA probing, absl)
        import absl.logging
        import tensorflow
        import tensorflow_model_optimization  # noqa: F401
        import tf_keras  # noqa: F401

    absl.logging.set_verbosity(absl.logging.ERROR)
    tensorflow.get_logger().setLevel("ERROR")
    # Training sums in a different order with a different number of threads, so the bytes
    # of a build depend on it: a fixed count makes them the same on every machine.
    threads = build_threads()
    tensorflow.config.threading.set_intra_op_parallelism_threads(threads)
    tensorflow.config.threading.set_inter_op_parallelism_threads(threads)
    return tensorflow


def build_threads() -> int:
    """TensorFlow's thread count for builds: ``$EDGEBUILD_THREADS``, else 2 (part of what makes bytes reproducible)."""
    value = os.environ.get("EDGEBUILD_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


@cache
def keras() -> Any:
    """Return ``tf_keras`` (Keras 2), the Keras that TF-MOT works with."""
    tf()
    import tf_keras

    return tf_keras


@cache
def tfmot() -> Any:
    """Return ``tensorflow_model_optimization``."""
    keras()
    import tensorflow_model_optimization

    return tensorflow_model_optimization


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so that a stage gives the same bytes every run."""
    keras().utils.set_random_seed(seed)


def versions() -> dict[str, str]:
    """Installed versions of the libraries a build depends on, read without importing them."""
    from importlib import metadata

    names = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "tflite-micro")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
