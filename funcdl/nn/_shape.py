"""Layers that only move values around: Flatten, Reshape, Dropout."""
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
