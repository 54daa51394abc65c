"""Read a ``torch.nn.Module`` into a funcdl model by tracing its forward with ``torch.fx``.

Every node of the traced graph is mapped to funcdl layers (or to nothing, for
views that funcdl does not need) by ``interop.pytorch._ops``; anything else is
refused with a ConversionError naming it. Each funcdl layer is a graph node
named after the torch module (``layer1.0.conv1``) or the fx node (``add_1``)
it comes from. A forward that is one chain from its input to its one output
becomes a ``Sequential``; anything else (residual adds, concatenations,
branches, several outputs) a ``Graph``. Imported only once torch is.
"""
import contextlib
import dataclasses
import io
import re

import jax.numpy as jnp
import torch
from torch.fx.passes.shape_prop import ShapeProp

from funcdl import nn
from funcdl.errors import ConversionError, ShapeError
from interop.pytorch import _ops, _params
from interop.pytorch._modules import LEAVES
from interop.pytorch._nodes import Spec, Value, describe


def torch_array(tensor):
    """A numpy copy of a torch tensor (bfloat16 widened to float32)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.numpy().copy()


class Reader:
    """Maps a traced torch module, node by node, to funcdl layer specs and weight entries."""

    def __init__(self, module, state_dict):
        self.module = module
        self.state_dict = state_dict
        self.specs = []
        self.by_name = {}  # graph node name -> Spec
        self.cursor = "input"  # the reference the next emitted layer reads
        self.sources = None  # [(name, funcdl shape, dtype)] of a program with several inputs
        self.node = None  # the fx node being converted (names the layers it emits)
        # (collection, layer index, name, torch key or None, fn(torch array) -> funcdl array)
        self.entries = []
        self.values = {}
        self.called = {}
        self.ignored = set()  # state-dict keys deliberately not carried over

    # -- bookkeeping ---------------------------------------------------------------------------
    def emit(self, cls, inputs=None, **kwargs):
        """Append a layer reading ``inputs`` (default: the cursor, i.e. the value last taken or emitted)."""
        name = self._fresh()
        spec = Spec(cls, kwargs, name, tuple(inputs) if inputs is not None else (self.cursor,))
        self.specs.append(spec)
        self.by_name[name] = spec
        self.cursor = name
        return len(self.specs) - 1

    def _fresh(self):
        """A new node name: the torch module's path (or the fx node's name), made unique."""
        node = self.node
        base = node.target if node is not None and node.op == "call_module" else getattr(node, "name", "layer")
        base = re.sub(r"[^A-Za-z0-9_.\-]", "_", str(base))[:150]
        if not re.match(r"[A-Za-z0-9_]", base) or base == "params" or base.startswith("__"):
            base = "n_" + base
        name, k = base, 0
        taken = {"input"} | {source[0] for source in self.sources or ()}
        while name in self.by_name or name in taken:
            k += 1
            name = f"{base}_{k}"
        return name

    def consumers(self, ref):
        """How many layers read the node ``ref``."""
        return sum(1 for spec in self.specs for r in spec.inputs if nn.parse_ref(r)[0] == ref)

    def weight(self, index, name, key, fn=None, collection="params"):
        self.entries.append((collection, index, name, key, fn or (lambda a: a)))

    def take(self, node, value, pad_ok=False):
        """Check that ``value`` is the head of the chain before ``node`` consumes it."""
        if value.kind == "weight":
            raise ConversionError(f"{node.name} ({describe(node)}) reads the tensor self.{value.key} where funcdl "
                                  "needs one computed from the input; supported: x @ self.w, F.linear(x, self.w, "
                                  "self.b), F.conv2d(x, self.w, ...), x * self.scale + self.shift (a number or one "
                                  "per channel)")
        if value.kind == "zeros":
            raise ConversionError(f"{node.name} ({describe(node)}) uses a zero tensor made in forward; funcdl supports "
                                  "one only as the initial state of an LSTM/GRU/RNN")
        if value.kind != "tensor":
            raise ConversionError(f"{node.name} ({describe(node)}) gets a tuple; take out[0] / out[:, -1] / h_n[-1] of "
                                  "an LSTM/GRU/RNN first")
        self.cursor = value.ref
        if value.pad is not None and not pad_ok:  # not merged into a conv / pool: a layer of its own
            if value.pad_value != 0.0:
                raise ConversionError(f"{node.name} ({describe(node)}) follows padding with {value.pad_value}, which "
                                      "only MaxPool2d may follow (funcdl pads with zeros elsewhere)")
            top, bottom, left, right = value.pad
            self.emit(nn.ZeroPadding2D, inputs=(value.ref,), padding=((top, bottom), (left, right)))
            value = dataclasses.replace(value, pad=None, ref=self.cursor)
        return value

    def derive(self, node, value, **changes):
        meta = node.meta["tensor_meta"]
        fields = dict(kind="tensor", shape=tuple(meta.shape), end=len(self.specs), layout=value.layout,
                      perm=value.perm, dtype=meta.dtype, pad=None, ref=self.cursor)
        fields.update(changes)
        return Value(**fields)

    def input_value(self, node):
        inputs = [n for n in node.all_input_nodes if "tensor_meta" in n.meta and getattr(
            self.values.get(n), "kind", None) != "zeros"]
        if len(inputs) != 1:
            raise ConversionError(f"{node.name} ({describe(node)}) takes {len(inputs)} tensors; it is supported with "
                                  "one (extra inputs and initial states are not)")
        return self.values[inputs[0]]

    # -- the walk ------------------------------------------------------------------------------
    def run(self, graph, example):
        wanted = _ancestors(graph)
        for node in graph.nodes:
            if node not in wanted:
                continue
            if node.op == "placeholder":
                if self.values:
                    raise ConversionError("forward takes more than one input; funcdl models take one")
                layout = "nchw" if example.ndim == 4 else "plain"
                self.values[node] = Value("tensor", tuple(example.shape), 0, layout, dtype=example.dtype)
            elif node.op == "output":
                return self.finish(node)
            elif node.op == "get_attr":
                self.values[node] = self.constant(node)
            elif "tensor_meta" in node.meta:
                try:
                    self.values[node] = self.convert(node)
                except ConversionError as err:
                    raise ConversionError(f"{where(node)}{err}") from None
        raise ConversionError("the traced graph has no output")

    def constant(self, node):
        """A weight Value for ``self.<target>`` read in forward (a parameter, a buffer or an fx tensor constant)."""
        tensor = self.module
        for part in str(node.target).split("."):
            tensor = getattr(tensor, part)
        if not isinstance(tensor, torch.Tensor):
            raise ConversionError(f"{where(node)}forward reads self.{node.target}, which is not a tensor")
        self.state_dict.setdefault(node.target, tensor.detach())  # fx constants and non-persistent buffers
        return Value("weight", tuple(tensor.shape), len(self.specs), dtype=tensor.dtype, key=node.target)

    def torch_order(self, value):
        """An output ``value`` as torch returns it: (N, C, L) sequences are permuted back from funcdl's (N, L, C)."""
        if value.layout == "tb":
            raise ConversionError("forward returns a time-first (time, batch, ...) tensor; funcdl's outputs are "
                                  "batch-first: return out.permute(1, 0, 2) (or take out[-1])")
        if value.kind == "tensor" and value.layout == "ncl":
            self.emit(nn.Permute, inputs=(value.ref,), dims=(2, 1))
            value = dataclasses.replace(value, layout="plain", ref=self.cursor)
        return value

    def finish(self, node):
        """The output reference (one tensor) or tuple of them (a tuple or list of tensors)."""
        result = node.args[0]
        several = isinstance(result, (tuple, list))
        refs = []
        for item in result if several else (result,):
            if not hasattr(item, "op") or item not in self.values:
                raise ConversionError("forward must return a tensor or a tuple of tensors")
            value = self.take(node, self.values[item])
            self.node = node
            value = self.torch_order(value)
            if value.perm is not None:
                raise ConversionError("the model ends on a flattened NCHW activation; funcdl flattens NHWC images in "
                                      "(H, W, C) order: end with a Linear, or x.permute(0, 2, 3, 1) before flattening")
            refs.append(value.ref)
        self.outputs = tuple(refs) if several else refs[0]
        return self.outputs

    def is_chain(self):
        """Whether the layers form one chain from the input to the one output (a Sequential)."""
        previous = "input"
        for spec in self.specs:
            if spec.inputs != (previous,):
                return False
            previous = spec.name
        return self.outputs == previous

    def model(self, input_shape, dtype):
        """(funcdl model, the params key of each layer): a Sequential for a chain, else a Graph."""
        layers = [spec.cls(**spec.kwargs) for spec in self.specs]
        if self.is_chain() and not self.sources:
            return nn.Sequential(tuple(layers)), [f"layers_{i}" for i in range(len(layers))]
        nodes = [nn.Node(spec.name, layer, spec.inputs) for spec, layer in zip(self.specs, layers)]
        sources = self.sources or [("input", input_shape, dtype)]
        inputs = tuple(nn.Input(tuple(shape), name=name, dtype="int32" if kind == jnp.int32 else "float32")
                       for name, shape, kind in sources)
        return nn.Graph(inputs=inputs, nodes=tuple(nodes), outputs=self.outputs), [s.name for s in self.specs]

    def convert(self, node):
        self.node = node
        if node.op == "call_module":
            target = self.module.get_submodule(node.target)
            if node.target in self.called and any(True for _ in target.parameters()):
                raise ConversionError(f"module {node.target} is called twice (shared weights); funcdl layers own their "
                                      "weights")
            self.called[node.target] = True
            return _ops.convert_module(self, node, target)
        if node.op in ("call_function", "call_method"):
            value = _params.convert(self, node)
            if value is not None:
                return value
        if node.op == "call_function":
            return _ops.convert_function(self, node)
        return _ops.convert_method(self, node)


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def where(node):
    """``'<module path> (<class>), <file>:<line> `<code>`: '`` of an fx node, from what tracing recorded ('' if
    nothing)."""
    stack = node.meta.get("nn_module_stack") or {}
    parts = []
    if stack:
        path, (_, cls) = list(stack.items())[-1]
        parts.append(f"module {path} ({getattr(cls, '__name__', cls)})")
    frames = [m for m in _FRAME.finditer(node.stack_trace or "") if "/torch/" not in m.group(1)]
    if frames:
        file, line, _, code = frames[-1].groups()
        parts.append(f"{file.rsplit('/', 1)[-1]}:{line} `{code.strip()[:80]}`")
    return f"{', '.join(parts)}: " if parts else ""


