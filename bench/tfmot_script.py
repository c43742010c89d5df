"""The hand-written way: what the TF-MOT tutorials do, as one plain script.

    python bench/tfmot_script.py --recipe mnist --out DIR

Trains the recipe's deployed model (the student's architecture and width), prunes it
with ``prune_low_magnitude`` to 50 % (the profiles' sparsity), runs prune-preserving
quantization-aware training, converts to a full-integer int8 ``.tflite`` and scores it
with LiteRT on the held-out split, following the tutorials "Pruning in Keras",
"Quantization aware training" and "Pruning preserving quantization aware training".
Epochs, batch size and learning rate come from the recipe. Only the data and the
model's layers come from edgebuild, so that both sides train the same architecture
on the same split. Writes ``DIR/model.tflite`` and ``DIR/result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # TF-MOT needs Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

from edgebuild.datasets import load_dataset
from edgebuild.models import build_model
from edgebuild.schema import find_file, load_recipe

SPARSITY = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="mnist")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    recipe = load_recipe(find_file("recipes", args.recipe, Path.cwd()))
    data = load_dataset(recipe)
    keras.utils.set_random_seed(recipe.seed)
    width = recipe.distill.student_width if recipe.distill else recipe.model.width
    model = build_model(recipe.model.architecture or "small_cnn", data.input_shape, data.num_classes, width)
    batch, lr = recipe.train.batch_size, recipe.train.learning_rate

    # 1. Train.
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, batch_size=batch, epochs=recipe.train.epochs, validation_split=0.1, verbose=0)

    # 2. Prune with prune_low_magnitude, polynomial schedule to the target sparsity.
    prune_epochs = recipe.prune.epochs if recipe.prune else 2
    end_step = int(np.ceil(len(data.x_train) * 0.9 / batch)) * prune_epochs
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, SPARSITY, begin_step=0, end_step=end_step)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    pruned.fit(
        data.x_train,
        data.y_train,
        batch_size=batch,
        epochs=prune_epochs,
        validation_split=0.1,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
        verbose=0,
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)

    # 3. Prune-preserving quantization-aware training.
    annotated = tfmot.quantization.keras.quantize_annotate_model(stripped)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    qat.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    qat_epochs = recipe.qat.epochs if recipe.qat else 1
    qat.fit(data.x_train, data.y_train, batch_size=batch, epochs=qat_epochs, validation_split=0.1, verbose=0)

    # 4. Convert to full integer int8.
    def representative_dataset():  # type: ignore[no-untyped-def]
        for image in data.x_train[:100]:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    tflite_model = converter.convert()

    # 5. Evaluate with the LiteRT interpreter.
    interpreter = Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    correct = 0
    for image, label in zip(data.x_test, data.y_test, strict=True):
        q = np.clip(np.round(image / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q[None])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model.tflite").write_bytes(tflite_model)
    result = {
        "tflite_bytes": len(tflite_model),
        "accuracy": correct / len(data.y_test),
        "test_samples": len(data.y_test),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
