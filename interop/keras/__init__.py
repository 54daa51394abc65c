"""Keras 3 <-> funcdl: models, weights and files, with an explicit weight table and shape checks.

A keras chain (a Sequential, or a functional model whose layers form one
line) converts to a ``funcdl.nn.Sequential``; a functional model with
branches, merges, several inputs or outputs, or nested models to a
``funcdl.nn.Graph`` named by keras layer (``interop.keras._graph``). Images
are NHWC on both sides, so kernels copy as they are (Dense (in, out), Conv2D
HWIO); only the recurrent layers differ (see ``interop.layouts``).

API::

    model, variables = from_keras(keras_model)          # variables: {'params': ..., 'batch_stats': ...}
    input_shape = input_shape_of(keras_model)           # one example's shape, e.g. (28, 28, 1)
    keras_model = to_keras(model, variables, input_shape)
    model, variables, input_shape = load_keras_file("m.keras")   # also legacy full-model ".h5"
    save_keras_file("m.keras", model, variables, input_shape)     # or "m.h5"; atomic
    save_keras_weights("m.weights.h5", model, variables, input_shape)
    model, variables = load_keras_weights("m.weights.h5", model, input_shape)  # or (path, keras_model)

Supported keras layers: see ``SUPPORTED``. Anything else, or an option
funcdl has no exact counterpart for, raises ConversionError before anything is
converted. Regularizers, constraints and initialisers are training-time
settings and are not carried over.
"""
import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from funcdl import nn
from funcdl.errors import ConfigError, ConversionError, FileFormatError, FuncdlError
from funcdl.io import atomic_path, check_size, max_bytes
from funcdl.io.sniff import misnamed
from interop import frameworks
from interop.keras import _graph_export
from interop.keras._graph import GRAPH_SUPPORTED, graph_from_keras
from interop.keras._layers import (
    FROM_KERAS,
    PADDED,
    TO_KERAS,
    assign_weights,
    keras_weights,
    layer_tensors,
    merges_padding,
)
from interop.keras._legacy import keras_version, read_keras2_h5
from interop.layouts import KERAS_WEIGHTS, weights_from_keras, weights_to_keras

SUPPORTED = GRAPH_SUPPORTED
UNKNOWN_SIZE = 64  # stands in for a None (variable) input size when funcdl infers parameter shapes


def input_shape_of(keras_model: Any) -> tuple[int | None, ...]:
    """One example's input shape of ``keras_model`` (no batch axis; None where keras leaves it open)."""
    try:
        inputs = keras_model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ConversionError("the keras model has no defined input; build it with keras.Input(shape) first")
    if len(inputs) != 1:
        raise ConversionError(f"the keras model has {len(inputs)} inputs; funcdl converts single-input models only")
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def _where(layer):
    return f"{layer.name!r} ({type(layer).__name__})"


def _chain(keras, keras_model):
    """The keras model's layers (InputLayer dropped), checked to be supported and one linear chain."""
    if not isinstance(keras_model, keras.Model):
        raise ConfigError(f"expected a keras.Model, got {type(keras_model).__name__}")
    layers = list(keras_model.layers)
    for layer in layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.Model):
            raise ConversionError(f"keras layer {_where(layer)} is a nested model; funcdl converts flat models only")
        if kind not in FROM_KERAS and kind != "ZeroPadding2D":
            raise ConversionError(f"keras layer {_where(layer)} is not supported; supported layers: "
                                  f"{', '.join(SUPPORTED)}")
    input_shape_of(keras_model)
    if len(keras_model.outputs) != 1:
        raise ConversionError("the keras model has several outputs; funcdl converts single-output chains only")
    if not isinstance(keras_model, keras.Sequential):
        tensor = keras_model.inputs[0]
        for layer in layers:
            if type(layer).__name__ == "InputLayer":
                continue
            if len(getattr(layer, "_inbound_nodes", ())) != 1 or layer.input is not tensor:
                raise ConversionError(f"keras layer {_where(layer)} is not fed by the layer before it; funcdl converts "
                                      "linear chains only")
            tensor = layer.output
        if keras_model.outputs[0] is not tensor:
            raise ConversionError("the keras model's output is not its last layer's; funcdl converts linear chains "
                                  "only")
    return [layer for layer in layers if type(layer).__name__ != "InputLayer"]


