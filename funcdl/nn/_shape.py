"""Layers that only move values around: Flatten, Reshape, Dropout, Permute, RepeatVector."""
import math

import flax.linen as linen
import jax
import jax.numpy as jnp

from funcdl.errors import ShapeError
from funcdl.nn._base import Layer, layer_path


class Flatten(Layer):
    """(B, d1, d2, ...) -> (B, d1 * d2 * ...), in row-major (NHWC) order."""

    def __call__(self, x):
        return jnp.reshape(x, (x.shape[0], -1))


class Reshape(Layer):
    """(B, ...) -> (B, *shape); one entry of ``shape`` may be -1."""
    shape: tuple

    def __call__(self, x):
        target = tuple(self.shape)
        known = math.prod(d for d in target if d != -1)
        size = math.prod(x.shape[1:])
        if (-1 in target and size % known) or (-1 not in target and size != known):
            raise ShapeError(f"layer {layer_path(self)} (Reshape) cannot reshape {tuple(x.shape[1:])} "
                             f"({size} values per example) to {target}")
        return jnp.reshape(x, (x.shape[0],) + target)


class Dropout(Layer):
    """Inverted dropout: in training zero each value with probability ``rate`` and scale by 1/(1-rate).

    Needs a ``'dropout'`` PRNG key when ``train=True`` (``fit`` provides one per step).
    """
    rate: float = 0.5

    @linen.compact
    def __call__(self, x, train=False):
        if not train or self.rate == 0.0:
            return x
        keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class ImageRows(Layer):
    """(B, H, W, C) -> (B, H, W * C): each image row becomes one time step of a sequence."""

    def __call__(self, x):
        if x.ndim == 3:
            return x
        return jnp.reshape(x, x.shape[:2] + (-1,))


class Permute(Layer):
    """Reorder the non-batch axes (Keras semantics): ``dims`` is a permutation of 1..n.

    ``Permute((2, 1))``: (B, T, F) -> (B, F, T); output axis k is input axis ``dims[k-1]``.
    """
    dims: tuple = (2, 1)

    def __call__(self, x):
        dims = tuple(self.dims)
        if sorted(dims) != list(range(1, x.ndim)):
            raise ShapeError(f"layer {layer_path(self)} (Permute) takes dims, a permutation of 1..{x.ndim - 1} "
                             f"(the non-batch axes), got {dims} for input shape {tuple(x.shape)}")
        return jnp.transpose(x, (0,) + dims)


class RepeatVector(Layer):
    """Repeat each example ``n`` times along a new time axis: (B, F) -> (B, n, F)."""
    n: int = 1

    def __call__(self, x):
        if x.ndim != 2:
            raise ShapeError(f"layer {layer_path(self)} (RepeatVector) takes (batch, features), got shape "
                             f"{tuple(x.shape)}")
        return jnp.broadcast_to(x[:, None, :], (x.shape[0], int(self.n), x.shape[1]))
