"""Hostile model files: code hidden at any depth of a model is refused, odd files end in one line.

Each model carries a payload that leaves a marker file if it runs: a ``lambda`` (marshalled
bytecode, run when tf_keras rebuilds the layer) or a reference to a module
``edgebuild_payload`` that sits in the project folder, as an attacker would ship it (tf_keras
imports a config's ``module``, in safe mode too). Every test runs the real CLI, which must
stop in preflight with exit 2 and one line, and the marker must not exist afterwards. Two
controls show that the payloads are real.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import QUICK_RECIPE, assert_error, assert_one_line_error, quick_project, run_cli

# Every run here gets as far as edgebuild's preflight, which starts TensorFlow before it looks at the
# model file (about 6 s a run).
pytestmark = pytest.mark.slow

MARKER = "payload-ran"
PAYLOAD_MODULE = "edgebuild_payload"
# A custom object from the payload module, and a tf_keras Constant initializer whose value is
# one: tf_keras deserializes that value by importing its module, whatever the safe mode.
PAYLOAD = {"module": PAYLOAD_MODULE, "class_name": "Payload", "config": {}, "registered_name": None}
PAYLOAD_INITIALIZER = {"module": "keras.initializers", "class_name": "Constant", "config": {"value": PAYLOAD}}
PAYLOAD_ACTIVATION = {"module": PAYLOAD_MODULE, "class_name": "function", "config": "act", "registered_name": "act"}

# (saved model, the unsafe name the error must give)
CASES = [
    *((f"time_distributed{ext}", "Lambda") for ext in (".h5", ".keras", "_saved")),
    *((f"nested_sequential{ext}", "Lambda") for ext in (".h5", ".keras", "_saved")),
    *((f"nested_functional{ext}", "Lambda") for ext in (".h5", ".keras", "_saved")),
    *((f"bidirectional{ext}", f"{PAYLOAD_MODULE}.Payload") for ext in (".h5", ".keras")),
    *((f"initializer{ext}", f"{PAYLOAD_MODULE}.Payload") for ext in (".h5", ".keras")),
    *((f"activation{ext}", f"{PAYLOAD_MODULE}.act") for ext in (".h5", ".keras")),
]


def find_layer(config: Any, class_name: str) -> dict[str, Any]:
    """The first object of ``class_name`` in a saved model config."""
    found = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == class_name:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    assert found, class_name
    return found[0]


def plant(path: Path, class_name: str, keys: tuple[str, ...], value: Any) -> None:
    """Set ``keys`` of the first ``class_name`` object in a saved ``.keras`` or ``.h5`` model's config to
    ``value``, as an attacker could."""

    def change(text: str | bytes) -> bytes:
        config = json.loads(text)
        node = find_layer(config, class_name)
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
        return json.dumps(config).encode()

    if path.suffix == ".keras":
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        members["config.json"] = change(members["config.json"])
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        import h5py

        with h5py.File(path, "r+") as h5:
            h5.attrs["model_config"] = change(h5.attrs["model_config"])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of payload-bearing models (see CASES), the payload module, and where the marker would go."""
    from edgebuild.tf import keras

    k, layers = keras(), keras().layers
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / MARKER
    module = [
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()",
        "class Payload:\n    pass",
        "def act(x):\n    return x",
    ]
    (folder / f"{PAYLOAD_MODULE}.py").write_text("\n\n\n".join(module) + "\n")

    def plain(*body: Any) -> Any:
        return k.Sequential([k.Input((3, 4)), *body, layers.Flatten(), layers.Dense(3)])

    def payload() -> Any:  # the marker path is a constant of the lambda's own bytecode
        return layers.Lambda(eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"))

    # Inputs of (3, 4), not the digits' (8, 8, 1): a model that does load stops in preflight.
    inner_sequential = k.Sequential([k.Input((4,)), payload(), layers.Dense(4)])
    inner_in = k.Input((4,))
    inner_functional = k.Model(inner_in, payload()(layers.Dense(4)(inner_in)))
    outer_in = k.Input((3, 4))
    lambdas = {
        "time_distributed": plain(layers.TimeDistributed(payload())),
        "nested_sequential": k.Sequential([k.Input((3, 4)), layers.Flatten(), layers.Dense(4), inner_sequential]),
        "nested_functional": k.Model(outer_in, inner_functional(layers.Dense(4)(layers.Flatten()(outer_in)))),
    }
    for name, model in lambdas.items():
        for ext in (".h5", ".keras"):
            model.save(folder / f"{name}{ext}")
        model.save(folder / f"{name}_saved", save_format="tf")

    bidirectional = plain(layers.Bidirectional(layers.LSTM(2), backward_layer=layers.LSTM(2, go_backwards=True)))
    backward_kernel = ("config", "backward_layer", "config", "kernel_initializer")
    planted = {  # name: (model, the object to change, the keys to set in it, the payload)
        "bidirectional": (bidirectional, "Bidirectional", backward_kernel, PAYLOAD_INITIALIZER),
        "initializer": (plain(), "Dense", ("config", "kernel_initializer"), PAYLOAD_INITIALIZER),
        "activation": (plain(), "Dense", ("config", "activation"), PAYLOAD_ACTIVATION),
    }
    for name, (model, class_name, keys, value) in planted.items():
        for ext in (".h5", ".keras"):
            model.save(folder / f"{name}{ext}")
            plant(folder / f"{name}{ext}", class_name, keys, value)
    marker.unlink(missing_ok=True)  # saving ran the lambdas once, here
    return folder


def model_project(project: Path, hostile: Path | None, name: str) -> None:
    """A quick recipe whose model is ``name`` (copied from ``hostile``, with the payload module)."""
    quick_project(project)
    text = QUICK_RECIPE.format(name="m").replace('architecture = "mlp"\nwidth = 0.5', f'path = "{name}"')
    (project / "edgebuild.toml").write_text(text)
    if hostile is not None:
        shutil.copy(hostile / f"{PAYLOAD_MODULE}.py", project)
        copy = shutil.copytree if (hostile / name).is_dir() else shutil.copy
        copy(hostile / name, project / name)


@pytest.mark.parametrize(("name", "unsafe"), CASES)
def test_unsafe_model_is_refused(name: str, unsafe: str, project: Path, hostile: Path) -> None:
    (hostile / MARKER).unlink(missing_ok=True)
    model_project(project, hostile, name)
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project, timeout=120)
    assert_one_line_error(result, 2, name, unsafe, "--allow-unsafe-model")
    assert not (hostile / MARKER).exists(), "the model's payload ran"


