"""The ``torch.nn.Module`` of a funcdl Graph: one submodule per node, a ``forward`` that follows the graph.

Each node's layer is planned by the same per-layer exporters as a Sequential
(``_plan``); its submodule is an attribute named after the node ('.' and '-'
become '_'), so ``state_dict`` keys read ``stem_conv.weight``,
``block1_bn1.running_mean``, ... and map to funcdl's ``params/stem_conv/kernel``.
Every value with three axes per example (an image) is NCHW between nodes, as
the graph's image inputs are; other values are as in funcdl. Imported only
after torch is known to be installed.
"""
import dataclasses
import re
from typing import Any

import torch
from torch import nn as tnn

from funcdl import nn
from funcdl.errors import ConversionError
from interop import layouts
from interop.pytorch import _plan

_COMBINE = {nn.Add: torch.add, nn.Subtract: torch.sub, nn.Multiply: torch.mul, nn.Average: torch.add,
            nn.Maximum: torch.maximum, nn.Minimum: torch.minimum}
_GLOBAL = {nn.GlobalAveragePooling2D: "mean", nn.GlobalMaxPooling2D: "max", nn.GlobalAveragePooling1D: "mean",
           nn.GlobalMaxPooling1D: "max"}
SUPPORTED = (_plan.SUPPORTED + ", Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, "
             "GlobalAveragePooling1D/2D, GlobalMaxPooling1D/2D")


def _select(values: dict[str, Any], ref: str) -> Any:
    """What ``ref`` names: a node's value, or output i (``"name:i"``) of a node returning a tuple."""
    name, _, index = ref.partition(":")
    return values[name][int(index)] if index else values[name]


