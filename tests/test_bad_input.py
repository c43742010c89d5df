"""Every bad input gets one line on stderr, the right exit code, no traceback, and no output files.

One test per case. Each builds a small project folder, runs the real CLI in a fresh
process, and checks: the exit code (2 usage/config, 1 build, 3 budget), exactly one
line on stderr naming what is wrong, no traceback, and nothing left where the
artifacts would have gone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import QUICK_RECIPE, assert_error, assert_one_line_error, quick_project, run_cli, shipped
from tests.models import tiny_tflite

# A case returns the arguments, the exit code, the error line after "edgebuild: error: " ("{project}" stands
# for the project folder; a compiled pattern where a figure varies), and optionally environment variables.
Case = Callable[[Path, Path], tuple[Any, ...]]
CASES: dict[str, Case] = {}


STARTS_TENSORFLOW: set[str] = set()


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def case_with_tensorflow(fn: Case) -> Case:
    """A case whose run gets as far as loading or building a model, so it starts TensorFlow (about 6 s): slow."""
    STARTS_TENSORFLOW.add(fn.__name__)
    return case(fn)


def recipe(project: Path, text: str) -> None:
    (project / "edgebuild.toml").write_text(text)


def quick(project: Path, old: str = "", new: str = "") -> None:
    quick_project(project)
    text = (project / "edgebuild.toml").read_text()
    assert old in text, old
    recipe(project, text.replace(old, new, 1))


def npz_recipe(project: Path, **changes: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((60, 6, 6)).astype(np.float32),
        "y_train": np.arange(60) % 3,
        "x_test": rng.random((12, 6, 6)).astype(np.float32),
        "y_test": np.arange(12) % 3,
    }
    arrays.update(changes)
    np.savez(project / "data.npz", **arrays)
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')


def relaxed_target(project: Path, old: str, new: str, name: str = "t") -> list[str]:
    text = shipped("targets", "rpi4").replace('name = "rpi4"', f'name = "{name}"')
    assert old in text, old
    (project / "targets" / f"{name}.toml").write_text(text.replace(old, new, 1))
    return ["--target", name]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved Keras models: one with a Lambda layer, one using CONV_3D, one taking 10 numbers."""
    from edgebuild.tf import keras

    k = keras()
    folder = tmp_path_factory.mktemp("models")
    k.Sequential([k.Input((8, 8, 1)), k.layers.Lambda(lambda x: x * 2), k.layers.Flatten(), k.layers.Dense(10)]).save(
        folder / "lambda.keras"
    )
    k.Sequential([k.Input((4, 6, 6, 1)), k.layers.Conv3D(2, 2), k.layers.Flatten(), k.layers.Dense(3)]).save(
        folder / "conv3d.keras"
    )
    k.Sequential([k.Input((10,)), k.layers.Dense(10)]).save(folder / "vector.keras")
    k.Sequential(
        [k.Input((None, None, 1)), k.layers.Conv2D(4, 3), k.layers.GlobalAveragePooling2D(), k.layers.Dense(10)]
    ).save(folder / "dynamic.keras")
    nan = k.Sequential(
        [k.Input((8, 8, 1)), k.layers.Flatten(), k.layers.Dense(16), k.layers.Dense(10), k.layers.Softmax()]
    )
    nan.set_weights([np.full_like(w, np.nan) for w in nan.get_weights()])
    nan.save(folder / "nan.keras")
    return folder


def model_recipe(project: Path, models: Path, name: str, dataset: str = "digits") -> None:
    shutil.copy(models / name, project / name)
    text = QUICK_RECIPE.format(name="m").replace('architecture = "mlp"\nwidth = 0.5', f'path = "{name}"')
    recipe(project, text.replace('dataset = "digits"', f'dataset = "{dataset}"'))


# ------------------------------------------------------------------ configuration (exit 2)


@case
def malformed_recipe_toml(project: Path, models: Path) -> tuple[list[str], int, str]:
    recipe(project, 'name = "x"\ndataset = \n')
    return (
        ["--target", "rpi4"],
        2,
        "{project}/edgebuild.toml: invalid TOML: Invalid value (at line 2, column 11) (fix the syntax at that line)",
    )


