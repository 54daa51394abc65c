"""PyTorch bridge: torch.nn modules, state dicts and files to and from funcdl models.

Layouts: ``interop.layouts`` (every transposed weight is named there, and
every tensor's shape is checked before it is copied).

Images are NHWC in funcdl and NCHW in torch: ``model.apply(variables,
x.transpose(0, 2, 3, 1))`` equals ``module(x)``. The first Linear after
flattening an NCHW activation gets its weight columns permuted from (C, H, W)
to (H, W, C) order. 4-D outputs stay each framework's layout (NHWC / NCHW).
torch, and the modules here that need it (``_trace``, ``_ops``, ``_plan``,
``_modules``), are imported only when a function is called.
"""
import io
import json
import pickle
import re
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.errors import ConfigError, ConversionError, FileFormatError
from funcdl.io import atomic_path, check_size, flatten_variables, max_bytes, read_header, unflatten_variables
from funcdl.io.sniff import misnamed
from interop import frameworks
from interop.layouts import checked
from interop.pytorch import _pt2
from interop.pytorch._nodes import SUPPORTED, SUPPORTED_ATEN, SUPPORTED_ROWS

__all__ = ["SUPPORTED", "SUPPORTED_ATEN", "SUPPORTED_ROWS", "from_exported", "from_state_dict", "from_torch",
           "keeps_metadata", "load_torch_file", "load_torch_model", "read_metadata", "read_pt2", "save_torch_file",
           "to_state_dict", "to_torch"]
SUFFIXES = (".pt", ".pth", ".pt2", ".safetensors")
_META = "funcdl.torch"  # metadata prefix in .pt2 extra files and .safetensors headers
_RNN_KEY = re.compile(r"^(.*)\.(weight|bias)_(ih|hh)_l(\d+)$")


def _torch():
    return frameworks.torch()


def _input_dtype(model):
    return nn.input_dtype(model)


def _as_jax(flat):
    return jax.tree.map(jnp.asarray, unflatten_variables(flat))


# -- torch -> funcdl, by tracing ---------------------------------------------------------------
def from_torch(module: Any, example_input: Any) -> tuple[nn.Sequential | nn.Graph, dict[str, Any]]:
    """A funcdl model and its variables equal to a torch module (in eval mode).

    A forward that is one chain becomes a Sequential (params ``layers_0``, ...); one with residual adds,
    ``torch.cat``, branches or several outputs a Graph with input ``input``, whose nodes (and params) are
    named by torch module path (``layer1.0.conv1``) or fx node name (``add_1``).

    Args:
      module: a ``torch.nn.Module`` whose forward is built of supported pieces
        (``SUPPORTED``); it is traced with torch.fx, not guessed from names.
      example_input: one batch the module accepts (torch tensor or array), NCHW
        for images; it fixes C, H, W for the Flatten permutation.
    Returns:
      ``(model, variables)``; ``model.apply(variables, x.transpose(0, 2, 3, 1))``
      equals ``module(x)`` for images (``x`` as is otherwise); a tuple for several outputs.
    Raises:
      ConfigError naming the first unsupported module, function or pattern.
    """
    torch = _torch()
    # imports torch: only once a conversion runs
    from interop.pytorch import _trace  # noqa: PLC0415
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"from_torch needs a torch.nn.Module, got {type(module).__name__}")
    example = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(
        np.asarray(example_input))
    reader = _trace.read(module, example.detach())
    shape = tuple(example.shape[1:])
    input_shape = (shape[1], shape[2], shape[0]) if example.ndim == 4 else shape
    dtype = jnp.float32 if example.is_floating_point() else jnp.int32
    model, names = reader.model(input_shape, dtype)
    return model, _collect(reader, model, names, input_shape, dtype, _trace.torch_array)