def _ancestors(graph):
    """The nodes the output depends on (the rest is dead code, e.g. an unused c_n)."""
    output = next(n for n in graph.nodes if n.op == "output")
    seen, todo = set(), [output]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(node.all_input_nodes)
    return seen


def trace(module, example):
    """(gm, graph) of ``module`` traced by torch.fx, with shapes from running ``example`` (eval mode)."""
    class Tracer(torch.fx.Tracer):
        record_stack_traces = True  # so an unsupported call can name its source line

        def is_leaf_module(self, m, qualname):
            return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)

    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        try:
            graph = Tracer().trace(module)
        except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            if "'len' is not supported" in first:
                raise ConversionError(f"{type(module).__name__}.forward calls len() on a tensor, which torch.fx "
                                      "cannot trace; use x.size(0) / x.shape[0] instead") from None
            raise ConversionError(f"cannot trace {type(module).__name__}.forward with torch.fx ({first}); funcdl "
                                  "converts forwards without data-dependent control flow") from None
        for node in graph.nodes:
            if node.op == "call_module":
                _ops.check_module(module.get_submodule(node.target), node.target)
        gm = torch.fx.GraphModule(module, graph)
        try:
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints tracebacks
                ShapeProp(gm).propagate(example)
        except Exception as err:  # the module's own error on this input, whatever its type
            cause = err.__cause__ or err
            first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            raise ShapeError(f"{type(module).__name__} fails on the example input of shape "
                             f"{tuple(example.shape)}: {first}") from None
    finally:
        for m, mode in modes.items():
            m.training = mode
    return gm.graph


def read(module, example):
    """The Reader holding specs and weight entries for ``module`` run on ``example`` (a torch tensor)."""
    graph = trace(module, example)
    state_dict = module.state_dict()
    reader = Reader(module, state_dict)
    reader.run(graph, example)
    return reader
