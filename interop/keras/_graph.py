"""Keras functional and nested models -> a funcdl ``nn.Graph``, read from the model's config.

The architecture is read from ``keras_model.get_config()`` (plain JSON: layer
class names, options and ``inbound_nodes``), never by letting keras rebuild
layers; the weights come from the built keras layers. Node names are the keras
layer names (characters funcdl names cannot hold, such as Keras 2's '/', become
'_'), so params are ``{'params': {<keras layer name>: ...}}``. A keras layer
that becomes several funcdl layers gives nodes ``name.k`` around the one named
``name`` that holds the weights (``Dense(activation='leaky_relu')``: ``name``,
``name.1``; Conv1D: ``name.0``, ``name``, ``name.2``). A nested model (a Sequential inside a model, a model used as a
layer) is one node holding the converted sub-model.
"""
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flax import traverse_util

from funcdl import nn
from funcdl.errors import ConversionError
from interop import one_d
from interop.keras._layers import (
    FROM_KERAS,
    PADDED,
    activation_from_keras,
    expect,
    int_pairs,
    keras_weights,
    merges_padding,
)
from interop.layouts import KERAS_WEIGHTS, conv1d_to_2d, weights_from_keras

MODELS = ("Functional", "Sequential", "Model")
MERGES = {"Add": nn.Add, "Subtract": nn.Subtract, "Multiply": nn.Multiply, "Average": nn.Average,
          "Maximum": nn.Maximum, "Minimum": nn.Minimum}
GLOBAL_POOLS = {"GlobalAveragePooling1D": nn.GlobalAveragePooling1D,
                "GlobalAveragePooling2D": nn.GlobalAveragePooling2D, "GlobalMaxPooling1D": nn.GlobalMaxPooling1D,
                "GlobalMaxPooling2D": nn.GlobalMaxPooling2D}
UNKNOWN_SIZE = 64  # stands in for a None (variable) input size in shape inference
SPATIAL_DROPOUTS = ("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")


def _concatenate(c, where, rank):
    return [nn.Concatenate(axis=int(c["axis"]))]


def _global_pool(kind):
    def convert(c, where, rank):
        expect(c, where, data_format="channels_last", keepdims=False)
        return [GLOBAL_POOLS[kind]()]
    return convert


def _spatial_dropout(c, where, rank):
    # Identity at inference, as keras'; in training funcdl drops single values, keras whole channels.
    return [nn.Dropout(float(c["rate"]))]


def _one_d(c, where):
    expect(c, where, data_format="channels_last", lora_rank=None, quantization_config=None)
    if c["padding"] not in ("valid", "same"):
        raise ConversionError(f"keras layer {where}: padding={c['padding']!r} is not supported by funcdl (no exact "
                              "equivalent)")
    return lambda key: one_d.one_d(c[key][0] if isinstance(c[key], list) else c[key])


def _conv1d(c, where, channels):
    """A Conv1D as Reshape (B, T, 1, C) -> Conv2D with a (k, 1) window -> Reshape (B, T', F)."""
    pair = _one_d(c, where)
    activation, extra = activation_from_keras(c["activation"], where)
    options = dict(features=int(c["filters"]), kernel_size=pair("kernel_size"), strides=pair("strides"),
                   padding=c["padding"], dilation=pair("dilation_rate"), groups=int(c.get("groups", 1)),
                   use_bias=bool(c["use_bias"]), activation=activation)
    return one_d.build(one_d.as_2d(nn.Conv2D, options, channels, int(c["filters"]))) + extra


def _pool1d(c, where, channels):
    """A 1-D pooling as Reshape (B, T, 1, C) -> 2-D pooling with a (p, 1) window -> Reshape (B, T', C)."""
    pair = _one_d(c, where)
    c = {**c, "strides": c.get("strides") or c["pool_size"]}
    options = {"pool_size": pair("pool_size"), "strides": pair("strides"), "padding": c["padding"]}
    pool, extra = (nn.MaxPool2D, {}) if c.get("kind") == "max" else (nn.AvgPool2D, {"count_include_pad": False})
    return one_d.build(one_d.as_2d(pool, {**options, **extra}, channels, channels))