@case
def malformed_target_toml(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    (project / "targets" / "t.toml").write_text("[budgets\nmodel_bytes = 1")
    return (
        ["--target", "t"],
        2,
        (
            "{project}/targets/t.toml: invalid TOML: Expected ']' at the end of a table declaration (at "
            "line 1, column 9) (fix the syntax at that line)"
        ),
    )


@case
def unknown_recipe_key(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, "epochs = 6", "epochz = 6")
    return ["--target", "rpi4"], 2, "{project}/edgebuild.toml: key 'train.epochz': unknown key (did you mean 'epochs'?)"


@case
def unknown_target_key(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        relaxed_target(project, "model_bytes =", "model_byte ="),
        2,
        "{project}/targets/t.toml: key 'budgets.model_byte': unknown key (did you mean 'model_bytes'?)",
    )


@case
def missing_recipe_key(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'dataset = "digits"\n', "")
    return (
        ["--target", "rpi4"],
        2,
        "{project}/edgebuild.toml: key 'dataset': missing required key (add dataset (a string))",
    )


@case
def missing_target_key(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        relaxed_target(project, 'runtime = "litert"\n', ""),
        2,
        "{project}/targets/t.toml: key 'runtime': missing required key (add runtime (one of 'litert', 'tflm'))",
    )


@case
def mistyped_recipe_value(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, "batch_size = 32", 'batch_size = "32"')
    return (
        ["--target", "rpi4"],
        2,
        "{project}/edgebuild.toml: key 'train.batch_size': expected an integer, got str '32'",
    )


@case
def mistyped_target_value(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        relaxed_target(project, "threads = 1", 'threads = "one"'),
        2,
        "{project}/targets/t.toml: key 'validate.threads': expected an integer, got str 'one'",
    )


@case
def out_of_range_recipe_value(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, "learning_rate = 3e-3", "learning_rate = -1.0")
    return (
        ["--target", "rpi4"],
        2,
        "{project}/edgebuild.toml: key 'train.learning_rate': -1.0 is out of range; expected > 0.0 and <= 10.0",
    )


@case
def out_of_range_target_value(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        relaxed_target(project, "max_accuracy_drop = 0.01", "max_accuracy_drop = 5"),
        2,
        "{project}/targets/t.toml: key 'budgets.max_accuracy_drop': 5.0 is out of range; expected >= 0.0 and <= 1.0",
    )


@case
def unknown_recipe_name(project: Path, models: Path) -> tuple[list[str], int, str]:
    return (
        ["build", "--recipe", "mnst", "--target", "rpi4"],
        2,
        "unknown recipe 'mnst' (did you mean 'mnist'?; `edgebuild recipes` lists them)",
    )


@case
def unknown_target_name(project: Path, models: Path) -> tuple[list[str], int, str]:
    return ["--target", "rpi"], 2, "unknown target 'rpi' (did you mean 'rpi4'?; `edgebuild targets` lists them)"


@case
def unknown_device(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        ["--target", "rpi4", "--device", "telnet://pi"],
        2,
        "unknown device 'telnet://pi' (use host, qemu, ssh://user@host[:port] or adb[:SERIAL])",
    )


@case
def adb_without_benchmark_binary(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        ["--target", "rpi4", "--device", "adb"],
        2,
        "--device adb needs --benchmark-binary PATH (LiteRT's benchmark_model built for the phone)",
    )


# ------------------------------------------------------------------ files


@case_with_tensorflow
def missing_model_file(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'architecture = "mlp"\nwidth = 0.5', 'path = "nowhere.keras"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (nowhere.keras): model file "
            "{project}/nowhere.keras does not exist"
        ),
    )


@case
def missing_dataset_file(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'dataset = "digits"', 'dataset = "npz:nowhere.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        "preflight: {project}/edgebuild.toml: key 'dataset': dataset file {project}/nowhere.npz does not exist",
    )


@case
def dataset_is_a_folder(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "data.npz").mkdir()
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz is a folder, expected a dataset file",
    )


