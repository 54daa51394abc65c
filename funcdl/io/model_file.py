"""funcdl's model file: architecture + variables in one safetensors file, written atomically.

Tensors are stored under their pytree path joined by '/', e.g.
``params/layers_1/kernel`` (a Sequential) or ``params/stage1_block1_conv1/kernel``
(a Graph's node); the metadata holds ``funcdl.architecture`` (the JSON of
``nn.to_config``), ``funcdl.input_shape`` (one example's shape as a JSON list;
for a graph with several inputs a list of them, or an object by input name)
and ``funcdl.format``. No pickle is involved, so loading a file never runs code.
"""
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import load_file, save

from funcdl import nn
from funcdl.errors import ConfigError, FileFormatError, ShapeError
from funcdl.io.atomic import atomic_path
from funcdl.io.sniff import misnamed, sniff

FORMAT = "1"
SUFFIX = ".funcdl"
_RECORDS = ("funcdl.format", "funcdl.architecture", "funcdl.input_shape")  # the model itself, not metadata


def flatten_variables(variables: Any) -> dict[str, np.ndarray]:
    """{'params/layers_1/kernel': np.ndarray, ...} from a nested variables dict."""
    flat = traverse_util.flatten_dict(dict(variables), sep="/")
    return {key: np.ascontiguousarray(np.asarray(value)) for key, value in flat.items()}


def unflatten_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Nested variables dict from ``flatten_variables`` output."""
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def save_model(path: str | Path, model: Any, variables: Any, input_shape: Sequence[int] | None = None,
               metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` and ``variables`` to ``path`` (safetensors), atomically.

    Args:
      path: output file (conventionally ``*.funcdl`` or ``*.safetensors``).
      model: a funcdl layer (usually Sequential); must be serialisable.
      variables: the model's variables dict (``{'params': ..., 'batch_stats': ...}``).
      input_shape: one example's shape without the batch axis, recorded for inspect/convert (a tuple or
        dict of shapes for a graph with several inputs).
      metadata: extra str -> str entries (``read_metadata`` gives them back).
    Raises:
      ShapeError: ``variables`` are not ``model``'s (checked when ``input_shape`` is given, before writing).
    """
    if input_shape is not None:
        input_shape = check_input_shapes(input_shape, "input_shape", ShapeError)
        nn.check_variables(model, variables, input_shape, "save_model: variables")
    header = {"funcdl.format": FORMAT, "funcdl.architecture": json.dumps(nn.to_config(model))}
    if input_shape is not None:
        header["funcdl.input_shape"] = json.dumps(_shape_to_json(input_shape))
    header.update({str(k): str(v) for k, v in (metadata or {}).items()})
    payload = save(flatten_variables(variables), metadata=header)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)  # Python's write, so a full disk is an OSError atomic_path reports


def _shape_to_json(shape: Any) -> Any:
    if isinstance(shape, Mapping):
        return {str(key): _shape_to_json(value) for key, value in shape.items()}
    if all(isinstance(d, (int, np.integer)) for d in shape):
        return [int(d) for d in shape]
    return [_shape_to_json(value) for value in shape]


def read_header(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """The metadata dict of a safetensors file, with clear errors for unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.metadata() or {}, list(handle.keys())
    except Exception as err:  # safetensors raises its own SafetensorError / OSError for bad headers
        reason = misnamed(path)
        raise FileFormatError(reason or f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") \
            from None


def read_metadata(path: str | Path) -> dict[str, str]:
    """What ``save_model`` recorded beside the model (``metadata=``: dataset, mean, std, num_classes, ...)."""
    return {key: value for key, value in read_header(path)[0].items() if key not in _RECORDS}


def _check_is_safetensors(path):
    """FileFormatError naming what ``path`` is when its content is another kind of file (a .pt2, a .keras, ...)."""
    kind = sniff(path) if Path(path).is_file() else None
    if kind is None or kind.suffix == ".safetensors":
        return
    arch = " --arch MODEL" if kind.suffix == ".pt" else ""
    convert = (f"; convert it with `funcdl convert {path} model.funcdl{arch}` (in Python: interop.pytorch or "
               "interop.keras)") if kind.suffix in (".pt2", ".pt", ".keras", ".h5") else ""
    raise FileFormatError(f"{path} is not a funcdl model file: it is {kind.name}{convert}")


def check_input_shape(shape: Any, what: str, error: type[Exception] = FileFormatError) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints; ``error`` naming ``what`` for anything else ([-1, 28], "abc")."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape):
        shown = json.dumps(shape) if isinstance(shape, (list, str, int, float)) else repr(shape)
        raise error(f"{what} must be a list of positive integers (one example's shape, e.g. [28, 28, 1]); "
                    f"got {shown}")
    return tuple(int(d) for d in shape)


def check_input_shapes(shape: Any, what: str, error: type[Exception] = FileFormatError) -> Any:
    """:func:`check_input_shape` of one shape or, for a graph with several inputs, of each in a tuple or dict."""
    if isinstance(shape, Mapping) and shape:
        return {str(key): check_input_shape(value, f"{what}[{key!r}]", error) for key, value in shape.items()}
    nested = isinstance(shape, Sequence) and not isinstance(shape, (str, bytes)) and len(shape) > 0 and all(
        isinstance(item, Sequence) and not isinstance(item, (str, bytes)) for item in shape)
    if nested:
        return tuple(check_input_shape(item, f"{what}[{index}]", error) for index, item in enumerate(shape))
    return check_input_shape(shape, what, error)


def load_model(path: str | Path) -> tuple[Any, dict[str, Any], Any]:
    """Read a funcdl model file.

    Returns:
      ``(model, variables, input_shape)``; ``input_shape`` is a tuple (a tuple or dict of them for a graph with
      several inputs), None when not recorded.
    Raises:
      FileFormatError: the file is not a funcdl model file (another framework's is named, with how to convert
        it), or its architecture, input shape or tensors are invalid.
    """
    _check_is_safetensors(path)
    metadata, _ = read_header(path)
    if "funcdl.architecture" not in metadata:
        raise FileFormatError(f"{path} holds weights but no funcdl architecture; "
                              "convert it with --arch or load it with interop")
    try:
        model = nn.from_config(json.loads(metadata["funcdl.architecture"]))
        recorded = json.loads(metadata["funcdl.input_shape"]) if "funcdl.input_shape" in metadata else None
    except RecursionError:
        raise FileFormatError(f"{path} has an invalid architecture: JSON nested too deeply") from None
    except (json.JSONDecodeError, ConfigError, TypeError) as err:
        raise FileFormatError(f"{path} has an invalid architecture: {err}") from None
    input_shape = None if recorded is None else check_input_shapes(recorded, f"{path}: its recorded input shape")
    try:
        flat = load_file(str(path))
    except Exception as err:
        raise FileFormatError(f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") from None
    variables = unflatten_variables(flat)
    if input_shape is not None:
        nn.check_variables(model, variables, input_shape, str(path), error=FileFormatError)
    nn.check_dtypes(variables, str(path), error=FileFormatError)
    return model, variables, input_shape