def from_exported(program: Any) -> tuple[nn.Sequential | nn.Graph, dict[str, Any], tuple[int, ...]]:
    """A funcdl model, its variables and input shape from a ``torch.export`` program's ATen graph.

    The program is read by funcdl's own ``.pt2`` reader (never unpickled); its ops map to funcdl layers as in
    ``from_torch`` (``SUPPORTED_ATEN``); a chain becomes a Sequential, anything else a Graph.

    Args:
      program: a ``.pt2`` path, a ``read_pt2`` archive or program, or a ``torch.export.ExportedProgram``
        (exported from a module in eval mode).
    Returns:
      ``(model, variables, input_shape)``, input_shape funcdl's (H, W, C for NCHW images); a program with several
      inputs gives a Graph taking a tuple of them and a tuple of their shapes.
    Raises:
      ConversionError naming the first unsupported op, its node and the source line torch recorded.
    """
    torch = _torch()
    # imports torch: only once a conversion runs
    from interop.pytorch import _exported  # noqa: PLC0415
    if isinstance(program, torch.export.ExportedProgram):
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        with tempfile.TemporaryDirectory() as folder:  # the safe reader reads files; removed after
            path = Path(folder) / "program.pt2"
            path.write_bytes(buffer.getvalue())
            program = _pt2.read(path).program
    elif isinstance(program, (str, Path)):
        program = read_pt2(program).program
    elif isinstance(program, _pt2.Pt2Archive):
        program = program.program
    if not isinstance(program, _pt2.Pt2Program):
        raise ConfigError(f"from_exported needs a .pt2 path or an exported program, got {type(program).__name__}")
    exported, input_shape, dtype = _exported.read(program)
    model, names = exported.reader.model(input_shape, dtype)
    declared = exported.reader.sources is not None  # several inputs: the Graph declares their shapes
    variables = _collect(exported.reader, model, names, None if declared else input_shape, None if declared else dtype,
                         np.asarray)
    return model, variables, input_shape


def _collect(reader, model, names, input_shape, dtype, torch_array):
    expected = nn.variable_shapes(nn.init_shapes(model, input_shape, dtype))
    flat, used = {}, set(reader.ignored)
    for collection, index, name, key, convert in reader.entries:
        path = f"{collection}/{names[index]}/{name}"
        source = None if key is None else torch_array(reader.state_dict[key])
        flat[path] = checked(convert(source), expected[path], f"{key} -> {path}", "from_torch")
        used.add(key)
    missing = sorted(set(expected) - set(flat))
    if missing:
        raise ConversionError(f"from_torch: no torch tensor for {missing[:3]}")
    unused = [key for key in reader.state_dict if key not in used]
    if unused:
        raise ConversionError(f"from_torch: the module holds tensors its forward never uses: {unused[:4]}; "
                              "remove those modules (funcdl would drop them)")
    return _as_jax(flat)


# -- funcdl -> torch ---------------------------------------------------------------------------
def to_torch(model: Any, variables: Any, input_shape: Sequence[int]) -> Any:
    """A ``torch.nn.Sequential`` computing what ``model`` computes, holding its weights (eval mode).

    Args:
      model: a funcdl Sequential, or a Graph (then a module whose ``forward`` follows the graph, one submodule
        per node named after it; see ``interop.pytorch._graph_export``).
      variables: its variables (``{'params': ..., 'batch_stats': ...}``).
      input_shape: one example's funcdl input shape, no batch axis (H, W, C for images); a tuple or dict
        of them for a Graph with several inputs.
    Returns:
      the torch module; it takes NCHW images (``x.transpose(0, 3, 1, 2)`` of funcdl's
      input) and its ``state_dict()`` uses torch's names and layouts. Call
      ``.train()`` on it to continue training in PyTorch.
    """
    torch = _torch()
    input_shape = _shape_tree(input_shape)
    nn.check_variables(model, variables, input_shape, "to_torch", error=ConversionError)
    module, entries = _module_and_entries(model, input_shape)
    flat = flatten_variables(variables)
    state = module.state_dict()
    # nanoGPT's checks: every torch tensor and every funcdl array has exactly one entry
    _same_names("to_torch: torch tensors", {k for k in state if not k.endswith(".num_batches_tracked")},
                {e.key for e in entries})
    _same_names("to_torch: funcdl tensors", set(flat), {e.path for e in entries})
    for entry in entries:
        array = checked(entry.to_torch(flat[entry.path]), entry.shape, f"{entry.path} -> {entry.key}", "to_torch")
        state[entry.key] = torch.from_numpy(array.copy())
    module.load_state_dict(state)
    return module.eval()