@case
def path_leaves_the_project(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'dataset = "digits"', 'dataset = "npz:../elsewhere/data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': '../elsewhere/data.npz' leads outside the "
            "project folder {project} (keep data and models inside the project (no .. and no links out of "
            "it))"
        ),
    )


@case
def absolute_path(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'dataset = "digits"', 'dataset = "npz:/etc/passwd"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': '/etc/passwd' is an absolute path (paths "
            "in a recipe are relative to its folder: keep the file in the project)"
        ),
    )


@case
def symlink_out_of_the_project(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "data.npz").symlink_to("/etc/hostname")
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': 'data.npz' leads outside the project "
            "folder {project} (keep data and models inside the project (no .. and no links out of it))"
        ),
    )


@case
def symlink_into_the_output_folder(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "build").mkdir()
    (project / "build" / "data.npz").write_bytes(b"")
    (project / "data.npz").symlink_to(project / "build" / "data.npz")
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': 'data.npz' is inside the build output "
            "folder, which every build replaces (keep inputs elsewhere in the project)"
        ),
    )


@case
def corrupt_npz(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "data.npz").write_bytes(b"PK\x03\x04garbage")
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz is not a readable .npz "
            "file (File is not a zip file)"
        ),
    )


@case_with_tensorflow
def corrupt_h5_model(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    quick(project, 'architecture = "mlp"\nwidth = 0.5', 'path = "m.h5"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (m.h5): cannot load {project}/m.h5: not a "
            "readable .h5 model (OSError: Unable to synchronously open file (bad byte number in an address))"
        ),
    )


@case_with_tensorflow
def truncated_keras_model(project: Path, models: Path) -> tuple[list[str], int, str]:
    data = (models / "vector.keras").read_bytes()
    (project / "m.keras").write_bytes(data[: len(data) // 2])
    quick(project, 'architecture = "mlp"\nwidth = 0.5', 'path = "m.keras"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (m.keras): cannot load {project}/m.keras: not "
            "a readable .keras model (BadZipFile: File is not a zip file)"
        ),
    )


@case_with_tensorflow
def corrupt_saved_model(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "saved").mkdir()
    (project / "saved" / "saved_model.pb").write_bytes(b"\x08\x01garbage")
    quick(project, 'architecture = "mlp"\nwidth = 0.5', 'path = "saved"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (saved): cannot load {project}/saved: not a "
            "readable SavedModel (DecodeError: Error parsing message with type 'tensorflow.SavedModel': "
            "Wire format was corrupt)"
        ),
    )


@case
def corrupt_tflite(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "bad.tflite").write_bytes(b"\x1c\0\0\0TFL3" + np.random.default_rng(0).bytes(300))
    return (
        ["inspect", "bad.tflite"],
        2,
        "bad.tflite: corrupt or truncated .tflite (308 bytes): TFLite's flatbuffer verifier rejects it "
        "(convert or download the model again)",
    )


@case
def truncated_tflite(project: Path, models: Path) -> tuple[list[str], int, str]:
    data = tiny_tflite("float32")
    (project / "cut.tflite").write_bytes(data[: len(data) // 2])
    return (
        ["inspect", "cut.tflite"],
        2,
        (
            "cut.tflite: corrupt or truncated .tflite (4,466 bytes): TFLite's flatbuffer verifier rejects "
            "it (convert or download the model again)"
        ),
    )


@case_with_tensorflow
def unsafe_lambda_model(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    model_recipe(project, models, "lambda.keras")
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (lambda.keras): {project}/lambda.keras names "
            "objects that run or import code when loaded: Lambda (rebuild the model from standard layers, "
            "or pass --allow-unsafe-model if you trust this file)"
        ),
    )


# ------------------------------------------------------------------ data


@case
def dataset_with_nan(project: Path, models: Path) -> tuple[list[str], int, str]:
    x = np.random.default_rng(1).random((60, 6, 6)).astype(np.float32)
    x[3, 2, 1] = np.nan
    npz_recipe(project, x_train=x)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_train holds NaN or "
            "Inf values (clean or impute the data)"
        ),
    )


