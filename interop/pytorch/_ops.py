"""One converter per supported torch module, function and method, for ``interop.pytorch._trace.Reader``.

Each takes the reader, the fx node and the funcdl ``Value`` it consumes, emits
funcdl layer specs with their weight entries (torch key -> funcdl array), and
returns the ``Value`` it produces.
"""
import dataclasses
import operator
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

from funcdl import nn
from funcdl.errors import ConversionError
from interop import layouts, one_d
from interop.pytorch import _modules as tm
from interop.pytorch._nodes import LIST_SUPPORTED, Value, describe, last_step, source_line

_INF = float("inf")


def _unsupported(what, node=None):
    """The one-line error for an unsupported piece: itself, its module path or node, the source line."""
    where = source_line(node, os.path.dirname(torch.__file__)) if node is not None else ""
    return ConversionError(f"unsupported PyTorch {what}{where}; {LIST_SUPPORTED}")


def _image(node, value, what):
    if value.layout != "nchw":
        raise ConversionError(f"{describe(node)}: {what} needs a 4-D NCHW image but gets shape {value.shape} (a "
                              "permuted or non-image tensor)")


def _padding(pads):
    """funcdl padding from (top, bottom, left, right)."""
    top, bottom, left, right = (int(p) for p in pads)
    return (top, left) if (top, left) == (bottom, right) else ((top, bottom), (left, right))


def _merged_pad(node, value, pads, fill):
    if value.pad is None:
        return pads
    if value.pad_value != fill:
        raise ConversionError(f"{describe(node)}: padding with {value.pad_value} before this layer has no funcdl "
                              f"equivalent (it pads with {fill})")
    return tuple(a + b for a, b in zip(value.pad, pads))


def _vector(perm):
    return (lambda a: a) if perm is None else (lambda a: a[perm])


def _key(node, name, m=None):
    """The state-dict key of ``m``'s tensor ``name``: the module's (``<path>.weight``), or the tensor the forward
    read itself (``F.linear(x, self.w)``: ``m.state_keys``)."""
    keys = getattr(m, "state_keys", None) or {}
    return keys.get(name) or f"{node.target}.{name}"


def _activation(reader, node, value, cls, **kwargs):
    value = reader.take(node, value)
    reader.emit(cls, **kwargs)
    return reader.derive(node, value)


def _axis(value, dim):
    """funcdl axis (negative) of torch's ``dim`` for ``value``; None means torch's legacy implicit dim."""
    rank = len(value.shape)
    if dim is None:
        dim = 0 if rank in (0, 1, 3) else 1
    dim %= rank
    moved = {"nchw": {0: -4, 1: -1, 2: -3, 3: -2}, "ncl": {0: -3, 1: -1, 2: -2},
             "tb": {0: -2, 1: -3, 2: -1} if rank == 3 else {0: -1, 1: -2}}
    return moved[value.layout][dim] if value.layout in moved else dim - rank


def linear(reader, node, m, value):
    value = reader.take(node, value)
    if value.layout in ("nchw", "ncl"):
        raise ConversionError(f"{describe(node)}: Linear on a {value.layout.upper()} activation acts on its last axis "
                              "(length / width); funcdl has no equivalent (flatten first, or x.permute(0, 2, 1))")
    perm = value.perm
    index = reader.emit(nn.Dense, features=m.out_features, use_bias=m.bias is not None, kernel_init="torch",
                        bias_init="torch")
    reader.weight(index, "kernel", _key(node, "weight", m), layouts.linear_from_torch if perm is None
                  else (lambda w: layouts.linear_from_torch(w)[perm]))
    if m.bias is not None:
        reader.weight(index, "bias", _key(node, "bias", m))
    return reader.derive(node, value, perm=None)


def conv2d(reader, node, m, value):
    value = reader.take(node, value, pad_ok=True)
    _image(node, value, "Conv2d")
    if m.padding_mode != "zeros":
        raise ConversionError(f"{describe(node)}: Conv2d padding_mode={m.padding_mode!r} is not supported; "
                              "only 'zeros'")
    (kh, kw), (dh, dw) = m.kernel_size, m.dilation
    if m.padding == "same":  # torch's 'same' (stride 1) puts any odd extra pixel bottom/right, as XLA's does
        (top, bottom), (left, right) = nn.explicit_padding("same", value.shape[2:], (kh, kw), (1, 1), (dh, dw))
        pads = (top, bottom, left, right)
    elif m.padding == "valid":
        pads = (0, 0, 0, 0)
    else:
        pads = (m.padding[0], m.padding[0], m.padding[1], m.padding[1])
    pads = _merged_pad(node, value, pads, 0.0)
    index = reader.emit(nn.Conv2D, features=m.out_channels, kernel_size=(kh, kw), strides=tuple(m.stride),
                        padding=_padding(pads), dilation=(dh, dw), groups=m.groups, use_bias=m.bias is not None,
                        kernel_init="torch", bias_init="torch")
    reader.weight(index, "kernel", _key(node, "weight", m), layouts.conv_from_torch)
    if m.bias is not None:
        reader.weight(index, "bias", _key(node, "bias", m))
    return reader.derive(node, value)


def _sequence(reader, node, value, what):
    """``value`` as a (batch, channels, length) sequence funcdl holds (batch, length, channels): a Permute moves one
    funcdl holds as torch does (the model's input) channels-last."""
    value = reader.take(node, value)
    if value.layout == "plain" and len(value.shape) == 3 and value.perm is None:
        reader.emit(nn.Permute, inputs=(value.ref,), dims=(2, 1))
        value = dataclasses.replace(value, layout="ncl", ref=reader.cursor)
    if value.layout != "ncl" or len(value.shape) != 3:
        raise ConversionError(f"{describe(node)}: {what} needs a (batch, channels, length) tensor that funcdl holds "
                              f"channels-last (made by Conv1d or x.permute(0, 2, 1)), got shape {value.shape} "
                              f"({value.layout})")
    return value