def _shape_tree(input_shape):
    """One shape as a tuple; a dict or tuple of shapes (a Graph's several inputs) with each shape a tuple."""
    if isinstance(input_shape, Mapping):
        return {key: tuple(value) for key, value in input_shape.items()}
    if _several(input_shape):
        return tuple(tuple(value) for value in input_shape)
    return tuple(input_shape)


def _module_and_entries(model, input_shape):
    """(the torch module of ``model``, weights not yet loaded; its entries: torch key, funcdl path, layouts)."""
    torch = _torch()
    # they import torch: only once a conversion runs
    from interop.pytorch import _graph_export, _plan  # noqa: PLC0415
    dtype = _input_dtype(model)
    if isinstance(model, nn.Graph):
        return _graph_export.build(model, input_shape, dtype)
    modules, entries = _plan.plan(model, input_shape, dtype)
    return torch.nn.Sequential(*modules), entries


def _same_names(what, actual, expected):
    if actual != expected:
        raise ConversionError(f"{what} do not match the plan (missing: {sorted(expected - actual)[:3]}, unexpected: "
                              f"{sorted(actual - expected)[:3]})")


def to_state_dict(model: Any, variables: Any, input_shape: Sequence[int]) -> OrderedDict:
    """The torch state dict (OrderedDict of tensors) of ``to_torch(model, variables, input_shape)``."""
    module = to_torch(model, variables, input_shape)
    return OrderedDict((k, v.detach().clone()) for k, v in module.state_dict().items())


def from_state_dict(state_dict: Mapping[str, Any], model: Any, input_shape: Sequence[int],
                    source: str = "state dict") -> dict[str, Any]:
    """funcdl variables for ``model`` from a torch state dict.

    Keys named as ``to_state_dict`` names them map by name. Otherwise the state
    dict's parameter groups (one per torch module, one per layer of a stacked
    LSTM/GRU/RNN) map in order to ``model``'s layers with weights, as in the
    classic torch model of the same architecture (e.g. a torch MNIST CNN's
    state dict into ``funcdl.models.cnn()``).

    Args:
      state_dict: {name: torch tensor or array}.
      model: a funcdl Sequential.
      input_shape: one example's funcdl input shape, no batch axis.
      source: what to call the state dict in error messages (e.g. a file name).
    Raises:
      ConversionError on missing, extra or mis-shaped tensors.
    """
    _torch()
    # imports torch: only once a conversion runs
    from interop.pytorch import _trace  # noqa: PLC0415
    if not hasattr(state_dict, "items"):
        raise ConversionError(f"{source}: expected a state dict (name -> tensor), got {type(state_dict).__name__}")
    input_shape = _shape_tree(input_shape)
    _, entries = _module_and_entries(model, input_shape)
    given = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    keys = {e.key for e in entries}
    mapping = {k: k for k in keys} if set(given) == keys else _match_groups(list(given), entries, source)
    flat = {}
    for entry in entries:
        key = mapping[entry.key]
        tensor = given[key]
        array = _trace.torch_array(tensor) if hasattr(tensor, "detach") else np.asarray(tensor)
        flat[entry.path] = entry.from_torch(checked(array, entry.shape, key, source))
    variables = _as_jax(flat)
    nn.check_variables(model, variables, input_shape, source, error=ConversionError)
    return variables


def _groups(keys, layer_names=None):
    """[(group name, {suffix: key})] in order: one group per module, per layer of a stacked RNN."""
    groups = {}
    for i, key in enumerate(keys):
        match = _RNN_KEY.match(key)
        if match:
            group, suffix = f"{match[1]} (layer {match[4]})", f"{match[2]}_{match[3]}"
        else:
            group, _, suffix = key.rpartition(".")
        name = layer_names[i] if layer_names else group
        groups.setdefault(name, {})[suffix] = key
    return list(groups.items())


