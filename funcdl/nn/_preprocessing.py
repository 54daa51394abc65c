"""Fixed input transforms with no parameters: Rescaling and Normalization (Keras' preprocessing layers)."""
import math
from typing import Any

import jax.numpy as jnp

from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._base import Layer, layer_path

MAX_CHANNELS = 1 << 20  # the statistics live in the architecture JSON: keep it a reasonable size


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(layer: Layer, **values: Any) -> None:
    """ConfigError unless every value is a finite number or a non-empty tuple of them (one per channel)."""
    for what, value in values.items():
        if not (_number(value) or (isinstance(value, (tuple, list)) and 0 < len(value) <= MAX_CHANNELS
                                   and all(_number(v) for v in value))):
            raise ConfigError(f"{type(layer).__name__}: {what} must be a finite number or a tuple of them (one per "
                              f"channel), got {str(value)[:60]}")


def _values(layer: Layer, value: Any, what: str) -> jnp.ndarray:
    """``value`` (a number, or a tuple of one per channel) as an array that broadcasts over the last axis."""
    return jnp.asarray(value, jnp.float32)


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

    def __post_init__(self):
        _check(self, scale=self.scale, offset=self.offset)
        super().__post_init__()

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

    def __post_init__(self):
        _check(self, mean=self.mean, variance=self.variance)
        if min(self.variance if isinstance(self.variance, (tuple, list)) else [self.variance]) < 0:
            raise ConfigError(f"Normalization: variance must not be negative, got {str(self.variance)[:60]}")
        if not _number(self.epsilon) or self.epsilon <= 0 or not isinstance(self.invert, bool):
            raise ConfigError(f"Normalization: epsilon must be a positive number and invert a bool, got "
                              f"{self.epsilon!r}, {self.invert!r}")
        super().__post_init__()

    def __call__(self, x):
        mean, variance = _values(self, self.mean, "mean"), _values(self, self.variance, "variance")
        _check_channels(self, x, mean, "mean")
        _check_channels(self, x, variance, "variance")
        std = jnp.maximum(jnp.sqrt(variance), self.epsilon)
        return (mean + x * std if self.invert else (x - mean) / std).astype(x.dtype)