def _emit_1d(reader, layer, options, channels, features):
    """Emit ``layer`` as its 1-D twin (``interop.one_d``); the index of the 2-D layer."""
    indices = [reader.emit(cls, **kwargs) for cls, kwargs in one_d.as_2d(layer, options, channels, features)]
    return indices[1]


def _single(value):
    """The int of a 1-D size given as an int or a 1-tuple."""
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def conv1d(reader, node, m, value):
    """Conv1d (and F.conv1d on the module's weights): a Conv2D with a (k, 1) window between reshapes."""
    value = _sequence(reader, node, value, "Conv1d")
    if m.padding_mode != "zeros":
        raise ConversionError(f"{describe(node)}: Conv1d padding_mode={m.padding_mode!r} is not supported; "
                              "only 'zeros'")
    size, dilation, stride = _single(m.kernel_size), _single(m.dilation), _single(m.stride)
    if m.padding == "same":  # torch puts an odd extra pixel after, as XLA's 'same' does
        total = dilation * (size - 1)
        pads = (total // 2, total - total // 2)
    else:
        pads = (0, 0) if m.padding == "valid" else (_single(m.padding),) * 2
    options = dict(features=m.out_channels, kernel_size=one_d.one_d(size), strides=one_d.one_d(stride),
                   padding=one_d.padding(pads), dilation=one_d.one_d(dilation), groups=m.groups,
                   use_bias=m.bias is not None, kernel_init="torch", bias_init="torch")
    index = _emit_1d(reader, nn.Conv2D, options, value.shape[1], m.out_channels)
    reader.weight(index, "kernel", _key(node, "weight", m), layouts.conv1d_from_torch)
    if m.bias is not None:
        reader.weight(index, "bias", _key(node, "bias", m))
    return reader.derive(node, value)


def pool1d(reader, node, value, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
           return_indices=False, count_include_pad=True, is_max=True):
    """MaxPool1d / AvgPool1d (and F.max_pool1d / F.avg_pool1d): the 2-D pooling with a (p, 1) window."""
    what = "max_pool1d" if is_max else "avg_pool1d"
    value = _sequence(reader, node, value, what)
    if _single(dilation) != 1 or ceil_mode or return_indices:
        raise ConversionError(f"{describe(node)}: {what} with dilation, ceil_mode or return_indices has no funcdl "
                              "equivalent")
    size = _single(kernel_size)
    options = dict(pool_size=one_d.one_d(size), strides=one_d.one_d(_single(stride) if stride else size),
                   padding=one_d.padding(_single(padding)))
    if not is_max:
        options["count_include_pad"] = bool(count_include_pad)
    _emit_1d(reader, nn.MaxPool2D if is_max else nn.AvgPool2D, options, value.shape[1], value.shape[1])
    return reader.derive(node, value)


def adaptive_pool1d(reader, node, value, output_size, return_indices=False, is_max=False):
    """Adaptive 1-D pooling to an output size that divides the length: fixed windows of length // output."""
    value = _sequence(reader, node, value, "adaptive pooling")
    length, out = value.shape[2], _single(output_size)
    if length % out or return_indices:
        raise ConversionError(f"{describe(node)}: adaptive pooling of length {length} to {out} (or with indices) "
                              "has no funcdl equivalent; funcdl pools with fixed windows (the output must divide the "
                              "input)")
    window = length // out
    return pool1d(reader, node, value, window, window, 0, is_max=is_max)


def max_pool(reader, node, value, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False):
    value = reader.take(node, value, pad_ok=True)
    _image(node, value, "max_pool2d")
    if nn.pair(dilation, "dilation") != (1, 1) or ceil_mode or return_indices:
        raise ConversionError(f"{describe(node)}: max_pool2d with dilation, ceil_mode or return_indices has no funcdl "
                              "equivalent")
    size, (ph, pw) = nn.pair(kernel_size, "kernel_size"), nn.pair(padding, "padding")
    pads = _merged_pad(node, value, (ph, ph, pw, pw), -_INF)
    strides = nn.pair(stride, "stride") if stride else size
    reader.emit(nn.MaxPool2D, pool_size=size, strides=strides, padding=_padding(pads))
    return reader.derive(node, value)


def avg_pool(reader, node, value, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    value = reader.take(node, value, pad_ok=True)
    _image(node, value, "avg_pool2d")
    if ceil_mode or divisor_override is not None:
        raise ConversionError(f"{describe(node)}: avg_pool2d with ceil_mode or divisor_override has no funcdl "
                              "equivalent")
    size, (ph, pw) = nn.pair(kernel_size, "kernel_size"), nn.pair(padding, "padding")
    if value.pad is not None and not count_include_pad and (ph or pw):
        raise ConversionError(f"{describe(node)}: explicit padding before avg_pool2d(padding>0, "
                              "count_include_pad=False) has no funcdl equivalent")
    include = bool(count_include_pad) or value.pad is not None  # explicitly padded zeros count as pixels
    pads = _merged_pad(node, value, (ph, ph, pw, pw), 0.0)
    strides = nn.pair(stride, "stride") if stride else size
    reader.emit(nn.AvgPool2D, pool_size=size, strides=strides, padding=_padding(pads),
                count_include_pad=include)
    return reader.derive(node, value)


def adaptive_pool(reader, node, value, output_size, return_indices=False, is_max=False):
    """Adaptive pooling to an output size that divides the input: fixed windows of input // output."""
    value = reader.take(node, value)
    _image(node, value, "adaptive pooling")
    sizes = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    (height, width), window = value.shape[2:], []
    for size, out in zip((height, width), sizes):
        out = size if out is None else out
        if size % out or return_indices:
            raise ConversionError(f"{describe(node)}: adaptive pooling of {height}x{width} to {sizes} (or with "
                                  "indices) has no funcdl equivalent; funcdl pools with fixed windows (the output "
                                  "must divide the input)")
        window.append(size // out)
    reader.emit(nn.MaxPool2D if is_max else nn.AvgPool2D, pool_size=tuple(window), strides=tuple(window),
                padding=(0, 0))
    return reader.derive(node, value)


def batch_norm(reader, node, m, value, image):
    value = reader.take(node, value)
    name = type(m).__name__
    if m.running_mean is None or not m.track_running_stats:
        raise ConversionError(f"{describe(node)}: {name}(track_running_stats=False) normalises with batch "
                              "statistics in inference; funcdl's BatchNorm uses running statistics")
    if m.momentum is None:
        raise ConversionError(f"{describe(node)}: {name}(momentum=None) (cumulative average) has no funcdl equivalent")
    if image:
        _image(node, value, name)
    elif len(value.shape) == 3:
        value = _sequence(reader, node, value, name)
    elif not (len(value.shape) == 2 and value.layout == "plain"):
        raise ConversionError(f"{describe(node)}: {name} on shape {value.shape}: supported on (batch, features) and "
                              "on (batch, channels, length) made by Conv1d or x.permute(0, 2, 1)")
    index = reader.emit(nn.BatchNorm, momentum=layouts.momentum_from_torch(m.momentum), epsilon=m.eps,
                        unbiased_running_var=True, use_scale=m.affine, use_bias=m.affine)
    vector = _vector(value.perm)
    if m.affine:
        reader.weight(index, "scale", _key(node, "weight"), vector)
        reader.weight(index, "bias", _key(node, "bias"), vector)
    reader.weight(index, "mean", _key(node, "running_mean"), vector, "batch_stats")
    reader.weight(index, "var", _key(node, "running_var"), vector, "batch_stats")
    if isinstance(m.num_batches_tracked, torch.Tensor):
        reader.ignored.add(_key(node, "num_batches_tracked"))  # only used when momentum is None
    return reader.derive(node, value)


def layer_norm(reader, node, m, value):
    value = reader.take(node, value)
    axes = len(m.normalized_shape)
    if value.layout == "nchw":
        if axes != 3:
            raise ConversionError(f"{describe(node)}: LayerNorm over the last {axes} axes of an NCHW image has no "
                                  "funcdl equivalent (funcdl holds images NHWC); normalise over (C, H, W)")
        def vector(a):
            return a.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    else:
        vector = _vector(value.perm)
    weight, bias = m.weight, m.bias
    index = reader.emit(nn.LayerNorm, epsilon=m.eps, num_axes=axes, use_scale=weight is not None,
                        use_bias=bias is not None)
    if weight is not None:
        reader.weight(index, "scale", _key(node, "weight"), vector)
    if bias is not None:
        reader.weight(index, "bias", _key(node, "bias"), vector)
    return reader.derive(node, value)


def embedding(reader, node, m, value):
    value = reader.take(node, value)
    if m.max_norm is not None or m.scale_grad_by_freq:
        raise ConversionError(f"{describe(node)}: Embedding with max_norm or scale_grad_by_freq has no funcdl "
                              "equivalent")
    index = reader.emit(nn.Embedding, num_embeddings=m.num_embeddings, features=m.embedding_dim)
    reader.weight(index, "embedding", _key(node, "weight"))
    return reader.derive(node, value, layout="tb" if value.layout == "tb" else "plain", perm=None)


def recurrent(reader, node, m, value):
    value = reader.take(node, value)
    name = type(m).__name__
    _zero_state(reader, node, name)
    if getattr(m, "proj_size", 0):
        raise ConversionError(f"{describe(node)}: {name} with proj_size has no funcdl equivalent")
    layout = "plain" if m.batch_first else "tb"
    if len(value.shape) != 3 or value.layout != layout or value.perm is not None:
        wanted = "(batch, time, features)" if m.batch_first else "(time, batch, features)"
        hint = "" if m.batch_first else (" (funcdl models take batch-first sequences: x.permute(1, 0, 2) / "
                                         "x.transpose(0, 1) inside forward, or batch_first=True)")
        raise ConversionError(f"{describe(node)}: {name}(batch_first={m.batch_first}) needs a {wanted} input, got "
                              f"shape {value.shape}{hint}")
    if m.mode == "LSTM":  # torch's RNNBase.mode: 'LSTM', 'GRU', 'RNN_TANH', 'RNN_RELU'
        cls, extra, gates, cell = nn.LSTM, {"unit_forget_bias": False}, 4, "lstm"
    elif m.mode == "GRU":
        cls, extra, gates, cell = nn.GRU, {}, 3, "gru"
    else:
        cls, extra, gates, cell = nn.SimpleRNN, {"activation": m.nonlinearity}, 1, "rnn"
    zeros = np.zeros(gates * m.hidden_size, np.float32)
    for k in range(m.num_layers):
        if k and m.dropout:
            reader.emit(nn.Dropout, rate=float(m.dropout))
        if m.bidirectional:  # torch's l{k} and l{k}_reverse: Bidirectional's forward and backward
            index = reader.emit(nn.Bidirectional, layer=cls(features=m.hidden_size, return_sequences=True, **extra))
            directions = (("forward/", ""), ("backward/", "_reverse"))
        else:
            index = reader.emit(cls, features=m.hidden_size, return_sequences=True, **extra)
            directions = (("", ""),)
        for prefix, suffix in directions:
            for name_funcdl, name_torch in (("kernel", "weight_ih"), ("recurrent_kernel", "weight_hh"),
                                            ("bias", "bias_ih"), ("recurrent_bias", "bias_hh")):
                key = _key(node, f"{name_torch}_l{k}{suffix}")
                if name_torch.startswith("weight"):
                    reader.weight(index, prefix + name_funcdl, key, layouts.linear_from_torch)
                elif m.bias:
                    reader.weight(index, prefix + name_funcdl, key)
                else:
                    reader.weight(index, prefix + name_funcdl, None, lambda _, z=zeros: z)
    if isinstance(m, tm.RECURRENT):
        reader.specs[-1].kwargs["return_sequences"] = m.return_sequences
        return reader.derive(node, value)
    meta = node.meta["tensor_meta"]
    meta = meta[0] if isinstance(meta, (tuple, list)) else meta  # (output, hidden) traced; the output (.pt2)
    return Value("recurrent", tuple(meta.shape), len(reader.specs), layout=layout,
                 rnn=(cell, m.num_layers, 2 if m.bidirectional else 1), ref=reader.cursor)


def _zero_state(reader, node, name):
    """Refuse an initial state unless it is all zeros made in forward (``torch.zeros(layers, batch, hidden)``)."""
    states = [a for a in list(node.args[1:]) + list(node.kwargs.values()) if a is not None]
    flat = [s for state in states for s in (state if isinstance(state, (tuple, list)) else (state,))]
    for state in flat:
        value = reader.values.get(state) if isinstance(state, torch.fx.Node) else None
        if value is None or value.kind != "zeros":
            raise ConversionError(f"{describe(node)}: {name} gets an initial state that is not zeros made in forward "
                                  "(torch.zeros(...)); funcdl's recurrent layers start from zeros")


def getitem(reader, node, value, index):
    meta = node.meta["tensor_meta"]
    if value.kind == "recurrent":
        cell = value.rnn[0]
        if index == 0:
            return Value("tensor", tuple(meta.shape), value.end, value.layout, dtype=meta.dtype, ref=value.ref)
        if index == 1:
            kind = "hidden" if cell == "lstm" else "state"
            return Value(kind, tuple(meta.shape) if kind == "state" else (), value.end, rnn=value.rnn, ref=value.ref)
    elif value.kind == "hidden":
        if index == 0:
            return Value("state", tuple(meta.shape), value.end, rnn=value.rnn, ref=value.ref)
        raise ConversionError(f"{describe(node)}: the LSTM cell state c_n has no funcdl equivalent; use h_n or the "
                              "output")
    elif value.kind == "state":
        first = index[0] if isinstance(index, tuple) and all(i == slice(None) for i in index[1:]) else index
        directions = value.rnn[2]
        if directions == 2 and isinstance(first, slice) and first.step in (None, 1) and first.stop is None and (
                first.start is not None and first.start % value.shape[0] == value.shape[0] - 2):
            return _both_directions(reader, node, value)
        if isinstance(first, int) and first % value.shape[0] >= value.shape[0] - directions:
            return _final_state(reader, node, value, direction=first % value.shape[0] - value.shape[0] + directions)
    elif value.layout == "tb" and len(value.shape) == 3:
        first = index[0] if isinstance(index, tuple) and all(i == slice(None) for i in index[1:]) else index
        if isinstance(first, int) and first % value.shape[0] == value.shape[0] - 1:
            return last_step(reader, node, value)  # out[-1] of a time-first output
    elif len(value.shape) == 3 and isinstance(index, tuple) and len(index) in (2, 3):
        step = index[1]
        if (index[0] == slice(None) and all(i == slice(None) for i in index[2:]) and isinstance(step, int)
                and step % value.shape[1] == value.shape[1] - 1):
            return last_step(reader, node, value)
    raise ConversionError(f"{describe(node)}: indexing with {index!r} is not supported; funcdl supports out[0], out[:, "
                          "-1] (out[-1] time-first) of an LSTM/GRU/RNN output sequence and h_n[-1]")


def _final_state(reader, node, value, direction=0):
    """h_n[-1]: the last layer's final hidden state, i.e. that layer returning its last step.

    Bidirectional: h_n[-2] is the forward direction's, h_n[-1] the backward one's (after reading x[:, 0]), given as
    the Bidirectional's outputs ``name:0`` / ``name:1`` (merge_mode None); ``torch.cat((h[-2], h[-1]), 1)`` then
    concatenates them.
    """
    spec = reader.by_name[value.ref]
    bidirectional = spec.cls is nn.Bidirectional
    if reader.consumers(value.ref) or spec.cls not in (nn.LSTM, nn.GRU, nn.SimpleRNN, nn.Bidirectional):
        raise ConversionError(f"{describe(node)}: h_n is supported only when the output sequence of its LSTM/GRU/RNN "
                              "feeds nothing else")
    meta = node.meta["tensor_meta"]
    if not bidirectional:
        spec.kwargs["return_sequences"] = False
        return Value("tensor", tuple(meta.shape), value.end, dtype=meta.dtype, ref=value.ref)
    spec.kwargs["layer"] = spec.kwargs["layer"].clone(return_sequences=False)
    spec.kwargs["merge_mode"] = None
    return Value("tensor", tuple(meta.shape), value.end, dtype=meta.dtype, ref=f"{value.ref}:{direction}")


def _both_directions(reader, node, value):
    """h_n[-2:] of a bidirectional layer: both final states, (2, B, H), kept apart until they are concatenated."""
    _final_state(reader, node, value, 0)
    meta = node.meta["tensor_meta"]
    return Value("directions", tuple(meta.shape), value.end, dtype=meta.dtype, ref=value.ref)


def directions(reader, node, value, kind, args):
    """h_n[-2:] then .permute(1, 0, 2) / .transpose(0, 1) / .contiguous() and .reshape(B, -1): both final states
    concatenated (forward, backward), as torch.cat((h_n[-2], h_n[-1]), 1)."""
    out = tuple(node.meta["tensor_meta"].shape)
    if kind == "identity":
        return dataclasses.replace(value, shape=out)
    if kind in ("permute", "transpose") and value.layout == "plain" and out == (value.shape[1], 2, value.shape[2]):
        return dataclasses.replace(value, shape=out, layout="batch_first")
    if kind == "reshape" and value.layout == "batch_first" and out == (value.shape[0], 2 * value.shape[2]):
        reader.emit(nn.Concatenate, inputs=(f"{value.ref}:0", f"{value.ref}:1"), axis=-1)
        return reader.derive(node, value, layout="plain")
    raise ConversionError(f"{describe(node)}: h_n[-2:] of a bidirectional layer is supported as "
                          "h_n[-2:].permute(1, 0, 2).reshape(batch, -1) or torch.cat((h_n[-2], h_n[-1]), dim=1)")


def reshape(reader, node, value):
    """view / reshape / flatten / squeeze / unsqueeze / nn.Flatten: the output shape tells what it does."""
    out = tuple(node.meta["tensor_meta"].shape)
    if value.kind == "state" and value.shape[0] == value.rnn[2] == 1 and len(out) == 2:
        return _final_state(reader, node, value)  # h_n.squeeze(0) of a one-layer RNN
    value = reader.take(node, value)
    if out == value.shape:
        return reader.derive(node, value)
    moved = _between_1d_and_2d(reader, value, out)
    if moved is not None:
        return reader.derive(node, value, layout=moved)
    if value.layout == "tb":
        raise ConversionError(f"{describe(node)}: reshaping a time-first {value.shape} to {out}: funcdl holds it "
                              "batch-first; take out[-1] or permute it back (1, 0, 2) first")
    if out[0] != value.shape[0]:
        raise ConversionError(f"{describe(node)}: reshaping {value.shape} to {out} changes the batch axis")
    if value.layout in ("nchw", "ncl"):
        _, channels, height, width = value.shape + (1,) * (4 - len(value.shape))
        perm = layouts.flatten_permutation(channels, height, width)
        if perm is not None and len(out) != 2:
            raise ConversionError(f"{describe(node)}: reshaping an {value.layout.upper()} tensor {value.shape} to "
                                  f"{out}: funcdl holds it channels-last, so only flattening to (batch, -1) is "
                                  "supported (or permute to channels-last first)")
    elif value.perm is not None:
        raise ConversionError(f"{describe(node)}: reshaping a flattened NCHW image again has no funcdl equivalent")
    else:
        perm = None
    if len(out) == 4:
        raise ConversionError(f"{describe(node)}: reshaping to 4-D {out} makes an NCHW image funcdl would hold NHWC; "
                              "not supported")
    if len(out) == 2:
        reader.emit(nn.Flatten)
    else:
        reader.emit(nn.Reshape, shape=tuple(out[1:]))
    return reader.derive(node, value, layout="plain", perm=perm)


def _between_1d_and_2d(reader, value, out):
    """x.unsqueeze(2) / (-1) of an (N, C, L) sequence (an image of height or width 1), or squeezing that axis of
    such an image: the layout it gives, after emitting the Reshape funcdl needs; None for any other reshape."""
    shape = value.shape
    if value.layout == "ncl" and out in (shape[:2] + (1, shape[2]), shape + (1,)):
        reader.emit(nn.Reshape, shape=(out[2], out[3], shape[1]))  # (N, L, C) -> NHWC
        return "nchw"
    if value.layout == "nchw" and len(out) == 3 and out[:2] == shape[:2] and 1 in shape[2:] and (
            out[2] == shape[2] * shape[3]):
        reader.emit(nn.Reshape, shape=(out[2], shape[1]))  # NHWC with H or W of 1 -> (N, L, C)
        return "ncl"
    return None


def permute(reader, node, value, dims):
    value = reader.take(node, value)
    dims = tuple(d % len(value.shape) for d in dims)
    if dims == (0, 2, 3, 1) and value.layout == "nchw":
        return reader.derive(node, value, layout="plain")  # torch now holds what funcdl holds
    if dims == (0, 3, 1, 2) and value.layout == "plain" and len(value.shape) == 4 and value.perm is None:
        return reader.derive(node, value, layout="nchw")
    if dims == tuple(range(len(dims))):
        return reader.derive(node, value)
    swapped = {("plain", (1, 0, 2)): "tb", ("tb", (1, 0, 2)): "plain", ("plain", (1, 0)): "tb",
               ("tb", (1, 0)): "plain", ("plain", (0, 2, 1)): "ncl", ("ncl", (0, 2, 1)): "plain"}
    if (value.layout, dims) in swapped and value.perm is None:
        return reader.derive(node, value, layout=swapped[value.layout, dims])  # funcdl keeps batch-first, channels-last
    raise ConversionError(f"{describe(node)}: permute{dims} of a {value.layout} tensor of shape {value.shape} is not "
                          "supported; only NCHW <-> NHWC (0, 2, 3, 1) / (0, 3, 1, 2), (N, C, L) <-> (N, L, C) "
                          "(0, 2, 1) and time-first <-> batch-first (1, 0, 2)")


def transpose(reader, node, value, dim0, dim1):
    """``x.transpose(dim0, dim1)`` / ``torch.transpose``: the permutation swapping them."""
    dims = list(range(len(value.shape)))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(reader, node, value, tuple(dims))


def pad(reader, node, value, pad, mode="constant", value_=None):
    value = reader.take(node, value)
    fill = 0.0 if value_ is None else float(value_)
    if mode != "constant" or len(pad) != 4 or value.layout != "nchw" or fill not in (0.0, -_INF) or min(pad) < 0:
        raise ConversionError(f"{describe(node)}: only constant zero (or -inf before max pooling) padding of the "
                              f"H and W axes of an NCHW image is supported, got pad={tuple(pad)}, mode={mode!r}, "
                              f"value={fill}")
    left, right, top, bottom = pad
    return reader.derive(node, value, pad=(top, bottom, left, right), pad_value=fill)


def upsample(reader, node, value, size=None, scale_factor=None, mode="nearest", align_corners=None,
             recompute_scale_factor=None, antialias=False):
    """nn.Upsample / F.interpolate of an NCHW image by integer factors: an UpSampling2D (nearest, or bilinear with
    align_corners=False)."""
    value = reader.take(node, value)
    _image(node, value, "interpolate")
    out = tuple(node.meta["tensor_meta"].shape)
    factors = tuple(o // i for o, i in zip(out[2:], value.shape[2:]))
    exact = all(o == i * f for o, i, f in zip(out[2:], value.shape[2:], factors)) and min(factors) >= 1
    if mode not in ("nearest", "bilinear") or align_corners or antialias or not exact:
        raise ConversionError(f"{describe(node)}: interpolate(mode={mode!r}, align_corners={align_corners}) from "
                              f"{value.shape[2:]} to {out[2:]} has no funcdl equivalent; funcdl upsamples by integer "
                              "factors, 'nearest' or 'bilinear' with align_corners=False")
    reader.emit(nn.UpSampling2D, size=factors, interpolation=mode)
    return reader.derive(node, value)


def pixel_shuffle(reader, node, value, upscale_factor):
    """nn.PixelShuffle / F.pixel_shuffle of an NCHW image: a PixelShuffle in torch's channel order."""
    value = reader.take(node, value)
    _image(node, value, "pixel_shuffle")
    reader.emit(nn.PixelShuffle, factor=int(upscale_factor), order="torch")
    return reader.derive(node, value)


def dropout(reader, node, value, p=0.5):
    return _activation(reader, node, value, nn.Dropout, rate=float(p))


def identity(reader, node, value, **_):
    """Views and inference-time identities (contiguous, channel dropout): nothing to compute."""
    value = reader.take(node, value)
    return reader.derive(node, value)


def _merge_values(reader, node, args, what):
    """The Values of a merge's tensor operands, checked to be combinable in funcdl's layout."""
    if not all(isinstance(a, torch.fx.Node) and a in reader.values for a in args):
        raise ConversionError(f"{describe(node)} (node {node.name}) combines a tensor with a constant or an "
                              f"unsupported value; {what} is supported between two tensors computed from the input")
    return check_merge(reader, node, [reader.values[a] for a in args], what)


def check_merge(reader, node, values, what):
    """``values`` if funcdl can merge them (``what``: 'concatenation', 'add', ...) as torch does."""
    values = [reader.take(node, value) for value in values]
    for value in values:
        if value.perm is not None and what == "concatenation":
            raise ConversionError(f"{describe(node)} (node {node.name}): concatenating flattened NCHW images has no "
                                  "funcdl equivalent (funcdl flattens in (H, W, C) order); use x.permute(0, 2, 3, 1) "
                                  "before flattening")
    first = values[0]
    for value in values[1:]:
        same_perm = (first.perm is None) == (value.perm is None) and (
            first.perm is None or np.array_equal(first.perm, value.perm))
        if value.layout != first.layout or not same_perm:
            raise ConversionError(f"{describe(node)} (node {node.name}) combines an NCHW image with a permuted or "
                                  f"flattened tensor ({first.shape} and {value.shape}); funcdl holds images NHWC")
        if what != "concatenation" and value.shape != first.shape:
            raise ConversionError(f"{describe(node)} (node {node.name}): {what} of shapes {first.shape} and "
                                  f"{value.shape}; funcdl merges tensors of equal shapes only (no broadcasting)")
    return values


def merge(cls, reader, node):
    """x + y, x * y, x - y, torch.maximum/minimum (also in place, ``out += shortcut(x)``): a merge layer."""
    args = list(node.args[:2])
    if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
        raise ConversionError(f"{describe(node)} (node {node.name}) with alpha has no funcdl equivalent")
    if "other" in node.kwargs:
        args.append(node.kwargs["other"])
    values = _merge_values(reader, node, args, f"{cls.__name__.lower()}")
    reader.emit(cls, inputs=[v.ref for v in values])
    return reader.derive(node, values[0])


def concatenate(reader, node):
    """torch.cat(tensors, dim): a Concatenate on funcdl's axis of that dim."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if not isinstance(tensors, (tuple, list)) or not isinstance(dim, int):
        raise ConversionError(f"{describe(node)} (node {node.name}): torch.cat needs a list of tensors and an int dim")
    values = _merge_values(reader, node, list(tensors), "concatenation")
    axis = _axis(values[0], dim)
    if axis == -len(values[0].shape):
        raise ConversionError(f"{describe(node)} (node {node.name}): concatenating along the batch axis is not "
                              "supported")
    if len(values) == 1:
        return reader.derive(node, values[0])
    reader.emit(nn.Concatenate, inputs=[v.ref for v in values], axis=axis)
    return reader.derive(node, values[0])


def _merge_table():
    table = {operator.add: nn.Add, operator.iadd: nn.Add, torch.add: nn.Add, operator.mul: nn.Multiply,
             operator.imul: nn.Multiply, torch.mul: nn.Multiply, operator.sub: nn.Subtract,
             operator.isub: nn.Subtract, torch.sub: nn.Subtract, torch.maximum: nn.Maximum,
             torch.minimum: nn.Minimum}
    return {**{fn: (lambda r, n, c=cls: merge(c, r, n)) for fn, cls in table.items()},
            torch.cat: concatenate, torch.concat: concatenate, torch.concatenate: concatenate}


_METHOD_MERGES = {"add": nn.Add, "add_": nn.Add, "mul": nn.Multiply, "mul_": nn.Multiply, "sub": nn.Subtract,
                  "sub_": nn.Subtract}


def _torch_option(name):
    """torch's name for a funcdl activation setting (the rest are the same)."""
    return "dim" if name == "axis" else name


def activation_call(kind, reader, node, value, args):
    """funcdl's layer for torch's activation ``kind`` (an ``nn.TABLE`` name) called with torch's ``args``.

    Settings map by name, except torch's ``dim`` (funcdl's ``axis`` of that dim) and ``approximate``
    (``'tanh'`` / ``'none'`` in torch, a bool in funcdl); absent ones keep funcdl's defaults (torch's).
    """
    row = nn.activation(kind)
    if args.get("dtype") is not None:
        raise ConversionError(f"{describe(node)}: {kind} with dtype= is not supported")
    options = {}
    for name in nn.option_names(row.function):
        if name == "axis":
            options[name] = _axis(value, args.get("dim"))
        elif name == "approximate":
            options[name] = args.get("approximate", "none") == "tanh"
        elif name in args:
            options[name] = float(args[name])
    return _activation(reader, node, value, row.layer, **options)
_ARG_NAMES = {"relu": (), "sigmoid": (), "tanh": (), "leaky_relu": ("negative_slope",), "softmax": ("dim",),
              "log_softmax": ("dim",), "gelu": ("approximate",), "softplus": ("beta", "threshold")}
_DROP = ("inplace", "_stacklevel", "training", "train")


def _call(kind, reader, node, value, args):
    args = {k: v for k, v in args.items() if k not in _DROP and k != "input"}
    if value.kind == "directions":
        return directions(reader, node, value, kind, args)
    if kind in nn.ACTIVATIONS:
        return activation_call(kind, reader, node, value, args)
    return {"dropout": dropout, "reshape": lambda r, n, v, **_: reshape(r, n, v), "identity": identity,
            "transpose": transpose, "interpolate": upsample, "pixel_shuffle": pixel_shuffle,
            "max_pool2d": max_pool, "avg_pool2d": avg_pool, "permute": permute, "pad": pad,
            "adaptive_avg_pool2d": adaptive_pool,
            "adaptive_max_pool2d": lambda *a, **k: adaptive_pool(*a, **k, is_max=True),
            "max_pool1d": pool1d, "avg_pool1d": lambda *a, **k: pool1d(*a, **k, is_max=False),
            "adaptive_avg_pool1d": adaptive_pool1d,
            "adaptive_max_pool1d": lambda *a, **k: adaptive_pool1d(*a, **k, is_max=True),
            "getitem": getitem}[kind](reader, node, value, **args)


def _function_table():
    acts = {F.relu: ("relu", ("inplace",)), torch.relu: ("relu", ()), F.relu_: ("relu", ()),
            torch.relu_: ("relu", ()), F.leaky_relu: ("leaky_relu", ("negative_slope", "inplace")),
            torch.sigmoid: ("sigmoid", ()), F.sigmoid: ("sigmoid", ()), torch.tanh: ("tanh", ()),
            F.tanh: ("tanh", ()), torch.softmax: ("softmax", ("dim", "dtype")),
            F.softmax: ("softmax", ("dim", "_stacklevel", "dtype")),
            torch.log_softmax: ("log_softmax", ("dim", "dtype")),
            F.log_softmax: ("log_softmax", ("dim", "_stacklevel", "dtype")), F.gelu: ("gelu", ("approximate",)),
            F.softplus: ("softplus", ("beta", "threshold")), F.relu6: ("relu6", ("inplace",)),
            F.silu: ("silu", ("inplace",)), F.hardswish: ("hard_swish", ("inplace",)),
            F.elu: ("elu", ("alpha", "inplace")), F.selu: ("selu", ("inplace",)), torch.selu: ("selu", ()),
            F.hardsigmoid: ("hard_sigmoid", ("inplace",)), F.hardswish: ("hard_swish", ("inplace",)),
            F.mish: ("mish", ("inplace",)), F.softsign: ("softsign", ()), F.relu6: ("relu6", ("inplace",))}
    other = {F.dropout: ("dropout", ("p", "training", "inplace")), torch.dropout: ("dropout", ("p", "train")),
             F.dropout1d: ("identity", ("p", "training", "inplace")),
             F.dropout2d: ("identity", ("p", "training", "inplace")),
             F.interpolate: ("interpolate", ("size", "scale_factor", "mode", "align_corners",
                                             "recompute_scale_factor", "antialias")),
             F.pixel_shuffle: ("pixel_shuffle", ("upscale_factor",)),
             F.max_pool2d: ("max_pool2d", ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                           "return_indices")),
             F.avg_pool2d: ("avg_pool2d", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                           "divisor_override")),
             F.max_pool1d: ("max_pool1d", ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                           "return_indices")),
             F.avg_pool1d: ("avg_pool1d", ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")),
             F.adaptive_avg_pool1d: ("adaptive_avg_pool1d", ("output_size",)),
             F.adaptive_max_pool1d: ("adaptive_max_pool1d", ("output_size", "return_indices")),
             F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", ("output_size",)),
             F.adaptive_max_pool2d: ("adaptive_max_pool2d", ("output_size", "return_indices")),
             torch.flatten: ("reshape", ()), torch.reshape: ("reshape", ()), torch.squeeze: ("reshape", ()),
             torch.unsqueeze: ("reshape", ()), torch.permute: ("permute", ("dims",)),
             torch.transpose: ("transpose", ("dim0", "dim1")), torch.swapaxes: ("transpose", ("dim0", "dim1")),
             F.pad: ("pad", ("pad", "mode", "value_")), operator.getitem: ("getitem", ("index",))}
    return {**acts, **other}


_METHODS = {"view": "reshape", "reshape": "reshape", "flatten": "reshape", "squeeze": "reshape",
            "unsqueeze": "reshape", "contiguous": "identity", "relu": "relu", "relu_": "relu", "sigmoid": "sigmoid",
            "tanh": "tanh", "softmax": "softmax", "log_softmax": "log_softmax", "permute": "permute",
            "transpose": "transpose", "swapaxes": "transpose", "t": "transpose"}


def convert_function(reader, node):
    merges = _merge_table()
    if node.target in merges:
        return merges[node.target](reader, node)
    table = _function_table()
    if node.target not in table:
        name = getattr(node.target, "__name__", str(node.target))
        raise _unsupported(f"function {name} (node {node.name})", node)
    kind, names = table[node.target]
    value = reader.input_value(node)
    args = dict(zip(("input",) + names, node.args))
    args.update({("value_" if k == "value" else k): v for k, v in node.kwargs.items()})
    return _call(kind, reader, node, value, args)


def convert_method(reader, node):
    if node.target in _METHOD_MERGES:
        return merge(_METHOD_MERGES[node.target], reader, node)
    if node.target not in _METHODS:
        raise _unsupported(f"tensor method .{node.target}() (node {node.name})", node)
    kind = _METHODS[node.target]
    value = reader.input_value(node)
    rest = node.args[1:]
    if kind == "permute":
        args = {"dims": tuple(rest[0]) if len(rest) == 1 else tuple(rest)}
    elif kind == "transpose":
        args = dict(zip(("dim0", "dim1"), rest or (0, 1)))
        args.update(node.kwargs)
    else:
        args = dict(zip(_ARG_NAMES.get(kind, ()), rest))
        args.update(node.kwargs)
    return _call(kind, reader, node, value, args)


def _activation_modules():
    """torch activation module class -> converter, one per ``nn.TABLE`` row (settings read by torch's names)."""
    def act(kind, names):
        return lambda r, n, m, v: _call(kind, r, n, v, {name: getattr(m, name) for name in names})
    return {getattr(tnn, row.torch): act(row.name, [_torch_option(name) for name in nn.option_names(row.function)])
            for row in nn.TABLE if row.torch and not row.options}


def _module_table():
    return {
        **_activation_modules(),
        tnn.Linear: linear, tnn.Conv2d: conv2d, tnn.Embedding: embedding, tnn.LayerNorm: layer_norm,
        tnn.LSTM: recurrent, tnn.GRU: recurrent, tnn.RNN: recurrent,
        tnn.BatchNorm1d: lambda r, n, m, v: batch_norm(r, n, m, v, image=False),
        tnn.BatchNorm2d: lambda r, n, m, v: batch_norm(r, n, m, v, image=True),
        tnn.Conv1d: conv1d,
        tnn.MaxPool1d: lambda r, n, m, v: pool1d(r, n, v, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                                                 m.return_indices),
        tnn.AvgPool1d: lambda r, n, m, v: pool1d(r, n, v, m.kernel_size, m.stride, m.padding, 1, m.ceil_mode,
                                                 count_include_pad=m.count_include_pad, is_max=False),
        tnn.AdaptiveAvgPool1d: lambda r, n, m, v: adaptive_pool1d(r, n, v, m.output_size),
        tnn.AdaptiveMaxPool1d: lambda r, n, m, v: adaptive_pool1d(r, n, v, m.output_size, m.return_indices, True),
        tnn.MaxPool2d: lambda r, n, m, v: max_pool(r, n, v, m.kernel_size, m.stride, m.padding, m.dilation,
                                                   m.ceil_mode, m.return_indices),
        tnn.AvgPool2d: lambda r, n, m, v: avg_pool(r, n, v, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                                   m.count_include_pad, m.divisor_override),
        tnn.AdaptiveAvgPool2d: lambda r, n, m, v: adaptive_pool(r, n, v, m.output_size),
        tnn.AdaptiveMaxPool2d: lambda r, n, m, v: adaptive_pool(r, n, v, m.output_size, m.return_indices, True),
        tnn.Dropout: lambda r, n, m, v: dropout(r, n, v, m.p),
        # channel dropout is the identity at inference; funcdl's Dropout would drop single elements in training
        tnn.Dropout1d: lambda r, n, m, v: identity(r, n, v), tnn.Dropout2d: lambda r, n, m, v: identity(r, n, v),
        tnn.Flatten: lambda r, n, m, v: reshape(r, n, v), tnn.Unflatten: lambda r, n, m, v: reshape(r, n, v),
        tm.Reshape: lambda r, n, m, v: reshape(r, n, v), tnn.Identity: lambda r, n, m, v: identity(r, n, v),
        tm.Permute: lambda r, n, m, v: permute(r, n, v, m.dims),
        tnn.ZeroPad2d: lambda r, n, m, v: pad(r, n, v, m.padding),
        tnn.Upsample: lambda r, n, m, v: upsample(r, n, v, m.size, m.scale_factor, m.mode, m.align_corners,
                                                  m.recompute_scale_factor),
        tnn.PixelShuffle: lambda r, n, m, v: pixel_shuffle(r, n, v, m.upscale_factor),
        tnn.ConstantPad2d: lambda r, n, m, v: pad(r, n, v, m.padding, value_=m.value),
    }


def check_module(module, name):
    """Raise the unsupported error for a module before anything runs (an unsupported module may not even run)."""
    if not any(cls in _module_table() for cls in type(module).__mro__):
        raise _unsupported(f"module {name} ({type(module).__name__})")


def convert_module(reader, node, module):
    table = _module_table()
    for cls in type(module).__mro__:
        if cls in table:
            return table[cls](reader, node, module, reader.input_value(node))
    raise _unsupported(f"module {node.target} ({type(module).__name__})", node)

