"""Layer base class, the layer registry, and the shape checks layers run on their input.

A funcdl layer is a ``flax.linen.Module`` whose hyper-parameters are dataclass
fields of JSON-able values. Every subclass of :class:`Layer` registers itself
by class name, so an architecture round-trips through ``to_config`` /
``from_config`` (``funcdl.nn._config``) and a model file can carry it.
"""
import functools
import inspect
from typing import Any

import flax.linen as linen

from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._symbolic import is_symbolic, symbolic_call

REGISTRY: dict[str, type["Layer"]] = {}
_BUILTIN: set[str] = set()


class Layer(linen.Module):
    """Base class of every funcdl layer; subclass it for user-defined layers.

    A subclass is registered under its class name so that ``to_config`` /
    ``from_config`` and model files can name it. Layers that behave differently
    in training (dropout, batch norm) take a ``train`` keyword in ``__call__``.
    Called on a symbolic tensor (``funcdl.nn.Input`` or a layer's output while a
    graph is built) a layer records the call instead of computing.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)  # flax makes the class a dataclass and wraps its methods
        name = cls.__name__
        if name in _BUILTIN and cls.__module__ != REGISTRY[name].__module__:
            raise ConfigError(f"layer name {name!r} is taken by a built-in funcdl layer; rename your class")
        REGISTRY[name] = cls
        if cls.__module__.startswith("funcdl."):
            _BUILTIN.add(name)
        if "__call__" in cls.__dict__:
            cls.__call__ = _symbolic_or_computed(cls.__dict__["__call__"])


def _symbolic_or_computed(call):
    """``call`` (flax's wrapped ``__call__``), except that a call on symbolic tensors is recorded for a graph."""
    @functools.wraps(call)
    def dispatch(self, *args, **kwargs):
        if args and is_symbolic(args[0]):
            return symbolic_call(self, args[0], args[1:], kwargs)
        return call(self, *args, **kwargs)
    return dispatch


def takes_train(layer: Any) -> bool:
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
