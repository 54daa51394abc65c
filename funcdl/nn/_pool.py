"""Max and average pooling on NHWC images."""
import jax
import jax.numpy as jnp

from funcdl.nn._base import Layer, check_rank
from funcdl.nn._conv import explicit_padding, padding_spec, pair
from funcdl.nn._pool_blocks import max_pool, sum_pool, tiles


def _window(layer):
    kh, kw = pair(layer.pool_size, "pool_size")
    sh, sw = pair(layer.strides if layer.strides is not None else layer.pool_size, "strides")
    pad = padding_spec(layer.padding)
    if not isinstance(pad, str):
        pad = ((0, 0),) + tuple(pad) + ((0, 0),)
    return (1, kh, kw, 1), (1, sh, sw, 1), pad


def _disjoint(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...], pad: str | tuple) -> bool:
    """Whether the pool's windows tile ``x`` without overlap or padding (the reshape fast path)."""
    pads = explicit_padding(pad if isinstance(pad, str) else pad[1:3], x.shape[1:3], window[1:3], strides[1:3])
    return tiles(window[1:3], strides[1:3], pads)


class MaxPool2D(Layer):
    """Max pooling, NHWC. Padded positions never win (they are -inf).

    Args:
      pool_size: int or (kh, kw).
      strides: int, pair or None (= pool_size).
      padding: 'valid', 'same', an int or pairs, as in Conv2D.
    """
    pool_size: object = 2
    strides: object = None
    padding: object = "valid"

    def __call__(self, x):
        check_rank(self, x, (4,), "NHWC (batch, height, width, channels)")
        window, strides, pad = _window(self)
        if _disjoint(x, window, strides, pad):  # same numbers, a cheaper gradient (see _pool_blocks)
            return max_pool(x, window[1:3])
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pad)


class AvgPool2D(Layer):
    """Average pooling, NHWC.

    Args:
      pool_size, strides, padding: as in MaxPool2D.
      count_include_pad: divide by the full window (torch default True) or by the
        number of real pixels in it (False; keras 'same' behaviour).
    """
    pool_size: object = 2
    strides: object = None
    padding: object = "valid"
    count_include_pad: bool = True

    def __call__(self, x):
        check_rank(self, x, (4,), "NHWC (batch, height, width, channels)")
        window, strides, pad = _window(self)
        if _disjoint(x, window, strides, pad):  # no padding: both counts are the window's size
            return sum_pool(x, window[1:3]) / (window[1] * window[2])
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
        if self.count_include_pad:
            return total / (window[1] * window[2])
        ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
        count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, pad)
        return total / count
