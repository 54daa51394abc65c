"""The benchmark models built natively in Keras 3 (any backend), with funcdl's initial weights.

Used for the ResNet (``interop.keras.to_keras`` converts Sequential chains
only) and as the fallback when ``to_keras`` fails. Keras layers are named
after the funcdl module path they mirror, joined with ``__`` (``layers_3__conv1``).
Images are NHWC in both, so kernels copy as they are; the recurrent layers'
single bias and GRU gate order are ``interop.layouts``'. A stride-2 3x3 conv
is ZeroPadding2D(1) + a 'valid' conv (keras 'same' pads bottom/right only);
BatchNorm has momentum 0.9, epsilon 1e-5 (funcdl's defaults).
"""
import numpy as np

from funcdl.errors import ConversionError
from funcdl.io import flatten_variables
from interop import layouts


def _sequential_model(keras, name):
    L = keras.layers
    if name == "mlp":
        return [L.Flatten(name="layers_0"), L.Dense(128, name="layers_1"), L.ReLU(name="layers_2"),
                L.Dense(10, name="layers_3")]
    if name == "cnn":
        return [L.Conv2D(32, 3, name="layers_0"), L.ReLU(), L.Conv2D(64, 3, name="layers_2"), L.ReLU(),
                L.MaxPooling2D(2), L.Dropout(0.25), L.Flatten(), L.Dense(128, name="layers_7"), L.ReLU(),
                L.Dropout(0.5), L.Dense(10, name="layers_10")]
    recurrent = L.LSTM(128, name="layers_1") if name == "lstm" else L.GRU(128, reset_after=True, name="layers_1")
    return [L.Reshape((28, 28)), recurrent, L.Dense(10, name="layers_2")]


def _conv_bn(keras, x, features, strides, name, conv="conv1", bn="bn1", kernel=3):
    L = keras.layers
    if kernel == 3 and strides != 1:
        x = L.ZeroPadding2D(1)(x)
    padding = "same" if kernel == 3 and strides == 1 else "valid"
    x = L.Conv2D(features, kernel, strides, padding=padding, use_bias=False, name=f"{name}__{conv}")(x)
    return L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}__{bn}")(x)


def _residual(keras, x, features, strides, name):
    L = keras.layers
    y = L.ReLU()(_conv_bn(keras, x, features, strides, name))
    y = _conv_bn(keras, y, features, 1, name, "conv2", "bn2")
    shortcut = x
    if strides != 1 or x.shape[-1] != features:
        shortcut = _conv_bn(keras, x, features, strides, name, "proj_conv", "proj_bn", kernel=1)
    return L.ReLU()(L.Add()([y, shortcut]))


def _resnet(keras):
    L = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="layers_0")(inputs)
    x = L.ReLU()(L.BatchNormalization(momentum=0.9, epsilon=1e-5, name="layers_1")(x))
    for index, (features, strides) in zip((3, 4, 5), ((16, 1), (32, 2), (64, 2))):
        x = _residual(keras, x, features, strides, f"layers_{index}")
    outputs = L.Dense(10, name="layers_8")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="resnet")


def build(keras, name, input_shape):
    """The keras model of benchmark model ``name`` (fresh weights; see ``copy_weights``)."""
    if name == "resnet":
        return _resnet(keras)
    return keras.Sequential([keras.Input(input_shape)] + _sequential_model(keras, name), name=name)


def keras_weights(kind, tensors):
    """The list ``layer.set_weights`` takes, from one funcdl module's ``{'params/kernel': ...}`` tensors."""
    p = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("params/")}
    s = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("batch_stats/")}
    if kind == "BatchNormalization":
        return [p["scale"], p["bias"], s["mean"], s["var"]]
    if kind == "LSTM":
        return [p["kernel"], p["recurrent_kernel"], layouts.fold_bias(p["bias"], p["recurrent_bias"])]
    if kind == "GRU":
        hidden = p["recurrent_kernel"].shape[0]
        bias = np.stack([p["bias"], p["recurrent_bias"]])
        return [layouts.swap_gru_gates(p[k], hidden) for k in ("kernel", "recurrent_kernel")] + [
            layouts.swap_gru_gates(bias, hidden)]
    return [p["kernel"]] + ([p["bias"]] if "bias" in p else [])


def _by_module(variables):
    """{'layers_3__conv1': {'params/kernel': array, ...}} from funcdl variables."""
    grouped = {}
    for path, array in flatten_variables(variables).items():
        collection, *owner, leaf = path.split("/")
        grouped.setdefault("__".join(owner), {})[f"{collection}/{leaf}"] = np.asarray(array, np.float32)
    return grouped


def copy_weights(keras_model, variables):
    """Set funcdl ``variables`` into ``keras_model`` (built by ``build``), every array shape-checked."""
    grouped = _by_module(variables)
    layers = {layer.name: layer for layer in keras_model.layers}
    if not set(grouped) <= set(layers):
        raise ConversionError(f"keras layers missing: {sorted(set(grouped) - set(layers))[:4]}")
    for name, tensors in grouped.items():
        layer = layers[name]
        values = keras_weights(type(layer).__name__, tensors)
        if len(values) != len(layer.weights):
            raise ConversionError(f"{name}: keras has {len(layer.weights)} weights, funcdl gives {len(values)}")
        layer.set_weights([layouts.checked(value, tuple(weight.shape), f"{name} weight {index}", "bench keras model")
                           for index, (value, weight) in enumerate(zip(values, layer.weights))])
    holding = {layer.name for layer in keras_model.layers if layer.weights}
    if holding != set(grouped):
        raise ConversionError(f"keras layers left unset: {sorted(holding - set(grouped))[:4]}")
    return keras_model
