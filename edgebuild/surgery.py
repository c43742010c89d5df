"""Structured channel pruning: remove whole filters and units and rebuild a smaller Keras model.

Magnitude pruning only writes zeros, which a ``.tflite`` stores like any other weight.
Removing channels makes every tensor smaller: the weights, the activations (the TFLM
arena) and the work. The model graph is read as *channel spaces*: a Conv2D or Dense
opens a new space (its output channels); channel-preserving layers (BatchNorm,
activations, pooling, depthwise convolution, dropout, padding) pass their input's
space on; element-wise merges (Add, Multiply, ...) tie their inputs' spaces into
one, so a residual block keeps matching channels; a Flatten feeding a Dense is
followed through its spatial positions. A space is *frozen* when anything that
cannot follow a channel change touches it (the model's input and output, Reshape,
Concatenate, unknown layers); the producers of a space frozen by a layer other than
the model's input or output are *skipped*, and the report says which layer stopped
them. Each prunable space keeps its most important channels (by the L1 or L2 norm of
the producing filters, or a first-order Taylor estimate), and the model is rebuilt
with the surviving weights copied over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgebuild.errors import ConfigError
from edgebuild.tf import keras, tf

CRITERIA = ("l1", "l2", "taylor")
_PASS_THROUGH = (
    "BatchNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "MaxPooling2D",
    "AveragePooling2D",
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "ZeroPadding2D",
    "Cropping2D",
    "UpSampling2D",
    "DepthwiseConv2D",
)
# Keep their channels' width but compute across the channels: frozen, yet the model's output
# still shows through them (a Dense before the output Softmax is not "skipped").
_ACROSS_CHANNELS = ("Softmax", "LayerNormalization")
_MERGE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
_PRODUCERS = ("Conv2D", "Conv1D", "Dense")


@dataclass
class _Space:
    """One channel space: who produces it, whether it may shrink, and why not.

    ``interface``: the model's input or output needs these channels as they are.
    ``blocker``: the first layer channel pruning cannot follow that touches the space.
    """

    channels: int
    producers: list[str] = field(default_factory=list)
    frozen: bool = False
    interface: bool = False
    blocker: str | None = None


@dataclass(frozen=True)
class LayerChannels:
    """A producing layer's output channels before and after pruning; ``skipped`` names the layer
    channel pruning could not follow that kept them all (None when pruned, or when the model's
    input or output needs them)."""

    layer: str
    kind: str
    before: int
    after: int
    skipped: str | None = None


class _Graph:
    """Layers, their inputs, and the channel space of every layer's output."""

    def __init__(self, model: Any):
        self.model = model
        self.inputs: dict[str, list[str]] = {}
        self.space_of: dict[str, int] = {}  # layer name -> space id of its output
        self.flatten_of: dict[int, tuple[int, int]] = {}  # flattened space -> (source space, positions)
        self.spaces: list[_Space] = []
        self.parent: list[int] = []
        for tensor in model.inputs:  # a Sequential's InputLayer is not among its layers
            self.space_of[tensor._keras_history.layer.name] = self._new(int(tensor.shape[-1]), interface=True)
        for layer in model.layers:
            nodes = [n for n in layer._inbound_nodes if n.inbound_layers or type(layer).__name__ == "InputLayer"]
            if len(nodes) > 1:
                raise ConfigError(
                    f"layer {layer.name!r} is used more than once; channel pruning needs each layer used once"
                )
            inbound = nodes[0].inbound_layers if nodes else []
            self.inputs[layer.name] = [x.name for x in (inbound if isinstance(inbound, list) else [inbound])]
            self._assign(layer)
        for output in model.outputs:
            last = output._keras_history.layer
            self._freeze(self.space_of[last.name], None)
            if type(last).__name__ == "Reshape":  # the output's values, reshaped: its input is the output too
                for name in self.inputs[last.name]:
                    self._freeze(self.space_of[name], None)

    def _new(self, channels: int, *, interface: bool = False, blocker: str | None = None) -> int:
        frozen = interface or blocker is not None
        self.spaces.append(_Space(channels, frozen=frozen, interface=interface, blocker=blocker))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def _union(self, a: int, b: int, merge: str) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            into, other = self.spaces[a], self.spaces[b]
            into.producers += other.producers
            into.frozen |= other.frozen
            into.interface |= other.interface
            into.blocker = into.blocker or other.blocker
            if into.channels != other.channels:
                into.frozen = True
                into.blocker = into.blocker or f"{merge} (inputs of different widths)"
        return a

    def _freeze(self, space: int, blocker: str | None) -> None:
        """Freeze a space: for the model's input or output when ``blocker`` is None, else for that layer."""
        frozen = self.spaces[self.find(space)]
        frozen.frozen = True
        if blocker is None:
            frozen.interface = True
        else:
            frozen.blocker = frozen.blocker or blocker
        if space in self.flatten_of:
            self._freeze(self.flatten_of[space][0], blocker)

    def space(self, layer_name: str) -> _Space:
        return self.spaces[self.find(self.space_of[layer_name])]

    def _assign(self, layer: Any) -> None:
        kind = type(layer).__name__
        here = f"{kind} {layer.name!r}"  # what a frozen space's producers are told stopped them
        config = layer.get_config()
        if config.get("data_format", "channels_last") != "channels_last" or config.get("axis", -1) not in (
            -1,
            [-1],
            [len(layer.output_shape) - 1] if not isinstance(layer.output_shape, list) else None,
        ):
            kind = "unsupported"  # channels not on the last axis: leave this part of the model alone
            here += " (channels not on the last axis)"
        sources = [self.space_of[name] for name in self.inputs[layer.name] if name in self.space_of]
        channels = int(layer.output_shape[-1]) if not isinstance(layer.output_shape, list) else 0
        if kind == "InputLayer":
            self.space_of.setdefault(layer.name, self._new(channels, interface=True))
        elif kind in _PRODUCERS and len(sources) == 1 and getattr(layer, "groups", 1) == 1:
            space = self._new(channels)
            self.spaces[space].producers.append(layer.name)
            self.space_of[layer.name] = space
        elif kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
            for source in sources:
                self._freeze(source, f"{here} (depth_multiplier {layer.depth_multiplier})")
            self.space_of[layer.name] = self._new(channels, blocker=here)
        elif kind in _PASS_THROUGH and len(sources) == 1:
            self.space_of[layer.name] = sources[0]
        elif kind in _ACROSS_CHANNELS and len(sources) == 1:
            self._freeze(sources[0], here)
            self.space_of[layer.name] = sources[0]
        elif kind in _MERGE and sources:
            merged = sources[0]
            for source in sources[1:]:
                merged = self._union(merged, source, here)
            self.space_of[layer.name] = merged
        elif kind == "Flatten" and len(sources) == 1:
            in_shape = layer.input_shape
            positions = math.prod(int(d) for d in in_shape[1:-1]) if len(in_shape) > 2 else 1
            space = self._new(channels)
            self.spaces[space].frozen = True  # the flattened vector itself is never pruned
            self.flatten_of[space] = (sources[0], positions)
            self.space_of[layer.name] = space
        else:
            for source in sources:
                self._freeze(source, here)
            self.space_of[layer.name] = self._new(channels, blocker=here)
        if kind == "Flatten":
            return
        for source in sources:
            if source in self.flatten_of and kind != "Dense":
                self._freeze(source, f"{here} after a Flatten")


