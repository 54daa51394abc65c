"""Keras plumbing for keras.py and tensorflow.py: lazy imports, the weight table, layer tables, atomic writes.

``FROM_KERAS`` maps a keras layer class to the funcdl layers that compute the
same function (checking every option that matters); ``TO_KERAS`` maps a
funcdl layer type back to keras layers.

The weight table is the one place that says which keras weight becomes which
funcdl tensor (nanoGPT's ``from_pretrained`` style): every entry is copied
as is, except the recurrent layers, whose differences are spelled out in
``_recurrent_from_keras`` / ``_recurrent_to_keras``:

- keras LSTM / SimpleRNN have one bias; funcdl has ``bias`` and
  ``recurrent_bias`` (torch's two biases), so ``recurrent_bias`` is zero on
  import and folded into ``bias`` on export (exact: they are only ever summed).
- keras GRU gates are ordered z, r, h; funcdl's are r, z, n, so the first two
  H-wide blocks of every GRU tensor are swapped (the swap is its own inverse).
  ``reset_after=True`` keras GRUs store ``bias`` as (2, 3H) = [input; recurrent];
  ``reset_after=False`` ones have one (3H,) bias, and funcdl's recurrent bias
  folds into it (it is added outside the reset gate in both).
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from funcdl.errors import ConfigError, FileFormatError, FuncdlError

MISSING = "TensorFlow/Keras is not installed; install the extra: pip install 'funcdl[tf]'"

# funcdl layer type -> ((funcdl tensor 'collection/name', keras weight name), ...)
WEIGHT_TABLE = {
    "Dense": (("params/kernel", "kernel"), ("params/bias", "bias")),
    "Conv2D": (("params/kernel", "kernel"), ("params/bias", "bias")),
    "BatchNorm": (("params/scale", "gamma"), ("params/bias", "beta"),
                  ("batch_stats/mean", "moving_mean"), ("batch_stats/var", "moving_variance")),
    "LayerNorm": (("params/scale", "gamma"), ("params/bias", "beta")),
    "Embedding": (("params/embedding", "embeddings"),),
    "SimpleRNN": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
                  ("params/bias", "bias")),
    "LSTM": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
             ("params/bias", "bias")),
    "GRU": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
            ("params/bias", "bias")),
}


def import_keras():
    """keras 3 on the TensorFlow backend, or FuncdlError naming the extra to install."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import keras
    except ImportError:
        raise FuncdlError(MISSING) from None
    return keras