# keras 1-D layer -> converter(config, where, input channels): funcdl runs them as 2-D layers on (B, T, 1, C)
ONE_D = {"Conv1D": _conv1d, "MaxPooling1D": lambda c, where, channels: _pool1d({**c, "kind": "max"}, where, channels),
         "AveragePooling1D": lambda c, where, channels: _pool1d({**c, "kind": "avg"}, where, channels)}
ONE_D_WEIGHTS = {"Conv1D": lambda weights: {**weights, "kernel": conv1d_to_2d(weights["kernel"])}}

WRAPPED_RECURRENT = ("LSTM", "GRU", "SimpleRNN")  # what a Bidirectional may wrap
PER_STEP = ("Dense", "Dropout", "Activation", "ReLU", "LeakyReLU")  # act on the last axis: TimeDistributed is free


def _time_distributed(c, where, rank):
    inner = c.get("layer") or {}
    if inner.get("class_name") not in PER_STEP:
        raise ConversionError(f"keras layer {where}: TimeDistributed({inner.get('class_name')}) is not supported; "
                              f"supported inside it: {', '.join(PER_STEP)}")
    return GRAPH_LAYERS[inner["class_name"]](inner.get("config") or {}, where, rank)


def _numbers(value: Any, where: str, what: str) -> Any:
    """A number, or a tuple of numbers (one per channel), from a keras option or weight."""
    array = np.asarray(value, np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ConversionError(f"keras layer {where}: {what} must be finite numbers")
    return float(array[0]) if np.ndim(value) == 0 else tuple(float(v) for v in array)


def _rescaling(c, where, rank):
    return [nn.Rescaling(scale=_numbers(c["scale"], where, "scale"), offset=_numbers(c["offset"], where, "offset"))]


def _normalization(c, stats, where, rank):
    """Normalization with its statistics: from the config when given there, else the adapted weights."""
    axes = c.get("axis") if isinstance(c.get("axis"), list) else [c.get("axis")]
    if axes != [-1] and (rank is None or axes != [rank - 1]):
        raise ConversionError(f"keras layer {where}: axis={c.get('axis')!r} is not supported (funcdl normalises "
                              "per channel, the last axis)")
    mean, variance = (c["mean"], c["variance"]) if c.get("mean") is not None else (
        stats.get("mean"), stats.get("variance"))
    if mean is None or variance is None:
        raise ConversionError(f"keras layer {where} was never adapted: it has no mean and variance")
    return [nn.Normalization(mean=_numbers(mean, where, "mean"), variance=_numbers(variance, where, "variance"),
                             invert=bool(c.get("invert", False)))]


GRAPH_LAYERS = {**FROM_KERAS, **{kind: (lambda c, where, rank, kind=kind: [MERGES[kind]()]) for kind in MERGES},
                "Concatenate": _concatenate, **{kind: _global_pool(kind) for kind in GLOBAL_POOLS},
                **{kind: _spatial_dropout for kind in SPATIAL_DROPOUTS}, **dict.fromkeys(ONE_D),
                "TimeDistributed": _time_distributed, "Rescaling": _rescaling, "Normalization": None}
GRAPH_SUPPORTED = sorted(set(GRAPH_LAYERS) - {"InputLayer"}) + ["nested models (Sequential, functional)"]


@dataclass
class _Layer:
    """One keras layer of the config: its name, class, options, input references and input rank."""
    name: str
    kind: str
    config: dict
    inputs: list = field(default_factory=list)   # [(layer name, tensor index)]
    rank: int | None = None
    node: str = ""   # its funcdl node name: the keras name, made valid where it is not (Keras 2 allowed '/')


def _history(item: Any) -> Iterator[tuple[str, int, int, Any]]:
    """Every (layer name, node index, tensor index, shape) an ``inbound_nodes`` entry refers to, in order.

    Keras 3 writes ``{"class_name": "__keras_tensor__", "config": {"keras_history": [...], "shape": ...}}``;
    Keras 2 writes ``[name, node_index, tensor_index, kwargs]``.
    """
    if isinstance(item, dict):
        config = item.get("config")
        if item.get("class_name") == "__keras_tensor__" and isinstance(config, dict):
            name, node, tensor = config["keras_history"]
            yield str(name), int(node), int(tensor), config.get("shape")
            return
        for key in ("args", "kwargs"):
            if key in item:
                yield from _history(item[key])
    elif isinstance(item, list):
        if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int) and isinstance(item[2], int):
            yield item[0], item[1], item[2], None
            return
        for value in item:
            yield from _history(value)