def _kernel_out_axis(layer: Any) -> np.ndarray:
    """The layer's kernel with output channels on the last axis."""
    return np.asarray(layer.get_weights()[0])


def _importance(graph: _Graph, space: _Space, criterion: str, taylor: dict[str, np.ndarray]) -> np.ndarray:
    score = np.zeros(space.channels)
    for name in space.producers:
        if criterion == "taylor":
            values = taylor[name]
        else:
            kernel = _kernel_out_axis(graph.model.get_layer(name))
            flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
            values = flat.sum(axis=0) if criterion == "l1" else np.sqrt((flat**2).sum(axis=0))
        top = float(values.max()) or 1.0
        score += values / top  # each producer counts equally, whatever its scale
    return score


def _taylor_scores(model: Any, producers: list[str], x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """First-order Taylor importance per output channel: |mean(activation * dLoss/dactivation)|."""
    k, t = keras(), tf()
    probe = k.Model(model.inputs, [model.get_layer(name).output for name in producers] + model.outputs)
    scores = {name: np.zeros(model.get_layer(name).output_shape[-1]) for name in producers}
    for start in range(0, len(x), 128):
        xb, yb = x[start : start + 128], y[start : start + 128]
        with t.GradientTape() as tape:
            outputs = probe(xb, training=False)
            loss = k.losses.sparse_categorical_crossentropy(yb, outputs[-1])
        grads = tape.gradient(loss, outputs[:-1])
        for name, activation, grad in zip(producers, outputs[:-1], grads, strict=True):
            axes = tuple(range(activation.shape.rank - 1))
            scores[name] += np.abs(t.reduce_mean(activation * grad, axis=axes).numpy())
    return scores


def _sliced_weights(graph: _Graph, layer: Any, keep: dict[int, np.ndarray]) -> list[np.ndarray]:
    kind = type(layer).__name__
    weights: list[np.ndarray] = layer.get_weights()
    if not weights:
        return weights
    space = graph.find(graph.space_of[layer.name])
    out_keep = keep.get(space)
    sources = [graph.space_of[n] for n in graph.inputs[layer.name] if n in graph.space_of]
    source = sources[0] if sources else None
    if kind in _PRODUCERS:
        kernel, rest = weights[0], weights[1:]
        assert source is not None
        if source in graph.flatten_of and kind == "Dense":
            origin, positions = graph.flatten_of[source]
            in_keep = keep.get(graph.find(origin))
            if in_keep is not None:
                channels = graph.spaces[graph.find(origin)].channels
                rows = (np.arange(positions)[:, None] * channels + in_keep[None, :]).reshape(-1)
                kernel = kernel[rows]
        else:
            in_keep = keep.get(graph.find(source))
            if in_keep is not None:
                kernel = np.take(kernel, in_keep, axis=-2)
        if out_keep is not None:
            kernel = kernel[..., out_keep]
            rest = [w[out_keep] for w in rest]
        return [kernel, *rest]
    if out_keep is None:
        return weights
    if kind == "DepthwiseConv2D":
        return [np.take(weights[0], out_keep, axis=-2), *[w[out_keep] for w in weights[1:]]]
    if kind == "BatchNormalization":
        return [w[out_keep] for w in weights]
    return weights


def prune_channels(
    model: Any,
    fraction: float,
    *,
    criterion: str = "l2",
    data: tuple[np.ndarray, np.ndarray] | None = None,
    original_channels: dict[str, int] | None = None,
) -> tuple[Any, list[LayerChannels]]:
    """A new, physically smaller model without ``fraction`` of the channels of every prunable space.

    ``fraction`` counts against ``original_channels`` (by producing layer) when given,
    so iterative pruning reaches the same end point. ``data`` (x, y) is needed for the
    Taylor criterion. Returns the model and each producer's channels before/after.
    Raises ConfigError when nothing in the model can be pruned.
    """
    graph = _Graph(model)
    prunable = _prunable_spaces(graph)
    taylor: dict[str, np.ndarray] = {}
    if criterion == "taylor":
        if data is None:
            raise ValueError("the Taylor criterion needs data")
        names = [name for s in prunable for name in graph.spaces[s].producers]
        taylor = _taylor_scores(model, names, *data)
    keep: dict[int, np.ndarray] = {}
    for s in prunable:
        space = graph.spaces[s]
        original = max((original_channels or {}).get(name, space.channels) for name in space.producers)
        target = max(1, round(original * (1.0 - fraction)))
        if target >= space.channels:
            continue
        score = _importance(graph, space, criterion, taylor)
        keep[s] = np.sort(np.argsort(-score, kind="stable")[:target])

    k = keras()

    def smaller(layer: Any) -> Any:
        config = layer.get_config()
        space = graph.find(graph.space_of[layer.name])
        if type(layer).__name__ in _PRODUCERS and space in keep:
            config["filters" if "filters" in config else "units"] = len(keep[space])
        return type(layer).from_config(config)

    rebuilt = k.models.clone_model(model, clone_function=smaller)
    for layer in model.layers:
        weights = _sliced_weights(graph, layer, keep)
        if weights:
            rebuilt.get_layer(layer.name).set_weights(weights)
    report = [
        LayerChannels(
            name,
            type(model.get_layer(name)).__name__,
            (original_channels or {}).get(name, int(model.get_layer(name).output_shape[-1])),
            int(rebuilt.get_layer(name).output_shape[-1]),
            _skipped(graph.spaces[s]),
        )
        for s in sorted({graph.find(i) for i in range(len(graph.spaces))})
        for name in graph.spaces[s].producers
    ]
    return rebuilt, report


def _skipped(space: _Space) -> str | None:
    """The layer that kept a frozen space's channels whole, unless the model's input or output needs them."""
    return space.blocker if space.frozen and not space.interface else None


def _prunable_spaces(graph: _Graph) -> list[int]:
    """The spaces channel pruning may shrink; ConfigError when there are none."""
    roots = sorted({graph.find(i) for i in range(len(graph.spaces))})
    prunable = [s for s in roots if not graph.spaces[s].frozen and graph.spaces[s].producers]
    if not prunable:
        raise ConfigError(
            "no layer of this model can lose channels (every channel reaches the output or a frozen layer)"
        )
    return prunable


def skipped_producers(model: Any) -> dict[str, str]:
    """The Conv and Dense layers channel pruning will leave whole because it cannot follow a layer their
    channels reach (Concatenate, Reshape, an unknown layer...): layer name -> that layer, as
    ``"Concatenate 'concatenate'"``. The model's own output layer is not among them.

    Raises ConfigError when no layer of the model can lose channels, or a layer is used twice.
    """
    graph = _Graph(model)
    _prunable_spaces(graph)
    producers = {name for space in graph.spaces for name in space.producers}
    return {
        layer.name: blocker
        for layer in model.layers
        if layer.name in producers and (blocker := _skipped(graph.space(layer.name))) is not None
    }


def producer_channels(model: Any) -> dict[str, int]:
    """Output channels of every Conv and Dense layer, by name."""
    return {layer.name: int(layer.output_shape[-1]) for layer in model.layers if type(layer).__name__ in _PRODUCERS}


BATCH_NORM_SAMPLES = 512  # enough for per-channel means and variances; one pass, in batches


def reestimate_batch_norm(model: Any, x: np.ndarray) -> int:
    """Reset the moving mean and variance of every BatchNormalization of ``model`` to what its input
    shows on ``x`` (the first ``BATCH_NORM_SAMPLES``), in graph order, each after those before it.

    After surgery the statistics a BatchNorm kept no longer fit its smaller input (a removed
    channel upstream changed every sum), and with Keras's momentum of 0.99 fine-tuning moves
    them slowly. The model runs in inference mode (Dropout off), so each BatchNorm gets exactly
    the statistics it will see when deployed. Writes the layers' moving statistics; returns
    how many were reset (BatchNorms over another axis than the last are left alone).
    """
    k = keras()
    samples = x[:BATCH_NORM_SAMPLES]
    reset = 0
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization" or list(layer.axis) != [len(layer.input_shape) - 1]:
            continue
        probe = k.Model(model.inputs, layer.input)
        total = np.zeros(layer.input_shape[-1])
        squares = np.zeros(layer.input_shape[-1])
        count = 0
        for start in range(0, len(samples), 128):
            values = np.asarray(probe(samples[start : start + 128], training=False), dtype=np.float64)
            values = values.reshape(-1, values.shape[-1])
            total += values.sum(axis=0)
            squares += (values**2).sum(axis=0)
            count += len(values)
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(squares / count - mean**2, 0.0).astype(np.float32))
        reset += 1
    return reset