def import_tf():
    """tensorflow, or FuncdlError naming the extra to install."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise FuncdlError(MISSING) from None
    return tf


def input_dtype(model):
    """int32 when ``model`` starts with an Embedding (token ids), else float32."""
    from funcdl import nn
    return nn.input_dtype(model)


def swap_gru_gates(array, hidden):
    """Swap the first two ``hidden``-wide blocks of the last axis (keras z, r, h <-> funcdl r, z, n)."""
    return np.concatenate([array[..., hidden:2 * hidden], array[..., :hidden], array[..., 2 * hidden:]], axis=-1)


def _fold(bias, recurrent_bias):
    # Adding an all-zero recurrent bias would turn -0.0 into 0.0: skip it so round trips stay bit-identical.
    return bias if not np.any(recurrent_bias) else bias + recurrent_bias


def _recurrent_from_keras(layer, tensors):
    kind = type(layer).__name__
    bias = tensors["params/bias"]
    if kind != "GRU":
        return {**tensors, "params/recurrent_bias": np.zeros_like(bias)}
    hidden = layer.features
    out = {key: swap_gru_gates(value, hidden) for key, value in tensors.items() if key != "params/bias"}
    if bias.ndim == 2:  # reset_after: (2, 3H) = [input bias; recurrent bias]
        out["params/bias"], out["params/recurrent_bias"] = swap_gru_gates(bias[0], hidden), swap_gru_gates(
            bias[1], hidden)
    else:
        out["params/bias"] = swap_gru_gates(bias, hidden)
        out["params/recurrent_bias"] = np.zeros_like(bias)
    return out


def _recurrent_to_keras(layer, tensors):
    kind = type(layer).__name__
    bias = tensors["params/bias"]
    recurrent_bias = tensors.get("params/recurrent_bias", np.zeros_like(bias))  # absent: use_recurrent_bias=False
    out = {key: value for key, value in tensors.items() if key not in ("params/bias", "params/recurrent_bias")}
    if kind != "GRU":
        return {**out, "params/bias": _fold(bias, recurrent_bias)}
    hidden = layer.features
    out = {key: swap_gru_gates(value, hidden) for key, value in out.items()}
    if layer.reset_after:
        out["params/bias"] = np.stack([swap_gru_gates(bias, hidden), swap_gru_gates(recurrent_bias, hidden)])
    else:
        out["params/bias"] = swap_gru_gates(_fold(bias, recurrent_bias), hidden)
    return out


def weights_from_keras(layer, keras_weights):
    """funcdl tensors ``{'params/kernel': array, ...}`` of ``layer`` from its keras twin's weights.

    Args:
      layer: the funcdl layer.
      keras_weights: ``{keras weight name: np.ndarray}`` of the keras layer.
    Raises ConfigError when a keras weight has no place in the table (nothing is dropped silently).
    """
    table = WEIGHT_TABLE[type(layer).__name__]
    unused = set(keras_weights) - {keras_name for _, keras_name in table}
    if unused:
        raise ConfigError(f"keras weights {sorted(unused)} of a {type(layer).__name__} have no funcdl counterpart")
    tensors = {key: keras_weights[name] for key, name in table if name in keras_weights}
    if type(layer).__name__ in ("SimpleRNN", "LSTM", "GRU"):
        tensors = _recurrent_from_keras(layer, tensors)
    return tensors


def weights_to_keras(layer, tensors):
    """``{keras weight name: array}`` from funcdl tensors ``{'params/kernel': array, ...}`` of ``layer``."""
    if type(layer).__name__ in ("SimpleRNN", "LSTM", "GRU"):
        tensors = _recurrent_to_keras(layer, tensors)
    names = dict(WEIGHT_TABLE[type(layer).__name__])
    return {names[key]: value for key, value in tensors.items()}


def layer_tensors(variables, index):
    """``{'params/kernel': np.ndarray, ...}`` of Sequential layer ``index`` (``layers_{index}``)."""
    name = f"layers_{index}"
    return {f"{collection}/{key}": np.asarray(value)
            for collection, tree in dict(variables).items() if name in tree
            for key, value in dict(tree[name]).items()}


def check_shape(what, array, shape):
    """Raise ConfigError unless ``array.shape == shape`` (checked before every copy)."""
    if tuple(array.shape) != tuple(shape):
        raise ConfigError(f"{what}: shape {tuple(array.shape)} does not fit the target's {tuple(shape)}")


@contextlib.contextmanager
def atomic_target(path, suffix, folder=False):
    """Yield a temporary path ending in ``suffix`` beside ``path``; move it onto ``path`` only on success.

    Keras picks its format from the file name, so the temporary keeps the real
    suffix. With ``folder=True`` the temporary is a fresh directory (SavedModel).
    """
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise FileFormatError(f"cannot write {path}: folder {directory} does not exist; create it first")
    if folder and path.exists() and not path.is_dir():
        raise FileFormatError(f"cannot write the folder {path}: a file of that name exists")
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=directory))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=directory)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _replace(tmp, path) if folder else os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)
        raise


def _replace(tmp, path):
    """Move the folder ``tmp`` onto ``path``, replacing an existing folder only once the new one is in place."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / "previous")
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / "previous", path)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---- keras layer -> funcdl layers ------------------------------------------------------------------------

# keras activation name -> funcdl activation name usable inside Dense / Conv2D (same function).
KERAS_ACTIVATIONS = {"linear": None, "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
                     "log_softmax": "log_softmax", "softplus": "softplus", "gelu": "gelu"}
KERAS_LEAKY_SLOPE = 0.2  # keras.activations.leaky_relu's default negative_slope (funcdl's is 0.01)
_RNN_DEFAULTS = {"return_state": False, "go_backwards": False, "stateful": False, "use_bias": True,
                 "dropout": 0.0, "recurrent_dropout": 0.0}


def unsupported(where, what):
    """ConfigError for an option funcdl has no exact counterpart for."""
    return ConfigError(f"keras layer {where}: {what} is not supported by funcdl (no exact equivalent)")


def expect(config, where, **defaults):
    """Raise ConfigError unless every ``config[key]`` (when present) equals ``defaults[key]``."""
    for key, value in defaults.items():
        if key in config and config[key] != value and not (value is None and not config[key]):
            raise unsupported(where, f"{key}={config[key]!r} (funcdl needs {value!r})")


def _ints(values):
    return tuple(int(v) for v in values)


