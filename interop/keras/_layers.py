"""The keras layer tables: which funcdl layers compute what a keras layer computes, and back.

``FROM_KERAS`` maps a keras layer class to the funcdl layers that compute the
same function (checking every option that matters); ``TO_KERAS`` maps a
funcdl layer type back to keras layers. Weights are mapped by
``interop.layouts`` (``KERAS_WEIGHTS``).
"""
from typing import Any

import numpy as np
from flax import traverse_util

from funcdl import nn
from funcdl.errors import ConversionError
from interop.layouts import checked


def layer_tensors(variables: Any, index: int) -> dict[str, np.ndarray]:
    """``{'params/kernel': np.ndarray, ...}`` of Sequential layer ``index`` (``layers_{index}``)."""
    return node_tensors(variables, f"layers_{index}")


def node_tensors(variables: Any, name: str) -> dict[str, np.ndarray]:
    """``{'params/kernel': np.ndarray, 'params/forward/kernel': ...}`` of the layer or graph node ``name``."""
    return {f"{collection}/{key}": np.asarray(value)
            for collection, tree in dict(variables).items() if name in tree
            for key, value in traverse_util.flatten_dict(dict(tree[name]), sep="/").items()}


# ---- keras layer -> funcdl layers ------------------------------------------------------------------------

