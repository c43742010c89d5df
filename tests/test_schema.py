"""The schema: shipped files load; every kind of mistake is named with file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebuild.errors import ConfigError
from edgebuild.schema import builtin_names, find_file, load_recipe, load_target
from tests.conftest import shipped


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", builtin_names("targets"))
def test_shipped_targets_load(name: str) -> None:
    target = load_target(find_file("targets", name, Path("/nonexistent")))
    assert target.name == name
    assert target.budgets.max_accuracy_drop > 0


@pytest.mark.parametrize("name", builtin_names("recipes"))
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(find_file("recipes", name, Path("/nonexistent")))
    assert recipe.name == name


def test_required_targets_exist() -> None:
    assert {"android", "rpi4", "cortex-m4", "cortex-m7"} <= set(builtin_names("targets"))
    m4 = load_target(find_file("targets", "cortex-m4", Path("/")))
    assert (m4.memory.flash_bytes, m4.memory.ram_bytes) == (1_048_576, 262_144)  # type: ignore[union-attr]
    m7 = load_target(find_file("targets", "cortex-m7", Path("/")))
    assert (m7.memory.flash_bytes, m7.memory.ram_bytes) == (1_048_576, 327_680)  # type: ignore[union-attr]


def test_misspelled_key_names_key_and_suggestion(tmp_path: Path) -> None:
    text = shipped("recipes", "mnist").replace("temperature", "temprature")
    with pytest.raises(ConfigError) as e:
        load_recipe(write(tmp_path, "r.toml", text))
    assert "distill.temprature" in str(e.value)
    assert "did you mean 'temperature'" in str(e.value)
    assert "r.toml" in str(e.value)


def test_misspelled_table_is_suggested(tmp_path: Path) -> None:
    text = shipped("targets", "rpi4").replace("[budgets]", "[budget]")
    with pytest.raises(ConfigError, match=r"key 'budget'.*did you mean 'budgets'"):
        load_target(write(tmp_path, "t.toml", text))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("epochs = 15", 'epochs = "15"', "train.epochs.*expected an integer, got str"),
        ("epochs = 15", "epochs = 1.5", "train.epochs.*expected an integer, got float"),
        ("epochs = 15", "epochs = -1", "train.epochs.*out of range"),
        ("alpha = 0.1", "alpha = 1.5", "distill.alpha.*out of range"),
        ("learning_rate = 1e-3", "learning_rate = 0", "train.learning_rate.*out of range.*> 0"),
        ("learning_rate = 1e-3", "learning_rate = nan", "train.learning_rate.*nan"),
        ("seed = 0", "seed = true", "seed.*expected an integer, got bool"),
        ('architecture = "small_cnn"', 'architecture = "small_cnm"', "model.architecture.*did you mean 'small_cnn'"),
        ('dataset = "mnist"', 'dataset = "mnst"', "dataset.*did you mean 'mnist'"),
        ('criterion = "taylor"', 'criterion = "taylr"', "prune.criterion.*did you mean 'taylor'"),
        ("steps = 3", "steps = 0", "prune.steps.*out of range"),
        ('architecture = "small_cnn"', 'architecture = "small_cnn"\npath = "m.keras"', "exactly one of"),
    ],
)
def test_recipe_mistakes(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = shipped("recipes", "mnist")
    assert old in text
    with pytest.raises(ConfigError, match=message):
        load_recipe(write(tmp_path, "r.toml", text.replace(old, new, 1)))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'runtime = "litert"',
            'runtime = "tflm"',
            r"t\.toml: key 'validate\.runner': runner 'litert-host' cannot run the 'tflm' runtime \(use tflm-host\)",
        ),
        ('weights = "int8"', 'weights = "float16"', "precision.*not a conversion"),
        ('runner = "litert-host"', 'runner = "tflm-host"', "validate.runner.*cannot run the 'litert' runtime"),
        ("target = 0.5", "target = 0.99", "sparsity.target.*out of range"),
        ('structure = "channel"', 'structure = "2:4x"', "sparsity.structure.*did you mean '2:4'"),
        ('exploitable = ["channel"]', 'exploitable = ["chanel"]', "sparsity.exploitable.*did you mean 'channel'"),
        ('exploitable = ["channel"]', 'exploitable = "channel"', "sparsity.exploitable.*expected a list"),
        ("max_accuracy_drop = 0.01", "max_accuracy_drop = -0.01", "budgets.max_accuracy_drop.*out of range"),
        ("max_accuracy_drop = 0.01", "# none", "budgets.max_accuracy_drop.*missing required key"),
    ],
)
def test_target_mistakes(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = shipped("targets", "rpi4")
    assert old in text
    with pytest.raises(ConfigError, match=message):
        load_target(write(tmp_path, "t.toml", text.replace(old, new, 1)))


def test_two_four_sparsity_is_half(tmp_path: Path) -> None:
    text = shipped("targets", "rpi4").replace('structure = "channel"', 'structure = "2:4"')
    load_target(write(tmp_path, "ok.toml", text))
    with pytest.raises(ConfigError, match="sparsity.target.*2:4 sparsity removes exactly half"):
        load_target(write(tmp_path, "t.toml", text.replace("target = 0.5", "target = 0.3")))


def test_tflm_refuses_dynamic_range(tmp_path: Path) -> None:
    text = shipped("targets", "cortex-m4").replace(
        'activations = "int8"\nio = "int8"', 'activations = "float32"\nio = "float32"'
    )
    with pytest.raises(ConfigError, match="tflm.*no kernels for dynamic"):
        load_target(write(tmp_path, "t.toml", text))


def test_model_budget_above_flash(tmp_path: Path) -> None:
    text = shipped("targets", "cortex-m4").replace("model_bytes = 524_288", "model_bytes = 2_000_000")
    with pytest.raises(ConfigError, match="budgets.model_bytes.*flash_bytes"):
        load_target(write(tmp_path, "t.toml", text))


def test_table_given_as_value(tmp_path: Path) -> None:
    text = shipped("recipes", "mnist").replace("[qat]\nepochs = 3\n", "").replace("seed = 0", "seed = 0\nqat = 3")
    with pytest.raises(ConfigError, match=r"key 'qat': expected a \[qat\] table"):
        load_recipe(write(tmp_path, "r.toml", text))


def test_malformed_toml_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML.*line 2"):
        load_recipe(write(tmp_path, "bad.toml", 'name = "x"\ndataset = \n'))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_recipe(path)


def test_unknown_target_suggests_nearest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown target 'rpi5'.*did you mean 'rpi4'"):
        find_file("targets", "rpi5", tmp_path)


def test_project_target_shadows_shipped(tmp_path: Path) -> None:
    (tmp_path / "targets").mkdir()
    path = write(tmp_path / "targets", "rpi4.toml", shipped("targets", "rpi4"))
    assert find_file("targets", "rpi4", tmp_path) == path


def test_loaded_objects_are_frozen() -> None:
    target = load_target(find_file("targets", "rpi4", Path("/")))
    with pytest.raises(AttributeError):
        target.name = "x"  # type: ignore[misc]
