"""Forwards that do their own math on their own tensors, for ``interop.pytorch._trace.Reader``.

``x @ self.w + self.b``, ``torch.matmul``, ``F.linear(x, self.w, self.b)`` become a Dense and
``F.conv2d(x, self.w, self.b, ...)`` a Conv2D, with the tensors copied in funcdl's layout
(``interop.layouts``); a bias added to a bias-free Dense / Conv2D that feeds nothing else becomes its
bias. Arithmetic with a number or a per-channel tensor (``x * self.scale + self.shift``, ``x / 255``,
``x - self.mean``) becomes a ``Rescaling`` holding the values (fixed, as torch's buffers are). Anything
else is refused naming the op and what to change.
"""
import builtins
import operator
import types

import numpy as np
import torch
import torch.nn.functional as F

from funcdl import nn
from funcdl.errors import ConversionError
from interop.pytorch import _ops
from interop.pytorch._nodes import Value, describe

_ARITH = {operator.add: "add", operator.iadd: "add", torch.add: "add", operator.sub: "sub", operator.isub: "sub",
          torch.sub: "sub", operator.mul: "mul", operator.imul: "mul", torch.mul: "mul", operator.truediv: "div",
          operator.itruediv: "div", torch.div: "div", torch.true_divide: "div"}
_ARITH_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul",
                  "div": "div", "div_": "div", "true_divide": "div"}
_MATMULS = (operator.matmul, torch.matmul, torch.mm)


def _array(reader, value):
    """The numpy array of a weight Value (transposed when read as ``w.t()``)."""
    tensor = reader.state_dict[value.key]
    array = tensor.detach().cpu().float().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return array.T if value.transposed else array


def _operand(reader, arg):
    """('tensor' | 'weight', Value) for a traced operand, ('number', float) for a Python number, else None."""
    if isinstance(arg, torch.fx.Node) and arg in reader.values:
        value = reader.values[arg]
        return ("weight" if value.kind == "weight" else "tensor"), value
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return "number", float(arg)
    return None


def _channels(reader, node, value, weight):
    """``weight`` (a Value) as a float, or a tuple of one float per funcdl channel (the last axis) of ``value``."""
    array = _array(reader, weight)
    if array.size == 1:
        return float(array.reshape(-1)[0])
    shape, rank = array.shape, len(value.shape)
    axis = 1 if value.layout in ("nchw", "ncl") else rank - 1
    full = (1,) * (rank - len(shape)) + tuple(shape)
    if len(shape) > rank or any(size != 1 for i, size in enumerate(full) if i != axis) or (
            full[axis] != value.shape[axis]):
        raise ConversionError(f"{describe(node)} (node {node.name}) combines a tensor of shape {value.shape} with "
                              f"weight {weight.key} of shape {tuple(shape)}; funcdl supports numbers and one value per "
                              "channel (C, 1, 1) for images, (C, 1) for (N, C, L), (F,) for features")
    vector = array.reshape(-1)
    if value.perm is not None:
        vector = vector[value.perm]
    reader.ignored.add(weight.key)  # held by the Rescaling's settings
    return tuple(float(v) for v in vector)


def _bias_target(reader, value, weight, single):
    """The bias-free Dense / Conv2D spec computing ``value`` alone, which ``weight`` can be the bias of, or None."""
    spec = reader.by_name.get(value.ref)
    if spec is None or spec.cls not in (nn.Dense, nn.Conv2D) or spec.kwargs.get("use_bias", True):
        return None
    if not single or reader.consumers(value.ref) or value.perm is not None:
        return None
    array = _array(reader, weight)
    if array.size != spec.kwargs["features"] or array.ndim > len(value.shape):
        return None
    axis = 1 if value.layout in ("nchw", "ncl") else len(value.shape) - 1
    full = (1,) * (len(value.shape) - array.ndim) + array.shape
    return spec if full[axis] == array.size else None


def arithmetic(reader, node, op, args):
    """x + w, x - w, x * w, x / w (and w + x, w * x, c - x) with a weight or a number; None if both are tensors."""
    if op == "add" and node.kwargs.get("alpha", 1) != 1:
        return None
    operands = [_operand(reader, a) for a in args]
    if None in operands or [kind for kind, _ in operands].count("tensor") != 1:
        return None
    first = operands[0][0] == "tensor"
    (_, value), other = operands if first else operands[::-1]
    producer = args[0] if first else args[1]
    return combine(reader, node, op, value, other, first, len(producer.users) == 1)