def _rank(layer):
    try:
        return len(layer.input.shape)
    except (AttributeError, ValueError):
        return None


def _check_dtype(layer):
    if getattr(layer, "compute_dtype", "float32") != "float32":
        raise ConversionError(f"keras layer {_where(layer)} computes in {layer.compute_dtype}; funcdl converts float32")


def _plan(layers):
    """[(funcdl layer, keras layer holding its weights or None)] for a checked chain of keras layers."""
    plan, index = [], 0
    while index < len(layers):
        layer = layers[index]
        _check_dtype(layer)
        target = layers[index + 1] if index + 1 < len(layers) else None
        if type(layer).__name__ == "ZeroPadding2D" and target is not None and merges_padding(
                type(target).__name__, target.get_config()):
            _expect_channels_last(layer)
            _check_dtype(target)
            pads = tuple(tuple(int(v) for v in p) for p in layer.get_config()["padding"])
            converted = PADDED[type(target).__name__](target.get_config(), _where(target), _rank(target), pads)
            weighted, index = target, index + 2
        else:
            converted = FROM_KERAS[type(layer).__name__](layer.get_config(), _where(layer), _rank(layer))
            weighted, index = layer, index + 1
        for position, funcdl_layer in enumerate(converted):
            holds = position == 0 and type(funcdl_layer).__name__ in KERAS_WEIGHTS
            plan.append((funcdl_layer, weighted if holds else None))
    return plan


def _expect_channels_last(layer):
    """ConversionError unless ``layer`` works on NHWC images."""
    if layer.get_config().get("data_format", "channels_last") != "channels_last":
        raise ConversionError(f"keras layer {_where(layer)}: data_format='channels_first' is not supported (funcdl "
                              "images are NHWC)")


def _variables(model, input_shape, holders):
    """funcdl variables of ``model`` from its keras twins' weights, every tensor named, typed and shaped as
    ``model`` makes them (``nn.check_variables``).

    Args:
      holders: ``[(index, funcdl layer, keras layer holding its weights)]``.
    """
    flat = {}
    for index, layer, keras_layer in holders:
        weights = {name: np.asarray(w.numpy()) for name, w in keras_weights(keras_layer).items()}
        for key, value in weights_from_keras(layer, weights).items():
            if value.dtype != np.float32:
                raise ConversionError(f"keras weight for layers_{index}/{key} is {value.dtype}; funcdl converts "
                                      "float32 weights")
            collection, name = key.split("/", 1)
            flat[f"{collection}/layers_{index}/{name}"] = value
    variables = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    concrete = tuple(UNKNOWN_SIZE if d is None else d for d in input_shape)
    nn.check_variables(model, variables, concrete, "keras weights", error=ConversionError)
    return variables


def _gather(keras_model, model, plan, input_shape):
    """funcdl variables from the keras weights: every keras weight used once, every shape checked."""
    holders = [(index, layer, keras_layer) for index, (layer, keras_layer) in enumerate(plan)
               if keras_layer is not None]
    used = sum(len(keras_layer.weights) for _, _, keras_layer in holders)
    if used != len(keras_model.weights):
        raise ConversionError(f"converted {used} keras weights but the model has {len(keras_model.weights)} (a layer "
                              "used twice, or weights outside the converted layers)")
    return _variables(model, input_shape, holders)


def _graph_from_keras(keras_model):
    """(nn.Graph, variables) of a keras functional or nested model, every tensor checked."""
    graph, flat, shapes = graph_from_keras(keras_model, from_keras)
    return _checked_graph(graph, flat, shapes)


def _checked_graph(graph, flat, shapes):
    """(graph, variables) after checking every tensor's name and shape against what ``graph`` makes."""
    variables = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    concrete = tuple(tuple(UNKNOWN_SIZE if d is None else d for d in shape) for shape in shapes)
    nn.check_variables(graph, variables, concrete[0] if len(concrete) == 1 else concrete, "keras weights",
                       error=ConversionError)
    return graph, variables


