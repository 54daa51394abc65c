"""Read a ``torch.export`` program (read by ``_pt2`` without unpickling) into a funcdl model.

Each ATen node of the program's graph is handed to the same converters ``from_torch`` uses
(``interop.pytorch._ops``), through a small stand-in of the fx node and module they read: the
op's arguments come from the serialised graph, its weights from the program's state dict, its
output shape from the graph's tensor metadata. Layers are named by the torch module that owns
the weights (``layer1.0.conv1``, from the parameter's name) or by the ATen node (``relu_3``). An
unsupported op names itself, the node and the source line torch recorded. Imported only once
torch is (the converters build on it).
"""
import re
import types

import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.errors import ConversionError
from interop.pytorch import _ops, _params
from interop.pytorch._nodes import Value
from interop.pytorch._trace import Reader

_ACTIVATION_ARGS = ("dim", "negative_slope", "approximate", "beta", "threshold", "alpha")
_RESHAPES = ("view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze", "view_copy")
_IDENTITIES = ("clone", "contiguous", "alias", "detach", "dropout", "feature_dropout", "alpha_dropout",
               "feature_alpha_dropout", "lift_fresh_copy")
_OTHERS = ("_softmax", "_log_softmax", "permute", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d",
           "max_pool1d", "avg_pool1d", "adaptive_avg_pool1d", "transpose", "t", "upsample_nearest2d",
           "upsample_bilinear2d", "pixel_shuffle", "constant_pad_nd", "pad", "adaptive_max_pool2d",
           "adaptive_avg_pool2d", "_adaptive_avg_pool2d")
_HARD = ("hardswish", "hardswish_", "hardtanh", "hardtanh_")
_ARITH = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul", "div": "div",
          "div_": "div", "true_divide": "div", "rsub": "rsub"}
_ATEN_ACTIVATIONS = {"hardsigmoid": "hard_sigmoid"}  # ATen name -> funcdl's, where they differ
_ZEROS = ("zeros", "new_zeros", "zeros_like", "full", "new_full")
_NOTHING = object()  # an op with no effect on the converted model (a metadata check)
_RECURRENT_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN_TANH", "rnn_relu": "RNN_RELU"}
_MERGES = {"add": nn.Add, "add_": nn.Add, "sub": nn.Subtract, "sub_": nn.Subtract, "mul": nn.Multiply,
           "mul_": nn.Multiply, "maximum": nn.Maximum, "minimum": nn.Minimum}



class _Ref(str):
    """A tensor argument: the name of a graph value."""


class _Weight:
    """A parameter, buffer or constant of the program (``transposed`` after ``t``/``permute([1, 0])``)."""

    def __init__(self, fqn, array, transposed=False):
        self.fqn, self.array, self.transposed = fqn, array, transposed


def _decode(arg):
    """The Python value of one serialised argument (tensors as ``_Ref``)."""
    if not isinstance(arg, dict) or len(arg) != 1:
        raise ConversionError(f"an argument {str(arg)[:80]} is not in torch's serialised form")
    kind, value = next(iter(arg.items()))
    if kind == "as_tensor":
        return _Ref(value["name"])
    if kind == "as_tensors":
        return [_Ref(item["name"]) for item in value]
    if kind == "as_none":
        return None
    if kind in ("as_int", "as_ints", "as_float", "as_floats", "as_bool", "as_bools", "as_string", "as_device",
                "as_scalar_type", "as_layout", "as_memory_format"):  # the last four: options no converter reads
        return value
    if kind == "as_sym_int":
        return value.get("as_int", -1) if isinstance(value, dict) else -1
    if kind == "as_sym_ints":
        return [v.get("as_int", -1) if isinstance(v, dict) else -1 for v in value]
    raise ConversionError(f"arguments of kind {kind} are not supported")


def _sizes(meta):
    """A tensor's shape from its serialised metadata (a symbolic size, e.g. a dynamic batch, as -1)."""
    return tuple(size.get("as_int", -1) if isinstance(size, dict) else -1 for size in meta.get("sizes", []))