def activation_from_keras(name, where, nn):
    """(funcdl in-layer activation name or None, extra funcdl layers to append) for a keras activation."""
    if not isinstance(name, str):
        raise unsupported(where, f"a custom activation {name!r}")
    if name in KERAS_ACTIVATIONS:
        return KERAS_ACTIVATIONS[name], []
    if name == "leaky_relu":
        return None, [nn.LeakyReLU(KERAS_LEAKY_SLOPE)]
    raise unsupported(where, f"activation {name!r}; supported: {', '.join(sorted(KERAS_ACTIVATIONS))}, leaky_relu")


def activation_layers_from_keras(name, where, nn):
    """funcdl layers for ``keras.layers.Activation(name)``."""
    layers = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softmax": nn.Softmax,
              "log_softmax": nn.LogSoftmax, "softplus": nn.Softplus, "gelu": nn.GELU}
    if not isinstance(name, str):
        raise unsupported(where, f"a custom activation {name!r}")
    if name == "linear":
        return []
    if name == "leaky_relu":
        return [nn.LeakyReLU(KERAS_LEAKY_SLOPE)]
    if name in layers:
        return [layers[name]()]
    raise unsupported(where, f"activation {name!r}; supported: {', '.join(sorted(layers))}, leaky_relu, linear")


def _dense(nn, c, where, rank):
    expect(c, where, lora_rank=None, quantization_config=None)
    activation, extra = activation_from_keras(c["activation"], where, nn)
    return [nn.Dense(int(c["units"]), use_bias=bool(c["use_bias"]), activation=activation)] + extra


def _conv2d(nn, c, where, rank, padding=None):
    expect(c, where, data_format="channels_last", lora_rank=None, quantization_config=None)
    if c["padding"] not in ("valid", "same") or (padding is not None and c["padding"] != "valid"):
        raise unsupported(where, f"padding={c['padding']!r}" + (" after ZeroPadding2D" if padding else ""))
    activation, extra = activation_from_keras(c["activation"], where, nn)
    return [nn.Conv2D(int(c["filters"]), kernel_size=_ints(c["kernel_size"]), strides=_ints(c["strides"]),
                      padding=padding or c["padding"], dilation=_ints(c["dilation_rate"]), groups=int(c["groups"]),
                      use_bias=bool(c["use_bias"]), activation=activation)] + extra


def _pool_args(c, where, padding):
    expect(c, where, data_format="channels_last")
    if c["padding"] not in ("valid", "same") or (padding is not None and c["padding"] != "valid"):
        raise unsupported(where, f"padding={c['padding']!r}" + (" after ZeroPadding2D" if padding else ""))
    return {"pool_size": _ints(c["pool_size"]), "strides": _ints(c["strides"] or c["pool_size"]),
            "padding": padding or c["padding"]}


def _max_pool(nn, c, where, rank):
    return [nn.MaxPool2D(**_pool_args(c, where, None))]


def _avg_pool(nn, c, where, rank, padding=None):
    # keras 'same' divides by the real pixels only; zeros from a ZeroPadding2D count as pixels.
    return [nn.AvgPool2D(**_pool_args(c, where, padding), count_include_pad=padding is not None)]


def _trailing_axes(axis, rank, where):
    """How many trailing axes ``axis`` (int or list, keras style) names; ConfigError otherwise."""
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if rank is None and any(a >= 0 for a in axes):
        raise unsupported(where, f"axis={axis!r} on an input of unknown rank")
    axes = sorted(a - rank if rank is not None and a >= 0 else a for a in axes)
    if axes != list(range(-len(axes), 0)) or (rank is not None and len(axes) >= rank):
        raise unsupported(where, f"axis={axis!r} (funcdl normalises the last axes only)")
    return len(axes)


def _batch_norm(nn, c, where, rank):
    expect(c, where, renorm=False)
    if _trailing_axes(c["axis"], rank, where) != 1:
        raise unsupported(where, f"axis={c['axis']!r} (funcdl normalises the last axis)")
    return [nn.BatchNorm(momentum=float(c["momentum"]), epsilon=float(c["epsilon"]), unbiased_running_var=False,
                         use_scale=bool(c["scale"]), use_bias=bool(c["center"]))]


def _layer_norm(nn, c, where, rank):
    expect(c, where, rms_scaling=False)
    return [nn.LayerNorm(epsilon=float(c["epsilon"]), num_axes=_trailing_axes(c["axis"], rank, where),
                         use_scale=bool(c["scale"]), use_bias=bool(c["center"]))]