def test_control_lambda_payload_runs_when_allowed(project: Path, hostile: Path) -> None:
    """The Lambda payload is real: with --allow-unsafe-model the same .h5 runs it."""
    (hostile / MARKER).unlink(missing_ok=True)
    model_project(project, hostile, "time_distributed.h5")
    result = run_cli("--target", "rpi4-relaxed", "--quiet", "--allow-unsafe-model", cwd=project, timeout=120)
    assert (hostile / MARKER).exists(), result.err
    (hostile / MARKER).unlink()
    # Loaded, it is refused for what it is: a model for other data.
    assert_error(
        result,
        2,
        f"preflight: {project}/edgebuild.toml: key 'model' (time_distributed.h5): the model takes inputs of shape "
        "(3, 4) but the dataset's samples are (8, 8, 1) (use a dataset that matches the model, or a model built "
        "for this data)",
    )


def test_control_module_payload_runs_in_tf_keras_safe_mode(project: Path, hostile: Path) -> None:
    """The module payload is real, and tf_keras's own safe mode does not stop it."""
    (hostile / MARKER).unlink(missing_ok=True)
    model_project(project, hostile, "initializer.keras")
    load = "import tf_keras; tf_keras.models.load_model('initializer.keras', compile=False, safe_mode=True)"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", load], cwd=project, capture_output=True, text=True, timeout=120, env=env
    )
    assert (hostile / MARKER).exists(), proc.stderr[-2000:]
    (hostile / MARKER).unlink()


@pytest.mark.parametrize(
    "fifo", ["m.h5", "m.keras", "saved/saved_model.pb", "saved/keras_metadata.pb", "saved/variables/variables.index"]
)
def test_fifo_model_path(fifo: str, project: Path) -> None:
    """A named pipe where a model file belongs ends in one line; opening it would block forever."""
    (project / "saved" / "variables").mkdir(parents=True)
    if fifo != "saved/saved_model.pb":
        (project / "saved" / "saved_model.pb").write_bytes(b"")
    os.mkfifo(project / fifo)
    model_project(project, None, fifo.split("/")[0])
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project, timeout=60)  # seconds, not forever
    assert_one_line_error(result, 2, Path(fifo).name, "named pipe")


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deeply_nested_keras_config(depth: int, project: Path) -> None:
    """500 levels pass json but not edgebuild's walk; 100,000 make json itself recurse too deeply."""
    with zipfile.ZipFile(project / "m.keras", "w") as archive:
        archive.writestr("config.json", "[" * depth + "]" * depth)
    model_project(project, None, "m.keras")
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project, timeout=60)
    assert_one_line_error(result, 2, "m.keras", "nests")


def test_keras_config_announced_huge(project: Path) -> None:
    """A .keras whose zip directory announces a 100 MiB config.json is refused before it is read."""
    with zipfile.ZipFile(project / "m.keras", "w") as archive:
        archive.writestr("config.json", "{}")
    data = bytearray((project / "m.keras").read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory entry; its uncompressed size is at offset 24
    data[entry + 24 : entry + 28] = struct.pack("<I", 100 * 2**20)
    (project / "m.keras").write_bytes(bytes(data))
    model_project(project, None, "m.keras")
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project, timeout=60)
    assert_one_line_error(result, 2, "m.keras", "config.json", "104,857,600 bytes")