def keras_input_shapes(keras_model: Any) -> Any:
    """One example's input shape, or a tuple of them (in the model's input order) for several inputs."""
    inputs = getattr(keras_model, "inputs", None)
    if not inputs or len(inputs) == 1:
        return input_shape_of(keras_model)
    return tuple(tuple(None if d is None else int(d) for d in x.shape[1:]) for x in inputs)


def from_keras(keras_model: Any) -> tuple[Any, dict[str, Any]]:
    """Convert a keras model to funcdl: a chain to a Sequential, anything else to a Graph.

    Returns:
      ``(model, variables)``. A Sequential or functional linear chain gives a ``funcdl.nn.Sequential`` and
      ``{'params': {'layers_{i}': ...}, 'batch_stats': ...}`` (batch_stats only when there is a
      BatchNormalization). A functional model with branches, merges, several inputs or outputs, or nested
      models gives a ``funcdl.nn.Graph`` whose node names are the keras layer names (params
      ``{'params': {<layer name>: ...}}``; a nested model's params under its own name). The input shape is
      ``keras_input_shapes(keras_model)``; images stay NHWC.
    Raises:
      ConversionError naming every unsupported layer of the model, or the first unsupported option;
      nothing is converted partially.
    """
    keras = frameworks.keras()
    try:
        plan = _plan(_chain(keras, keras_model))
    except ConversionError:  # branches, merges, several inputs or outputs, nested models, swish: a graph
        return _graph_from_keras(keras_model)
    model = nn.Sequential(tuple(layer for layer, _ in plan))
    variables = _gather(keras_model, model, plan, input_shape_of(keras_model))
    return model, variables


def _keras_layers(keras, model, variables, input_shape, strict):
    """[(index, funcdl layer, [keras layers])]; ConversionError for anything keras cannot express exactly."""
    if not isinstance(model, nn.Sequential):
        raise ConversionError(f"to_keras converts a funcdl.nn.Sequential or Graph, got a {type(model).__name__}: "
                              "wrap it in nn.Sequential([...])")
    shapes = nn.layer_shapes(model, input_shape, variables=variables)[:-1]
    plan = []
    for index, (layer, shape) in enumerate(zip(model.layers, shapes)):
        kind = type(layer).__name__
        if kind not in TO_KERAS:
            raise ConversionError(f"funcdl layer layers_{index} ({kind}) has no keras counterpart; "
                                  "`funcdl convert --list-supported` lists the layers that have")
        plan.append((index, layer, TO_KERAS[kind](keras.layers, layer, shape, f"layers_{index}", strict)))
    return plan


def _assign(keras_model, model, variables, plan):
    """Copy every funcdl tensor into its keras weight, after checking names and shapes."""
    assigned = 0
    for index, layer, _ in plan:
        if type(layer).__name__ not in KERAS_WEIGHTS:
            continue
        values = weights_to_keras(layer, layer_tensors(variables, index))
        assigned += assign_weights(keras_model.get_layer(f"layers_{index}"), values, f"layers_{index}")
    if assigned != len(keras_model.weights):
        raise ConversionError(f"set {assigned} of the keras model's {len(keras_model.weights)} weights")


