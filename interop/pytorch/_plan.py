"""Plan the torch.nn.Sequential equivalent of a funcdl Sequential: modules and weight entries.

The plan is shared by ``to_torch`` / ``to_state_dict`` (funcdl -> torch) and
``from_state_dict`` (torch -> funcdl). The torch model takes NCHW images: a
Flatten of an image followed by a Dense flattens NCHW like any torch CNN and
the Linear's weight columns are permuted to match; elsewhere a ``Permute``
module moves to funcdl's NHWC first.
"""
import dataclasses
import math

import numpy as np
from torch import nn as tnn

from funcdl import nn
from funcdl.errors import ConversionError
from interop import layouts
from interop.pytorch import _modules as tm

SUPPORTED = ("Dense, Conv2D, MaxPool2D, AvgPool2D, BatchNorm, LayerNorm, Embedding, SimpleRNN, LSTM, GRU, "
             "Bidirectional, Dropout, Flatten, Reshape, ImageRows, Permute, RepeatVector, UpSampling2D, "
             "ZeroPadding2D, PixelShuffle, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax, Softplus, GELU, "
             "ReLU6, SiLU, HardSwish, ELU, SELU, HardSigmoid, Softsign, Mish, Exponential")
_RECURRENT = (nn.SimpleRNN, nn.LSTM, nn.GRU)



@dataclasses.dataclass
class Entry:
    """One tensor: its torch key and shape, its funcdl path, and the two layout maps."""
    key: str
    path: str
    shape: tuple
    to_torch: object
    from_torch: object


class Planner:
    """Walks funcdl layers with their input shapes, appending torch modules and weight entries."""

    def __init__(self, image_input):
        self.modules = []
        self.entries = []
        self.layout = "nchw" if image_input else "plain"  # of a rank-4 value in torch
        self.perm = None  # funcdl feature j is torch feature perm[j] (flattened NCHW image)

    def add(self, module):
        self.modules.append(module)
        return str(len(self.modules) - 1)

    def entry(self, prefix, name, index, funcdl_name, shape, to_torch, from_torch, collection="params"):
        same = lambda a: a  # noqa: E731
        self.entries.append(Entry(f"{prefix}.{name}", f"{collection}/layers_{index}/{funcdl_name}", tuple(shape),
                                  to_torch or same, from_torch or same))

    def vectors(self):
        perm = self.perm
        if perm is None:
            return (lambda a: a), (lambda a: a)
        inverse = np.argsort(perm)
        return (lambda a: a[inverse]), (lambda a: a[perm])

    def to_nchw(self, shape):
        if len(shape) == 3 and self.layout == "plain":
            self.add(tm.Permute(layouts.NHWC_TO_NCHW))
            self.layout = "nchw"

    def to_plain(self, shape):
        if len(shape) == 3 and self.layout == "nchw":
            self.add(tm.Permute(layouts.NCHW_TO_NHWC))
            self.layout = "plain"


def _explicit_pads(padding, shape, kernel, strides, dilation=(1, 1)):
    """(top, bottom, left, right) of a funcdl padding for an NHWC ``shape`` (no batch), XLA's 'same' rule."""
    (top, bottom), (left, right) = nn.explicit_padding(padding, shape[:2], kernel, strides, dilation)
    return (top, bottom, left, right)


def torch_activation(layer, dim):
    """The ``torch.nn`` module computing the funcdl activation ``layer`` (``nn.TABLE``); ``dim``: torch's axis.

    Settings map by name, except funcdl's ``axis`` (torch's ``dim``, given) and ``approximate`` (a bool in
    funcdl, ``'tanh'`` / ``'none'`` in torch).
    """
    options = layer.options()
    if "axis" in options:
        options = {"dim": dim}
    if "approximate" in options:
        options["approximate"] = "tanh" if options["approximate"] else "none"
    row = nn.activation_of(layer)
    if row.torch is None:  # torch.nn has no module for it
        return tm.Exponential()
    return getattr(tnn, row.torch)(**options)