@case
def dataset_with_inf(project: Path, models: Path) -> tuple[list[str], int, str]:
    x = np.random.default_rng(1).random((12, 6, 6)).astype(np.float32)
    x[0, 0, 0] = np.inf
    npz_recipe(project, x_test=x)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_test holds NaN or "
            "Inf values (clean or impute the data)"
        ),
    )


@case
def labels_do_not_match_samples(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, y_train=np.arange(59) % 3)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: y_train has shape "
            "(59,) but x_train has 60 samples (labels must be one integer per sample)"
        ),
    )


@case
def labels_out_of_range(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, y_test=np.arange(12) % 3 - 1)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: y_test has negative "
            "labels (labels must be 0..classes-1)"
        ),
    )


@case
def fewer_samples_than_a_batch(project: Path, models: Path) -> tuple[list[str], int, str]:
    rng = np.random.default_rng(2)
    npz_recipe(project, x_train=rng.random((20, 6, 6)).astype(np.float32), y_train=np.arange(20) % 3)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'train.batch_size': 32 is more than the 18 training "
            "samples (lower train.batch_size or use more data)"
        ),
    )


@case
def empty_split(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, x_test=np.zeros((0, 6, 6), np.float32), y_test=np.zeros((0,), np.int64))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: the test split is empty",
    )


@case
def train_and_test_shapes_differ(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, x_test=np.zeros((12, 5, 6), np.float32))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_train samples have "
            "shape (6, 6) but x_test (5, 6)"
        ),
    )


@case_with_tensorflow
def model_input_does_not_match_data(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    model_recipe(project, models, "vector.keras")
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (vector.keras): the model takes inputs of "
            "shape (10,) but the dataset's samples are (8, 8, 1) (use a dataset that matches the model, or "
            "a model built for this data)"
        ),
    )