def to_keras(model: Any, variables: Any, input_shape: Sequence[int], strict: bool = True) -> Any:
    """Build a keras Sequential computing ``model`` with ``variables`` (a functional model for a Graph).

    Args:
      model: a ``funcdl.nn.Sequential``, or a ``funcdl.nn.Graph`` (one keras layer per node, named after it).
      variables: its ``{'params': ..., 'batch_stats': ...}``.
      input_shape: one example's shape, e.g. (28, 28, 1) (NHWC images) or (T,) token ids; for a Graph with
        several inputs, a tuple or dict of them.
      strict: refuse settings that only change training (BatchNorm's unbiased running variance);
        False accepts them, the converted model then matches in inference only.
    Returns:
      a built ``keras.Sequential`` whose layer holding funcdl's ``layers_{i}`` weights is named ``layers_{i}``.
    """
    keras = frameworks.keras()
    if isinstance(model, nn.Graph):
        nn.check_variables(model, variables, input_shape, "to_keras", error=ConversionError)
        return _graph_export.build(keras, model, variables, input_shape, strict)
    if any(d is None for d in input_shape):
        raise ConfigError(f"to_keras needs a concrete input_shape, got {tuple(input_shape)}")
    input_shape = tuple(int(d) for d in input_shape)
    nn.check_variables(model, variables, input_shape, "to_keras", error=ConversionError)
    plan = _keras_layers(keras, model, variables, input_shape, strict)
    dtype = "int32" if nn.input_dtype(model) == jnp.int32 else "float32"
    layers = [layer for _, _, keras_layers in plan for layer in keras_layers]
    keras_model = keras.Sequential([keras.Input(shape=input_shape, dtype=dtype, name="input")] + layers,
                                   name="funcdl")
    _assign(keras_model, model, variables, plan)
    return keras_model


def _pull(keras_model, model, input_shape):
    """funcdl variables of ``model`` read back from a keras model built by ``to_keras``."""
    holders = [(index, layer, keras_model.get_layer(f"layers_{index}")) for index, layer in enumerate(model.layers)
               if type(layer).__name__ in KERAS_WEIGHTS]
    return _variables(model, input_shape, holders)


# ---- files -----------------------------------------------------------------------------------------------

_CODE_CLASSES = ("Lambda", "TFOpLambda", "SlicingOpLambda", "__lambda__")


def _refuse_code(config, path):
    """FileFormatError if the architecture JSON holds a layer or function that would run stored Python code."""
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("class_name")
            if isinstance(kind, str) and (kind in _CODE_CLASSES or kind.endswith("Lambda")):
                layer_config = item.get("config")
                name = layer_config.get("name", "?") if isinstance(layer_config, dict) else "?"
                raise FileFormatError(
                    f"{path} contains a {kind} layer ({name!r}) whose Python code would run when it is loaded; "
                    "refused. Load it with unsafe=True (CLI: --unsafe) only if you trust the file")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _architecture(path):
    """The architecture JSON of a ``.keras`` zip or a legacy full-model ``.h5``, read without keras.

    Sizes are checked first: the zip's members and every HDF5 dataset's declared shape must fit in
    ``max_bytes()``, so keras never unpacks a bomb.
    """
    if path.name.lower().endswith(".keras"):
        return _keras_zip_config(path)
    import h5py  # lazily, like keras: installed with the [tf] extra
    try:
        with h5py.File(path, "r") as handle:
            _check_hdf5_sizes(path, handle)
            config = handle.attrs.get("model_config")
    except OSError as err:
        raise FileFormatError(f"{path} is not a valid HDF5 file: {err}") from None
    if config is None:
        raise FileFormatError(f"{path} holds weights only (no model_config); use "
                              "load_keras_weights(path, model, input_shape)")
    return _json(config.decode() if isinstance(config, bytes) else config, path)


def _json(text, path):
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise FileFormatError(f"{path} is not a valid .keras file: its config is not JSON ({str(err)[:60]})") from None


