"""The Keras functional model of a funcdl Graph: one Keras layer per node, named after it.

Each node's layer goes through the same per-layer table as a Sequential
(``TO_KERAS``); merge and global pooling layers map to Keras' own. The Keras
layer holding a node's weights is named after the node (helpers such as a
``ZeroPadding2D`` get suffixes), so weights line up by name. Images are NHWC
on both sides.
"""
from typing import Any

import numpy as np

from funcdl import nn
from funcdl.errors import ConversionError
from interop.keras._layers import TO_KERAS, assign_weights, node_tensors
from interop.layouts import KERAS_WEIGHTS, weights_to_keras

_MERGES = {"Add": "Add", "Subtract": "Subtract", "Multiply": "Multiply", "Average": "Average",
           "Maximum": "Maximum", "Minimum": "Minimum"}
_GLOBAL = ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D")
SUPPORTED = sorted(TO_KERAS) + sorted(_MERGES) + ["Concatenate"] + list(_GLOBAL)


def _node_layers(L: Any, node: nn.Node, shape: Any, strict: bool) -> list:
    """The Keras layers computing ``node`` (applied in order to its input, or once to the list of its inputs)."""
    kind = type(node.layer).__name__
    if kind in _MERGES:
        return [getattr(L, _MERGES[kind])(name=node.name)]
    if kind == "Concatenate":
        return [L.Concatenate(axis=node.layer.axis, name=node.name)]
    if kind in _GLOBAL:
        return [getattr(L, kind)(keepdims=node.layer.keepdims, name=node.name)]
    if kind not in TO_KERAS:
        raise ConversionError(f"graph node {node.name!r} ({kind}) has no Keras counterpart; `funcdl convert "
                              "--list-supported` lists the layers that have")
    return TO_KERAS[kind](L, node.layer, shape, node.name, strict)


def build(keras: Any, model: nn.Graph, variables: Any, input_shape: Any, strict: bool) -> Any:
    """A built ``keras.Model`` (functional) computing ``model`` with ``variables``.

    Args:
      keras: the keras module.
      model, variables: the funcdl Graph and its variables.
      input_shape: one example's shape, or a tuple / dict of them for several inputs (no batch axis).
      strict: as in ``to_keras``.
    """
    shapes = nn.node_shapes(model, input_shape, variables=variables)
    values = {spec.name: keras.Input(shape=shapes[spec.name], name=spec.name,
                                     dtype="int32" if np.dtype(spec.dtype).kind in "iu" else "float32")
              for spec in model.inputs}
    for node in model.nodes:
        if isinstance(node.layer, (nn.Sequential, nn.Graph)):
            raise ConversionError(f"graph node {node.name!r} ({type(node.layer).__name__}): nested models cannot be "
                                  "written for Keras yet")
        args = [_value(values, ref) for ref in node.inputs]
        layers = _node_layers(keras.layers, node, _value(shapes, node.inputs[0]), strict)
        value = args[0] if len(args) == 1 else args
        for layer in layers:
            value = layer(value)
        values[node.name] = value
    inputs = [values[name] for name in model.input_names]
    outputs: Any = model.outputs
    if isinstance(outputs, str):
        outputs = _value(values, outputs)
    elif isinstance(outputs, tuple):
        outputs = [_value(values, ref) for ref in outputs]
    else:
        outputs = {key: _value(values, ref) for key, ref in outputs.items()}
    keras_model = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name="funcdl")
    _assign(keras_model, model, variables)
    return keras_model


def _value(values: dict[str, Any], ref: str) -> Any:
    """What ``ref`` names: a node's output, or output i (``"name:i"``) of a two-output Bidirectional."""
    name, index = nn.parse_ref(ref)
    value = values[name]
    if index is None:
        return value
    if not isinstance(index, int) or not isinstance(value, (list, tuple)) or index >= len(value):
        raise ConversionError(f"graph reference {ref!r}: Keras gets the outputs of multi-output nodes by position")
    return value[index]


def _assign(keras_model: Any, model: nn.Graph, variables: Any) -> None:
    """Copy every node's tensors into its Keras layer's weights, names and shapes checked."""
    assigned = 0
    for node in model.nodes:
        if type(node.layer).__name__ not in KERAS_WEIGHTS:
            continue
        values = weights_to_keras(node.layer, node_tensors(variables, node.name))
        assigned += assign_weights(keras_model.get_layer(node.name), values, f"graph node {node.name!r}")
    if assigned != len(keras_model.weights):
        raise ConversionError(f"set {assigned} of the keras model's {len(keras_model.weights)} weights")
