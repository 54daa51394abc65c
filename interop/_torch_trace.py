"""Read a ``torch.nn.Module`` into a funcdl Sequential by tracing its forward with ``torch.fx``.

Every node of the traced graph is mapped to funcdl layers (or to nothing, for
views that funcdl does not need); anything else is refused with a ConfigError
naming it. The graph must be a single chain from the one input to the output.

Layouts: an activation torch holds as a 4-D NCHW image is held NHWC by funcdl
(``layout='nchw'``). Flattening it gives funcdl features in (H, W, C) order,
recorded as ``perm`` (funcdl feature j is torch feature ``perm[j]``) until a
Linear absorbs it by permuting its kernel rows (per-feature norms permute their
vectors on the way).
"""
import contextlib
import dataclasses
import io
import operator

import numpy as np

from funcdl import nn
from funcdl.errors import ConfigError, ShapeError

SUPPORTED = (
    "modules: Linear, Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d/AdaptiveMaxPool2d (output size dividing "
    "the input), BatchNorm1d, BatchNorm2d, LayerNorm, Dropout, Flatten, "
    "Unflatten, Embedding, LSTM, GRU, RNN (batch_first), ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax, "
    "GELU, Softplus, Identity, ZeroPad2d, Sequential/ModuleList and custom modules built from these; "
    "functions: F.relu, F.leaky_relu, torch.sigmoid, torch.tanh, torch.softmax, F.log_softmax, F.gelu, "
    "F.softplus, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg/max_pool2d, F.pad (zeros), torch.flatten, x.view/reshape/flatten/"
    "squeeze/unsqueeze/permute(0, 2, 3, 1), x.size(), out[:, -1] and h_n[-1] after LSTM/GRU/RNN")
RECURRENT = (nn.LSTM, nn.GRU, nn.SimpleRNN)
# Layers that act on each time step alone, so out[:, -1] may be taken before them.
_TIMEWISE = (nn.Dense, nn.Dropout, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus)


@dataclasses.dataclass
class Value:
    """What funcdl holds for one traced torch value."""
    kind: str  # 'tensor'; 'recurrent' (output, hidden) tuple; 'hidden' LSTM (h_n, c_n); 'state' h_n (L, B, H)
    shape: tuple  # torch's shape
    end: int  # number of funcdl layers applied when this value was made
    layout: str = "plain"  # 'nchw': torch NCHW, funcdl NHWC
    perm: object = None  # np.ndarray: funcdl feature j is torch feature perm[j]
    pad: tuple = None  # pending (top, bottom, left, right) padding from F.pad / ZeroPad2d
    pad_value: float = 0.0
    dtype: object = None
    rnn: tuple = None  # (cell, num_layers) of the recurrent module behind a tuple value


@dataclasses.dataclass
class Spec:
    """A funcdl layer to build: its class and settings (mutable until the end)."""
    cls: type
    kwargs: dict


def pair(value):
    """(a, b) from an int or a pair."""
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def flatten_perm(channels, height, width):
    """funcdl feature j of a flattened NHWC image is torch feature perm[j] of the NCHW one (None if equal)."""
    if channels == 1 or height * width == 1:
        return None
    return np.arange(channels * height * width).reshape(channels, height, width).transpose(1, 2, 0).reshape(-1)


