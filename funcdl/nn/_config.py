"""Architectures as JSON-able data: ``to_config`` / ``from_config`` through the layer registry.

``from_config`` reads configs from files written by anyone, so it imports
nothing, builds only registered layers, and bounds how deeply layers may nest
(``MAX_DEPTH``); a graph checks its own nodes (``funcdl.nn._graph``).
"""
import contextvars
import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as linen

from funcdl.errors import ConfigError, choices_message
from funcdl.nn._activations import activation_layer
from funcdl.nn._base import REGISTRY, Layer

_SKIP_FIELDS = ("parent", "name")
MAX_DEPTH = 32  # layers inside layers (a Sequential in a Graph in a Graph ...): far beyond any real model
_DEPTH = contextvars.ContextVar("funcdl_config_depth", default=0)


def _encode(value):
    if isinstance(value, linen.Module):
        return to_config(value)
    if hasattr(value, "to_config"):  # a graph's Input and Node
        return value.to_config()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if callable(value):
        return to_config(activation_layer(value))
    return value


def to_config(layer: Any) -> dict[str, Any]:
    """The JSON-able architecture of ``layer``: ``{"type": ClassName, field: value, ...}``."""
    if not isinstance(layer, Layer):
        raise ConfigError(
            f"{type(layer).__name__} is not a funcdl layer; subclass funcdl.nn.Layer to make it serialisable")
    config = {"type": type(layer).__name__}
    for field in dataclasses.fields(layer):
        if field.name not in _SKIP_FIELDS:
            config[field.name] = _encode(getattr(layer, field.name))
    return config


def _decode(value):
    if isinstance(value, dict) and "type" in value:
        return from_config(value)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


def from_config(config: dict[str, Any]) -> Layer:
    """Rebuild a layer (and its sub-layers) from ``to_config`` output.

    Raises:
      ConfigError: one line naming what is wrong (unknown layer or setting, a graph's bad node, nesting
        deeper than ``MAX_DEPTH``).
    """
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(f"an architecture must be a dict with a 'type' key, got {type(config).__name__}")
    depth = _DEPTH.get()
    if depth >= MAX_DEPTH:
        raise ConfigError(f"the architecture nests layers more than {MAX_DEPTH} deep; funcdl refuses it")
    token = _DEPTH.set(depth + 1)
    try:
        return _build(config)
    except RecursionError:  # lists nested thousands deep inside a setting
        raise ConfigError("the architecture is nested too deeply to read") from None
    finally:
        _DEPTH.reset(token)


def _build(config: dict[str, Any]) -> Layer:
    kind = config["type"]
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise ConfigError(choices_message("layer", kind, REGISTRY))
    cls = REGISTRY[kind]
    names = {f.name for f in dataclasses.fields(cls)} - set(_SKIP_FIELDS)
    unknown = set(config) - names - {"type"}
    if unknown:
        raise ConfigError(f"layer {kind} has no setting {sorted(unknown)[0]!r}; it takes: {', '.join(sorted(names))}")
    fields = {k: v for k, v in config.items() if k != "type"}
    custom = getattr(cls, "from_config_fields", None)  # a Graph reads its nodes itself
    kwargs = fields if custom is not None else {k: _decode(v) for k, v in fields.items()}
    try:
        return custom(kwargs) if custom is not None else cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build layer {kind} from {kwargs}: {err}") from None
