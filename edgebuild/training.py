"""How edgebuild trains: plain cross-entropy, or distillation from a float teacher.

The baseline, distill, prune and QAT stages all train through ``fit_model`` so that
fine-tuning after pruning and during QAT keeps learning from the teacher when the
recipe distills. TensorFlow is imported when a function here runs, never on import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgebuild.errors import BuildError
from edgebuild.progress import Reporter
from edgebuild.tasks import evaluate
from edgebuild.tf import keras, tf


@dataclass(frozen=True)
class SoftTargets:
    """Soft targets for distillation: the teacher's logits on the training inputs."""

    logits: np.ndarray
    temperature: float
    alpha: float


def logits_model(model: Any) -> Any | None:
    """A model sharing ``model``'s layers that outputs the logits before its final softmax.

    Returns None when the model does not end in a separate softmax layer.
    """
    k = keras()
    last = getattr(model.layers[-1], "layer", model.layers[-1])  # see through TF-MOT wrappers
    is_softmax = isinstance(last, k.layers.Softmax) or (
        isinstance(last, k.layers.Activation) and last.get_config().get("activation") == "softmax"
    )
    if not is_softmax or len(model.layers) < 2:
        return None
    return k.Model(model.inputs, model.layers[-2].output)


def teacher_logits(model: Any, x: np.ndarray, task: str = "classification", batch_size: int = 256) -> np.ndarray:
    """The teacher's logits on ``x`` (log-probabilities when it has no separate softmax); for
    regression and reconstruction its outputs, which the student learns to reproduce."""
    if task != "classification":
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
    logits = logits_model(model)
    if logits is not None:
        return np.asarray(logits.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)
    return np.log(np.clip(probs, 1e-7, 1.0))


def weights_of(model: Any) -> dict[str, np.ndarray]:
    """A model's weights as named arrays (for the stage cache)."""
    return {f"w{i:04d}": w for i, w in enumerate(model.get_weights())}


def weights_from(arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The weights ``weights_of`` named, in order."""
    return [arrays[name] for name in sorted(arrays) if name.startswith("w")]


DIVERGED_HINT = "lower the stage's learning_rate, or scale the inputs to about [-1, 1]"


def check_outputs(outputs: np.ndarray, what: str) -> None:
    """A model must give finite outputs that depend on its input.

    ``outputs`` are the model's outputs on the test split, one row per input. Raises
    BuildError naming ``what`` when any is NaN or Inf, or when every row is the same
    (the model ignores its input: it learned nothing, or training diverged).
    """
    if outputs.size == 0:
        return
    if np.issubdtype(outputs.dtype, np.floating) and not np.isfinite(outputs).all():
        raise BuildError(
            f"{what} gives NaN or Inf outputs: training diverged, or the model's weights hold NaN or Inf",
            hint=DIVERGED_HINT,
        )
    if len(outputs) > 1 and (outputs == outputs[:1]).all():
        raise BuildError(
            f"{what} gives the same output for every one of the {len(outputs)} test inputs: it does not "
            "depend on its input (training diverged or learned nothing)",
            hint=DIVERGED_HINT,
        )


def evaluate_model(
    model: Any, x: np.ndarray, y: np.ndarray, task: str, what: str, anomaly: np.ndarray | None = None
) -> dict[str, float]:
    """The task's metrics of a Keras model on ``x`` (see ``tasks.evaluate``); {} for an empty set.

    Raises BuildError naming ``what`` when the model's outputs are dead (see ``check_outputs``).
    """
    if len(x) == 0:
        return {}
    outputs = np.asarray(model.predict(x, batch_size=256, verbose=0))
    check_outputs(outputs, what)
    return evaluate(task, outputs, y, anomaly)


def _distiller(student: Any, temperature: float, alpha: float, task: str) -> Any:
    """A Keras model that trains ``student`` on hard labels and the teacher's soft targets.

    Its fit() takes ``(x, (y, teacher_outputs))``; the UpdatePruningStep callback finds the
    student's pruning wrappers through it, because the student is one of its layers.
    Classification: cross-entropy on the labels and temperature-scaled KL divergence to
    the teacher's logits. Regression and reconstruction: mean squared error to the targets
    and to the teacher's outputs.
    """
    k, t = keras(), tf()
    student_logits = logits_model(student) if task == "classification" else None

    class Distiller(k.Model):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.student = student
            self.loss_tracker = k.metrics.Mean(name="loss")
            self.accuracy_tracker = k.metrics.SparseCategoricalAccuracy(name="accuracy")

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def _logits(self, x: Any) -> Any:
            if student_logits is not None:
                return student_logits(x, training=True)
            return t.math.log(t.clip_by_value(self.student(x, training=True), 1e-7, 1.0))

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.accuracy_tracker] if task == "classification" else [self.loss_tracker]

        def train_step(self, data: Any) -> dict[str, Any]:
            x, (y, soft) = data
            with t.GradientTape() as tape:
                if task == "classification":
                    logits = self._logits(x)
                    hard_loss = k.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
                    soft_loss = k.losses.kl_divergence(
                        t.nn.softmax(soft / temperature), t.nn.softmax(logits / temperature)
                    ) * (temperature**2)
                else:
                    outputs = self.student(x, training=True)
                    hard_loss = t.reduce_mean(t.square(outputs - y))
                    soft_loss = t.reduce_mean(t.square(outputs - soft))
                loss = t.reduce_mean(alpha * hard_loss + (1.0 - alpha) * soft_loss)
                loss += sum(self.student.losses) if self.student.losses else 0.0
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=False))
            self.loss_tracker.update_state(loss)
            if task == "classification":
                self.accuracy_tracker.update_state(y, logits)
            return {m.name: m.result() for m in self.metrics}

    return Distiller()


def fit_model(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    reporter: Reporter,
    what: str,
    teacher: SoftTargets | None = None,
    callbacks: tuple[Any, ...] = (),
    task: str = "classification",
) -> None:
    """Train ``model`` in place for ``epochs`` (the task's loss, or distillation from ``teacher``).

    Classification trains with cross-entropy on class labels; regression and
    reconstruction with mean squared error on ``y`` (the inputs, for reconstruction).

    Reads the arrays; writes the model's weights; shows an epoch progress bar.
    """
    if epochs == 0:
        return
    k, t = keras(), tf()
    optimizer = k.optimizers.Adam(learning_rate)
    if teacher is None:
        if task == "classification":
            model.compile(optimizer=optimizer, loss=k.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        else:
            model.compile(optimizer=optimizer, loss=k.losses.MeanSquaredError())
        trainer, data = model, t.data.Dataset.from_tensor_slices((x, y))
    else:
        trainer = _distiller(model, teacher.temperature, teacher.alpha, task)
        trainer.compile(optimizer=optimizer)
        data = t.data.Dataset.from_tensor_slices((x, (y, teacher.logits)))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)

    diverged: list[int] = []
    with reporter.epochs(what, epochs) as bar:

        class _Progress(k.callbacks.Callback):  # type: ignore[name-defined,misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                metrics = {key: float(v) for key, v in (logs or {}).items()}
                bar.advance(metrics)
                if not np.isfinite(metrics.get("loss", 0.0)):
                    diverged.append(epoch + 1)
                    self.model.stop_training = True

        trainer.fit(data, epochs=epochs, verbose=0, callbacks=[_Progress(), *callbacks])
    if diverged:
        raise BuildError(f"{what}: the loss became NaN or Inf in epoch {diverged[0]}", hint=DIVERGED_HINT)