def torch_array(tensor):
    """A numpy copy of a torch tensor (bfloat16 widened to float32)."""
    import torch
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
        # (collection, layer index, name, torch key or None, fn(torch array) -> funcdl array)
        self.entries = []
        self.values = {}
        self.called = {}
        self.ignored = set()  # state-dict keys deliberately not carried over

    # -- bookkeeping ---------------------------------------------------------------------------
    def emit(self, cls, **kwargs):
        self.specs.append(Spec(cls, kwargs))
        return len(self.specs) - 1

    def weight(self, index, name, key, fn=None, collection="params"):
        self.entries.append((collection, index, name, key, fn or (lambda a: a)))

    def take(self, node, value, pad_ok=False):
        """Check that ``value`` is the head of the chain before ``node`` consumes it."""
        if value.kind != "tensor":
            raise ConfigError(f"{node.name} ({describe(node)}) gets a tuple; take out[0] / out[:, -1] / h_n[-1] "
                              "of an LSTM/GRU/RNN first")
        if value.end != len(self.specs):
            raise ConfigError(f"{node.name} ({describe(node)}) uses a value from before other layers were applied; "
                              "funcdl converts single chains only (no branches or skip connections)")
        if value.pad is not None and not pad_ok:
            raise ConfigError(f"{node.name} ({describe(node)}) follows explicit padding; only Conv2d, MaxPool2d "
                              "and AvgPool2d may follow F.pad / ZeroPad2d")
        return value

    def derive(self, node, value, **changes):
        meta = node.meta["tensor_meta"]
        fields = dict(kind="tensor", shape=tuple(meta.shape), end=len(self.specs), layout=value.layout,
                      perm=value.perm, dtype=meta.dtype, pad=None)
        fields.update(changes)
        return Value(**fields)

    def input_value(self, node):
        inputs = [n for n in node.all_input_nodes if "tensor_meta" in n.meta]
        if len(inputs) != 1:
            raise ConfigError(f"{node.name} ({describe(node)}) takes {len(inputs)} tensors; funcdl converts "
                              "single chains with one input (no skip connections, extra inputs or initial states)")
        return self.values[inputs[0]]

    # -- the walk ------------------------------------------------------------------------------
    def run(self, graph, example):
        wanted = _ancestors(graph)
        for node in graph.nodes:
            if node not in wanted:
                continue
            if node.op == "placeholder":
                if self.values:
                    raise ConfigError("forward takes more than one input; funcdl models take one")
                layout = "nchw" if example.ndim == 4 else "plain"
                self.values[node] = Value("tensor", tuple(example.shape), 0, layout, dtype=example.dtype)
            elif node.op == "output":
                return self.finish(node)
            elif node.op == "get_attr":
                raise ConfigError(f"forward reads the tensor self.{node.target} directly; only supported modules "
                                  f"may hold weights ({SUPPORTED})")
            elif "tensor_meta" in node.meta:
                self.values[node] = self.convert(node)
        raise ConfigError("the traced graph has no output")

    def finish(self, node):
        result = node.args[0]
        if not hasattr(result, "op") or result not in self.values:
            raise ConfigError("forward must return one tensor")
        value = self.take(node, self.values[result])
        if value.perm is not None:
            raise ConfigError("the model ends on a flattened NCHW activation; funcdl flattens NHWC images in "
                              "(H, W, C) order: end with a Linear, or x.permute(0, 2, 3, 1) before flattening")
        return value

    def convert(self, node):
        from interop import _torch_ops
        if node.op == "call_module":
            target = self.module.get_submodule(node.target)
            if node.target in self.called and any(True for _ in target.parameters()):
                raise ConfigError(f"module {node.target} is called twice (shared weights); funcdl layers own "
                                  "their weights")
            self.called[node.target] = True
            return _torch_ops.convert_module(self, node, target)
        if node.op == "call_function":
            return _torch_ops.convert_function(self, node)
        return _torch_ops.convert_method(self, node)


def describe(node):
    """A readable name of what a node calls."""
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    if node.target is operator.getitem:
        return f"indexing {node.name}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"function {module + '.' if module else ''}{name}"


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


def last_step(reader, node, value):
    """``out[:, -1]`` of a sequence: make the recurrent layer behind it return its last step."""
    reader.take(node, value)
    for spec in reversed(reader.specs):
        if spec.cls in RECURRENT and spec.kwargs["return_sequences"]:
            spec.kwargs["return_sequences"] = False
            return reader.derive(node, value)
        axis_ok = spec.kwargs.get("axis", -1) == -1 and spec.kwargs.get("num_axes", 1) == 1
        if not (spec.cls in _TIMEWISE or (spec.cls in (nn.Softmax, nn.LogSoftmax, nn.LayerNorm) and axis_ok)):
            break
    raise ConfigError(f"{describe(node)}: out[:, -1] is supported only on the output sequence of an LSTM/GRU/RNN")


def trace(module, example):
    """(gm, graph) of ``module`` traced by torch.fx, with shapes from running ``example`` (eval mode)."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    from interop import _torch_ops
    from interop._torch_modules import LEAVES

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)

    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        try:
            graph = Tracer().trace(module)
        except Exception as err:  # fx raises TraceError, TypeError, ... on data-dependent control flow
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"cannot trace {type(module).__name__}.forward with torch.fx ({first}); "
                              "funcdl converts forwards without data-dependent control flow") from None
        for node in graph.nodes:
            if node.op == "call_module":
                _torch_ops.check_module(module.get_submodule(node.target), node.target)
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