def combine(reader, node, op, value, other, tensor_first, single):
    """``value`` (op) ``other`` (('weight', Value) or ('number', float)): a bias, or a Rescaling.

    Args:
      op: 'add', 'sub', 'mul' or 'div'; tensor_first: the tensor is the left operand;
      single: nothing but this op reads the tensor (so a bias or an offset may be folded into its layer).
    """
    kind, amount = other
    value = reader.take(node, value)
    if kind == "weight" and op == "add":
        spec = _bias_target(reader, value, amount, single)
        if spec is not None:
            spec.kwargs["use_bias"] = True
            reader.weight(reader.specs.index(spec), "bias", amount.key, lambda a: a.reshape(-1))
            return reader.derive(node, value)
    if kind == "weight":
        amount = _channels(reader, node, value, amount)
    scale, offset = _rescale(node, op, amount, tensor_first)
    return _emit_rescaling(reader, node, value, scale, offset, single)


def _rescale(node, op, amount, tensor_first):
    """(scale, offset) with x * scale + offset == the op."""
    def each(fn):
        return tuple(fn(a) for a in amount) if isinstance(amount, tuple) else fn(amount)
    if op == "add":
        return 1.0, amount
    if op == "mul":
        return amount, 0.0
    if op == "sub":
        return (1.0, each(lambda a: -a)) if tensor_first else (-1.0, amount)
    if tensor_first and 0.0 not in (amount if isinstance(amount, tuple) else (amount,)):
        return each(lambda a: float(np.float32(1.0) / np.float32(a))), 0.0
    raise ConversionError(f"{describe(node)} (node {node.name}): dividing by a tensor (or by zero) has no funcdl "
                          "equivalent; divide by a number or a per-channel weight")


def _emit_rescaling(reader, node, value, scale, offset, single):
    """A Rescaling, or the offset folded into the one just before (``x * self.scale + self.shift``)."""
    spec = reader.by_name.get(value.ref)
    if (spec is not None and spec.cls is nn.Rescaling and single and not reader.consumers(value.ref)
            and spec.kwargs["offset"] == 0.0 and scale == 1.0):
        spec.kwargs["offset"] = offset
        return reader.derive(node, value)
    reader.emit(nn.Rescaling, scale=scale, offset=offset)
    return reader.derive(node, value)


def matmul(reader, node, args):
    """``x @ self.w`` / ``torch.matmul(x, self.w)`` with w (in, out): a Dense without bias."""
    operands = [_operand(reader, a) for a in args[:2]]
    if None in operands or [kind for kind, _ in operands] != ["tensor", "weight"]:
        return None
    return dense(reader, node, operands[0][1], operands[1][1])


def dense(reader, node, value, weight):
    """``value @ weight`` with the weight (in, out): a Dense without bias."""
    value = reader.take(node, value)
    if len(weight.shape) != 2 or value.layout in ("nchw", "ncl"):  # these act on the last axis torch holds
        raise ConversionError(f"{describe(node)} (node {node.name}): x @ {weight.key} with weight shape "
                              f"{weight.shape} on {value.shape}: funcdl supports a 2-D (in, out) weight on features")
    perm, transposed = value.perm, weight.transposed
    index = reader.emit(nn.Dense, features=int(weight.shape[1]), use_bias=False)

    def kernel(a):
        a = a.T if transposed else a
        return a if perm is None else a[perm]
    reader.weight(index, "kernel", weight.key, kernel)
    return reader.derive(node, value, perm=None)


def _weights(reader, node, args, names):
    """The weight Values of ``args`` (None where absent), refusing computed tensors in a weight's place."""
    out = []
    for arg, name in zip(args, names):
        kind = _operand(reader, arg) if arg is not None else None
        if arg is not None and (kind is None or kind[0] != "weight" or kind[1].transposed):
            raise ConversionError(f"{describe(node)} (node {node.name}): its {name} must be a tensor the module holds "
                                  "(an nn.Parameter or buffer), not one computed in forward")
        out.append(None if arg is None else kind[1])
    return out