@case_with_tensorflow
def op_the_runtime_lacks(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    rng = np.random.default_rng(3)
    np.savez(
        project / "volumes.npz",
        x_train=rng.random((40, 4, 6, 6, 1)).astype(np.float32),
        y_train=np.arange(40) % 3,
        x_test=rng.random((9, 4, 6, 6, 1)).astype(np.float32),
        y_test=np.arange(9) % 3,
    )
    model_recipe(project, models, "conv3d.keras", dataset="npz:volumes.npz")
    return (
        ["--target", "cortex-m4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (conv3d.keras): TFLM has no kernel for op "
            "CONV_3D, which the model uses (from sequential_1/conv3d/Conv3D) (replace that layer, or build "
            "for a LiteRT target)"
        ),
    )


# ------------------------------------------------------------------ budgets and output


@case_with_tensorflow
def budget_that_can_never_be_met(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    return (
        relaxed_target(project, "model_bytes = 8_388_608", "model_bytes = 100"),
        3,
        (
            "preflight: {project}/targets/t.toml: key 'budgets.model_bytes': the model to deploy has 6570 "
            "parameters, so its int8 .tflite is at least 1642 bytes even after pruning, more than the "
            "budget of 100 (use a narrower model (model.width or distill.student_width) or a larger budget)"
        ),
    )


@case
def output_folder_under_a_file(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    (project / "taken").write_text("a file, not a folder")
    return (
        ["--target", "rpi4-relaxed", "--out", str(project / "taken" / "out")],
        2,
        "--out: {project}/taken/out: a part of the path is a file, not a folder",
    )


def _mount_tmpfs(folder: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


@case
def output_folder_read_only(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    _mount_tmpfs(project / "ro", "ro,size=1m")
    return (
        ["--target", "rpi4-relaxed", "--out", str(project / "ro" / "out")],
        2,
        (
            "output folder {project}/ro/out: cannot write there (Read-only file system) (choose another "
            "folder with --out, or fix its permissions)"
        ),
    )


@case_with_tensorflow
def disk_full(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    _mount_tmpfs(project / "small", "size=24k")
    return (
        ["--target", "rpi4-relaxed", "--out", str(project / "small" / "out")],
        1,
        "emit: no space left on the device ({project}/small)",
    )


@case
def memory_bound_exceeded(project: Path, models: Path) -> tuple[list[str], int, re.Pattern[str]]:
    quick_project(project)
    used = re.compile(
        r"preflight: the build used \d+ MB, more than the limit of 64 MB "
        r"\(raise --max-memory-mb, or lower train\.batch_size\)"
    )
    return ["--target", "rpi4-relaxed", "--max-memory-mb", "64"], 1, used


# ------------------------------------------------------------------ files that are not files, hostile sizes


@case
def recipe_is_a_named_pipe(project: Path, models: Path) -> tuple[list[str], int, str]:
    os.mkfifo(project / "fifo.toml")
    return (
        ["build", "--recipe", "fifo.toml", "--target", "rpi4"],
        2,
        "fifo.toml is a named pipe (FIFO), expected a .toml file",
    )


@case
def target_is_a_named_pipe(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    os.mkfifo(project / "targets" / "t.toml")
    return ["--target", "t"], 2, "{project}/targets/t.toml is a named pipe (FIFO), expected a .toml file"


@case
def project_recipe_is_a_named_pipe(project: Path, models: Path) -> tuple[list[str], int, str]:
    os.mkfifo(project / "edgebuild.toml")
    return ["--target", "rpi4"], 2, "{project}/edgebuild.toml is a named pipe (FIFO), expected a .toml file"


@case
def project_recipe_is_a_broken_symlink(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "edgebuild.toml").symlink_to(project / "gone.toml")
    return (
        ["--target", "rpi4"],
        2,
        (
            "{project}/edgebuild.toml is a broken symlink (point it at a recipe, or remove it to build the "
            "default recipe)"
        ),
    )


@case
def project_recipe_is_a_folder(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "edgebuild.toml").mkdir()
    return ["--target", "rpi4"], 2, "{project}/edgebuild.toml is a folder, expected a .toml file"


@case
def dataset_is_a_named_pipe(project: Path, models: Path) -> tuple[list[str], int, str]:
    os.mkfifo(project / "data.npz")
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz is a named pipe (FIFO), "
            "expected a dataset file"
        ),
    )


@case
def dataset_is_a_symlink_loop(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "data.npz").symlink_to(project / "data.npz")
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': 'data.npz' is a symlink loop (point the "
            "link at a real file)"
        ),
    )


@case
def nul_byte_in_a_recipe_path(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick(project, 'dataset = "digits"', 'dataset = "npz:da\\u0000ta.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': the path 'da\\x00ta.npz' holds a NUL byte "
            "(give a plain file name)"
        ),
    )


@case
def deeply_nested_toml(project: Path, models: Path) -> tuple[list[str], int, str]:
    recipe(project, 'name = "x"\nnested = ' + "[" * 50_000 + "]" * 50_000 + "\n")
    return (
        ["--target", "rpi4"],
        2,
        "{project}/edgebuild.toml: arrays or tables nested too deeply to read (is this the right file?)",
    )


@case
def inspect_a_device(project: Path, models: Path) -> tuple[list[str], int, str]:
    return ["inspect", "/dev/zero"], 2, "/dev/zero is a device, expected a .tflite file"


@case
def inspect_a_named_pipe(project: Path, models: Path) -> tuple[list[str], int, str]:
    os.mkfifo(project / "model.tflite")
    return ["inspect", "model.tflite"], 2, "model.tflite is a named pipe (FIFO), expected a .tflite file"


@case
def inspect_zeros_behind_a_tflite_header(project: Path, models: Path) -> tuple[list[str], int, str]:
    (project / "zeros.tflite").write_bytes(b"\x1c\0\0\0TFL3" + bytes(2000))
    return (
        ["inspect", "zeros.tflite"],
        2,
        (
            "zeros.tflite: not a usable .tflite model (schema version 0, 0 subgraphs, 0 inputs): no runtime "
            "can load it (convert or download the model again)"
        ),
    )


def _npz_with_announced_shape(path: Path, key: str, shape: tuple[int, ...]) -> None:
    """An .npz whose ``key`` header announces ``shape`` (float32) but holds almost no data."""
    import io
    import zipfile

    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((60, 6, 6)), "y_train": np.arange(60) % 3}
    arrays |= {"x_test": rng.random((12, 6, 6)), "y_test": np.arange(12) % 3}
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            if name == key:
                header = {"descr": "<f4", "fortran_order": False, "shape": shape}
                np.lib.format.write_array_header_1_0(buffer, header)
                buffer.write(bytes(64))
            else:
                np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())


@case
def npy_header_announces_terabytes(project: Path, models: Path) -> tuple[list[str], int, str]:
    _npz_with_announced_shape(project / "data.npz", "x_train", (10**12, 6, 6))
    quick(project, 'dataset = "digits"', 'dataset = "npz:data.npz"')
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: its arrays announce "
            "144,000,000,004,032 bytes, more than the 8,589,934,592 edgebuild loads (use a smaller dataset, "
            "or check that the file is not corrupt)"
        ),
    )


