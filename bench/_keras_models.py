"""The benchmark models built natively in Keras 3 (any backend), with funcdl's initial weights.

Used for the ResNet (``interop.keras.to_keras`` converts Sequential chains
only) and as the fallback when ``to_keras`` fails. Keras layers are named
after the funcdl module path they mirror, joined with ``__`` (``layers_1``; the
ResNet's graph nodes by their node names, ``stage2_block1_conv1``).
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


def _conv_bn(keras, x, features, strides, conv, bn, kernel=3):
    L = keras.layers
    if kernel == 3 and strides != 1:
        x = L.ZeroPadding2D(1)(x)
    padding = "same" if kernel == 3 and strides == 1 else "valid"
    x = L.Conv2D(features, kernel, strides, padding=padding, use_bias=False, name=conv)(x)
    return L.BatchNormalization(momentum=0.9, epsilon=1e-5, name=bn)(x)


def _residual(keras, x, features, strides, name):
    """``fd.models.basic_block``'s nodes as keras layers of the same names."""
    L = keras.layers
    y = L.ReLU(name=f"{name}_relu1")(_conv_bn(keras, x, features, strides, f"{name}_conv1", f"{name}_bn1"))
    y = _conv_bn(keras, y, features, 1, f"{name}_conv2", f"{name}_bn2")
    shortcut = x
    if strides != 1 or x.shape[-1] != features:
        shortcut = _conv_bn(keras, x, features, strides, f"{name}_proj_conv", f"{name}_proj_bn", kernel=1)
    return L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([y, shortcut]))


def _resnet(keras, depth=8, width=16):
    """Keras twin of ``fd.models.resnet(depth)`` on 32x32x3 images, layers named as the funcdl nodes."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.ReLU(name="stem_relu")(_conv_bn(keras, inputs, width, 1, "stem_conv", "stem_bn"))
    for stage, features in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, (depth - 2) // 6 + 1):
            x = _residual(keras, x, features, 2 if stage > 1 and block == 1 else 1, f"stage{stage}_block{block}")
    outputs = L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="pool")(x))
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
    """{'stage1_block1_conv1': {'params/kernel': array, ...}} from funcdl variables."""
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