def _embedding(nn, c, where, rank):
    expect(c, where, mask_zero=False, lora_rank=None, quantization_config=None)
    return [nn.Embedding(int(c["input_dim"]), int(c["output_dim"]))]


def _simple_rnn(nn, c, where, rank):
    expect(c, where, **_RNN_DEFAULTS)
    activation, extra = activation_from_keras(c["activation"], where, nn)
    if extra:
        raise unsupported(where, f"activation={c['activation']!r}")
    return [nn.SimpleRNN(int(c["units"]), activation=activation or "linear",
                         return_sequences=bool(c["return_sequences"]))]


def _lstm(nn, c, where, rank):
    expect(c, where, activation="tanh", recurrent_activation="sigmoid", **_RNN_DEFAULTS)
    return [nn.LSTM(int(c["units"]), return_sequences=bool(c["return_sequences"]),
                    unit_forget_bias=bool(c.get("unit_forget_bias", True)))]


def _gru(nn, c, where, rank):
    expect(c, where, activation="tanh", recurrent_activation="sigmoid", **_RNN_DEFAULTS)
    return [nn.GRU(int(c["units"]), return_sequences=bool(c["return_sequences"]),
                   reset_after=bool(c["reset_after"]))]


def _relu(nn, c, where, rank):
    expect(c, where, max_value=None, threshold=0.0)
    slope = float(c.get("negative_slope") or 0.0)
    return [nn.LeakyReLU(slope)] if slope else [nn.ReLU()]


def _softmax(nn, c, where, rank):
    axis = c["axis"]
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise unsupported(where, f"axis={axis!r}")
        axis = axis[0]
    return [nn.Softmax(axis=int(axis))]


def _flatten(nn, c, where, rank):
    expect(c, where, data_format="channels_last")
    return [nn.Flatten()]


def _dropout(nn, c, where, rank):
    expect(c, where, noise_shape=None)
    return [nn.Dropout(float(c["rate"]))]


FROM_KERAS = {
    "Activation": lambda nn, c, where, rank: activation_layers_from_keras(c["activation"], where, nn),
    "AveragePooling2D": _avg_pool,
    "BatchNormalization": _batch_norm,
    "Conv2D": _conv2d,
    "Dense": _dense,
    "Dropout": _dropout,
    "Embedding": _embedding,
    "Flatten": _flatten,
    "GRU": _gru,
    "InputLayer": lambda nn, c, where, rank: [],
    "LSTM": _lstm,
    "LayerNormalization": _layer_norm,
    "LeakyReLU": lambda nn, c, where, rank: [nn.LeakyReLU(float(c["negative_slope"]))],
    "MaxPooling2D": _max_pool,
    "ReLU": _relu,
    "Reshape": lambda nn, c, where, rank: [nn.Reshape(_ints(c["target_shape"]))],
    "SimpleRNN": _simple_rnn,
    "Softmax": _softmax,
}
# ZeroPadding2D is supported only right before a 'valid' Conv2D or AveragePooling2D (it merges into them).
PADDED = {"Conv2D": _conv2d, "AveragePooling2D": _avg_pool}
KERAS_SUPPORTED = sorted(FROM_KERAS) + ["ZeroPadding2D (before Conv2D / AveragePooling2D)"]


# ---- funcdl layer -> keras layers ------------------------------------------------------------------------
# Each converter returns the keras layers for funcdl layer ``layers_{i}``; the one holding the weights is
# named ``layers_{i}`` itself (helpers get suffixes), so weight files and round trips line up by name.

TO_KERAS_ACTIVATIONS = {None: "linear", "linear": "linear", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh",
                        "softmax": "softmax", "log_softmax": "log_softmax", "softplus": "softplus", "gelu": "gelu"}


def refused(layer, name, what):
    """ConfigError for a funcdl setting keras has no exact counterpart for."""
    return ConfigError(f"funcdl layer {name} ({type(layer).__name__}): {what} has no exact keras equivalent")


def _activation_to_keras(L, layer, name):
    """(keras in-layer activation name, extra keras layers) for ``layer.activation``."""
    if layer.activation in TO_KERAS_ACTIVATIONS:
        return TO_KERAS_ACTIVATIONS[layer.activation], []
    if layer.activation == "leaky_relu":  # funcdl's slope (0.01) differs from keras' activation default
        return "linear", [L.LeakyReLU(negative_slope=0.01, name=f"{name}_activation")]
    raise refused(layer, name, f"activation {layer.activation!r}")