@case
def zero_dimensional_labels(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, y_train=np.array(2))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: y_train has shape () "
            "but x_train has 60 samples (labels must be one integer per sample)"
        ),
    )


@case
def zero_dimensional_label_names(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, labels=np.array("cat"))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: labels has shape (); "
            "expected one name per class (at most 100,000)"
        ),
    )


@case
def zero_dimensional_inputs(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, x_test=np.array(1.0, np.float32))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_test has shape (); "
            "expected (samples, features...)"
        ),
    )


@case
def samples_without_features(project: Path, models: Path) -> tuple[list[str], int, str]:
    npz_recipe(project, x_train=np.zeros((60, 0), np.float32), x_test=np.zeros((12, 0), np.float32))
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_train has shape (60, "
            "0): its samples have no features"
        ),
    )


@case
def label_of_two_billion(project: Path, models: Path) -> tuple[list[str], int, str]:
    y = np.arange(60) % 3
    y[5] = 2**31 - 1
    npz_recipe(project, y_train=y)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: the largest label is "
            "2147483647, but there are 60 training samples (and edgebuild takes at most 100,000 classes) "
            "(labels must be 0..classes-1, each class with training samples)"
        ),
    )


@case
def complex_inputs(project: Path, models: Path) -> tuple[list[str], int, str]:
    x = np.random.default_rng(1).random((60, 6, 6)) * (1 + 1j)
    npz_recipe(project, x_train=x)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_train holds complex "
            "numbers (give real inputs, e.g. the magnitude, or real and imaginary parts as channels)"
        ),
    )


@case
def inputs_beyond_float32(project: Path, models: Path) -> tuple[list[str], int, str]:
    x = np.random.default_rng(1).random((60, 6, 6)) * 1e300
    npz_recipe(project, x_train=x)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'dataset': {project}/data.npz: x_train holds NaN or "
            "Inf values (clean or impute the data)"
        ),
    )