def functional_linear(reader, node):
    """``F.linear(x, self.w, self.b)``: a Dense."""
    args = list(node.args) + [node.kwargs.get(k) for k in ("weight", "bias")[len(node.args) - 1:]]
    weight, bias = _weights(reader, node, args[1:3], ("weight", "bias"))
    module = types.SimpleNamespace(out_features=weight.shape[0], bias=bias,
                                   state_keys={"weight": weight.key, "bias": getattr(bias, "key", None)})
    return _ops.linear(reader, node, module, reader.values[args[0]])


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def functional_conv(reader, node):
    """``F.conv2d(x, self.w, self.b, stride, padding, dilation, groups)``: a Conv2D (``F.conv1d``: its 1-D twin)."""
    args = dict(zip(_CONV_ARGS, node.args))
    args.update(node.kwargs)
    weight, bias = _weights(reader, node, [args["weight"], args.get("bias")], ("weight", "bias"))
    padding = args.get("padding", 0)
    if node.target is F.conv1d:
        module = types.SimpleNamespace(
            padding_mode="zeros", kernel_size=weight.shape[2], dilation=args.get("dilation", 1), padding=padding,
            stride=args.get("stride", 1), out_channels=weight.shape[0], groups=args.get("groups", 1), bias=bias,
            state_keys={"weight": weight.key, "bias": getattr(bias, "key", None)})
        return _ops.conv1d(reader, node, module, reader.values[args["input"]])
    module = types.SimpleNamespace(
        padding_mode="zeros", kernel_size=tuple(weight.shape[2:]), dilation=nn.pair(args.get("dilation", 1),
                                                                                      "dilation"),
        padding=padding if isinstance(padding, str) else nn.pair(padding, "padding"),
        stride=nn.pair(args.get("stride", 1), "stride"), out_channels=weight.shape[0],
        groups=args.get("groups", 1), bias=bias, state_keys={"weight": weight.key, "bias": getattr(bias, "key", None)})
    return _ops.conv2d(reader, node, module, reader.values[args["input"]])


def transpose_weight(reader, node, value):
    """``self.w.t()`` / ``self.w.T``: the same weight, read transposed."""
    if len(value.shape) != 2:
        raise ConversionError(f"{describe(node)} (node {node.name}): only 2-D weights may be transposed")
    return Value("weight", value.shape[::-1], value.end, dtype=value.dtype, key=value.key,
                 transposed=not value.transposed)


_ZEROS = (torch.zeros, torch.zeros_like)
_KEEPS = ("to", "cuda", "cpu", "float", "detach", "requires_grad_", "contiguous", "type_as", "clone")


def zeros(reader, node):
    """An all-zero tensor made in forward (an initial state ``torch.zeros(layers, x.size(0), hidden)``), or None."""
    args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    made = node.target in _ZEROS or (node.op == "call_method" and node.target == "new_zeros")
    kept = node.op == "call_method" and node.target in _KEEPS and args and (
        reader.values.get(args[0]) is not None and reader.values[args[0]].kind == "zeros")
    if not (made or kept):
        return None
    meta = node.meta["tensor_meta"]
    return Value("zeros", tuple(meta.shape), len(reader.specs), dtype=meta.dtype)


def convert(reader, node):
    """The Value of an op reading a weight or a number, or None if it is not one handled here."""
    target, args = node.target, list(node.args)
    made = zeros(reader, node)
    if made is not None:
        return made
    if node.op == "call_method":
        if target in _ARITH_METHODS:
            return arithmetic(reader, node, _ARITH_METHODS[target], args[:2] + [node.kwargs.get("other")][:2 - len(
                args)])
        if target in ("matmul", "mm"):
            return matmul(reader, node, args)
        first = reader.values.get(args[0]) if args and isinstance(args[0], torch.fx.Node) else None
        if first is not None and first.kind == "weight" and (
                target == "t" or (target in ("transpose", "permute") and sorted(args[1:3]) in ([0, 1], [-1, 0],
                                                                                             [-2, -1]))):
            return transpose_weight(reader, node, first)
        return None
    if target in _ARITH:
        other = node.kwargs.get("other")
        return arithmetic(reader, node, _ARITH[target], args[:2] if len(args) >= 2 else args + [other])
    if target in _MATMULS:
        return matmul(reader, node, args)
    if target is F.linear:
        return functional_linear(reader, node)
    if target in (F.conv2d, F.conv1d):
        return functional_conv(reader, node)
    if target is builtins.getattr and args[1] in ("T", "mT") and reader.values.get(args[0]) is not None and (
            reader.values[args[0]].kind == "weight"):
        return transpose_weight(reader, node, reader.values[args[0]])
    return None