def explicit_pads(padding, in_hw, window, strides, dilation=(1, 1)):
    """((top, bottom), (left, right)) for any funcdl padding, 'same' resolved with XLA's rule."""
    from funcdl.nn._conv import padding_spec
    spec = padding_spec(padding)
    if spec == "VALID":
        return ((0, 0), (0, 0))
    if spec != "SAME":
        return tuple(_ints(p) for p in spec)
    pads = []
    for size, k, s, d in zip(in_hw, window, strides, dilation):
        effective = (k - 1) * d + 1
        total = max((-(-size // s) - 1) * s + effective - size, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _keras_padding(L, padding, name):
    """(keras padding string, [ZeroPadding2D] or []) for a funcdl padding that is a str or explicit pairs."""
    from funcdl.nn._conv import padding_spec
    spec = padding_spec(padding)
    if isinstance(spec, str):
        return spec.lower(), []
    if not any(v for pair in spec for v in pair):
        return "valid", []
    return "valid", [L.ZeroPadding2D(tuple(_ints(p) for p in spec), name=f"{name}_pad")]


def _dense_to_keras(L, layer, shape, name, strict):
    activation, extra = _activation_to_keras(L, layer, name)
    return [L.Dense(layer.features, activation=activation, use_bias=layer.use_bias, name=name)] + extra


def _conv2d_to_keras(L, layer, shape, name, strict):
    from funcdl.nn._conv import pair
    padding, pad_layers = _keras_padding(L, layer.padding, name)
    activation, extra = _activation_to_keras(L, layer, name)
    conv = L.Conv2D(layer.features, pair(layer.kernel_size, "kernel_size"), strides=pair(layer.strides, "strides"),
                    padding=padding, dilation_rate=pair(layer.dilation, "dilation"), groups=layer.groups,
                    use_bias=layer.use_bias, activation=activation, name=name)
    return pad_layers + [conv] + extra


def _pool_window(layer):
    from funcdl.nn._conv import pair
    window = pair(layer.pool_size, "pool_size")
    return window, pair(layer.strides if layer.strides is not None else layer.pool_size, "strides")


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
        pads = explicit_pads("same", shape[:2], window, strides)
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


def _simple_rnn_to_keras(L, layer, shape, name, strict):
    if layer.activation not in TO_KERAS_ACTIVATIONS:
        raise refused(layer, name, f"activation {layer.activation!r}")
    return [L.SimpleRNN(layer.features, activation=TO_KERAS_ACTIVATIONS[layer.activation],
                        return_sequences=layer.return_sequences, name=name)]


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


TO_KERAS = {
    "AvgPool2D": _avg_pool_to_keras,
    "BatchNorm": _batch_norm_to_keras,
    "Conv2D": _conv2d_to_keras,
    "Dense": _dense_to_keras,
    "Dropout": lambda L, layer, shape, name, strict: [L.Dropout(layer.rate, name=name)],
    "Embedding": lambda L, layer, shape, name, strict: [L.Embedding(layer.num_embeddings, layer.features,
                                                                    name=name)],
    "Flatten": lambda L, layer, shape, name, strict: [L.Flatten(name=name)],
    "GELU": _gelu_to_keras,
    "GRU": lambda L, layer, shape, name, strict: [L.GRU(layer.features, return_sequences=layer.return_sequences,
                                                        reset_after=layer.reset_after, name=name)],
    "ImageRows": _image_rows_to_keras,
    "LSTM": lambda L, layer, shape, name, strict: [L.LSTM(layer.features, return_sequences=layer.return_sequences,
                                                          unit_forget_bias=layer.unit_forget_bias, name=name)],
    "LayerNorm": _layer_norm_to_keras,
    "LeakyReLU": lambda L, layer, shape, name, strict: [L.LeakyReLU(negative_slope=layer.negative_slope,
                                                                    name=name)],
    "LogSoftmax": _log_softmax_to_keras,
    "MaxPool2D": _max_pool_to_keras,
    "ReLU": lambda L, layer, shape, name, strict: [L.ReLU(name=name)],
    "Reshape": lambda L, layer, shape, name, strict: [L.Reshape(tuple(layer.shape), name=name)],
    "Sigmoid": lambda L, layer, shape, name, strict: [L.Activation("sigmoid", name=name)],
    "SimpleRNN": _simple_rnn_to_keras,
    "Softmax": lambda L, layer, shape, name, strict: [L.Softmax(axis=layer.axis, name=name)],
    "Softplus": _softplus_to_keras,
    "Tanh": lambda L, layer, shape, name, strict: [L.Activation("tanh", name=name)],
}
