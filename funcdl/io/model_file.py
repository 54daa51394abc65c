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
from funcdl.errors import ConfigError, FileFormatError
from funcdl.io.atomic import atomic_path

FORMAT = "1"
SUFFIX = ".funcdl"


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
      metadata: extra str -> str entries.
    """
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


def _shape_from_json(value: Any, depth: int = 0) -> Any:
    """The recorded input shape: a tuple of positive ints, or a list / dict of them (one level); else None."""
    if isinstance(value, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in value):
        return tuple(value)
    if depth == 0 and isinstance(value, list) and value:
        listed = [_shape_from_json(item, 1) for item in value]
        return None if None in listed else tuple(listed)
    if depth == 0 and isinstance(value, dict) and value:
        named = {key: _shape_from_json(item, 1) for key, item in value.items()}
        return None if None in named.values() else named
    return None


def read_header(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """The metadata dict of a safetensors file, with clear errors for unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return handle.metadata() or {}, list(handle.keys())
    except Exception as err:  # safetensors raises its own SafetensorError / OSError for bad headers
        raise FileFormatError(f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") from None


def load_model(path: str | Path) -> tuple[Any, dict[str, Any], Any]:
    """Read a funcdl model file.

    Returns:
      ``(model, variables, input_shape)``; ``input_shape`` is a tuple (a tuple or dict of them for a graph with
      several inputs), None when not recorded.
    """
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
    input_shape = None if recorded is None else _shape_from_json(recorded)
    if recorded is not None and input_shape is None:
        raise FileFormatError(f"{path} records an invalid input shape {str(recorded)[:60]}; it must be a list of "
                              "positive sizes (a list or object of them for several inputs)")
    try:
        flat = load_file(str(path))
    except Exception as err:
        raise FileFormatError(f"{path} is not a valid safetensors file: {str(err).splitlines()[0]}") from None
    variables = unflatten_variables(flat)
    if input_shape is not None:
        nn.check_variables(model, variables, input_shape, str(path), error=FileFormatError)
    return model, variables, input_shape
