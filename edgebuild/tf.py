"""The one door to TensorFlow, tf_keras and TF-MOT.

Importing TensorFlow costs seconds, so nothing else in edgebuild imports it at
module level: stages call ``tf()``, ``keras()`` or ``tfmot()`` when they run.
TF-MOT needs Keras 2, so this module selects the legacy ``tf_keras`` world before
TensorFlow is first imported, pins what would otherwise change training's bytes from
one machine or environment to another (oneDNN's instruction set, the thread count) and
quietens TensorFlow's C++ start-up logging.
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from typing import Any

from edgebuild.errors import ConfigError

DEFAULT_THREADS = 2
# oneDNN, which TensorFlow's float matrix products go through even with its graph
# optimisations off, picks its kernels by the CPU's instruction set: the same seed trained
# other weights with AVX-512 than with AVX2, and others again with SSE4.1. Capped at one
# set, whatever the caller's environment says, the instruction set no longer changes the
# bytes (tests/test_determinism.py). AVX2: nearly every x86-64 CPU since 2013 has it, and
# on those without AVX-512 the cap changes nothing. (CPUs can still differ otherwise: an
# Intel Xeon capped at AVX2 trained other MNIST weights than an AMD EPYC with AVX2.)
ONEDNN_MAX_CPU_ISA = "AVX2"


@cache
def tf() -> Any:
    """Import and return the ``tensorflow`` module, set up for edgebuild."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Forced, not defaults: each changes the bytes a build gives. TensorFlow and oneDNN
    # read them once, when they load or first run, so they are set before the import.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    os.environ["ONEDNN_MAX_CPU_ISA"] = ONEDNN_MAX_CPU_ISA
    from edgebuild.capture import captured_stderr

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
    """TensorFlow's thread count for builds: ``$EDGEBUILD_THREADS``, else 2 (part of what makes bytes reproducible).

    Raises ConfigError when the variable is set to anything but a count from 1 to 1024.
    """
    value = os.environ.get("EDGEBUILD_THREADS", "").strip()
    if not value:
        return DEFAULT_THREADS
    if not value.isdigit() or not 1 <= int(value) <= 1024:
        raise ConfigError(f"$EDGEBUILD_THREADS is {value!r}, not a thread count from 1 to 1024", hint="or unset it")
    return int(value)


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
    """Seed Python, NumPy and TensorFlow so that a stage gives the same bytes every run.

    Stage seeds are made from the recipe's seed (up to 2**31 - 1) and can pass NumPy's
    limit of 2**32 - 1; they wrap, which leaves every smaller seed as it was.
    """
    keras().utils.set_random_seed(seed % 2**32)


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