def _match_groups(keys, entries, source):
    want = _groups([e.key for e in entries], [e.path.split("/")[1] for e in entries])
    have = _groups(keys)
    if len(want) != len(have):
        raise ConversionError(f"{source}: {len(have)} parameter groups ({', '.join((g for g, _ in have))}) but the "
                              f"architecture has {len(want)} layers with weights ({', '.join((g for g, _ in want))})")
    mapping = {}
    for (layer, wanted), (group, held) in zip(want, have):
        if set(wanted) != set(held):
            raise ConversionError(f"{source}: group {group!r} holds {sorted(held)} but {layer} needs {sorted(wanted)} "
                                  "(groups are matched to layers in order)")
        mapping.update({wanted[suffix]: held[suffix] for suffix in wanted})
    return mapping


# -- files -------------------------------------------------------------------------------------
def load_torch_file(path: str | Path) -> OrderedDict:
    """The state dict in a PyTorch file, read without running any code.

    ``.pt`` / ``.pth``: a state dict (or a checkpoint dict holding one under
    ``state_dict`` / ``model_state_dict`` / ``model``) read with
    ``torch.load(weights_only=True)``; pickles of modules or other objects are
    refused. ``.pt2``: a ``torch.export`` program, read by ``read_pt2`` (JSON and
    raw tensor records; never unpickled). ``.safetensors``: tensors only.

    Returns:
      {name: torch.Tensor}, in the file's order.
    """
    torch = _torch()
    state = _read(path)[0]
    return OrderedDict((k, v if isinstance(v, torch.Tensor) else _tensor_from_array(torch, v))
                       for k, v in state.items())


def _tensor_from_array(torch, array):
    if array.dtype.name == "bfloat16":  # numpy has no bfloat16 of its own (ml_dtypes'); torch reads its bits
        return torch.from_numpy(array.view(np.uint16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array))


def load_torch_model(path: str | Path, model: Any | None = None,
                     input_shape: Sequence[int] | None = None) -> tuple[Any, dict[str, Any], Any]:
    """``(model, variables, input_shape)`` from a PyTorch file (input_shape a tuple, or a dict / tuple of them).

    The architecture comes from ``model`` / ``input_shape`` when given, else from
    the funcdl metadata ``save_torch_file`` writes into ``.pt2`` and
    ``.safetensors`` files, else (a ``.pt2`` written by ``torch.export``) from
    the program's graph (``from_exported``).
    """
    if model is None and Path(path).suffix.lower() == ".pt2" and Path(path).is_file() and (
            f"{_META}.architecture" not in _pt2_funcdl_json(path)):
        return from_exported(path)  # any torch.export program: its graph is the architecture
    state, header = _read(path)
    if model is None:
        if f"{_META}.architecture" not in header:
            raise FileFormatError(f"{path} holds PyTorch weights but no funcdl architecture; give the architecture "
                                  "it was saved from (--arch) and its input shape (--input-shape)")
        try:
            model = nn.from_config(json.loads(header[f"{_META}.architecture"]))
        except (json.JSONDecodeError, ConfigError) as err:
            raise FileFormatError(f"{path} has an invalid funcdl architecture: {err}") from None
    if input_shape is None:
        if f"{_META}.input_shape" not in header:
            raise FileFormatError(f"{path} does not record the input shape; give it (--input-shape)")
        input_shape = json.loads(header[f"{_META}.input_shape"])
    input_shape = _shape_tree(input_shape)
    return model, from_state_dict(state, model, input_shape, source=str(path)), input_shape