def _keras_zip_config(path):
    """config.json of a ``.keras`` zip, after checking the sizes its members and weights declare."""
    import h5py  # lazily, like keras: installed with the [tf] extra
    limit = max_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            check_size(str(path), sum(info.file_size for info in archive.infolist()), limit)
            config = archive.read("config.json")
            if "model.weights.h5" in archive.namelist():
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
                    _check_hdf5_sizes(f"{path}: model.weights.h5", handle)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise FileFormatError(f"{path} is not a valid .keras file: {err}") from None
    try:
        return _json(config.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise FileFormatError(f"{path} is not a valid .keras file: config.json is not UTF-8") from None


def _check_hdf5_sizes(path, handle):
    """Refuse an HDF5 file whose datasets declare more than ``max_bytes()`` in all (compressed chunks can)."""
    import h5py  # lazily, like keras: installed with the [tf] extra
    sizes = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and item.shape is not None:
            sizes.append(math.prod(item.shape) * item.dtype.itemsize)  # Python ints: no overflow
    handle.visititems(visit)
    check_size(f"{path}: its datasets", sum(sizes), max_bytes())


def _kind(path):
    name = Path(path).name.lower()
    if name.endswith(".weights.h5"):
        return "weights"
    if name.endswith(".keras"):
        return ".keras"
    if name.endswith((".h5", ".hdf5")):
        return ".h5"
    raise FileFormatError(f"{path}: expected a .keras, .h5 or .weights.h5 file")


def load_keras_file(path: str | Path,
                    unsafe: bool = False) -> tuple[Any, dict[str, Any], Any]:
    """Read a keras model file (``.keras``, or a legacy full-model ``.h5``) into funcdl.

    The architecture JSON is checked for Lambda layers before keras deserialises
    anything (legacy ``.h5`` loading ignores keras' own ``safe_mode``).

    Args:
      path: the file.
      unsafe: let keras run Python code stored in the file (Lambda layers); such layers are still
        not convertible, so this only changes which error you get.
    Returns:
      ``(model, variables, input_shape)``; ``input_shape`` is a tuple of shapes for a model with several inputs.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist or is not a file")
    kind = _kind(path)  # an unknown suffix first: that is what the user named wrongly
    reason = misnamed(path)
    if reason:  # a .pt2 or a picture named .keras: say what it is, not that keras cannot read it
        raise FileFormatError(reason)
    if kind == "weights":
        raise FileFormatError(f"{path} holds weights only; use load_keras_weights(path, model, input_shape)")
    config = _architecture(path)
    if not unsafe:
        _refuse_code(config, path)
    if kind == ".h5":
        legacy = _read_keras2(path, config)
        if legacy is not None:
            return legacy
    keras = frameworks.keras()
    try:
        keras_model = keras.saving.load_model(str(path), compile=False, safe_mode=not unsafe)
    except FuncdlError:
        raise
    except Exception as err:  # keras raises ValueError, TypeError, OSError... for files it cannot read
        raise FileFormatError(f"keras cannot load {path}: {str(err).splitlines()[0] if str(err) else err!r}") from None
    model, variables = from_keras(keras_model)
    return model, variables, keras_input_shapes(keras_model)


def _read_keras2(path, config):
    """``(model, variables, input_shape)`` of a Keras 2 full-model ``.h5``, read with h5py alone; None for a file
    Keras 3 wrote (keras reads those)."""
    import h5py  # lazily, like keras: installed with the [tf] extra
    with h5py.File(path, "r") as handle:
        if keras_version(handle).startswith("3"):
            return None
        graph, flat, shapes = read_keras2_h5(handle, config, path)
    model, variables = _checked_graph(graph, flat, shapes)
    return model, variables, shapes[0] if len(shapes) == 1 else shapes


def save_keras_file(path: str | Path, model: Any, variables: Any, input_shape: Sequence[int],
                    strict: bool = True, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model`` as a keras model file (``.keras``, or legacy ``.h5``), atomically.

    Args:
      path: output file; its suffix picks the format.
      model, variables, input_shape, strict: as in ``to_keras``.
      metadata: str -> str entries kept beside the model (``read_metadata`` gives them back): a ``funcdl.json``
        member of the ``.keras`` zip, which keras does not read, or an attribute of the ``.h5`` file.
    """
    kind = _kind(path)
    if kind == "weights":
        raise FileFormatError(f"{path} is a weights file name; use save_keras_weights or a .keras name")
    keras_model = to_keras(model, variables, input_shape, strict)
    with atomic_path(path, suffix=kind) as tmp:
        keras_model.save(str(tmp))
        _write_metadata(tmp, kind, metadata)


def save_keras_weights(path: str | Path, model: Any, variables: Any, input_shape: Sequence[int],
                       strict: bool = True, metadata: Mapping[str, str] | None = None) -> None:
    """Write the keras ``.weights.h5`` of ``model`` (layers named ``layers_{i}``), atomically; ``metadata`` as in
    ``save_keras_file``."""
    if _kind(path) != "weights":
        raise FileFormatError(f"{path}: a keras weights file name must end in .weights.h5")
    keras_model = to_keras(model, variables, input_shape, strict)
    with atomic_path(path, suffix=".weights.h5") as tmp:
        keras_model.save_weights(str(tmp))
        _write_metadata(tmp, "weights", metadata)


_METADATA_MEMBER, _METADATA_ATTRIBUTE = "funcdl.json", "funcdl_metadata"


def _write_metadata(path, kind, metadata):
    if not metadata:
        return
    text = json.dumps({str(k): str(v) for k, v in metadata.items()})
    if kind == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(_METADATA_MEMBER, text)
        return
    import h5py  # lazily, like keras: installed with the [tf] extra
    with h5py.File(path, "a") as handle:
        handle.attrs[_METADATA_ATTRIBUTE] = text


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata ``save_keras_file`` / ``save_keras_weights`` kept in ``path`` (``{}`` when none).

    Only that JSON is read: the zip member, size-checked, or the HDF5 attribute.
    """
    path = Path(path)
    try:
        if _kind(path) == ".keras":
            with zipfile.ZipFile(path) as archive:
                if _METADATA_MEMBER not in archive.namelist():
                    return {}
                check_size(f"{path}: {_METADATA_MEMBER}", archive.getinfo(_METADATA_MEMBER).file_size,
                           min(max_bytes(), 1 << 20))
                text = archive.read(_METADATA_MEMBER)
        else:
            import h5py  # lazily, like keras: installed with the [tf] extra
            with h5py.File(path, "r") as handle:
                text = handle.attrs.get(_METADATA_ATTRIBUTE)
        if text is None:
            return {}
        metadata = json.loads(text)
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FileFormatError(f"{path}: its funcdl metadata is not a JSON object of strings")
    return metadata


def _count_tensors(path):
    import h5py
    found = []
    try:
        with h5py.File(path, "r") as handle:
            _check_hdf5_sizes(path, handle)
            handle.visititems(lambda name, item: found.append(name) if isinstance(item, h5py.Dataset) else None)
    except OSError as err:
        raise FileFormatError(f"{path} is not a valid HDF5 file: {err}") from None
    return len(found)


def load_keras_weights(path: str | Path, model: Any,
                       input_shape: Sequence[int] | None = None) -> tuple[Any, dict[str, Any]]:
    """Read a keras ``.weights.h5`` file into the architecture ``model``.

    Args:
      path: the weights file.
      model: a funcdl Sequential (then ``input_shape`` is required; the file's layers must match
        what ``to_keras`` builds for it) or a keras model (whose architecture is used as is).
      input_shape: one example's shape, for a funcdl ``model``.
    Returns:
      ``(model, variables)``: the funcdl model (``model`` itself, or converted from the keras one).
    """
    path = Path(path)
    if not path.is_file() or _kind(path) != "weights":
        raise FileFormatError(f"{path} is not an existing .weights.h5 file")
    stored = _count_tensors(path)  # sizes checked before keras (and TensorFlow) are even imported
    keras = frameworks.keras()
    if isinstance(model, keras.Model):
        keras_model = model
    elif input_shape is None:
        raise ConfigError("load_keras_weights needs input_shape with a funcdl model")
    else:
        template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                nn.init_shapes(model, input_shape, nn.input_dtype(model)))
        keras_model = to_keras(model, template, input_shape, strict=False)
    if stored != len(keras_model.weights):  # keras skips tensors it has no place for without a word
        raise ConversionError(f"{path} holds {stored} tensors, the model has {len(keras_model.weights)} weights")
    try:
        keras_model.load_weights(str(path))
    except Exception as err:  # keras raises ValueError / KeyError for files that do not fit the model
        raise ConversionError(f"{path} does not fit the model: {str(err).splitlines()[0] if str(err) else err!r}") \
            from None
    if isinstance(model, keras.Model):
        return from_keras(keras_model)
    return model, _pull(keras_model, model, input_shape)
