"""Bidirectional: one recurrent layer run over the sequence both ways, the two results merged.

    layer = nn.Bidirectional(nn.LSTM(16, return_sequences=True))   # (B, T, F) -> (B, T, 32)
    # {'params': {'forward': {'kernel': (F, 64), ...}, 'backward': {'kernel': (F, 64), ...}}}

The backward copy is the inner layer with ``reverse=True``: its sequence output
is aligned with the input (``out[:, t]`` has read ``x[:, T-1], ..., x[:, t]``),
as in Keras' ``Bidirectional`` and torch's ``bidirectional=True``.
"""
from collections.abc import Callable
from typing import Any

import flax.linen as linen
import jax.numpy as jnp

from funcdl.errors import ConfigError
from funcdl.nn._base import Layer
from funcdl.nn._recurrent import GRU, LSTM, SimpleRNN
from funcdl.nn._symbolic import Symbol

MERGE_MODES = ("concat", "sum", "mul", "ave", None)
RECURRENT = (SimpleRNN, LSTM, GRU)


class Bidirectional(Layer):
    """A SimpleRNN / LSTM / GRU read forwards and backwards, the two outputs merged.

    Args:
      layer: the recurrent layer (``reverse=False``); its copy with ``reverse=True`` reads backwards.
      merge_mode: 'concat' (last axis: forward then backward), 'sum', 'mul', 'ave', or None for the two
        outputs as a tuple ``(forward, backward)`` (in a Graph, refer to them as ``"name:0"``, ``"name:1"``).

    Shapes: (B, T, F) -> (B, 2H) for 'concat', (B, H) otherwise; (B, T, 2H) / (B, T, H) with the inner
    layer's ``return_sequences``.
    """
    layer: Any = None
    merge_mode: str | None = "concat"

    def __post_init__(self):
        if not isinstance(self.layer, RECURRENT):
            raise ConfigError(f"Bidirectional wraps a SimpleRNN, LSTM or GRU layer, got {type(self.layer).__name__}")
        if self.layer.reverse:
            raise ConfigError("Bidirectional takes its layer with reverse=False (it makes the backward copy itself)")
        if self.merge_mode not in MERGE_MODES:
            raise ConfigError(f"Bidirectional merge_mode must be one of 'concat', 'sum', 'mul', 'ave' or None, "
                              f"got {self.merge_mode!r}")
        super().__post_init__()

    def symbolic_outputs(self, make: Callable[[Any], Symbol]) -> Any:
        """One Symbol, or two (forward, backward) when ``merge_mode`` is None."""
        return (make(0), make(1)) if self.merge_mode is None else make(None)

    @linen.compact
    def __call__(self, x):
        forward = self.layer.clone(parent=self, name="forward", reverse=False)
        backward = self.layer.clone(parent=self, name="backward", reverse=True)
        y_forward, y_backward = forward(x), backward(x)
        if self.merge_mode == "concat":
            return jnp.concatenate([y_forward, y_backward], axis=-1)
        if self.merge_mode == "sum":
            return y_forward + y_backward
        if self.merge_mode == "mul":
            return y_forward * y_backward
        if self.merge_mode == "ave":
            return (y_forward + y_backward) / 2
        return y_forward, y_backward