def save_torch_file(path: str | Path, model: Any, variables: Any, input_shape: Sequence[int],
                    metadata: Mapping[str, str] | None = None) -> None:
    """Write ``model`` for PyTorch, atomically, by suffix.

    ``.pt`` / ``.pth``: the state dict (``torch.save``); ``.pt2``: the
    ``torch.export`` program of ``to_torch(...)`` (batch axis dynamic);
    ``.safetensors``: the state dict with torch names. ``.pt2`` and
    ``.safetensors`` also record the funcdl architecture and input shape, and
    ``metadata`` (str -> str, e.g. normalisation; ``read_metadata`` gives it back);
    a state dict has no place for it (``keeps_metadata``).
    """
    torch = _torch()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise FileFormatError(f"{path}: unknown PyTorch file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    input_shape = _shape_tree(input_shape)
    module = to_torch(model, variables, input_shape)
    state = OrderedDict((k, v.detach().contiguous()) for k, v in module.state_dict().items())
    shape_json = json.dumps(input_shape if isinstance(input_shape, dict) else list(input_shape))
    header = {f"{_META}.architecture": json.dumps(nn.to_config(model)), f"{_META}.input_shape": shape_json,
              f"{_META}.keys": json.dumps(list(state))}
    if metadata:
        header[f"{_META}.metadata"] = json.dumps({str(k): str(v) for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        if suffix in (".pt", ".pth"):
            torch.save(state, str(tmp))
        elif suffix == ".safetensors":
            # imports torch: only when such a file is written
            from safetensors.torch import save_file  # noqa: PLC0415
            save_file(state, str(tmp), metadata=header)
        else:
            program = _export(module, model, input_shape)
            buffer = io.BytesIO()
            torch.export.save(program, buffer, extra_files={"funcdl.json": json.dumps(header)})
            tmp.write_bytes(buffer.getvalue())


def keeps_metadata(path: str | Path) -> bool:
    """Whether a PyTorch file of this name keeps funcdl's metadata (``.pt2``, ``.safetensors``; not a state dict)."""
    return Path(path).suffix.lower() in (".pt2", ".safetensors")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata ``save_torch_file`` recorded in ``path`` (``{}`` for a state dict or a file funcdl did not write).

    Only the JSON that holds it is read: the ``.safetensors`` header, or the ``.pt2``'s ``funcdl.json`` extra file.
    """
    path = Path(path)
    if not keeps_metadata(path):
        return {}
    header = read_header(path)[0] if path.suffix.lower() == ".safetensors" else _pt2_funcdl_json(path)
    text = header.get(f"{_META}.metadata")
    if text is None:
        return {}
    try:
        metadata = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        metadata = None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FileFormatError(f"{path}: its funcdl metadata is not a JSON object of strings")
    return metadata


def _pt2_funcdl_json(path):
    """The ``funcdl.json`` extra file of a ``.pt2`` (``{}`` when absent), read alone: JSON only, size-checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist()
                       if info.filename.endswith(("/extra/funcdl.json", "extra_files/funcdl.json"))]
            if not members:
                return {}
            check_size(f"{path}: funcdl.json", members[0].file_size, min(max_bytes(), 1 << 20))
            text = archive.read(members[0]).decode("utf-8")
        header = json.loads(text)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: its funcdl.json extra file is not a JSON object")
    return header


def _export(module, model, input_shape):
    """The ``torch.export`` program of ``module`` (of ``model``) on examples of ``input_shape`` (a tree for several
    inputs), the batch axis dynamic and shared by every input."""
    torch = _torch()
    if isinstance(input_shape, Mapping):
        shapes = [input_shape[name] for name in model.input_names]
    else:
        shapes = list(input_shape) if _several(input_shape) else [input_shape]
    dtype = _input_dtype(model)
    dtypes = list(dtype) if isinstance(dtype, tuple) else [dtype] * len(shapes)
    examples = []
    for shape, kind in zip(shapes, dtypes):
        shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else tuple(shape)
        integer = jnp.issubdtype(kind, jnp.integer)
        examples.append(torch.zeros((2,) + tuple(shape), dtype=torch.int64 if integer else torch.float32))
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():  # torch notes the RNN's cached flat weights list; harmless
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        dims = tuple({0: batch} for _ in examples)  # GraphModule.forward(*xs): one entry, for all of xs
        return torch.export.export(module, tuple(examples), dynamic_shapes=dims if len(dims) == 1 else (dims,))


def _several(input_shape):
    """Whether ``input_shape`` is a tuple / dict of shapes (a Graph's several inputs) rather than one shape."""
    return isinstance(input_shape, Mapping) or (bool(input_shape) and all(
        isinstance(value, (tuple, list)) for value in input_shape))


def _read(path):
    """(state dict, funcdl metadata) of a PyTorch file; ``.pt2`` tensors are numpy arrays (no torch needed)."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise FileFormatError(f"{path}: unknown PyTorch file type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    reason = misnamed(path)
    if reason:  # a safetensors file named .pt is not a pickle to refuse, a text file not a damaged model
        raise FileFormatError(reason)
    if suffix in (".pt", ".pth"):
        return _read_pickled(path), {}
    if suffix == ".pt2":
        return _read_program(path)
    if suffix == ".safetensors":
        _torch()
        return _read_safetensors(path)


def _refused(path, what):
    return FileFormatError(f"{path}: refused to load: {what} pickles objects other than tensors (a saved module or "
                           "code that would run on loading); re-save model.state_dict() or use .safetensors")


def _check_pickled_size(path):
    """Refuse a ``.pt`` whose zip members (or, for the legacy format, the file) exceed ``max_bytes()``."""
    limit = max_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            check_size(str(path), sum(info.file_size for info in archive.infolist()), limit)
    except zipfile.BadZipFile:  # torch's legacy (pre-1.6) format: a pickle stream, no compression
        check_size(str(path), path.stat().st_size, limit)


def _read_pickled(path):
    _check_pickled_size(path)  # before torch is even imported
    torch = _torch()
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():  # torch's weights_only refusal of a non-tensor pickle
            raise _refused(path, "it") from None
        raise FileFormatError(f"{path} is not a readable PyTorch file: {str(err).splitlines()[0]}") from None
    except Exception as err:  # torch raises RuntimeError / EOFError / ... for damaged files
        raise FileFormatError(f"{path} is not a readable PyTorch file: {str(err).splitlines()[0]}") from None
    return _state_dict_of(loaded, path)


def _state_dict_of(loaded, path):
    torch = _torch()

    def is_state(obj):
        return isinstance(obj, dict) and bool(obj) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    if is_state(loaded):
        return OrderedDict(loaded)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and is_state(loaded.get(key)):
            return OrderedDict(loaded[key])
    raise FileFormatError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")


def read_pt2(path: str | Path, max_bytes: int | None = None) -> _pt2.Pt2Archive:
    """A ``.pt2`` file's programs (graph, signature, tensors as numpy arrays) and extra files; no torch needed.

    The archive is read by funcdl itself (``interop.pytorch._pt2``): its JSON program and raw tensor records only.
    Nothing in it is unpickled; pickled members, pickled or opaque constants, compiled code, paths outside the
    archive and members or tensors larger than ``max_bytes`` (default ``$FUNCDL_MAX_BYTES`` or 2 GiB) are
    refused with a one-line FileFormatError.

    Args:
      path: a ``torch.export.save`` file (torch 2.1-2.13 layouts).
      max_bytes: the most bytes the archive's members, and separately its tensors, may unpack to.
    Returns:
      an ``interop.pytorch._pt2.Pt2Archive``; ``.program.graph.nodes``, ``.program.state_dict``, ``.extra_files``.
    """
    return _pt2.read(path, max_bytes)


def _read_program(path):
    """(state dict of numpy arrays, funcdl metadata) of a ``.pt2``, read by funcdl's own archive reader."""
    archive = read_pt2(path)
    program = archive.program
    text = archive.extra_files.get("funcdl.json", "")
    try:
        header = json.loads(text) if text else {}
    except (json.JSONDecodeError, RecursionError):
        header = None
    if not isinstance(header, dict) or not all(isinstance(v, str) for v in header.values()):
        raise FileFormatError(f"{path}: its funcdl.json extra file is not a JSON object of strings")
    return OrderedDict(program.state_dict), header


def _read_safetensors(path):
    # imports torch: only when such a file is read
    from safetensors.torch import load_file  # noqa: PLC0415
    header, _ = read_header(path)
    tensors = load_file(str(path))
    order = json.loads(header.get(f"{_META}.keys", "[]"))
    if sorted(order) == sorted(tensors):
        return OrderedDict((k, tensors[k]) for k in order), header
    return OrderedDict(tensors), header
