"""What quantization-aware training and channel pruning make of each layer of a model.

TF-MOT's default 8-bit scheme knows a fixed set of Keras layers and ``quantize_apply``
raises on any other ("Layer rescaling is not supported": tensorflow/model-optimization
#647, #1139). So edgebuild plans every layer before QAT:

- ``tf-mot``: TF-MOT's own config. A BatchNormalization right after a linear Conv2D,
  DepthwiseConv2D, SeparableConv2D or Dense (whose only consumer it is) is folded into that
  layer by TF-MOT.
- ``output-quantized``: edgebuild's config fake-quantizes the output, as TF-MOT does for
  ``Add``. For Rescaling and Normalization (affine maps: the int8 MUL and ADD the converter
  emits compute them on the quantized grid; measured, the .tflite matched the fake-quantized
  model exactly), a BatchNormalization TF-MOT cannot fold, and the merges TF-MOT lacks.
  (Passing a Rescaling through unquantized instead let the converter fold it into the next
  convolution with the wrong scale: outputs off by 90 %, measured.)
- ``pass-through``: edgebuild's config quantizes nothing; the output keeps its input's
  scale (layers that only pick or repeat values).
- ``float``: any other layer, and a layer whose activation TF-MOT cannot fake-quantize, stays
  float during QAT; the converter quantizes it after training from the representative data.

Channel pruning's own limits (a Concatenate, an unknown layer) come from
``edgebuild.surgery.skipped_producers``; ``unhandled_layers`` words both for preflight.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

from edgebuild.results import QatLayer
from edgebuild.tf import keras, tfmot

OUTPUT_QUANTIZED = (
    "Rescaling",
    "Normalization",
    "BatchNormalization",
    "Multiply",
    "Subtract",
    "Maximum",
    "Minimum",
    "Average",
)
PASS_THROUGH = ("MaxPooling1D", "UpSampling1D")
# TF-MOT rewrites these into layers it knows (a depthwise and a pointwise convolution).
_REWRITTEN = ("SeparableConv1D", "SeparableConv2D")
# The producers TF-MOT folds a following BatchNormalization into.
_FOLDS_BATCH_NORM = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
# Activations TF-MOT fake-quantizes: fused into a layer, and as an Activation layer.
_FUSED_ACTIVATIONS = frozenset({"linear", "relu", "swish", "gelu", "softmax", "sigmoid", "tanh"})
_LAYER_ACTIVATIONS = _FUSED_ACTIVATIONS | {"relu6"}


def _activation_name(layer: Any) -> str | None:
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return str(getattr(activation, "__name__", type(activation).__name__))


def _folds_into_producer(layer: Any, outputs: set[str]) -> bool:
    """Whether TF-MOT folds this BatchNormalization into the Conv2D, DepthwiseConv2D or Dense before it."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return False
    inbound = nodes[0].inbound_layers
    if isinstance(inbound, list):
        if len(inbound) != 1:
            return False
        inbound = inbound[0]
    return (
        type(inbound).__name__ in _FOLDS_BATCH_NORM
        and _activation_name(inbound) == "linear"
        and len(inbound._outbound_nodes) == 1
        and inbound.name not in outputs
    )


def plan_qat(model: Any) -> tuple[QatLayer, ...]:
    """What QAT will do with each layer of ``model`` (its InputLayer aside), in the model's order.

    Reads the layers' classes, activations and connections, and asks TF-MOT's default 8-bit
    registry which classes it quantizes; builds nothing.
    """
    registry = tfmot().quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    outputs = {tensor._keras_history.layer.name for tensor in model.outputs}
    plan = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        activation = _activation_name(layer)
        allowed = _LAYER_ACTIVATIONS if kind == "Activation" else _FUSED_ACTIVATIONS
        if kind == "BatchNormalization" and _folds_into_producer(layer, outputs):
            action, reason = "tf-mot", ""
        elif registry.supports(layer) or kind in _REWRITTEN:
            if activation is None or activation in allowed:
                action, reason = "tf-mot", ""
            else:
                action, reason = "float", f"TF-MOT cannot fake-quantize its {activation} activation"
        elif kind in OUTPUT_QUANTIZED:
            action, reason = "output-quantized", ""
        elif kind in PASS_THROUGH:
            action, reason = "pass-through", ""
        else:
            action, reason = "float", f"TF-MOT has no quantize config for {kind}"
        plan.append(QatLayer(layer.name, kind, action, reason))
    return tuple(plan)


