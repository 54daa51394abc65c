"""Batch and layer normalisation."""
import flax.linen as linen
import jax.numpy as jnp

from funcdl.nn._base import Layer, check_existing


class BatchNorm(Layer):
    """Batch normalisation over every axis but the last (features / NHWC channels).

    Params: ``{'scale': (C,), 'bias': (C,)}``; state (collection ``batch_stats``):
    ``{'mean': (C,), 'var': (C,)}``. In training, normalises with the batch
    statistics and updates ``running = momentum * running + (1 - momentum) * batch``
    (keras' momentum; torch's momentum m is ``1 - m`` here). In inference, uses the
    running statistics.

    Args:
      momentum: running-average decay (0.9 == torch's default 0.1; keras uses 0.99).
      epsilon: added to the variance (torch 1e-5, keras 1e-3).
      unbiased_running_var: update the running variance with the unbiased batch
        variance (torch) instead of the biased one (keras).
      use_scale, use_bias: learn gamma / beta.
    """
    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased_running_var: bool = False
    use_scale: bool = True
    use_bias: bool = True

    @linen.compact
    def __call__(self, x, train=False):
        check_existing(self, x, "mean", 0, collection="batch_stats")
        features = x.shape[-1]
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
        axes = tuple(range(x.ndim - 1))
        if train:
            batch_mean = jnp.mean(x, axes)
            batch_var = jnp.mean(jnp.square(x - batch_mean), axes)
            if not self.is_initializing():
                count = x.size // features
                running_var = batch_var * count / max(count - 1, 1) if self.unbiased_running_var else batch_var
                mean.value = self.momentum * mean.value + (1 - self.momentum) * batch_mean
                var.value = self.momentum * var.value + (1 - self.momentum) * running_var
        else:
            batch_mean, batch_var = mean.value, var.value
        y = (x - batch_mean) * jnp.reciprocal(jnp.sqrt(batch_var + self.epsilon))
        if self.use_scale:
            y = y * self.param("scale", linen.initializers.ones, (features,))
        if self.use_bias:
            y = y + self.param("bias", linen.initializers.zeros, (features,))
        return y


class LayerNorm(Layer):
    """Layer normalisation over the last ``num_axes`` axes (torch's normalized_shape).

    Params: ``{'scale': shape[-num_axes:], 'bias': shape[-num_axes:]}``.

    Args:
      epsilon: added to the variance (torch 1e-5, keras 1e-3).
      num_axes: how many trailing axes are normalised together.
      use_scale, use_bias: learn gamma / beta.
    """
    epsilon: float = 1e-5
    num_axes: int = 1
    use_scale: bool = True
    use_bias: bool = True

    @linen.compact
    def __call__(self, x):
        check_existing(self, x, "scale", -1) if self.use_scale else None
        shape = x.shape[-self.num_axes:]
        axes = tuple(range(x.ndim - self.num_axes, x.ndim))
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
        y = (x - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
        if self.use_scale:
            y = y * self.param("scale", linen.initializers.ones, shape)
        if self.use_bias:
            y = y + self.param("bias", linen.initializers.zeros, shape)
        return y
