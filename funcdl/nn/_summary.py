"""``summary``: a Keras-style table of a model's layers, output shapes and parameter counts.

    fd.summary(fd.models.mlp(), (28, 28, 1))    # prints, and returns a Summary
    # Model: Sequential
    # Layer (type)        Output Shape   Param #
    # ==========================================
    # layers_0 (Flatten)  (None, 784)          0
    # ...
"""
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from funcdl.nn._graph import Graph
from funcdl.nn._shape_inference import ShapeTree, count_params, init_shapes, node_shapes


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``summary`` prints, as data.

    Attributes:
      rows: one dict per top-level layer (a Graph's inputs first): ``name``, ``type``, ``output_shape``
        (one example, no batch axis; a tuple or dict of shapes for several outputs), ``params`` (every
        variable of the layer, BatchNorm statistics included, as Keras counts), ``trainable`` (its
        ``params`` collection) and ``connected_to`` (a Graph node's input references; empty otherwise).
      total_params, trainable_params, non_trainable_params: over the whole model.
      total_bytes: memory of all variables.
      text: the printed table.
    """
    rows: list[dict[str, Any]]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_bytes: int
    text: str

    def __str__(self) -> str:
        return self.text


def _count(variables: Mapping[str, Any], name: str | None, collection: str | None = None) -> int:
    """Scalars of layer ``name`` (every layer when None) in ``collection`` (every collection when None)."""
    return sum(count_params(tree if name is None else tree.get(name, {}))
               for key, tree in variables.items() if collection in (None, key))


def summary_rows(model: Any, input_shape: ShapeTree = None, dtype: Any = None,
                 variables: Any = None) -> list[dict[str, Any]]:
    """The rows of ``summary`` (see :class:`Summary`), without the table."""
    variables = init_shapes(model, input_shape, dtype) if variables is None else variables
    shapes = node_shapes(model, input_shape, dtype, variables)
    if isinstance(model, Graph):
        inputs = [{"name": spec.name, "type": "Input", "output_shape": shapes[spec.name], "params": 0,
                   "trainable": 0, "connected_to": []} for spec in model.inputs]
        named = [(node.name, node.layer, list(node.inputs)) for node in model.nodes]
    elif isinstance(getattr(model, "layers", None), tuple):
        inputs, named = [], [(f"layers_{index}", layer, []) for index, layer in enumerate(model.layers)]
    else:
        return [{"name": type(model).__name__, "type": type(model).__name__, "output_shape": shapes["output"],
                 "params": _count(variables, None), "trainable": _count(variables, None, "params"),
                 "connected_to": []}]
    return inputs + [{"name": name, "type": type(layer).__name__, "output_shape": shapes[name],
                      "params": _count(variables, name), "trainable": _count(variables, name, "params"),
                      "connected_to": connected} for name, layer, connected in named]


def format_shape(shape: ShapeTree) -> str:
    """``(None, 26, 26, 32)`` for one example's ``(26, 26, 32)`` (None: the batch axis); lists/dicts for several."""
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{key}: {format_shape(value)}" for key, value in shape.items()) + "}"
    if shape and all(isinstance(part, tuple) for part in shape):
        return "[" + ", ".join(format_shape(part) for part in shape) + "]"
    return "(" + ", ".join(["None"] + [str(d) for d in shape]) + ")"


def _size(count: int, nbytes: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return f"{count:,} ({nbytes / scale:.2f} {unit})"
    return f"{count:,} ({nbytes} B)"


def _table(title: str, rows: list[dict[str, Any]], totals: list[str]) -> str:
    header = ["Layer (type)", "Output Shape", "Param #"]
    cells = [[f"{row['name']} ({row['type']})", format_shape(row["output_shape"]), f"{row['params']:,}"]
             for row in rows]
    if any(row["connected_to"] for row in rows):
        header.append("Connected to")
        for cell, row in zip(cells, rows):
            cell.append(", ".join(row["connected_to"]) or "-")
    widths = [max(len(line[column]) for line in [header] + cells) for column in range(len(header))]

    def line(parts: list[str]) -> str:
        padded = [part.rjust(width) if column == 2 else part.ljust(width)
                  for column, (part, width) in enumerate(zip(parts, widths))]
        return "   ".join(padded).rstrip()
    rule = "=" * len(line(["x" * width for width in widths]))
    return "\n".join([title, line(header), rule] + [line(cell) for cell in cells] + [rule] + totals)


def summary(model: Any, input_shape: ShapeTree = None, dtype: Any = None, *,
            print_fn: Callable[[str], Any] | None = print, variables: Any = None) -> Summary:
    """Print a Keras-style table of ``model`` (layer, type, output shape, params, connections) and return it.

    Args:
      model: a funcdl layer, Sequential or Graph.
      input_shape: one example's shape, e.g. (32, 32, 3) (a tuple/dict of shapes for several inputs; may be
        left out for a Graph whose inputs declare theirs).
      dtype: the input dtype (default ``input_dtype(model)``).
      print_fn: where the table goes (default ``print``); None prints nothing.
      variables: count these instead of a fresh ``init`` (shapes only are read).
    Returns:
      a :class:`Summary` (``.rows``, the totals, ``.text``).
    """
    variables = init_shapes(model, input_shape, dtype) if variables is None else variables
    rows = summary_rows(model, input_shape, dtype, variables)
    leaves = jax.tree_util.tree_leaves(variables)
    total, trainable = count_params(variables), _count(variables, None, "params")
    nbytes = sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in leaves)
    trainable_bytes = sum(int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
                          for leaf in jax.tree_util.tree_leaves(variables.get("params", {})))
    totals = [f"Total params: {_size(total, nbytes)}", f"Trainable params: {_size(trainable, trainable_bytes)}",
              f"Non-trainable params: {_size(total - trainable, nbytes - trainable_bytes)}"]
    text = _table(f"Model: {type(model).__name__}", rows, totals)
    if print_fn is not None:
        print_fn(text)
    return Summary(rows, total, trainable, total - trainable, nbytes, text)
