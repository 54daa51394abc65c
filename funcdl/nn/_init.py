"""Parameter initialisers by name (what a serialisable layer can record)."""
import math

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, choices_message

_KERNEL = {
    "glorot_uniform": jax.nn.initializers.glorot_uniform,
    "glorot_normal": jax.nn.initializers.glorot_normal,
    "he_uniform": jax.nn.initializers.he_uniform,
    "he_normal": jax.nn.initializers.he_normal,
    "lecun_uniform": jax.nn.initializers.lecun_uniform,
    "lecun_normal": jax.nn.initializers.lecun_normal,
    "orthogonal": jax.nn.initializers.orthogonal,
}
NAMES = tuple(_KERNEL) + ("torch", "zeros", "ones")


def _torch_uniform(fan_in):
    # torch.nn.Linear / Conv2d default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    # and the same bound for the bias.
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def initializer(name, fan_in):
    """The initialiser called ``name``; ``fan_in`` is used by the torch rule.

    Args:
      name: one of ``NAMES``.
      fan_in: number of inputs feeding one output unit (in_features * kernel area / groups).
    Returns:
      ``init(key, shape, dtype) -> array``.
    """
    if name == "zeros":
        return jax.nn.initializers.zeros
    if name == "ones":
        return jax.nn.initializers.ones
    if name == "torch":
        return _torch_uniform(fan_in)
    if name not in _KERNEL:
        raise ConfigError(choices_message("initializer", name, NAMES))
    if name == "orthogonal":
        return _KERNEL[name]()
    return _KERNEL[name](in_axis=-2, out_axis=-1)
