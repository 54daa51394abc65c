"""Merge layers: combine the outputs of several graph nodes into one (residual adds, concatenations, gates).

A merge layer takes a tuple (or list) of arrays, as a graph node with several
inputs passes them: ``Add()((a, b))``; in the symbolic API ``Add()([a, b])``.
Element-wise merges broadcast as numpy does (equal shapes, or size-1 axes such
as a (B, 1, 1, C) gate against (B, H, W, C)); none of them has parameters.
"""
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from funcdl.errors import ShapeError
from funcdl.nn._base import Layer, layer_path


def _arrays(layer: Layer, xs: Any, exactly: int | None = None) -> Sequence[jax.Array]:
    """``xs`` checked to be a tuple/list of at least two (or ``exactly``) arrays."""
    what = f"layer {layer_path(layer)} ({type(layer).__name__})"
    if not isinstance(xs, (tuple, list)):
        raise ShapeError(f"{what} merges several inputs; give it a tuple of arrays, got one of shape "
                         f"{tuple(getattr(xs, 'shape', ()))}")
    wanted = f"exactly {exactly}" if exactly else "at least 2"
    if (exactly and len(xs) != exactly) or len(xs) < 2:
        raise ShapeError(f"{what} takes {wanted} inputs, got {len(xs)}")
    return xs


def _elementwise(layer: Layer, xs: Any, combine: Callable[[jax.Array, jax.Array], jax.Array],
                 exactly: int | None = None) -> jax.Array:
    xs = _arrays(layer, xs, exactly)
    try:
        jnp.broadcast_shapes(*(x.shape for x in xs))
    except ValueError:
        raise ShapeError(f"layer {layer_path(layer)} ({type(layer).__name__}) cannot combine inputs of shapes "
                         f"{', '.join(str(tuple(x.shape)) for x in xs)}: they must be equal or broadcast "
                         "(size-1 axes)") from None
    return functools.reduce(combine, xs)


class Add(Layer):
    """Sum of its inputs: ``x1 + x2 + ...`` (the residual connection)."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.add)


class Subtract(Layer):
    """``x1 - x2`` of exactly two inputs."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.subtract, exactly=2)


class Multiply(Layer):
    """Product of its inputs: ``x1 * x2 * ...`` (gates, squeeze-and-excitation scales)."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.multiply)


class Average(Layer):
    """Mean of its inputs: ``(x1 + ... + xn) / n``."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.add) / len(xs)


class Maximum(Layer):
    """Element-wise maximum of its inputs."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.maximum)


class Minimum(Layer):
    """Element-wise minimum of its inputs."""

    def __call__(self, xs):
        return _elementwise(self, xs, jnp.minimum)


class Concatenate(Layer):
    """Its inputs joined along ``axis`` (of the batched arrays, as in Keras: -1 is channels in NHWC).

    Args:
      axis: the axis to join along; every other axis must agree. 0 (the batch axis) is refused.
    """
    axis: int = -1

    def __call__(self, xs):
        xs = _arrays(self, xs)
        rank = xs[0].ndim
        axis = self.axis + rank if self.axis < 0 else self.axis
        shapes = [tuple(x.shape) for x in xs]
        others = {shape[:axis] + shape[axis + 1:] for shape in shapes}
        if not 0 < axis < rank or any(x.ndim != rank for x in xs) or len(others) != 1:
            raise ShapeError(f"layer {layer_path(self)} (Concatenate) cannot join inputs of shapes "
                             f"{', '.join(map(str, shapes))} along axis {self.axis}: they need the same rank and "
                             "equal sizes on every other axis (the batch axis 0 cannot be joined)")
        return jnp.concatenate(xs, axis=axis)