class _Stand:
    """The face of an fx node the converters read: name, target (the layer's name), shape."""

    def __init__(self, name, target, shape, dtype):
        self.name, self.target, self.op = name, target, "call_module"
        self.meta = {"tensor_meta": types.SimpleNamespace(shape=shape, dtype=dtype)}
        self.args, self.kwargs = (None,), {}


class ExportedReader:
    """Walks the ATen nodes of one exported program, emitting funcdl layers through a ``_trace.Reader``."""

    def __init__(self, program):
        self.program = program
        self.graph = program.graph
        self.aliases = {}  # the converters' weight keys (``<layer>.weight``) -> arrays
        self.reader = Reader(None, self.aliases)
        self.weights = {}  # placeholder name -> _Weight
        self.used = set()  # fqns of weights an op took

    def run(self):
        """(input shape (funcdl), dtype) after converting every node; the reader holds the layers."""
        tensors = self.program.tensors
        mutated = [spec.name for spec in self.graph.output_specs if spec.kind == "buffer_mutation"]
        if mutated:
            raise ConversionError(f"the program updates buffers ({', '.join(mutated[:3])}): it was exported in "
                                  "training mode; call module.eval() before torch.export")
        user = []
        for spec in self.graph.input_specs:
            if spec.kind == "user_input":
                user.append(spec.name)
            elif spec.kind in ("parameter", "buffer", "tensor_constant", "constant_tensor") and spec.target in tensors:
                self.weights[spec.name] = _Weight(spec.target, tensors[spec.target])
            else:
                raise ConversionError(f"the program takes a {spec.kind} input ({spec.name}); funcdl converts "
                                      "programs whose inputs are tensors and the module's weights")
        if not user:
            raise ConversionError("the program takes no tensor input")
        sources = [self._source(ref, len(user) > 1) for ref in user]
        if len(sources) > 1:
            self.reader.sources = sources
        self.users = {}  # value name -> how many nodes (and outputs) read it
        for node in self.graph.nodes:
            for item in node.inputs:
                arg = _decode_lenient(item["arg"])
                for ref in arg if isinstance(arg, list) else [arg]:
                    if isinstance(ref, _Ref):
                        self.users[ref] = self.users.get(ref, 0) + 1
        for spec in self.graph.output_specs:
            self.users[spec.name] = self.users.get(spec.name, 0) + 1
        for node in self.graph.nodes:
            self._node(node)
        self._finish()
        if len(sources) > 1:
            return tuple(shape for _, shape, _ in sources), tuple(kind for _, _, kind in sources)
        return sources[0][1], sources[0][2]

    def _source(self, ref, several):
        """(funcdl input name, funcdl shape, dtype) of the user input ``ref``, whose Value it records."""
        meta = self.graph.tensor_values.get(ref, {})
        shape = _sizes(meta)
        if len(shape) < 2 or -1 in shape[1:]:
            raise ConversionError(f"the program's input {ref} has shape {shape}; funcdl needs every size but the "
                                  "batch")
        dtype = jnp.int32 if meta.get("dtype") in (3, 4, 5) else jnp.float32
        name = "in_" + re.sub(r"[^A-Za-z0-9_]", "_", ref)[:100] if several else "input"
        self.reader.values[ref] = Value("tensor", shape, 0, "nchw" if len(shape) == 4 else "plain", dtype=dtype,
                                        ref=name)
        return name, (shape[2], shape[3], shape[1]) if len(shape) == 4 else shape[1:], dtype

    def _finish(self):
        refs = []
        for spec in self.graph.output_specs:
            if spec.kind != "user_output":
                raise ConversionError(f"the program has a {spec.kind} output ({spec.name}); export the module in "
                                      "eval mode (module.eval() before torch.export)")
            value = self.reader.values.get(spec.name)
            if value is not None and value.kind == "tensor":
                value = self.reader.torch_order(self.reader.take(self.reader.node, value))
            if value is None or value.kind != "tensor" or value.perm is not None:
                raise ConversionError(f"the program's output {spec.name} is not a tensor funcdl computes in torch's "
                                      "order (end with a Linear after flattening an image)")
            refs.append(value.ref)
        self.reader.outputs = refs[0] if len(refs) == 1 else tuple(refs)
        unused = sorted(w.fqn for w in self.weights.values() if w.fqn not in self.used
                        and not w.fqn.endswith("num_batches_tracked"))
        if unused:
            raise ConversionError(f"the program holds tensors its graph never uses: {unused[:4]}")

    def _node(self, node):
        op = node.target.rsplit(".", 2)
        base = op[-2] if len(op) >= 3 and node.target.startswith("torch.ops.aten.") else node.target
        args = {item["name"]: _decode(item["arg"]) for item in node.inputs}
        outputs = [_decode(out) for out in node.outputs]
        first = outputs[0] if outputs else None
        name = first[0] if isinstance(first, list) else first
        try:
            result = self._convert(base, node, args, name)
        except ConversionError as err:
            raise ConversionError(f"node {node.name} ({node.target}){self._where(node)}: {err}") from None
        if result is None:
            where = self._where(node)
            raise ConversionError(f"unsupported ATen op {node.target} (node {node.name}){where}; `funcdl convert "
                                  "--list-supported` lists the ops that convert")
        if isinstance(result, _Weight):
            self.weights[name] = result
        elif isinstance(result, Value):
            self.reader.values[name] = result

    @staticmethod
    def _where(node):
        return f" at {node.source}" if node.source else ""

    # -- operands ----------------------------------------------------------------------------------------------
    def _value(self, ref):
        if ref not in self.reader.values:
            raise ConversionError(f"operand {ref} is a weight or constant where a computed tensor is expected")
        return self.reader.values[ref]

    def _weight(self, ref, transposed=False):
        if ref is None:
            return None
        weight = self.weights.get(ref)
        if weight is None or weight.transposed != transposed:
            raise ConversionError(f"operand {ref} is not a weight of the program (funcdl converts layers whose "
                                  "weights are the module's parameters)")
        if weight.fqn in self.used:
            raise ConversionError(f"weight {weight.fqn} is used twice (shared weights); funcdl layers own their "
                                  "weights")
        self.used.add(weight.fqn)
        return weight

    def _stand(self, node, name, weights, suffixes):
        """The stand-in node, named by the weights' module; registers the weights under the converters' keys."""
        present = [(w, s) for w, s in zip(weights, suffixes) if w is not None]
        prefix = present[0][0].fqn.rsplit(".", 1)[0] if present and "." in present[0][0].fqn else None
        if prefix is None or any(w.fqn != f"{prefix}.{s}" for w, s in present):
            prefix = node.name
        meta = self.graph.tensor_values.get(name, {})
        stand = _Stand(node.name, prefix, _sizes(meta), meta.get("dtype"))
        for weight, suffix in present:
            self.aliases[f"{prefix}.{suffix}"] = np.ascontiguousarray(weight.array)  # torch's layout, as stored
        self.reader.node = stand
        return stand

    # -- the ops ----------------------------------------------------------------------------------------------
    def _convert(self, base, node, args, name):
        """The Value (or transposed weight) the op computes, or None if unsupported."""
        if base.endswith("_") and args.get("self") in self.weights:
            raise ConversionError(f"it updates {self.weights[args['self']].fqn} in place: the program was exported "
                                  "in training mode; call module.eval() before torch.export")
        if base in _ARITH:
            result = self._arithmetic(base, node, args, name)
            if result is not None:
                return result
        if base in _ZEROS or (base in ("to", "_to_copy", "clone") and getattr(
                self.reader.values.get(args.get("self")), "kind", None) == "zeros"):
            return self._zeros(args, name)
        if base == "_assert_tensor_metadata":
            return _NOTHING
        if base in _RECURRENT_OPS:
            return self._recurrent(base, node, args, name)
        if base == "slice" and getattr(self.reader.values.get(args.get("self")), "kind", None) == "state":
            value = self.reader.values[args["self"]]
            start, end, size = args.get("start") or 0, args.get("end"), value.shape[0]
            if args.get("dim", 0) == 0 and args.get("step", 1) == 1 and (end is None or end >= size):
                return _ops.getitem(self.reader, self._stand(node, name, [], []), value, slice(start, None))
        if base == "select" and args.get("self") in self.reader.values:
            value = self.reader.values[args["self"]]
            index = (slice(None),) * int(args["dim"] % max(len(value.shape), 1)) + (int(args["index"]),)
            return _ops.getitem(self.reader, self._stand(node, name, [], []), value, index[0] if len(index) == 1
                                else index)
        if base in ("matmul", "mm") and args.get("self") in self.reader.values:
            other = self.weights.get(args.get("other", args.get("mat2")))
            if other is not None and other.transposed and base == "matmul":  # x @ w.t(): a Linear
                return self._addmm(node, {"self": args["self"], "mat2": args["other"]}, name)
            if other is not None and not other.transposed:
                weight = self._weight(args.get("other", args.get("mat2")))
                stand = self._stand(node, name, [], [])
                return _params.dense(self.reader, stand, self.reader.values[args["self"]], self._as_value(weight))
        for kind, handler in (("conv2d", self._conv), ("conv1d", self._conv), ("convolution", self._conv),
                              ("embedding", self._embedding), ("linear", self._linear),
                              ("addmm", self._addmm), ("mm", self._addmm), ("batch_norm", self._batch_norm),
                              ("_native_batch_norm_legit_no_training", self._batch_norm),
                              ("cat", self._cat), ("mean", self._mean)):
            if base == kind:
                return handler(node, args, name)
        if base in ("t", "permute") and args.get("self") in self.weights:
            weight = self.weights[args["self"]]
            if base == "permute" and list(args.get("dims", [])) not in ([1, 0], [-1, -2], [1, -2], [-1, 0]):
                return None
            return _Weight(weight.fqn, weight.array, not weight.transposed)
        activation = _ATEN_ACTIVATIONS.get(base.rstrip("_"), base.rstrip("_"))
        simple = (activation in nn.ACTIVATIONS or base in _RESHAPES + _IDENTITIES + _OTHERS + _HARD
                  or base in _MERGES)
        if not simple:
            return None
        value = self._value(args.get("self", args.get("input")))
        stand = self._stand(node, name, [], [])
        return self._simple(base, stand, value, args)

    def _simple(self, base, stand, value, args):
        reader = self.reader
        if value.kind == "directions":  # h_n[-2:] then permute / contiguous / reshape
            kind = "permute" if base in ("permute", "transpose") else "reshape" if base in _RESHAPES else "identity"
            return _ops.directions(reader, stand, value, kind, args)
        if base in ("hardswish", "hardswish_"):
            return _ops.activation_call("hard_swish", reader, stand, value, {})
        if base in ("hardtanh", "hardtanh_") and (args.get("min_val"), args.get("max_val")) == (0.0, 6.0):
            return _ops.activation_call("relu6", reader, stand, value, {})
        kind = _ATEN_ACTIVATIONS.get(base.rstrip("_"), base.rstrip("_"))
        if kind in nn.ACTIVATIONS:
            if args.get("scale", 1) != 1 or args.get("input_scale", 1) != 1:
                return None  # elu with scales (selu's own decomposition): not torch's ELU
            options = {k: args[k] for k in _ACTIVATION_ARGS if args.get(k) is not None}
            return _ops.activation_call(kind, reader, stand, value, options)
        if base in ("_softmax", "_log_softmax"):
            return _ops.activation_call(base[1:], reader, stand, value, {"dim": args["dim"]})
        if base in _RESHAPES:
            return _ops.reshape(reader, stand, value)
        if base in _IDENTITIES:
            if args.get("train"):
                raise ConversionError("dropout in training mode; export the module in eval mode")
            return _ops.identity(reader, stand, value)
        if base == "permute":
            return _ops.permute(reader, stand, value, tuple(args["dims"]))
        if base in ("max_pool2d", "max_pool2d_with_indices"):
            return _ops.max_pool(reader, stand, value, _pair(args["kernel_size"]), _pair(args.get("stride")),
                                 _pair(args.get("padding", 0)), _pair(args.get("dilation", 1)),
                                 bool(args.get("ceil_mode", False)))
        if base == "avg_pool2d":
            return _ops.avg_pool(reader, stand, value, _pair(args["kernel_size"]), _pair(args.get("stride")),
                                 _pair(args.get("padding", 0)), bool(args.get("ceil_mode", False)),
                                 args.get("count_include_pad", True), args.get("divisor_override"))
        if base in ("max_pool1d", "avg_pool1d"):
            return _ops.pool1d(reader, stand, value, _pair(args["kernel_size"]), _pair(args.get("stride")),
                               _pair(args.get("padding", 0)), _pair(args.get("dilation", 1)) or 1,
                               bool(args.get("ceil_mode", False)),
                               count_include_pad=args.get("count_include_pad", True), is_max=base == "max_pool1d")
        if base == "adaptive_avg_pool1d":
            return _ops.adaptive_pool1d(reader, stand, value, _pair(args["output_size"]))
        if base in ("upsample_nearest2d", "upsample_bilinear2d"):
            return _ops.upsample(reader, stand, value, mode=base[9:-2], align_corners=args.get("align_corners"))
        if base == "pixel_shuffle":
            return _ops.pixel_shuffle(reader, stand, value, args["upscale_factor"])
        if base in ("constant_pad_nd", "pad"):
            return _ops.pad(reader, stand, value, args["pad"], args.get("mode", "constant"), args.get("value"))
        if base == "adaptive_max_pool2d":
            return _ops.adaptive_pool(reader, stand, value, _pair(args["output_size"]), is_max=True)
        if base in ("transpose", "t"):
            return _ops.transpose(reader, stand, value, args.get("dim0", 0), args.get("dim1", 1))
        if base in ("adaptive_avg_pool2d", "_adaptive_avg_pool2d"):
            return _ops.adaptive_pool(reader, stand, value, _pair(args["output_size"]))
        if base in _MERGES:
            return self._merge(base, stand, value, args)
        return None

    def _merge(self, base, stand, value, args):
        other = args.get("other")
        if not isinstance(other, _Ref) or other not in self.reader.values or args.get("alpha", 1) != 1:
            raise ConversionError(f"{base} with a constant, a weight or alpha is not supported; {base} is supported "
                                  "between two tensors computed from the input")
        values = _ops.check_merge(self.reader, stand, [value, self.reader.values[other]], base.rstrip("_"))
        self.reader.emit(_MERGES[base], inputs=[v.ref for v in values])
        return self.reader.derive(stand, value)

    def _zeros(self, args, name):
        """An all-zero tensor (``zeros``, ``new_zeros``, ``full(.., 0)``): a recurrent layer's initial state only."""
        if args.get("fill_value", 0) != 0:
            return None
        return Value("zeros", _sizes(self.graph.tensor_values.get(name, {})), len(self.reader.specs))

    def _recurrent(self, base, node, args, name):
        """aten.lstm / gru / rnn_tanh / rnn_relu with zero initial states: what ``from_torch`` makes of nn.LSTM."""
        states = args.get("hx")
        for ref in states if isinstance(states, list) else [states]:
            if getattr(self.reader.values.get(ref), "kind", None) != "zeros":
                raise ConversionError(f"{base} gets an initial state that is not zeros; funcdl's recurrent layers "
                                      "start from zeros")
        if args.get("train"):
            raise ConversionError(f"{base} in training mode; export the module in eval mode (module.eval())")
        layers, bidirectional, biases = int(args["num_layers"]), bool(args["bidirectional"]), bool(args["has_biases"])
        names = [f"{kind}_{io}_l{k}{'_reverse' if d else ''}" for k in range(layers) for d in range(
            1 + bidirectional) for kind, io in (("weight", "ih"), ("weight", "hh"), ("bias", "ih"), ("bias", "hh"))
                 if biases or kind == "weight"]
        weights = [self._weight(ref) for ref in args["params"]]
        if len(weights) != len(names):
            raise ConversionError(f"{base} holds {len(weights)} tensors, expected {len(names)}")
        stand = self._stand(node, name, weights, names)
        hidden = weights[1].array.shape[1]
        module = types.SimpleNamespace(
            mode=_RECURRENT_OPS[base], nonlinearity="relu" if base == "rnn_relu" else "tanh", num_layers=layers,
            bidirectional=bidirectional, batch_first=bool(args["batch_first"]), dropout=float(args["dropout"]),
            bias=biases, hidden_size=hidden, proj_size=0)
        value = _ops.recurrent(self.reader, stand, module, self._value(args["input"]))
        outputs = [_decode(out) for out in node.outputs]
        meta = self.graph.tensor_values
        out_stand = _Stand(node.name, stand.target, _sizes(meta.get(outputs[0], {})), None)
        for ref in outputs[1:2]:  # h_n (c_n has no funcdl equivalent)
            state_stand = _Stand(node.name, stand.target, _sizes(meta.get(ref, {})), None)
            state = _ops.getitem(self.reader, state_stand, value, 1)
            self.reader.values[ref] = state if state.kind == "state" else _ops.getitem(
                self.reader, state_stand, state, 0)
        return _ops.getitem(self.reader, out_stand, value, 0)

    def _as_value(self, weight):
        """A weight Value the shared converters read (its array under its fqn in the reader's state dict)."""
        self.aliases[weight.fqn] = np.ascontiguousarray(weight.array)
        return Value("weight", tuple(weight.array.shape), len(self.reader.specs), key=weight.fqn)

    def _arithmetic(self, base, node, args, name):
        """x (op) w / x (op) number (``_params.combine``); None when both operands are computed tensors."""
        left, right = args.get("self"), args.get("other")
        if args.get("alpha", 1) != 1 or args.get("rounding_mode") is not None:
            return None
        op = _ARITH[base]
        if op == "rsub":  # other - self
            op, left, right = "sub", right, left
        values = self.reader.values
        if isinstance(left, _Ref) and left in values and isinstance(right, _Ref) and right in values:
            return None
        first = isinstance(left, _Ref) and left in values
        tensor, other = (left, right) if first else (right, left)
        if not (isinstance(tensor, _Ref) and tensor in values):
            return None
        if isinstance(other, _Ref) and other in self.weights:
            operand = ("weight", self._as_value(self._weight(other)))
        elif isinstance(other, (int, float)) and not isinstance(other, bool):
            operand = ("number", float(other))
        else:
            return None
        stand = self._stand(node, name, [], [])
        return _params.combine(self.reader, stand, op, values[tensor], operand, first, self.users.get(tensor) == 1)

    def _cat(self, node, args, name):
        values = [self._value(ref) for ref in args["tensors"]]
        stand = self._stand(node, name, [], [])
        values = _ops.check_merge(self.reader, stand, values, "concatenation")
        axis = _ops._axis(values[0], args.get("dim", 0))
        if axis == -len(values[0].shape):
            raise ConversionError("concatenating along the batch axis is not supported")
        if len(values) > 1:
            self.reader.emit(nn.Concatenate, inputs=[v.ref for v in values], axis=axis)
        return self.reader.derive(stand, values[0])

    def _mean(self, node, args, name):
        value = self._value(args["self"])
        dims = sorted(d % len(value.shape) for d in args.get("dim") or [])
        stand = self._stand(node, name, [], [])
        if value.layout != "nchw" or dims != [2, 3]:
            raise ConversionError(f"mean over dims {args.get('dim')} of shape {value.shape}: only the mean over H "
                                  "and W of an NCHW image is supported")
        value = self.reader.take(stand, value)
        keep = bool(args.get("keepdim", False))
        self.reader.emit(nn.GlobalAveragePooling2D, keepdims=keep)
        return self.reader.derive(stand, value, layout="nchw" if keep else "plain")

    def _conv(self, node, args, name):
        if args.get("transposed"):
            raise ConversionError("transposed convolution is not supported")
        weight = self._weight(args["weight"])
        if weight.array.ndim not in (3, 4):
            raise ConversionError(f"a {weight.array.ndim - 2}-D convolution is not supported (Conv1d, Conv2d only)")
        bias = self._weight(args.get("bias"))
        stand = self._stand(node, name, [weight, bias], ["weight", "bias"])
        padding = args.get("padding", 0)
        if weight.array.ndim == 3:
            module = types.SimpleNamespace(
                padding_mode="zeros", kernel_size=weight.array.shape[2], dilation=_pair(args.get("dilation")) or 1,
                padding=padding if isinstance(padding, str) else _pair(padding) or 0,
                stride=_pair(args.get("stride")) or 1, out_channels=weight.array.shape[0],
                groups=args.get("groups", 1), bias=bias)
            return _ops.conv1d(self.reader, stand, module, self._value(args["input"]))
        module = types.SimpleNamespace(
            padding_mode="zeros", kernel_size=tuple(weight.array.shape[2:]),
            dilation=nn.pair(_pair(args.get("dilation")) or 1, "dilation"),
            padding=padding if isinstance(padding, str) else nn.pair(_pair(padding) or 0, "padding"),
            stride=nn.pair(_pair(args.get("stride")) or 1, "stride"),
            out_channels=weight.array.shape[0], groups=args.get("groups", 1), bias=bias)
        return _ops.conv2d(self.reader, stand, module, self._value(args["input"]))

    def _embedding(self, node, args, name):
        weight = self._weight(args["weight"])
        stand = self._stand(node, name, [weight], ["weight"])
        module = types.SimpleNamespace(max_norm=None, scale_grad_by_freq=bool(args.get("scale_grad_by_freq")),
                                       num_embeddings=weight.array.shape[0], embedding_dim=weight.array.shape[1])
        return _ops.embedding(self.reader, stand, module, self._value(args["indices"]))

    def _linear(self, node, args, name):
        weight, bias = self._weight(args["weight"]), self._weight(args.get("bias"))
        stand = self._stand(node, name, [weight, bias], ["weight", "bias"])
        module = types.SimpleNamespace(out_features=weight.array.shape[0], bias=bias)
        return _ops.linear(self.reader, stand, module, self._value(args["input"]))

    def _addmm(self, node, args, name):
        if args.get("beta", 1) != 1 or args.get("alpha", 1) != 1:
            raise ConversionError("addmm with beta or alpha is not supported")
        weight = self._weight(args["mat2"], transposed=True)
        bias = self._weight(args.get("self")) if "mat1" in args else None
        stand = self._stand(node, name, [weight, bias], ["weight", "bias"])
        module = types.SimpleNamespace(out_features=weight.array.shape[0], bias=bias)  # mat2 is weight.t()
        return _ops.linear(self.reader, stand, module, self._value(args.get("mat1", args.get("self"))))

    def _batch_norm(self, node, args, name):
        if args.get("training"):
            raise ConversionError("batch_norm in training mode; export the module in eval mode (module.eval())")
        names = ["weight", "bias", "running_mean", "running_var"]
        weights = [self._weight(args.get(key)) for key in names]
        if weights[2] is None or weights[3] is None:
            raise ConversionError("batch_norm without running statistics is not supported")
        stand = self._stand(node, name, weights, names)
        value = self._value(args["input"])
        module = types.SimpleNamespace(running_mean=weights[2], track_running_stats=True,
                                       momentum=args.get("momentum", 0.1), eps=args.get("eps", 1e-5),
                                       affine=weights[0] is not None, num_batches_tracked=None)
        if (weights[0] is None) != (weights[1] is None):
            raise ConversionError("batch_norm with a weight but no bias (or the reverse) is not supported")
        return _ops.batch_norm(self.reader, stand, module, value, image=len(value.shape) == 4)


def _decode_lenient(arg):
    """``_decode`` of an argument, or None for one it refuses (counting users must not fail first)."""
    try:
        return _decode(arg)
    except ConversionError:
        return None


def _pair(value):
    """An int or a pair of ints from an ATen int list ([] / None: None; [k]: k)."""
    if value is None or value == []:
        return None
    if isinstance(value, list):
        return value[0] if len(value) == 1 else tuple(value)
    return value


def read(program):
    """(ExportedReader after its run, funcdl input shape, dtype) of a ``_pt2.Pt2Program``."""
    exported = ExportedReader(program)
    input_shape, dtype = exported.run()
    return exported, input_shape, dtype