class Merge(tnn.Module):
    """Element-wise merge of its inputs (``nn.Add`` ... ``nn.Minimum``); Average divides the sum by their count."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.combine = {cls.__name__: fn for cls, fn in _COMBINE.items()}[kind]

    def forward(self, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = self.combine(out, x)
        return out / len(xs) if self.kind == "Average" else out

    def extra_repr(self):
        return self.kind


class Concatenate(tnn.Module):
    """``torch.cat`` of its inputs along ``dim`` (torch's axis: channels of an NCHW image are 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        return torch.cat(xs, dim=self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class GlobalPool(tnn.Module):
    """The mean or maximum over ``dims`` (H, W of NCHW images; T of (B, T, C) sequences)."""

    def __init__(self, mode: str, dims: tuple[int, ...], keepdim: bool):
        super().__init__()
        self.mode, self.dims, self.keepdim = mode, tuple(dims), keepdim

    def forward(self, x):
        if self.mode == "mean":
            return x.mean(dim=self.dims, keepdim=self.keepdim)
        return x.amax(dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self):
        return f"mode={self.mode}, dims={self.dims}, keepdim={self.keepdim}"


class GraphModule(tnn.Module):
    """Runs its node submodules in the graph's order; ``forward(*inputs)`` in the graph's input order.

    Returns one tensor, a tuple or a dict, as the funcdl graph does.
    """

    def __init__(self, input_names: tuple[str, ...], steps: list[tuple[str, str, tuple]], outputs: Any):
        super().__init__()
        self.input_names, self.steps, self.outputs = tuple(input_names), tuple(steps), outputs

    def forward(self, *xs):
        return self.run(xs)

    def run(self, xs):
        """The graph's output(s) for its inputs ``xs`` (in input order)."""
        values = dict(zip(self.input_names, xs))
        for name, attribute, refs in self.steps:
            values[name] = getattr(self, attribute)(*(_select(values, ref) for ref in refs))
        if isinstance(self.outputs, str):
            return _select(values, self.outputs)
        if isinstance(self.outputs, tuple):
            return tuple(_select(values, ref) for ref in self.outputs)
        return {key: _select(values, ref) for key, ref in self.outputs.items()}


class SingleInputGraphModule(GraphModule):
    """A GraphModule of one input: ``forward(x)``, as ``torch.export`` and most callers expect."""

    def forward(self, x):
        return self.run((x,))


def _attribute(name: str, taken: set[str]) -> str:
    """The torch attribute for node ``name`` ('.' and '-' are not allowed in module names)."""
    attribute = re.sub(r"[.\-]", "_", name)
    if attribute in taken or hasattr(tnn.Module, attribute) or attribute in ("input_names", "steps", "outputs", "run"):
        raise ConversionError(f"graph node {name!r}: its torch module name {attribute!r} is taken; rename the node")
    taken.add(attribute)
    return attribute


def _merge_module(name: str, layer: Any, shapes: list[tuple]) -> tnn.Module:
    """The torch module of a merge layer, after checking its inputs have one layout in both frameworks."""
    if isinstance(layer, nn.Concatenate):
        rank = len(shapes[0]) + 1
        axis = layer.axis % rank
        return Concatenate(layouts.NHWC_TO_NCHW.index(axis) if rank == 4 else axis)
    if any(len(shape) == 3 for shape in shapes) and len(set(shapes)) != 1:
        raise ConversionError(f"graph node {name!r} ({type(layer).__name__}) broadcasts images of shapes "
                              f"{', '.join(map(str, shapes))}: NCHW broadcasts differently; give it equal shapes")
    return Merge(type(layer).__name__)


def _global_pool(layer: Any, shape: tuple) -> tnn.Module:
    dims = (2, 3) if isinstance(layer, (nn.GlobalAveragePooling2D, nn.GlobalMaxPooling2D)) else (1,)
    return GlobalPool(_GLOBAL[type(layer)], dims, layer.keepdims)


def _node_modules(name: str, layer: Any, shapes: list[tuple], out_shape: tuple) -> tuple[list, list]:
    """(torch modules, entries with ``layers_0`` paths) of one node, its output left in the graph's layout."""
    if type(layer) in _COMBINE or isinstance(layer, nn.Concatenate):
        return [_merge_module(name, layer, shapes)], []
    shape = shapes[0]
    if len(shapes) != 1:
        raise ConversionError(f"graph node {name!r} ({type(layer).__name__}) takes {len(shapes)} inputs; only merge "
                              "layers take several")
    if type(layer) in _GLOBAL:
        return [_global_pool(layer, shape)], []
    try:
        return _planned(name, layer, shape, out_shape)
    except ConversionError as err:  # the per-layer exporters name a Sequential's layers_0: name the node instead
        text = str(err)
        if text.startswith("graph node"):
            raise
        rest = text.replace("layers_0 ", "", 1)
        raise ConversionError(f"graph node {name!r}{' ' if rest.startswith('(') else ': '}{rest}") from None


def _planned(name: str, layer: Any, shape: tuple, out_shape: tuple) -> tuple[list, list]:
    """(torch modules, entries) of a one-input node by the Sequential planner, its output left in the graph's
    layout."""
    p = _plan.Planner(image_input=len(shape) == 3)
    if isinstance(layer, _plan._RECURRENT):
        _plan._recurrent(p, [layer], 0, shape)
    elif isinstance(layer, nn.Bidirectional):
        _plan._bidirectional(p, 0, layer, shape)
    elif type(layer) in _plan._WITH_WEIGHTS:
        _plan._WITH_WEIGHTS[type(layer)](p, 0, layer, shape)
    elif isinstance(layer, (nn.Flatten, nn.Reshape, nn.ImageRows)):
        _plan._reshape(p, 0, layer, shape, out_shape, [])
    elif not (_plan._image_layer(p, 0, layer, shape) or _plan._axes_layer(p, 0, layer, shape)
              or _plan._simple_layer(p, 0, layer, shape)):
        raise ConversionError(f"graph node {name!r} ({type(layer).__name__}) has no PyTorch equivalent in to_torch; "
                              "`funcdl convert --list-supported` lists the layers that have")
    if not isinstance(layer, nn.Bidirectional):  # (a two-output one gives sequences, never images)
        p.to_nchw(out_shape)  # every image leaves a node NCHW
    return p.modules, p.entries


def build(model: nn.Graph, input_shape: Any, dtype: Any) -> tuple[GraphModule, list]:
    """(the torch module of ``model``, its weight entries: torch key, funcdl path, layout maps)."""
    shapes = nn.node_shapes(model, input_shape, dtype)
    steps, entries, modules, taken = [], [], {}, set[str]()
    for node in model.nodes:
        if isinstance(node.layer, (nn.Sequential, nn.Graph)):
            raise ConversionError(f"graph node {node.name!r} ({type(node.layer).__name__}): nested models cannot be "
                                  "written for PyTorch yet")
        attribute = _attribute(node.name, taken)
        node_modules, node_entries = _node_modules(node.name, node.layer, [_select(shapes, ref) for ref in node.inputs],
                                                   shapes[node.name])
        single = len(node_modules) == 1
        modules[attribute] = node_modules[0] if single else (tnn.Sequential(*node_modules) if node_modules
                                                             else tnn.Identity())
        for entry in node_entries:
            key = entry.key.partition(".")[2] if single else entry.key
            collection, _, rest = entry.path.split("/", 2)
            entries.append(dataclasses.replace(entry, key=f"{attribute}.{key}",
                                               path=f"{collection}/{node.name}/{rest}"))
        steps.append((node.name, attribute, node.inputs))
    cls = SingleInputGraphModule if len(model.inputs) == 1 else GraphModule
    module = cls(model.input_names, steps, _outputs(model.outputs))
    for attribute, submodule in modules.items():
        module.add_module(attribute, submodule)
    return module, entries


def _outputs(outputs: Any) -> Any:
    return dict(outputs) if hasattr(outputs, "values") else outputs