def _torch_activation(name, dim):
    """The torch module of a funcdl activation name (Dense/Conv2D ``activation``), or None for the identity."""
    row = nn.activation(name or "linear")
    return None if row.layer is None else torch_activation(row.layer(**row.options), dim)


def _dense(p, index, layer, shape):
    p.to_plain(shape)
    fan_in = shape[-1]
    prefix = p.add(tnn.Linear(fan_in, layer.features, bias=layer.use_bias))
    if p.perm is None:
        p.entry(prefix, "weight", index, "kernel", (layer.features, fan_in), layouts.linear_to_torch,
                layouts.linear_from_torch)
    else:
        perm, inverse = p.perm, np.argsort(p.perm)
        p.entry(prefix, "weight", index, "kernel", (layer.features, fan_in),
                lambda k: layouts.linear_to_torch(k[inverse]), lambda w: layouts.linear_from_torch(w)[perm])
    if layer.use_bias:
        p.entry(prefix, "bias", index, "bias", (layer.features,), None, None)
    p.perm = None
    _append_activation(p, layer.activation, -1)


def _append_activation(p, name, dim):
    module = _torch_activation(name, dim)
    if module is not None:
        p.add(module)


def _pads_module(p, pads, fill):
    top, bottom, left, right = pads
    p.add(tnn.ConstantPad2d((left, right, top, bottom), fill) if fill else tnn.ZeroPad2d((left, right, top, bottom)))