@case_with_tensorflow
def dynamic_input_shape_on_tflm(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    model_recipe(project, models, "dynamic.keras")
    return (
        ["--target", "cortex-m4-relaxed"],
        2,
        (
            "preflight: {project}/edgebuild.toml: key 'model' (dynamic.keras): the model takes inputs of "
            "shape (None, None, 1), with a dimension left open; edgebuild converts models with fixed shapes "
            "(TFLM plans its memory ahead) (save the model with a fixed input shape, e.g. Input(shape=(8, "
            "8, 1)))"
        ),
    )


@case_with_tensorflow
def model_with_nan_weights(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    model_recipe(project, models, "nan.keras")
    return (
        ["--target", "rpi4-relaxed"],
        1,
        (
            "baseline: train float model: the loss became NaN or Inf in epoch 1 (lower the stage's "
            "learning_rate, or scale the inputs to about [-1, 1]; stages completed: preflight)"
        ),
    )


@case
def cache_dir_is_a_file(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    (project / "cache").write_text("a file")
    return (
        ["--target", "rpi4-relaxed", "--cache-dir", "cache"],
        2,
        "stage cache folder cache is a file, not a folder (give --cache-dir a folder)",
    )


@case
def cache_dir_under_a_file(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    (project / "cache").write_text("a file")
    return (
        ["--target", "rpi4-relaxed", "--cache-dir", "cache/sub"],
        2,
        "stage cache folder cache/sub: cache/sub: a part of the path is a file, not a folder",
    )


@case
def cache_dir_read_only(project: Path, models: Path) -> tuple[list[str], int, str]:
    quick_project(project)
    _mount_tmpfs(project / "ro", "ro,size=1m")
    return (
        ["--target", "rpi4-relaxed", "--cache-dir", "ro/cache"],
        2,
        (
            "stage cache folder ro/cache: cannot write there (Read-only file system) (choose another folder "
            "with --cache-dir or $EDGEBUILD_CACHE_DIR, or pass --no-cache)"
        ),
    )


@case
def memory_limit_from_the_environment_not_a_number(
    project: Path, models: Path
) -> tuple[list[str], int, str, dict[str, str]]:
    quick_project(project)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "$EDGEBUILD_MAX_MEMORY_MB is 'abc', not a number of megabytes of at least 64 (set it to e.g. "
            "4096, or unset it)"
        ),
        {"EDGEBUILD_MAX_MEMORY_MB": "abc"},
    )


@case
def cache_bound_from_the_environment_not_a_number(
    project: Path, models: Path
) -> tuple[list[str], int, str, dict[str, str]]:
    quick_project(project)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        (
            "$EDGEBUILD_CACHE_MAX_BYTES is '2GB', not a positive number of bytes (set it to e.g. "
            "2147483648, or unset it)"
        ),
        {"EDGEBUILD_CACHE_MAX_BYTES": "2GB"},
    )


@case_with_tensorflow
def thread_count_from_the_environment_not_a_number(
    project: Path, models: Path
) -> tuple[list[str], int, str, dict[str, str]]:
    quick_project(project)
    return (
        ["--target", "rpi4-relaxed"],
        2,
        "preflight: $EDGEBUILD_THREADS is '0', not a thread count from 1 to 1024 (or unset it)",
        {"EDGEBUILD_THREADS": "0"},
    )


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow if name in STARTS_TENSORFLOW else ()) for name in sorted(CASES)]
)
def test_bad_input(name: str, project: Path, models: Path) -> None:
    args, code, expected, *rest = CASES[name](project, models)
    env = rest[0] if rest else None
    try:
        quiet = [] if args[0] == "inspect" else ["--quiet"]
        result = run_cli(*args, *quiet, cwd=project, env=env, timeout=180)  # a hang is a failure, not a wait
        if isinstance(expected, re.Pattern):
            assert_one_line_error(result, code, "edgebuild: error: ")
            assert expected.fullmatch(result.err.strip().removeprefix("edgebuild: error: ")), result.err
        else:
            assert_error(result, code, expected.replace("{project}", str(project)))
        out = project / "build"
        leftovers = [p for p in out.rglob("*") if p.is_file() and p.name != "data.npz"] if out.exists() else []
        assert leftovers == [], leftovers
        for mount in ("small", "ro"):
            if (project / mount).exists():
                assert list((project / mount).iterdir()) == [], "nothing half-written in the output folder"
    finally:
        for mount in ("small", "ro"):
            if (project / mount).is_mount():
                subprocess.run(["umount", str(project / mount)], check=False)


@pytest.mark.slow
def test_diverging_training_fails_the_build_after_a_warning_on_the_input_range(project: Path) -> None:
    rng = np.random.default_rng(4)
    npz_recipe(project, x_train=(rng.random((60, 6, 6)) * 1e30).astype(np.float32))
    result = run_cli("--target", "rpi4-relaxed", "--quiet", cwd=project, timeout=180)
    assert result.code == 1, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert "Traceback" not in result.err and len(lines) == 2, result.err
    assert lines[0].startswith("warning: the training inputs range from") and "e+29;" in lines[0]
    assert lines[1].startswith("edgebuild: error: baseline:") and "NaN or Inf" in lines[1]
    assert "learning_rate" in lines[1] and not (project / "build").exists()


def test_the_largest_documented_seed_is_one_tensorflow_and_numpy_take() -> None:
    from edgebuild.tf import seed_everything

    seed_everything((2**31 - 1) * 100 + 10)  # the pipeline's seed for the last stage of seed 2**31 - 1