# keras activation name -> funcdl activation name usable inside Dense / Conv2D (same function), from nn.TABLE.
KERAS_ACTIVATIONS = {row.keras: None if row.layer is None else row.name for row in nn.TABLE if row.keras}
KERAS_LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default negative_slope (funcdl's is 0.01)
_RNN_DEFAULTS = {"return_state": False, "stateful": False, "use_bias": True, "dropout": 0.0,
                 "recurrent_dropout": 0.0}


def unsupported(where, what):
    """ConversionError for an option funcdl has no exact counterpart for."""
    return ConversionError(f"keras layer {where}: {what} is not supported by funcdl (no exact equivalent)")


def expect(config, where, **defaults):
    """Raise ConversionError unless every ``config[key]`` (when present) equals ``defaults[key]``."""
    for key, value in defaults.items():
        if key in config and config[key] != value and not (value is None and not config[key]):
            raise unsupported(where, f"{key}={config[key]!r} (funcdl needs {value!r})")


def _ints(values):
    return tuple(int(v) for v in values)


def activation_from_keras(name, where):
    """(funcdl in-layer activation name or None, extra funcdl layers to append) for a keras activation."""
    if not isinstance(name, str):
        raise unsupported(where, f"a custom activation {name!r}")
    if name in KERAS_ACTIVATIONS:
        return KERAS_ACTIVATIONS[name], []
    if name == "leaky_relu":
        return None, [nn.LeakyReLU(KERAS_LEAKY_SLOPE)]
    raise unsupported(where, f"activation {name!r}; supported: {', '.join(sorted(KERAS_ACTIVATIONS))}, leaky_relu")


def activation_layers_from_keras(name, where):
    """funcdl layers for ``keras.layers.Activation(name)``."""
    layers = {row.keras: row for row in nn.TABLE if row.keras and row.layer is not None}
    if not isinstance(name, str):
        raise unsupported(where, f"a custom activation {name!r}")
    if name == "linear":
        return []
    if name == "leaky_relu":
        return [nn.LeakyReLU(KERAS_LEAKY_SLOPE)]
    if name in layers:
        return [layers[name].layer(**layers[name].options)]
    raise unsupported(where, f"activation {name!r}; supported: {', '.join(sorted(layers))}, leaky_relu, linear")


def _dense(c, where, rank):
    expect(c, where, lora_rank=None, quantization_config=None)
    activation, extra = activation_from_keras(c["activation"], where)
    return [nn.Dense(int(c["units"]), use_bias=bool(c["use_bias"]), activation=activation)] + extra


def _conv2d(c, where, rank, padding=None):
    expect(c, where, data_format="channels_last", lora_rank=None, quantization_config=None)
    if c["padding"] not in ("valid", "same") or (padding is not None and c["padding"] != "valid"):
        raise unsupported(where, f"padding={c['padding']!r}" + (" after ZeroPadding2D" if padding else ""))
    activation, extra = activation_from_keras(c["activation"], where)
    return [nn.Conv2D(int(c["filters"]), kernel_size=_ints(c["kernel_size"]), strides=_ints(c["strides"]),
                      padding=padding or c["padding"], dilation=_ints(c["dilation_rate"]), groups=int(c["groups"]),
                      use_bias=bool(c["use_bias"]), activation=activation)] + extra


def _pool_args(c, where, padding):
    expect(c, where, data_format="channels_last")
    if c["padding"] not in ("valid", "same") or (padding is not None and c["padding"] != "valid"):
        raise unsupported(where, f"padding={c['padding']!r}" + (" after ZeroPadding2D" if padding else ""))
    return {"pool_size": _ints(c["pool_size"]), "strides": _ints(c["strides"] or c["pool_size"]),
            "padding": padding or c["padding"]}


def _max_pool(c, where, rank):
    return [nn.MaxPool2D(**_pool_args(c, where, None))]


def _avg_pool(c, where, rank, padding=None):
    # keras 'same' divides by the real pixels only; zeros from a ZeroPadding2D count as pixels.
    return [nn.AvgPool2D(**_pool_args(c, where, padding), count_include_pad=padding is not None)]


def _trailing_axes(axis, rank, where):
    """How many trailing axes ``axis`` (int or list, keras style) names; ConversionError otherwise."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if rank is None and any(a >= 0 for a in axes):
        raise unsupported(where, f"axis={axis!r} on an input of unknown rank")
    axes = sorted(a - rank if rank is not None and a >= 0 else a for a in axes)
    if axes != list(range(-len(axes), 0)) or (rank is not None and len(axes) >= rank):
        raise unsupported(where, f"axis={axis!r} (funcdl normalises the last axes only)")
    return len(axes)


def _batch_norm(c, where, rank):
    expect(c, where, renorm=False)
    if _trailing_axes(c["axis"], rank, where) != 1:
        raise unsupported(where, f"axis={c['axis']!r} (funcdl normalises the last axis)")
    return [nn.BatchNorm(momentum=float(c["momentum"]), epsilon=float(c["epsilon"]), unbiased_running_var=False,
                         use_scale=bool(c["scale"]), use_bias=bool(c["center"]))]


def _layer_norm(c, where, rank):
    expect(c, where, rms_scaling=False)
    return [nn.LayerNorm(epsilon=float(c["epsilon"]), num_axes=_trailing_axes(c["axis"], rank, where),
                         use_scale=bool(c["scale"]), use_bias=bool(c["center"]))]


def _embedding(c, where, rank):
    expect(c, where, mask_zero=False, lora_rank=None, quantization_config=None)
    return [nn.Embedding(int(c["input_dim"]), int(c["output_dim"]))]


def _reverse(c, where):
    """funcdl's ``reverse`` for keras' ``go_backwards`` (whose sequence output stays reversed: refused)."""
    if c.get("go_backwards") and c.get("return_sequences"):
        raise unsupported(where, "go_backwards=True with return_sequences=True (its output is in reversed order)")
    return bool(c.get("go_backwards"))


def _simple_rnn(c, where, rank):
    expect(c, where, **_RNN_DEFAULTS)
    activation, extra = activation_from_keras(c["activation"], where)
    if extra:
        raise unsupported(where, f"activation={c['activation']!r}")
    return [nn.SimpleRNN(int(c["units"]), activation=activation or "linear",
                         return_sequences=bool(c["return_sequences"]), reverse=_reverse(c, where))]


def _lstm(c, where, rank):
    expect(c, where, activation="tanh", recurrent_activation="sigmoid", **_RNN_DEFAULTS)
    return [nn.LSTM(int(c["units"]), return_sequences=bool(c["return_sequences"]),
                    unit_forget_bias=bool(c.get("unit_forget_bias", True)), reverse=_reverse(c, where))]


def _gru(c, where, rank):
    expect(c, where, activation="tanh", recurrent_activation="sigmoid", **_RNN_DEFAULTS)
    return [nn.GRU(int(c["units"]), return_sequences=bool(c["return_sequences"]),
                   reset_after=bool(c["reset_after"]), reverse=_reverse(c, where))]


def _relu(c, where, rank):
    slope = float(c.get("negative_slope") or 0.0)
    if c.get("max_value") is not None and float(c["max_value"]) == 6.0 and not slope:
        expect(c, where, threshold=0.0)
        return [nn.ReLU6()]
    expect(c, where, max_value=None, threshold=0.0)
    return [nn.LeakyReLU(slope)] if slope else [nn.ReLU()]


def _elu(c, where, rank):
    return [nn.ELU(alpha=float(c.get("alpha", 1.0)))]


_RECURRENT = {"SimpleRNN": _simple_rnn, "LSTM": _lstm, "GRU": _gru}
_OWN_NAMES = ("name", "go_backwards")  # what a Bidirectional's backward copy may differ in


def _bidirectional(c, where, rank):
    """A Bidirectional around a SimpleRNN / LSTM / GRU whose backward copy is the same layer read backwards."""
    inner, backward = c.get("layer") or {}, c.get("backward_layer")
    kind, config = inner.get("class_name"), inner.get("config") or {}
    if kind not in _RECURRENT:
        raise unsupported(where, f"Bidirectional({kind}) (funcdl wraps {', '.join(_RECURRENT)})")
    if backward is not None:
        back = backward.get("config") or {}
        same = {k: v for k, v in back.items() if k not in _OWN_NAMES} == {
            k: v for k, v in config.items() if k not in _OWN_NAMES}
        if backward.get("class_name") != kind or not same or not back.get("go_backwards"):
            raise unsupported(where, "a backward_layer that is not the forward layer read backwards")
    merge_mode = c.get("merge_mode", "concat")
    if merge_mode not in nn.MERGE_MODES:
        raise unsupported(where, f"merge_mode={merge_mode!r}")
    if config.get("go_backwards"):
        raise unsupported(where, "a Bidirectional whose forward layer reads backwards (go_backwards=True)")
    (layer,) = _RECURRENT[kind](config, where, rank)
    return [nn.Bidirectional(layer, merge_mode=merge_mode)]


def _upsampling(c, where, rank):
    expect(c, where, data_format="channels_last")
    if c.get("interpolation", "nearest") not in ("nearest", "bilinear"):
        raise unsupported(where, f"interpolation={c['interpolation']!r} (funcdl has nearest and bilinear)")
    return [nn.UpSampling2D(_ints(c["size"]), interpolation=c.get("interpolation", "nearest"))]


def _zero_padding(c, where, rank):
    expect(c, where, data_format="channels_last")
    return [nn.ZeroPadding2D(nn.padding_pairs(int_pairs(c["padding"])))]


def int_pairs(padding: Any) -> Any:
    """Keras' padding option (int, (h, w) or ((t, b), (l, r)), lists from JSON) as tuples of ints."""
    if isinstance(padding, (list, tuple)):
        return tuple(int_pairs(p) for p in padding)
    return int(padding)


def _softmax(c, where, rank):
    axis = c["axis"]
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise unsupported(where, f"axis={axis!r}")
        axis = axis[0]
    return [nn.Softmax(axis=int(axis))]


def _flatten(c, where, rank):
    expect(c, where, data_format="channels_last")
    return [nn.Flatten()]


def _dropout(c, where, rank):
    expect(c, where, noise_shape=None)
    return [nn.Dropout(float(c["rate"]))]


FROM_KERAS = {
    "Activation": lambda c, where, rank: activation_layers_from_keras(c["activation"], where),
    "AveragePooling2D": _avg_pool,
    "BatchNormalization": _batch_norm,
    "Conv2D": _conv2d,
    "Dense": _dense,
    "Dropout": _dropout,
    "Embedding": _embedding,
    "Flatten": _flatten,
    "GRU": _gru,
    "InputLayer": lambda c, where, rank: [],
    "LSTM": _lstm,
    "LayerNormalization": _layer_norm,
    "LeakyReLU": lambda c, where, rank: [nn.LeakyReLU(float(c["negative_slope"]))],
    "MaxPooling2D": _max_pool,
    "ReLU": _relu,
    "Reshape": lambda c, where, rank: [nn.Reshape(_ints(c["target_shape"]))],
    "SimpleRNN": _simple_rnn,
    "Softmax": _softmax,
    "Bidirectional": _bidirectional,
    "ELU": _elu,
    "Permute": lambda c, where, rank: [nn.Permute(_ints(c["dims"]))],
    "RepeatVector": lambda c, where, rank: [nn.RepeatVector(int(c["n"]))],
    "UpSampling2D": _upsampling,
    "ZeroPadding2D": _zero_padding,
}
# A ZeroPadding2D right before a 'valid' Conv2D or AveragePooling2D merges into that layer's padding.
PADDED = {"Conv2D": _conv2d, "AveragePooling2D": _avg_pool}


def merges_padding(kind: str, config: dict) -> bool:
    """Whether a ZeroPadding2D feeding keras layer ``kind`` (with ``config``) merges into its padding."""
    return kind in PADDED and config.get("padding") == "valid"


# ---- funcdl layer -> keras layers ------------------------------------------------------------------------
# Each converter returns the keras layers for funcdl layer ``layers_{i}``; the one holding the weights is
# named ``layers_{i}`` itself (helpers get suffixes), so weight files and round trips line up by name.

# funcdl activation name (Dense / Conv2D / SimpleRNN ``activation``) -> keras', from nn.TABLE.
TO_KERAS_ACTIVATIONS: dict[str | None, str] = {None: "linear", **{row.name: row.keras for row in nn.TABLE if row.keras}}


def refused(layer, name, what):
    """ConversionError for a funcdl setting keras has no exact counterpart for."""
    return ConversionError(f"funcdl layer {name} ({type(layer).__name__}): {what} has no exact keras equivalent")


def _activation_to_keras(L, layer, name):
    """(keras in-layer activation name, extra keras layers) for ``layer.activation``."""
    if layer.activation in TO_KERAS_ACTIVATIONS:
        return TO_KERAS_ACTIVATIONS[layer.activation], []
    if layer.activation == "leaky_relu":  # funcdl's slope (0.01) differs from keras' activation default
        return "linear", [L.LeakyReLU(negative_slope=0.01, name=f"{name}_activation")]
    raise refused(layer, name, f"activation {layer.activation!r}")


def _keras_padding(L, padding, name):
    """(keras padding string, [ZeroPadding2D] or []) for a funcdl padding that is a str or explicit pairs."""
    spec = nn.padding_spec(padding)
    if isinstance(spec, str):
        return spec.lower(), []
    if not any(v for pair in spec for v in pair):
        return "valid", []
    return "valid", [L.ZeroPadding2D(tuple(_ints(p) for p in spec), name=f"{name}_pad")]


def _dense_to_keras(L, layer, shape, name, strict):
    activation, extra = _activation_to_keras(L, layer, name)
    return [L.Dense(layer.features, activation=activation, use_bias=layer.use_bias, name=name)] + extra


def _conv2d_to_keras(L, layer, shape, name, strict):
    padding, pad_layers = _keras_padding(L, layer.padding, name)
    activation, extra = _activation_to_keras(L, layer, name)
    conv = L.Conv2D(layer.features, nn.pair(layer.kernel_size, "kernel_size"),
                    strides=nn.pair(layer.strides, "strides"), padding=padding,
                    dilation_rate=nn.pair(layer.dilation, "dilation"), groups=layer.groups,
                    use_bias=layer.use_bias, activation=activation, name=name)
    return pad_layers + [conv] + extra


def _pool_window(layer):
    window = nn.pair(layer.pool_size, "pool_size")
    return window, nn.pair(layer.strides if layer.strides is not None else layer.pool_size, "strides")


def _max_pool_to_keras(L, layer, shape, name, strict):
    window, strides = _pool_window(layer)
    padding, pad_layers = _keras_padding(L, layer.padding, name)
    if pad_layers:  # keras pads with zeros, funcdl's max pool with -inf
        raise refused(layer, name, f"explicit padding {layer.padding!r}")
    return [L.MaxPooling2D(window, strides=strides, padding=padding, name=name)]


def _avg_pool_to_keras(L, layer, shape, name, strict):
    window, strides = _pool_window(layer)
    padding, pad_layers = _keras_padding(L, layer.padding, name)
    if padding == "same" and layer.count_include_pad:
        pads = nn.explicit_padding("same", shape[:2], window, strides)
        padding, pad_layers = _keras_padding(L, pads, name)
    if pad_layers and not layer.count_include_pad:
        raise refused(layer, name, f"explicit padding {layer.padding!r} with count_include_pad=False")
    return pad_layers + [L.AveragePooling2D(window, strides=strides, padding=padding, name=name)]


def _batch_norm_to_keras(L, layer, shape, name, strict):
    if layer.unbiased_running_var and strict:
        raise refused(layer, name, "unbiased_running_var=True (training only; pass strict=False to accept)")
    return [L.BatchNormalization(axis=-1, momentum=layer.momentum, epsilon=layer.epsilon, center=layer.use_bias,
                                 scale=layer.use_scale, name=name)]


def _layer_norm_to_keras(L, layer, shape, name, strict):
    rank = len(shape) + 1
    axis = -1 if layer.num_axes == 1 else list(range(rank - layer.num_axes, rank))
    return [L.LayerNormalization(axis=axis, epsilon=layer.epsilon, center=layer.use_bias, scale=layer.use_scale,
                                 name=name)]


def _image_rows_to_keras(L, layer, shape, name, strict):
    if len(shape) == 2:
        return []
    return [L.Reshape((shape[0], int(np.prod(shape[1:]))), name=name)]


def _log_softmax_to_keras(L, layer, shape, name, strict):
    if layer.axis not in (-1, len(shape)):
        raise refused(layer, name, f"axis={layer.axis}")
    return [L.Activation("log_softmax", name=name)]


def _softplus_to_keras(L, layer, shape, name, strict):
    # Above ``threshold`` funcdl returns x; keras' log1p(exp(x)) differs by < exp(-15) relative there.
    if layer.beta != 1.0 or layer.threshold < 15.0:
        raise refused(layer, name, f"beta={layer.beta}, threshold={layer.threshold}")
    return [L.Activation("softplus", name=name)]


def _gelu_to_keras(L, layer, shape, name, strict):
    if layer.approximate:
        raise refused(layer, name, "approximate=True (keras' Activation('gelu') is the exact form)")
    return [L.Activation("gelu", name=name)]


_RECURRENT_TO_KERAS = {
    "GRU": lambda L, layer, name: L.GRU(layer.features, return_sequences=layer.return_sequences,
                                        reset_after=layer.reset_after, go_backwards=layer.reverse, name=name),
    "LSTM": lambda L, layer, name: L.LSTM(layer.features, return_sequences=layer.return_sequences,
                                          unit_forget_bias=layer.unit_forget_bias, go_backwards=layer.reverse,
                                          name=name),
}


def _recurrent_to_keras(L, layer, shape, name, strict):
    if layer.reverse and layer.return_sequences:  # keras' go_backwards keeps the sequence reversed
        raise refused(layer, name, "reverse=True with return_sequences=True")
    if type(layer).__name__ == "SimpleRNN":
        if layer.activation not in TO_KERAS_ACTIVATIONS:
            raise refused(layer, name, f"activation {layer.activation!r}")
        return [L.SimpleRNN(layer.features, activation=TO_KERAS_ACTIVATIONS[layer.activation],
                            return_sequences=layer.return_sequences, go_backwards=layer.reverse, name=name)]
    return [_RECURRENT_TO_KERAS[type(layer).__name__](L, layer, name)]


def _bidirectional_to_keras(L, layer, shape, name, strict):
    (inner,) = _recurrent_to_keras(L, layer.layer, shape, f"{name}_layer", strict)
    return [L.Bidirectional(inner, merge_mode=layer.merge_mode, name=name)]


def _activation_layer_to_keras(L, layer, shape, name, strict):
    """``Activation(<keras name>)`` for a parameter-free activation layer whose table row has a keras name."""
    row = nn.activation_of(layer)
    if row.keras is None or (row.layer is not None and layer.options() != row.layer(**row.options).options()):
        raise refused(layer, name, f"settings {layer.options()}")
    return [L.Activation(row.keras, name=name)]


def _elu_to_keras(L, layer, shape, name, strict):
    return [L.ELU(alpha=layer.alpha, name=name)]


def _pixel_shuffle_to_keras(L, layer, shape, name, strict):
    """Reshape to (H, W, C, r, r) ('torch') or (H, W, r, r, C) ('tf'), move the r axes next to H and W, merge."""
    height, width, channels = shape
    r, out = layer.factor, channels // (layer.factor ** 2)
    split, dims = ((height, width, out, r, r), (1, 4, 2, 5, 3)) if layer.order == "torch" else (
        (height, width, r, r, out), (1, 3, 2, 4, 5))
    return [L.Reshape(split, name=f"{name}_split"), L.Permute(dims, name=f"{name}_permute"),
            L.Reshape((height * r, width * r, out), name=name)]


TO_KERAS = {
    **{type_name: _activation_layer_to_keras for type_name in ("ReLU6", "SiLU", "HardSwish", "SELU", "HardSigmoid",
                                                               "Softsign", "Mish", "Exponential")},
    "Bidirectional": _bidirectional_to_keras,
    "ELU": _elu_to_keras,
    "Permute": lambda L, layer, shape, name, strict: [L.Permute(tuple(layer.dims), name=name)],
    "PixelShuffle": _pixel_shuffle_to_keras,
    "RepeatVector": lambda L, layer, shape, name, strict: [L.RepeatVector(int(layer.n), name=name)],
    "UpSampling2D": lambda L, layer, shape, name, strict: [L.UpSampling2D(
        nn.pair(layer.size, "size"), interpolation=layer.interpolation, name=name)],
    "ZeroPadding2D": lambda L, layer, shape, name, strict: [L.ZeroPadding2D(nn.padding_pairs(layer.padding),
                                                                            name=name)],
    "AvgPool2D": _avg_pool_to_keras,
    "BatchNorm": _batch_norm_to_keras,
    "Conv2D": _conv2d_to_keras,
    "Dense": _dense_to_keras,
    "Dropout": lambda L, layer, shape, name, strict: [L.Dropout(layer.rate, name=name)],
    "Embedding": lambda L, layer, shape, name, strict: [L.Embedding(layer.num_embeddings, layer.features,
                                                                    name=name)],
    "Flatten": lambda L, layer, shape, name, strict: [L.Flatten(name=name)],
    "GELU": _gelu_to_keras,
    "GRU": _recurrent_to_keras,
    "ImageRows": _image_rows_to_keras,
    "LSTM": _recurrent_to_keras,
    "LayerNorm": _layer_norm_to_keras,
    "LeakyReLU": lambda L, layer, shape, name, strict: [L.LeakyReLU(negative_slope=layer.negative_slope,
                                                                    name=name)],
    "LogSoftmax": _log_softmax_to_keras,
    "MaxPool2D": _max_pool_to_keras,
    "ReLU": lambda L, layer, shape, name, strict: [L.ReLU(name=name)],
    "Reshape": lambda L, layer, shape, name, strict: [L.Reshape(tuple(layer.shape), name=name)],
    "Sigmoid": lambda L, layer, shape, name, strict: [L.Activation("sigmoid", name=name)],
    "SimpleRNN": _recurrent_to_keras,
    "Softmax": lambda L, layer, shape, name, strict: [L.Softmax(axis=layer.axis, name=name)],
    "Softplus": _softplus_to_keras,
    "Tanh": lambda L, layer, shape, name, strict: [L.Activation("tanh", name=name)],
}


def keras_weights(keras_layer: Any) -> dict[str, Any]:
    """``{name: keras variable}`` of a keras layer: its weights' names, a Bidirectional's prefixed 'forward/' and
    'backward/' (its two copies name their weights alike)."""
    if type(keras_layer).__name__ == "Bidirectional":
        return {f"{side}/{w.name}": w for side in ("forward", "backward")
                for w in getattr(keras_layer, f"{side}_layer").weights}
    return {w.name: w for w in keras_layer.weights}


def assign_weights(keras_layer: Any, values: dict[str, Any], where: str) -> int:
    """Copy funcdl tensors (keras weight name -> array) into ``keras_layer``'s weights; returns how many.

    Raises ConversionError when the names differ, and (through ``checked``) when a shape does; ``where`` names
    the layer or graph node in the message.
    """
    targets = keras_weights(keras_layer)
    if set(values) != set(targets):
        raise ConversionError(f"{where}: funcdl gives {sorted(values)}, keras expects {sorted(targets)}")
    for name, value in values.items():
        checked(value, targets[name].shape, f"{where}/{name}", "to_keras")
        targets[name].assign(np.asarray(value, np.float32))
    return len(values)