def _conv(p, index, layer, shape):
    p.to_nchw(shape)
    kernel, strides = nn.pair(layer.kernel_size, "kernel_size"), nn.pair(layer.strides, "strides")
    dilation = nn.pair(layer.dilation, "dilation")
    pads = _explicit_pads(layer.padding, shape, kernel, strides, dilation)
    top, bottom, left, right = pads
    same = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if (top, left) == (bottom, right):
        padding = (top, left)
    elif strides == (1, 1) and (top, bottom, left, right) == (same[0] // 2, same[0] - same[0] // 2,
                                                               same[1] // 2, same[1] - same[1] // 2):
        padding = "same"  # torch puts the odd pixel bottom/right, like XLA
    else:
        _pads_module(p, pads, 0.0)
        padding = 0
    channels = shape[-1]
    prefix = p.add(tnn.Conv2d(channels, layer.features, kernel, strides, padding, dilation, layer.groups,
                              bias=layer.use_bias))
    torch_shape = (layer.features, channels // layer.groups) + kernel
    p.entry(prefix, "weight", index, "kernel", torch_shape, layouts.conv_to_torch, layouts.conv_from_torch)
    if layer.use_bias:
        p.entry(prefix, "bias", index, "bias", (layer.features,), None, None)
    _append_activation(p, layer.activation, 1)


def _pool(p, index, layer, shape):
    p.to_nchw(shape)
    size = nn.pair(layer.pool_size, "pool_size")
    strides = nn.pair(layer.strides if layer.strides is not None else layer.pool_size, "strides")
    pads = _explicit_pads(layer.padding, shape, size, strides)
    top, bottom, left, right = pads
    symmetric = (top, left) == (bottom, right) and top <= size[0] // 2 and left <= size[1] // 2
    is_max = isinstance(layer, nn.MaxPool2D)
    padding = (top, left) if symmetric else 0
    if not symmetric:
        if not is_max and not layer.count_include_pad:
            raise ConversionError(f"layers_{index} (AvgPool2D): padding {pads} with count_include_pad=False has no "
                                  "torch equivalent")
        _pads_module(p, pads, -math.inf if is_max else 0.0)
    if is_max:
        p.add(tnn.MaxPool2d(size, strides, padding))
    else:
        p.add(tnn.AvgPool2d(size, strides, padding, count_include_pad=layer.count_include_pad))


def _batch_norm(p, index, layer, shape):
    if layer.use_scale != layer.use_bias:
        raise ConversionError(f"layers_{index} (BatchNorm): torch's affine needs use_scale == use_bias")
    if len(shape) == 3:
        p.to_nchw(shape)
        cls = tnn.BatchNorm2d
    elif len(shape) == 1:
        cls = tnn.BatchNorm1d
    else:
        raise ConversionError(f"layers_{index} (BatchNorm) on shape {shape}: torch's BatchNorm1d normalises axis 1, "
                              "not the last; only (batch, features) and images are supported")
    features = shape[-1]
    momentum = layouts.momentum_to_torch(layer.momentum)
    prefix = p.add(cls(features, eps=layer.epsilon, momentum=momentum, affine=layer.use_scale))
    forward, backward = p.vectors()
    names = [("running_mean", "mean", "batch_stats"), ("running_var", "var", "batch_stats")]
    if layer.use_scale:
        names = [("weight", "scale", "params"), ("bias", "bias", "params")] + names
    for torch_name, name, collection in names:
        p.entry(prefix, torch_name, index, name, (features,), forward, backward, collection)


def _layer_norm(p, index, layer, shape):
    if layer.use_bias and not layer.use_scale:
        raise ConversionError(f"layers_{index} (LayerNorm): torch has no LayerNorm with a bias but no scale")
    p.to_plain(shape)
    normalized = tuple(shape[-layer.num_axes:])
    prefix = p.add(tnn.LayerNorm(normalized, eps=layer.epsilon, elementwise_affine=layer.use_scale,
                                 bias=layer.use_bias))
    forward, backward = p.vectors() if layer.num_axes == 1 else ((lambda a: a), (lambda a: a))
    if layer.use_scale:
        p.entry(prefix, "weight", index, "scale", normalized, forward, backward)
    if layer.use_bias:
        p.entry(prefix, "bias", index, "bias", normalized, forward, backward)


def _dense_follows(layers):
    """Whether a Dense consumes a flattened image before anything that needs funcdl's feature order."""
    for layer in layers:
        if isinstance(layer, nn.Dense):
            return True
        one_axis = isinstance(layer, (nn.BatchNorm, nn.Dropout, nn.Flatten)) or (
            isinstance(layer, nn.LayerNorm) and layer.num_axes == 1)
        if not (one_axis or isinstance(layer, nn.ActivationLayer)):
            return False
    return False


def _reshape(p, index, layer, shape, out_shape, rest):
    if p.perm is not None:
        if tuple(out_shape) == tuple(shape):
            return
        raise ConversionError(f"layers_{index} ({type(layer).__name__}): reshaping a flattened image again has no "
                              "torch equivalent")
    if tuple(out_shape) == tuple(shape):
        return
    if len(shape) == 3 and p.layout == "nchw":
        height, width, channels = shape
        perm = layouts.flatten_permutation(channels, height, width)
        if perm is not None and len(out_shape) == 1 and _dense_follows(rest):
            p.add(tnn.Flatten())
            p.perm = perm
            p.layout = "plain"
            return
        if perm is not None:
            p.to_plain(shape)
    p.add(tnn.Flatten() if len(out_shape) == 1 else tm.Reshape(tuple(out_shape)))
    p.layout = "plain"


def _recurrent_run(layers, start):
    """(end, dropout rate) of the run of recurrent layers from ``start`` that one stacked torch module holds."""
    first, rate, end = layers[start], None, start + 1
    while end < len(layers) and layers[end - 1].return_sequences:
        gap = 0.0
        nxt = end
        if isinstance(layers[nxt], nn.Dropout) and nxt + 1 < len(layers):
            gap, nxt = layers[nxt].rate, nxt + 1
        candidate = layers[nxt]
        same = (type(candidate) is type(first) and candidate.features == first.features
                and getattr(candidate, "activation", None) == getattr(first, "activation", None)
                and getattr(candidate, "reset_after", True))
        if not same or (rate is not None and gap != rate):
            break
        rate, end = gap, nxt + 1
    return end, rate or 0.0


def _check_recurrent(layers, start, shape):
    """ConversionError unless the recurrent layer ``layers[start]`` (and those after it) have a torch twin."""
    first = layers[start]
    name = type(first).__name__
    if len(shape) != 2:
        raise ConversionError(f"layers_{start} ({name}) needs (batch, time, features) input, got {shape}")
    if isinstance(first, nn.GRU) and not first.reset_after:
        raise ConversionError(f"layers_{start} (GRU): torch's GRU applies the reset gate after the matmul; "
                              "reset_after=False has no torch equivalent")
    if not all(layer.use_recurrent_bias for layer in layers[start:] if isinstance(layer, _RECURRENT)):
        raise ConversionError(f"layers_{start} ({name}) has use_recurrent_bias=False (keras' single bias); torch's "
                              "recurrent layers always have two biases: rebuild it with use_recurrent_bias=True and "
                              "bias_hh = 0")
    if isinstance(first, nn.SimpleRNN) and first.activation not in ("tanh", "relu"):
        raise ConversionError(f"layers_{start} (SimpleRNN): torch's RNN supports activation 'tanh' or 'relu'")
    if first.reverse:
        raise ConversionError(f"layers_{start} ({name}): reverse=True alone has no torch module (torch reads "
                              "backwards only inside bidirectional=True); wrap it in nn.Bidirectional")


_TORCH_RECURRENT = {nn.LSTM: tm.LSTM, nn.GRU: tm.GRU, nn.SimpleRNN: tm.RNN}


def _recurrent_entries(p, prefix, index, k, fan_in, layer, half=None):
    """The four tensors of layer ``k`` of a torch recurrent module (``half``: a Bidirectional's direction)."""
    hidden, gates = layer.features, layouts.GATES[type(layer).__name__]
    suffix, path = ("", "") if half is None else (layouts.TORCH_DIRECTIONS[half], f"{half}/")
    for funcdl_name, torch_name in layouts.TORCH_RECURRENT.items():
        shape = (gates * hidden,) + ((fan_in,) if funcdl_name == "kernel" else (hidden,) if "kernel" in funcdl_name
                                     else ())
        maps = (layouts.linear_to_torch, layouts.linear_from_torch) if "kernel" in funcdl_name else (None, None)
        p.entry(prefix, torch_name.format(k=k) + suffix, index, path + funcdl_name, shape, *maps)


def _bidirectional(p, index, layer, shape):
    """A Bidirectional as one torch recurrent module with ``bidirectional=True`` (merged in its forward)."""
    inner = layer.layer
    _check_recurrent([inner], 0, shape)
    extra = {"nonlinearity": inner.activation} if isinstance(inner, nn.SimpleRNN) else {}
    prefix = p.add(_TORCH_RECURRENT[type(inner)](shape[-1], inner.features, bidirectional=True,
                                                 return_sequences=inner.return_sequences,
                                                 merge_mode=layer.merge_mode, **extra))
    for half in layouts.BIDIRECTIONAL_HALVES:
        _recurrent_entries(p, prefix, index, 0, shape[-1], inner, half)


def _recurrent(p, layers, start, shape):
    first = layers[start]
    _check_recurrent(layers, start, shape)
    end, rate = _recurrent_run(layers, start)
    members = [i for i in range(start, end) if isinstance(layers[i], _RECURRENT)]
    extra = {"nonlinearity": first.activation} if isinstance(first, nn.SimpleRNN) else {}
    prefix = p.add(_TORCH_RECURRENT[type(first)](shape[-1], first.features, num_layers=len(members), dropout=rate,
                                                 return_sequences=layers[end - 1].return_sequences, **extra))
    for k, index in enumerate(members):
        _recurrent_entries(p, prefix, index, k, shape[-1] if k == 0 else first.features, layers[index])
    return end


def _simple_layer(p, index, layer, shape):
    """Parameter-free layers that keep the shape: activations, Dropout. Returns False if not one."""
    if isinstance(layer, nn.Dropout):
        p.add(tnn.Dropout(layer.rate))
    elif isinstance(layer, nn.ActivationLayer):
        axis = layer.options().get("axis", -1) % (len(shape) + 1)
        if len(shape) == 3 and p.layout == "nchw":
            axis = layouts.NHWC_TO_NCHW.index(axis)  # funcdl's NHWC axis -> torch's NCHW one
        p.add(torch_activation(layer, axis))
    else:
        return False
    return True


def _image_layer(p, index, layer, shape):
    """Parameter-free image layers computed on NCHW by torch's own modules. Returns False if not one."""
    if not isinstance(layer, (nn.UpSampling2D, nn.ZeroPadding2D, nn.PixelShuffle)):
        return False
    if len(shape) != 3:
        raise ConversionError(f"layers_{index} ({type(layer).__name__}) needs NHWC images, got shape {shape}")
    p.to_nchw(shape)
    if isinstance(layer, nn.UpSampling2D):
        mode = {"nearest": "nearest", "bilinear": "bilinear"}[layer.interpolation]
        p.add(tnn.Upsample(scale_factor=tuple(float(s) for s in nn.pair(layer.size, "size")), mode=mode,
                           **({"align_corners": False} if mode == "bilinear" else {})))
    elif isinstance(layer, nn.ZeroPadding2D):
        (top, bottom), (left, right) = nn.padding_pairs(layer.padding)
        p.add(tnn.ZeroPad2d((left, right, top, bottom)))
    else:
        r, out = layer.factor, shape[-1] // layer.factor ** 2
        if layer.order == "tf":  # torch channel c*r*r + i*r + j reads tf's (i*r + j)*C + c
            p.add(tm.ChannelGather(np.arange(shape[-1]).reshape(r * r, out).T.reshape(-1)))
        p.add(tnn.PixelShuffle(r))
    return True


def _axes_layer(p, index, layer, shape):
    """Permute and RepeatVector, computed in funcdl's layout. Returns False if not one."""
    if isinstance(layer, nn.Permute):
        p.to_plain(shape)
        p.add(tm.Permute((0,) + tuple(int(d) for d in layer.dims)))
    elif isinstance(layer, nn.RepeatVector):
        p.add(tm.RepeatVector(layer.n))
    else:
        return False
    return True


def _embedding(p, index, layer, shape):
    prefix = p.add(tnn.Embedding(layer.num_embeddings, layer.features))
    p.entry(prefix, "weight", index, "embedding", (layer.num_embeddings, layer.features), None, None)


_WITH_WEIGHTS = {nn.Dense: _dense, nn.Conv2D: _conv, nn.MaxPool2D: _pool, nn.AvgPool2D: _pool,
                 nn.BatchNorm: _batch_norm, nn.LayerNorm: _layer_norm, nn.Embedding: _embedding}


def plan(model, input_shape, dtype):
    """(torch modules, entries) of ``model`` on inputs of ``input_shape`` (funcdl layout, no batch axis)."""
    if not isinstance(model, nn.Sequential):
        raise ConversionError(f"to_torch converts a funcdl Sequential (a chain of layers), got a "
                              f"{type(model).__name__}: graph models cannot be written as PyTorch files yet; save "
                              "it as .funcdl or as a SavedModel folder")
    layers = list(model.layers)
    shapes = nn.layer_shapes(model, input_shape, dtype)
    p = Planner(image_input=len(input_shape) == 3)
    index = 0
    while index < len(layers):
        layer, shape, out_shape = layers[index], shapes[index], shapes[index + 1]
        if isinstance(layer, _RECURRENT):
            index = _recurrent(p, layers, index, shape)
            continue
        if type(layer) in _WITH_WEIGHTS:
            _WITH_WEIGHTS[type(layer)](p, index, layer, shape)
        elif isinstance(layer, (nn.Flatten, nn.Reshape, nn.ImageRows)):
            _reshape(p, index, layer, shape, out_shape, layers[index + 1:])
        elif isinstance(layer, nn.Bidirectional):
            _bidirectional(p, index, layer, shape)
        elif not (_image_layer(p, index, layer, shape) or _axes_layer(p, index, layer, shape)
                  or _simple_layer(p, index, layer, shape)):
            raise ConversionError(f"layers_{index} ({type(layer).__name__}) has no PyTorch equivalent in to_torch; "
                                  f"supported: {SUPPORTED}")
        index += 1
    if p.perm is not None:
        raise ConversionError("internal: a flattened image reached the output without its Dense")
    return p.modules, p.entries
