"""Keras 2 full-model ``.h5`` files read with h5py alone: the ``model_config`` JSON and the ``model_weights`` groups.

Keras 2 wrote ``model_weights/<layer>/`` with a ``weight_names`` attribute
(``"<layer>/kernel:0"``, ``"<layer>/lstm_cell/kernel:0"``, ...) and each weight
at that path inside the layer's group. A Bidirectional's two copies of its
recurrent layer are ``forward_<name>`` and ``backward_<name>``
(``"<layer>/forward_lstm/lstm_cell/kernel:0"``); their weights are read as
``forward/kernel`` and ``backward/kernel`` (``interop.layouts``). Keras 3
cannot open many of these files; funcdl reads them without keras: no layer is
deserialised, no stored code can run.
"""
from typing import Any

import numpy as np
from flax import traverse_util

from funcdl.errors import ConversionError, FileFormatError, FuncdlError
from interop.keras._graph import MODELS, graph_from_config


def keras_version(handle: Any) -> str:
    """The ``keras_version`` attribute of an open ``.h5`` file ('' when absent)."""
    version = handle.attrs.get("keras_version", b"")
    return version.decode("utf-8", "replace") if isinstance(version, bytes) else str(version)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class H5Source:
    """The weights of a Keras 2 file's layers, read from its ``model_weights`` group (or a nested model's)."""

    def __init__(self, group: Any, path: Any, dtypes: dict[str, str], prefix: str = ""):
        import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
        self.group, self.path, self.dtypes, self.prefix = group, path, dtypes, prefix
        found: list[str] = []
        group.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
        self.total = len(found)

    def _layer_group(self, name: str) -> tuple[Any, list[str]]:
        """(the group holding layer ``name``'s weights, their names); a nested model's layers share its group."""
        import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
        if self.prefix:  # inside a nested model: its group lists every inner layer's weights
            names = [_text(n) for n in self.group.attrs.get("weight_names", [])]
            return self.group, [n for n in names if n.split("/", 1)[0] == name]
        layer = self.group.get(name)
        if layer is None:
            return None, []
        if not isinstance(layer, h5py.Group):
            raise FileFormatError(f"{self.path}: model_weights/{name} is not a group of weights")
        return layer, [_text(n) for n in layer.attrs.get("weight_names", [])]

    def weights(self, name: str) -> dict[str, np.ndarray]:
        import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
        group, names = self._layer_group(name)
        weights: dict[str, np.ndarray] = {}
        halves = _halves(names)
        for weight in names:
            item = group.get(weight)
            key = halves.get(weight, "") + weight.rsplit("/", 1)[-1].split(":")[0]
            if not isinstance(item, h5py.Dataset) or item.dtype.kind not in "fiu" or key in weights:
                raise FileFormatError(f"{self.path}: weight {self.prefix}{name}/{weight} is missing, repeated or not "
                                      "a numeric array")
            weights[key] = np.asarray(item[()])
        return weights

    def dtype(self, name: str) -> str:
        return self.dtypes.get(name, "float32")

    def rank(self, name: str) -> None:
        return None

    def nested(self, layer: Any) -> tuple[Any, Any, int, int]:
        """(funcdl graph, variables, number of outputs, number of weights) of a nested model's layer."""
        import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
        group = self.group.get(layer.name)
        if self.prefix or not isinstance(group, h5py.Group):
            raise ConversionError(f"keras layer {self.prefix}{layer.name!r}: funcdl reads one level of nested "
                                  "models from Keras 2 .h5 files")
        source = H5Source(group, self.path, self.dtypes, prefix=f"{layer.name}/")
        graph, flat, _ = graph_from_config(layer.config, source, f"{self.path}: {layer.name}")
        variables = traverse_util.unflatten_dict(flat, sep="/")
        return graph, variables, len(graph.output_refs), source.total


def _halves(names: list[str]) -> dict[str, str]:
    """``{weight name: 'forward/' or 'backward/'}`` for a Bidirectional's weights (a path component between the
    layer's name and the weight's reads ``forward_...`` / ``backward_...``, both halves present); else ``{}``."""
    found = {}
    for name in names:
        inner = [part.split("_", 1)[0] for part in name.split("/")[1:-1] if part.startswith(("forward_", "backward_"))]
        if inner:
            found[name] = inner[0] + "/"
    return found if set(found.values()) == {"forward/", "backward/"} and len(found) == len(names) else {}


# Keras 2's hard_sigmoid was clip(0.2 x + 0.5, 0, 1); Keras 3's (and funcdl's) is relu6(x + 3) / 6.
KERAS2_HARD_SIGMOID = "hard_sigmoid (Keras 2's clip(0.2 x + 0.5, 0, 1), not funcdl's relu6(x + 3) / 6)"


def _keras2_options(kind: Any, c: dict) -> None:
    """One Keras 2 layer config's options spelt as Keras 3 spells them (in place)."""
    for key in ("activation", "recurrent_activation"):
        if c.get(key) == "hard_sigmoid":
            c[key] = KERAS2_HARD_SIGMOID
    if kind == "LeakyReLU" and "alpha" in c:
        c["negative_slope"] = c.pop("alpha")
    elif kind == "Conv2D":
        c.setdefault("groups", 1)
    elif kind == "GRU":
        c.setdefault("reset_after", False)  # Keras 2.2's default, when the option was not written
    elif kind in ("Bidirectional", "TimeDistributed") and isinstance(c.get("layer"), dict):
        inner = c["layer"]
        _keras2_options(inner.get("class_name"), inner.setdefault("config", {}))


def _normalised(config: dict, dtypes: dict[str, str]) -> dict:
    """A Keras 2 model config with its layers' options spelt as Keras 3 spells them (in place)."""
    for entry in config.get("layers") or []:
        c = entry.get("config")
        if not isinstance(c, dict):
            raise FileFormatError(f"layer {entry.get('name')!r} has no config")
        dtype = c.get("dtype")
        if isinstance(dtype, dict):  # a mixed-precision policy
            dtype = (dtype.get("config") or {}).get("name")
        dtypes[str(entry.get("name") or c.get("name"))] = str(dtype or "float32")
        kind = entry.get("class_name")
        if kind in MODELS:
            _normalised(c if isinstance(c, dict) else {}, dtypes)
        else:
            _keras2_options(kind, c)
    return config


def read_keras2_h5(handle: Any, config: Any, path: Any) -> tuple[Any, dict[str, np.ndarray], tuple]:
    """(Graph, flat variables, input shapes) of an open Keras 2 ``.h5`` file whose ``model_config`` is ``config``."""
    import h5py  # noqa: PLC0415 -- lazily: h5py comes with the [tf] extra
    group = handle.get("model_weights")
    if not isinstance(group, h5py.Group) or not isinstance(config, dict) or "config" not in config:
        raise FileFormatError(f"{path} is not a Keras 2 model file (no model_weights group or model_config)")
    inner = config["config"]
    inner = {"layers": inner} if isinstance(inner, list) else inner  # Keras 2.0-2.2 Sequential: a list of layers
    try:
        dtypes: dict[str, str] = {}
        return graph_from_config(_normalised(inner, dtypes), H5Source(group, path, dtypes), str(path))
    except FuncdlError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, IndexError, RecursionError) as err:
        raise FileFormatError(f"{path}: its model_config is not a Keras model config ({type(err).__name__}: "
                              f"{str(err)[:80]})") from None
