"""Architectures as JSON-able data: ``to_config`` / ``from_config`` through the layer registry."""
import dataclasses
from typing import Any

import flax.linen as linen

from funcdl.errors import ConfigError, choices_message
from funcdl.nn._activations import activation_layer
from funcdl.nn._base import REGISTRY, Layer

_SKIP_FIELDS = ("parent", "name")


def _encode(value):
    if isinstance(value, linen.Module):
        return to_config(value)
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
    """Rebuild a layer (and its sub-layers) from ``to_config`` output."""
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(f"an architecture must be a dict with a 'type' key, got {type(config).__name__}")
    kind = config["type"]
    if kind not in REGISTRY:
        raise ConfigError(choices_message("layer", kind, REGISTRY))
    cls = REGISTRY[kind]
    names = {f.name for f in dataclasses.fields(cls)} - set(_SKIP_FIELDS)
    kwargs = {k: _decode(v) for k, v in config.items() if k != "type"}
    unknown = set(kwargs) - names
    if unknown:
        raise ConfigError(f"layer {kind} has no setting {sorted(unknown)[0]!r}; it takes: {', '.join(sorted(names))}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"cannot build layer {kind} from {kwargs}: {err}") from None
