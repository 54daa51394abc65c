"""Keras 2 weights-only ``.h5`` files (``model.save_weights("w.h5")``) read into a given architecture, with h5py alone.

Keras 2 wrote, at the file's root: a ``layer_names`` attribute (every layer of the model, in order; split
into ``layer_names0``, ``layer_names1``, ... when large), and one group per layer whose ``weight_names``
attribute lists its weights (``"dense/kernel:0"``, ``"lstm/lstm_cell/kernel:0"``; a nested model's group
lists its inner layers' weights, ``"dense_1/kernel:0"``), each stored as a dataset at that path in the group.

The file's layers with weights are matched to the architecture's layers with weights (funcdl paths
``layers_0``, ``conv1``, ``stem/layers_1``): by name when every one of the architecture's names is in the
file, else in order. No Keras is needed and nothing in the file is deserialised.
"""
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.errors import ConversionError, FileFormatError
from funcdl.io import unflatten_variables
from interop.layouts import KERAS_WEIGHTS, weights_from_keras


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def attribute_list(group: Any, name: str) -> list[str] | None:
    """The string list Keras 2 stored as attribute ``name`` (or in chunks ``name0``, ``name1``, ...); None if
    absent."""
    if name in group.attrs:
        return [_text(item) for item in np.atleast_1d(group.attrs[name])]
    if f"{name}0" not in group.attrs:
        return None
    items: list[str] = []
    chunk = 0
    while f"{name}{chunk}" in group.attrs:
        items.extend(_text(item) for item in np.atleast_1d(group.attrs[f"{name}{chunk}"]))
        chunk += 1
    return items


def is_keras2_weights(handle: Any) -> bool:
    """Whether an open HDF5 file is a Keras 2 ``save_weights`` file (``layer_names`` at its root, no model)."""
    return attribute_list(handle, "layer_names") is not None and "model_config" not in handle.attrs


def file_layers(handle: Any, path: Any) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``[(layer name, {weight name: array})]`` of the file's layers that hold weights, in the file's order.

    A group holding several inner layers' weights (a nested model) gives one entry per inner layer.
    """
    import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name in attribute_list(handle, "layer_names") or []:
        group = handle.get(name)
        if not isinstance(group, h5py.Group):
            raise FileFormatError(f"{path}: layer {name!r} is listed in layer_names but has no group of weights")
        for weight in attribute_list(group, "weight_names") or []:
            item = group.get(weight)
            if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiu":
                raise FileFormatError(f"{path}: weight {name}/{weight} is missing or not a numeric array")
            owner = weight.split("/", 1)[0] if "/" in weight else name
            key = weight.rsplit("/", 1)[-1].split(":")[0]
            weights = layers.setdefault(owner, {})
            if key in weights:
                raise FileFormatError(f"{path}: layer {owner!r} holds two weights named {key!r}")
            weights[key] = np.asarray(item[()])
    return list(layers.items())


def model_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(funcdl path, layer)]`` of the layers with weights in ``model``, in order, nested models included."""
    if isinstance(model, nn.Graph):
        children = [(node.name, node.layer) for node in model.nodes]
    elif isinstance(model, nn.Sequential):
        children = [(f"layers_{i}", layer) for i, layer in enumerate(model.layers)]
    else:
        return [(prefix.rstrip("/"), model)] if type(model).__name__ in KERAS_WEIGHTS else []
    return [item for name, child in children for item in model_layers(child, f"{prefix}{name}/")]


def _pairs(stored: list, wanted: list, path: Any) -> list[tuple[tuple, tuple]]:
    """The file's layers paired with the architecture's: by name when all of its names are in the file, else in
    order."""
    by_name = dict(stored)
    names = [where.rsplit("/", 1)[-1] for where, _ in wanted]
    if all(name in by_name for name in names) and len(set(names)) == len(names):
        return [((name, by_name[name]), target) for name, target in zip(names, wanted)]
    if len(stored) != len(wanted):
        raise ConversionError(
            f"{path}: {len(stored)} layers with weights ({_listed([name for name, _ in stored])}) but the "
            f"architecture has {len(wanted)} ({_listed([where for where, _ in wanted])}); give the architecture "
            "the file was saved from")
    return list(zip(stored, wanted))


def _listed(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")


def read_weights(handle: Any, path: Any, model: Any, input_shape: Sequence[int] | Any) -> dict[str, Any]:
    """funcdl variables for ``model`` from an open Keras 2 weights-only file; every tensor's shape is checked.

    Raises:
      ConversionError naming the file's layer, the architecture's layer and both shapes on a mismatch.
    """
    expected = nn.variable_shapes(nn.init_shapes(model, input_shape, nn.input_dtype(model)))
    flat: dict[str, np.ndarray] = {}
    for (name, weights), (where, layer) in _pairs(file_layers(handle, path), model_layers(model), path):
        kind = type(layer).__name__
        try:
            tensors = weights_from_keras(layer, weights)
        except ConversionError as err:
            raise ConversionError(f"{path}: keras layer {name!r} does not fit {where} ({kind}): {err}") from None
        for key, array in tensors.items():
            collection, _, leaf = key.partition("/")
            target = f"{collection}/{where}/{leaf}"
            if target not in expected:
                raise ConversionError(f"{path}: keras layer {name!r} holds {leaf!r}, which {where} ({kind}) has not")
            if tuple(array.shape) != tuple(expected[target]):
                raise ConversionError(f"{path}: keras layer {name!r} {leaf} has shape {tuple(array.shape)}, {where} "
                                      f"({kind}) needs {tuple(expected[target])}")
            flat[target] = np.ascontiguousarray(array, dtype=np.float32)  # funcdl's weights are float32
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise ConversionError(f"{path}: no weights for {_listed(missing)}")
    return jax.tree.map(jnp.asarray, unflatten_variables(flat))