def _layers(config: dict, where: str) -> tuple[list[_Layer], list, list]:
    """(layers, input references, output references) of a functional or Sequential config."""
    entries = config.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ConversionError(f"{where}: its config lists no layers")
    layers = []
    for entry in entries:
        layer_config = entry.get("config", {})
        name = entry.get("name") or layer_config.get("name")
        layers.append(_Layer(str(name), str(entry.get("class_name")), layer_config))
    if "input_layers" not in config:  # a Sequential: a chain
        return _named(*_chain(layers, where))
    for layer, entry in zip(layers, entries):
        nodes = entry.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise ConversionError(f"keras layer {layer.name!r} ({layer.kind}) is called {len(nodes)} times (shared "
                                  "weights); funcdl graph nodes do not share weights")
        refs = list(_history(nodes[0])) if nodes else []
        layer.inputs = [(name, tensor) for name, _, tensor, _ in refs]
        shapes = [shape for *_, shape in refs if isinstance(shape, list)]
        layer.rank = len(shapes[0]) if shapes else None
    return _named(layers, _refs(config["input_layers"]), _refs(config["output_layers"]))


_INVALID = re.compile(r"[^A-Za-z0-9_.\-]")


def _named(layers: list[_Layer], *refs: Any) -> tuple[list[_Layer], Any, Any]:
    """``layers`` with their node names: the keras names, with characters funcdl names cannot hold made '_'."""
    taken: set[str] = set()
    valid = [layer for layer in layers if not _INVALID.search(layer.name) and layer.name[:1] not in ".-"
             and 0 < len(layer.name) <= 180 and layer.name != "params" and not layer.name.startswith("__")]
    for layer in valid + [layer for layer in layers if layer not in valid]:
        name = layer.name if layer in valid else _INVALID.sub("_", layer.name)[:180]
        if layer not in valid and (name[:1] in ("", ".", "-") or name == "params" or name.startswith("__")):
            name = "k_" + name
        base, count = name, 1
        while name in taken:
            name, count = f"{base}_{count}", count + 1
        layer.node = name
        taken.add(name)
    return layers, refs[0], refs[1]


def _refs(spec: Any) -> list[tuple[str, int]]:
    """[(layer name, tensor index)] of ``input_layers`` / ``output_layers`` (one triple, a list or a dict)."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str):
        spec = [spec]
    return [(str(name), int(tensor)) for name, _, tensor in spec]


def _chain(layers: list[_Layer], where: str) -> tuple[list[_Layer], list, list]:
    """A Sequential's layers wired one after another (its InputLayer, or one made from its build shape)."""
    shape = layers[0].config.get("batch_input_shape")
    if layers[0].kind != "InputLayer" and shape is not None:  # Keras 2 Sequential: the first layer's own shape
        layers.insert(0, _Layer(f"{layers[0].name}_input", "InputLayer", {"batch_input_shape": shape,
                                                                           "dtype": layers[0].config.get("dtype")}))
    if layers[0].kind != "InputLayer":
        raise ConversionError(f"{where}: the Sequential has no keras.Input; build it with keras.Input(shape) first")
    for previous, layer in zip(layers, layers[1:]):
        layer.inputs = [(previous.name, 0)]
    return layers, [(layers[0].name, 0)], [(layers[-1].name, 0)]


