"""Global pooling: one value per channel, averaged or maxed over every position (NHWC images, NTC sequences)."""
import jax.numpy as jnp

from funcdl.nn._base import Layer, check_rank


class GlobalAveragePooling2D(Layer):
    """(B, H, W, C) -> (B, C): the mean over height and width (``keepdims``: (B, 1, 1, C))."""
    keepdims: bool = False

    def __call__(self, x):
        check_rank(self, x, (4,), "NHWC (batch, height, width, channels)")
        return jnp.mean(x, axis=(1, 2), keepdims=self.keepdims)


class GlobalMaxPooling2D(Layer):
    """(B, H, W, C) -> (B, C): the maximum over height and width (``keepdims``: (B, 1, 1, C))."""
    keepdims: bool = False

    def __call__(self, x):
        check_rank(self, x, (4,), "NHWC (batch, height, width, channels)")
        return jnp.max(x, axis=(1, 2), keepdims=self.keepdims)


class GlobalAveragePooling1D(Layer):
    """(B, T, C) -> (B, C): the mean over time steps (``keepdims``: (B, 1, C))."""
    keepdims: bool = False

    def __call__(self, x):
        check_rank(self, x, (3,), "(batch, steps, channels)")
        return jnp.mean(x, axis=1, keepdims=self.keepdims)


class GlobalMaxPooling1D(Layer):
    """(B, T, C) -> (B, C): the maximum over time steps (``keepdims``: (B, 1, C))."""
    keepdims: bool = False

    def __call__(self, x):
        check_rank(self, x, (3,), "(batch, steps, channels)")
        return jnp.max(x, axis=1, keepdims=self.keepdims)
