"""Fixed input transforms with no parameters: Rescaling and Normalization (Keras' preprocessing layers)."""
from typing import Any

import jax.numpy as jnp

from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._base import Layer, layer_path


def _values(layer: Layer, value: Any, what: str) -> jnp.ndarray:
    """``value`` (a number, or a tuple of one per channel) as an array that broadcasts over the last axis."""
    array = jnp.asarray(value, jnp.float32)
    if array.ndim > 1:
        raise ConfigError(f"layer {layer_path(layer)}: {what} must be a number or a tuple of numbers")
    return array


def _check_channels(layer: Layer, x: Any, values: jnp.ndarray, what: str) -> None:
    if values.ndim == 1 and values.shape[0] not in (1, x.shape[-1]):
        raise ShapeError(f"layer {layer_path(layer)}: {values.shape[0]} {what} values for {x.shape[-1]} channels")


class Rescaling(Layer):
    """``x * scale + offset`` (e.g. ``scale=1/255`` maps pixels to [0, 1]).

    Args:
      scale, offset: numbers, or tuples of one per channel (the last axis).
    """
    scale: Any = 1.0
    offset: Any = 0.0

    def __call__(self, x):
        scale, offset = _values(self, self.scale, "scale"), _values(self, self.offset, "offset")
        _check_channels(self, x, scale, "scale")
        _check_channels(self, x, offset, "offset")
        return (x * scale + offset).astype(x.dtype)


class Normalization(Layer):
    """``(x - mean) / max(sqrt(variance), epsilon)`` with fixed statistics, per channel (the last axis).

    The statistics are part of the architecture, not trained (Keras' adapted Normalization);
    ``invert=True`` computes ``mean + x * max(sqrt(variance), epsilon)`` instead.
    """
    mean: Any = 0.0
    variance: Any = 1.0
    epsilon: float = 1e-7
    invert: bool = False

    def __call__(self, x):
        mean, variance = _values(self, self.mean, "mean"), _values(self, self.variance, "variance")
        _check_channels(self, x, mean, "mean")
        _check_channels(self, x, variance, "variance")
        std = jnp.maximum(jnp.sqrt(variance), self.epsilon)
        return (mean + x * std if self.invert else (x - mean) / std).astype(x.dtype)