def unsupported_layers(config: dict, prefix: str = "") -> list[str]:
    """``'name' (Kind)`` of every layer of ``config`` (nested models included) funcdl cannot convert."""
    found = []
    for entry in config.get("layers") or []:
        kind, name = entry.get("class_name"), entry.get("name") or entry.get("config", {}).get("name")
        if kind in MODELS:
            found += unsupported_layers(entry.get("config") or {}, f"{prefix}{name}/")
        elif kind not in GRAPH_LAYERS:
            found.append(f"'{prefix}{name}' ({kind})")
        elif kind in ("TimeDistributed", "Bidirectional"):
            inner = ((entry.get("config") or {}).get("layer") or {}).get("class_name")
            if inner not in (PER_STEP if kind == "TimeDistributed" else WRAPPED_RECURRENT):
                found.append(f"'{prefix}{name}' ({kind}({inner}))")
    return found


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists, as the config reads from a file (a live model's config holds tuples)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _input(layer: _Layer) -> nn.Input:
    """The funcdl Input of a keras InputLayer (its shape without the batch axis; int inputs as int32)."""
    shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
    if not isinstance(shape, list) or not shape:
        raise ConversionError(f"keras input {layer.name!r} has no shape; build the model with keras.Input(shape)")
    dtype = layer.config.get("dtype")
    dtype = dtype if isinstance(dtype, str) else "float32"
    return nn.Input(tuple(None if d is None else int(d) for d in shape[1:]), name=layer.node,
                    dtype="int32" if dtype.startswith(("int", "uint")) else "float32")


def _paddings(layers: list[_Layer]) -> dict[str, tuple]:
    """{consumer name: (pad layer, pads)} for every ZeroPadding2D that feeds only one valid Conv2D /
    AveragePooling2D: it merges into that layer's explicit padding (zeros too). Other ZeroPadding2D layers
    stay layers of their own."""
    merged = {}
    for pad in (layer for layer in layers if layer.kind == "ZeroPadding2D"):
        consumers = [layer for layer in layers if any(name == pad.name for name, _ in layer.inputs)]
        target = consumers[0] if len(consumers) == 1 else None
        if target is None or not merges_padding(target.kind, target.config) or len(target.inputs) != 1:
            continue
        expect(pad.config, f"{pad.name!r} (ZeroPadding2D)", data_format="channels_last")
        merged[target.name] = (pad, nn.padding_pairs(int_pairs(pad.config["padding"])))
    return merged



class LiveSource:
    """The weights of a built keras model's layers (and its nested models, converted by ``convert_nested``)."""

    def __init__(self, keras_model: Any, convert_nested: Any):
        self.keras_model, self.convert_nested = keras_model, convert_nested
        self.total = len(keras_model.weights)

    def weights(self, name: str) -> dict[str, np.ndarray]:
        return {key: np.asarray(w.numpy()) for key, w in keras_weights(self.keras_model.get_layer(name)).items()}

    def dtype(self, name: str) -> str:
        return str(getattr(self.keras_model.get_layer(name), "compute_dtype", "float32"))

    def rank(self, name: str) -> int | None:
        return _rank(self.keras_model.get_layer(name))

    def nested(self, layer: "_Layer") -> tuple[Any, Any, int, int]:
        """(funcdl model, variables, number of outputs, number of keras weights) of a nested model."""
        live = self.keras_model.get_layer(layer.name)
        model, variables = self.convert_nested(live)
        return model, variables, len(live.outputs), len(live.weights)


class _Builder:
    """Collects the nodes and weights of one keras model's graph."""

    def __init__(self, source: Any):
        self.source = source
        self.nodes: list[nn.Node] = []
        self.flat: dict[str, np.ndarray] = {}
        self.produced: dict[str, Any] = {}   # keras layer name -> funcdl reference (a list for several outputs)
        self.ranks: dict[str, int | None] = {}
        self.inputs: tuple[nn.Input, ...] = ()
        self.used = 0

    def ref(self, name: str, tensor: int) -> str:
        value = self.produced[name]
        return value[tensor] if isinstance(value, list) else value

    def add(self, layer: _Layer, pads: tuple | None) -> None:
        """Convert one keras layer (its inputs already converted) into nodes and weights."""
        inputs = [self.ref(name, tensor) for name, tensor in layer.inputs]
        where = f"{layer.name!r} ({layer.kind})"
        if layer.kind in MODELS:
            return self._nested(layer, inputs)
        if self.source.dtype(layer.name) != "float32":
            raise ConversionError(f"keras layer {where} computes in {self.source.dtype(layer.name)}; funcdl "
                                  "converts float32")
        if layer.kind not in MERGES and layer.kind != "Concatenate" and len(inputs) != 1:
            raise ConversionError(f"keras layer {where} takes {len(inputs)} inputs; funcdl converts it with one")
        rank = self._rank(layer, inputs)
        converted = self._convert(layer, where, rank, pads, inputs)
        self.ranks[layer.name] = _out_rank(layer, rank)
        held = [k for k, funcdl_layer in enumerate(converted) if type(funcdl_layer).__name__ in KERAS_WEIGHTS]
        self._append(layer, converted, held[0] if held else 0, inputs)
        weights = self.source.weights(layer.name)
        if held:
            weights = ONE_D_WEIGHTS[layer.kind](weights) if layer.kind in ONE_D_WEIGHTS else weights
            self._weights(layer.node, converted[held[0]], weights)
        elif weights and layer.kind != "Normalization":
            raise ConversionError(f"keras layer {where} has weights funcdl does not convert")

    def _rank(self, layer: _Layer, inputs: list[str]) -> int | None:
        """The rank of the layer's input (batch axis included): from the config, the model, or shape inference."""
        rank = layer.rank if layer.rank is not None else self.ranks.get(layer.inputs[0][0])
        if rank is None:
            rank = self.source.rank(layer.name)
        if rank is None and layer.kind in ("BatchNormalization", "LayerNormalization", "Normalization"):
            rank = len(self.shape(inputs[0])) + 1  # their axes may be written as positive numbers
        return rank

    def _convert(self, layer: _Layer, where: str, rank: int | None, pads: tuple | None, inputs: list[str]) -> list:
        """The funcdl layers computing ``layer``."""
        config = layer.config
        if layer.kind in ONE_D:
            converted = ONE_D[layer.kind](config, where, self.channels(inputs[0]))
        elif layer.kind == "Normalization":  # its adapted statistics become part of the architecture
            stats = self.source.weights(layer.name)
            converted = _normalization(config, stats, where, rank)
            self.used += len(stats)
        elif pads is not None:
            converted = PADDED[layer.kind](config, where, rank, pads)
        else:
            converted = GRAPH_LAYERS[layer.kind](config, where, rank)
        return converted

    def _append(self, layer: _Layer, converted: list, first: int, inputs: list[str]) -> None:
        """Nodes for ``converted``, one after another; ``converted[first]`` is named as the keras layer."""
        names = [layer.node if k == first else f"{layer.node}.{k}" for k in range(len(converted))]
        for index, (name, funcdl_layer) in enumerate(zip(names, converted)):
            args = tuple(inputs) if index == 0 else (names[index - 1],)
            self.nodes.append(nn.Node(name, funcdl_layer, args))
        last = converted[-1] if converted else None
        if isinstance(last, nn.Bidirectional) and last.merge_mode is None:  # two outputs: forward, backward
            self.produced[layer.name] = [f"{names[-1]}:0", f"{names[-1]}:1"]
        else:
            self.produced[layer.name] = names[-1] if converted else inputs[0]

    def shape(self, ref: str) -> tuple[int, ...]:
        """One example's shape of what ``ref`` gives, by funcdl's shape inference over the nodes built so far."""
        outputs = (ref,) + tuple(node.name for node in self.nodes)
        graph = nn.Graph(inputs=self.inputs, nodes=tuple(self.nodes), outputs=outputs)
        concrete = tuple(tuple(UNKNOWN_SIZE if d is None else d for d in spec.shape or ()) for spec in self.inputs)
        return tuple(nn.output_shape(graph, concrete[0] if len(concrete) == 1 else concrete)[0])

    def channels(self, ref: str) -> int:
        """The last axis of what ``ref`` gives."""
        return int(self.shape(ref)[-1])

    def _weights(self, name: str, layer: Any, weights: dict[str, np.ndarray]) -> None:
        for key, value in weights_from_keras(layer, weights).items():
            if value.dtype != np.float32:
                raise ConversionError(f"keras weight {name}/{key} is {value.dtype}; funcdl converts float32 weights")
            collection, tensor = key.split("/", 1)
            self.flat[f"{collection}/{name}/{tensor}"] = value
        self.used += len(weights)

    def _nested(self, layer: _Layer, inputs: list[str]) -> None:
        model, variables, outputs, count = self.source.nested(layer)
        self.nodes.append(nn.Node(layer.node, model, tuple(inputs)))
        for key, value in traverse_util.flatten_dict(dict(variables), sep="/").items():
            collection, rest = key.split("/", 1)
            self.flat[f"{collection}/{layer.node}/{rest}"] = np.asarray(value)
        self.produced[layer.name] = layer.node if outputs == 1 else [f"{layer.node}:{i}" for i in range(outputs)]
        self.used += count


def _out_rank(layer: _Layer, rank: int | None) -> int | None:
    """The rank of ``layer``'s output (batch axis included) from its input's, where its config says."""
    c = layer.config
    if layer.kind in GLOBAL_POOLS or layer.kind == "Flatten":
        return 2
    if layer.kind == "Reshape":
        return len(c["target_shape"]) + 1
    if layer.kind in ("LSTM", "GRU", "SimpleRNN"):
        return 3 if c.get("return_sequences") else 2
    if layer.kind == "Bidirectional":
        return 3 if ((c.get("layer") or {}).get("config") or {}).get("return_sequences") else 2
    if layer.kind == "RepeatVector":
        return 3
    if layer.kind == "Embedding":
        return None if rank is None else rank + 1
    return rank


def _rank(live: Any) -> int | None:
    try:
        return len(live.input.shape)
    except (AttributeError, ValueError):
        return None


def _ordered(layers: list[_Layer]) -> list[_Layer]:
    """``layers`` with every layer after its inputs (keras configs usually are; files may not be)."""
    by_name = {layer.name: layer for layer in layers}
    done: dict[str, None] = {}
    for start in layers:
        stack = [(start, False)]
        while stack:
            layer, expanded = stack.pop()
            if layer.name in done:
                continue
            if expanded:
                done[layer.name] = None
                continue
            stack.append((layer, True))
            for name, _ in layer.inputs:
                if name not in by_name:
                    raise ConversionError(f"keras layer {layer.name!r} takes the output of {name!r}, which the "
                                          "model does not hold")
                if name not in done:
                    stack.append((by_name[name], False))
    return [by_name[name] for name in done]


def graph_from_keras(keras_model: Any, convert_nested: Any) -> tuple[nn.Graph, dict[str, np.ndarray], tuple]:
    """(Graph, flat variables ``{'collection/node/name': array}``, input shapes) of a built keras model.

    Args:
      keras_model: a built keras functional model or Sequential (nested models allowed).
      convert_nested: ``from_keras``, for the nested models (each becomes one node).
    """
    return graph_from_config(_plain(keras_model.get_config()), LiveSource(keras_model, convert_nested),
                             f"keras model {keras_model.name!r}")


def graph_from_config(config: dict, source: Any, where: str) -> tuple[nn.Graph, dict[str, np.ndarray], tuple]:
    """(Graph, flat variables, input shapes) of a keras model config (JSON) with weights from ``source``."""
    missing = unsupported_layers(config)
    if missing:
        what = (f"keras layer {missing[0]} is" if len(missing) == 1 else f"keras layers {', '.join(missing)} are")
        raise ConversionError(f"{what} not supported; `funcdl convert --list-supported` lists the layers that "
                              "convert")
    layers, input_refs, output_refs = _layers(config, where)
    by_name = {layer.name: layer for layer in layers}
    inputs = [_input(by_name[name]) for name, _ in input_refs]
    builder = _Builder(source)
    builder.inputs = tuple(inputs)
    for (name, _), spec in zip(input_refs, inputs):
        builder.produced[name] = str(spec.name)
        builder.ranks[name] = None if spec.shape is None else len(spec.shape) + 1
    merged = _paddings(layers)
    pads = {pad.name for pad, _ in merged.values()}
    for layer in _ordered(layers):
        if layer.kind == "InputLayer":
            continue
        if layer.name in pads:
            builder.produced[layer.name] = builder.ref(*layer.inputs[0])
            builder.ranks[layer.name] = builder.ranks.get(layer.inputs[0][0])
            continue
        builder.add(layer, merged[layer.name][1] if layer.name in merged else None)
    if builder.used != source.total:
        raise ConversionError(f"converted {builder.used} keras weights but the model has {source.total}")
    outputs = [builder.ref(name, tensor) for name, tensor in output_refs]
    graph = nn.Graph(inputs=tuple(inputs), nodes=tuple(builder.nodes),
                     outputs=outputs[0] if len(outputs) == 1 else tuple(outputs))
    return graph, builder.flat, tuple(spec.shape for spec in inputs)
