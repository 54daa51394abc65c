"""Layer base class, the layer registry and architecture (de)serialisation.

A funcdl layer is a ``flax.linen.Module`` whose hyper-parameters are dataclass
fields of JSON-able values. Every subclass of :class:`Layer` registers itself
by class name, so an architecture round-trips through ``to_config`` /
``from_config`` and a model file can carry it.
"""
import dataclasses
import inspect

import flax.linen as linen

from funcdl.errors import ConfigError, ShapeError, choices_message

REGISTRY = {}
_BUILTIN = set()
_SKIP_FIELDS = ("parent", "name")


class Layer(linen.Module):
    """Base class of every funcdl layer; subclass it for user-defined layers.

    A subclass is registered under its class name so that ``to_config`` /
    ``from_config`` and model files can name it. Layers that behave differently
    in training (dropout, batch norm) take a ``train`` keyword in ``__call__``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name in _BUILTIN and cls.__module__ != REGISTRY[name].__module__:
            raise ConfigError(f"layer name {name!r} is taken by a built-in funcdl layer; rename your class")
        REGISTRY[name] = cls
        if cls.__module__.startswith("funcdl."):
            _BUILTIN.add(name)


def takes_train(layer):
    """Whether ``layer.__call__`` accepts a ``train`` keyword."""
    try:
        return "train" in inspect.signature(layer.__call__).parameters
    except (TypeError, ValueError):
        return False


def check_last_dim(layer, x, expected, what="features"):
    """Raise ShapeError naming ``layer`` when ``x.shape[-1] != expected``."""
    if x.shape[-1] != expected:
        raise ShapeError(
            f"layer {layer_path(layer)} ({type(layer).__name__}) expects input with {expected} {what} "
            f"in the last axis but got shape {tuple(x.shape)}")


def check_existing(layer, x, name, axis, what="features", collection="params"):
    """Before ``layer.param(name)``: raise ShapeError if the stored ``name`` does not fit ``x``'s last axis."""
    if layer.has_variable(collection, name):
        check_last_dim(layer, x, layer.get_variable(collection, name).shape[axis], what)


def check_rank(layer, x, ranks, layout):
    """Raise ShapeError naming ``layer`` when ``x.ndim`` is not one of ``ranks``."""
    if x.ndim not in ranks:
        raise ShapeError(
            f"layer {layer_path(layer)} ({type(layer).__name__}) expects input of layout {layout} "
            f"(rank {' or '.join(map(str, ranks))}) but got shape {tuple(x.shape)}")


def layer_path(layer):
    """The layer's position in its model, e.g. ``'layers_3'`` (its pytree name)."""
    path = layer.scope.path if layer.scope is not None else ()
    return "/".join(path) or type(layer).__name__


def _encode(value):
    if isinstance(value, linen.Module):
        return to_config(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if callable(value):
        from funcdl.nn._activations import activation_layer
        return to_config(activation_layer(value))
    return value


def to_config(layer):
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


def from_config(config):
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