@cache
def _configs() -> dict[str, type]:
    """edgebuild's two quantize configs, by action; made on first use (TF-MOT loads lazily)."""
    mot = tfmot().quantization.keras
    base: Any = mot.QuantizeConfig

    class OutputQuantized(base):  # type: ignore[misc]
        """Fake-quantizes the layer's output: 8 bits, asymmetric, moving-average range (TF-MOT's for Add).

        ``quantize_output`` is what TF-MOT's Concatenate transform turns off in the layers feeding
        a Concatenate (which then quantizes their joint output once); it survives serialization.
        """

        def __init__(self, quantize_output: bool = True) -> None:
            self.quantize_output = quantize_output

        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            if not self.quantize_output:
                return []
            return [
                mot.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
            ]

        def get_config(self) -> dict[str, Any]:
            return {"quantize_output": self.quantize_output}

    class PassThrough(OutputQuantized):
        """Quantizes nothing: the output keeps its input's quantization."""

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return []

    return {"output-quantized": OutputQuantized, "pass-through": PassThrough}


def quantize_aware(model: Any, plan: tuple[QatLayer, ...], *, prune_preserving: bool = False) -> Any:
    """A fake-quantized copy of ``model`` for QAT, each layer annotated as ``plan`` says.

    ``prune_preserving``: TF-MOT's scheme that keeps the zeros of magnitude pruning.
    Raises what TF-MOT raises (ValueError, RuntimeError, TypeError) when it cannot take
    the model even so.
    """
    mot = tfmot()
    quantization = mot.quantization.keras
    actions = {entry.layer: entry.action for entry in plan}
    configs = _configs()

    def annotate(layer: Any) -> Any:
        action = actions.get(layer.name, "float")
        if action == "tf-mot":
            return quantization.quantize_annotate_layer(layer)
        if action in configs:
            # A config per layer: TF-MOT's Concatenate transform edits the configs of its inputs.
            return quantization.quantize_annotate_layer(layer, quantize_config=configs[action]())
        return layer

    scheme = (
        mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if prune_preserving
        else quantization.default_8bit.Default8BitQuantizeScheme()
    )
    with quantization.quantize_scope({config.__name__: config for config in configs.values()}):
        annotated = keras().models.clone_model(model, clone_function=annotate)
        return quantization.quantize_apply(annotated, scheme)


MAX_NAMES = 8


def _names(items: list[str]) -> str:
    more = f" and {len(items) - MAX_NAMES} more" if len(items) > MAX_NAMES else ""
    return ", ".join(items[:MAX_NAMES]) + more


def unhandled_layers(plan: tuple[QatLayer, ...], skipped: dict[str, str]) -> list[str]:
    """One warning line per thing QAT (``plan``) or channel pruning (``skipped``: layer -> the layer
    it cannot follow) cannot handle by itself, naming the layers and what edgebuild does instead."""
    lines = []
    by_action: dict[str, list[str]] = defaultdict(list)
    for entry in plan:
        if entry.action != "tf-mot":
            activation = entry.reason if "activation" in entry.reason else ""
            by_action[entry.action].append(f"{entry.kind} {entry.layer!r}" + (f" ({activation})" if activation else ""))
    if by_action["output-quantized"]:
        lines.append(
            f"QAT: TF-MOT has no quantize config for {_names(by_action['output-quantized'])}; "
            "edgebuild's own config quantizes their outputs"
        )
    if by_action["pass-through"]:
        lines.append(
            f"QAT: TF-MOT has no quantize config for {_names(by_action['pass-through'])}; "
            "edgebuild passes their inputs' quantization through"
        )
    if by_action["float"]:
        lines.append(
            f"QAT: TF-MOT cannot quantize {_names(by_action['float'])}; they stay float during "
            "quantization-aware training and are quantized after it, from the representative data"
        )
    by_blocker: dict[str, list[str]] = defaultdict(list)
    for layer, blocker in skipped.items():
        by_blocker[blocker].append(repr(layer))
    for blocker, layers in by_blocker.items():
        lines.append(
            f"channel pruning cannot follow {blocker}: {_names(layers)} keep all their channels "
            "(and count as unpruned in the sparsity)"
        )
    return lines
