"""Parameter initialisers by name (what a serialisable layer can record).

Keras's names (``keras.initializers``: snake_case or the class name, e.g.
``"he_normal"`` or ``"HeNormal"``) give Keras's rule with Keras's default
arguments; ``"torch"`` is the default of ``torch.nn.Linear`` / ``Conv2d``.
Kernels are laid out ``(..., fan_in, fan_out)`` (Dense ``(in, out)``, Conv2D
``(kh, kw, in, out)``), so the variance-scaling rules count fans as Keras does.

| name | rule (Keras default arguments) |
| --- | --- |
| ``random_normal`` (``normal``) | N(0, 0.05²) |
| ``random_uniform`` (``uniform``) | U(-0.05, 0.05) |
| ``truncated_normal`` | N(0, 0.05²) cut at two standard deviations |
| ``glorot_uniform`` / ``glorot_normal`` | variance 1 / fan_avg (uniform; truncated normal) |
| ``he_uniform`` / ``he_normal`` | variance 2 / fan_in |
| ``lecun_uniform`` / ``lecun_normal`` (``variance_scaling``) | variance 1 / fan_in |
| ``orthogonal`` | orthogonal matrix, gain 1 |
| ``identity`` | the identity matrix (2-D kernels only) |
| ``zeros`` (``zero``, ``constant``) / ``ones`` (``one``) | 0 / 1 (Keras's ``Constant`` defaults to 0) |
| ``torch`` | U(-1/sqrt(fan_in), 1/sqrt(fan_in)), kernel and bias |
"""
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, ShapeError, choices_message

KERAS_STDDEV = 0.05  # RandomNormal / TruncatedNormal stddev and RandomUniform bound in Keras

Init = Callable[..., jax.Array]  # init(key, shape, dtype) -> array


def _random_normal(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    return KERAS_STDDEV * jax.random.normal(key, shape, dtype)


def _random_uniform(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -KERAS_STDDEV, KERAS_STDDEV)


def _truncated_normal(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    return KERAS_STDDEV * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def _identity(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
    if len(shape) != 2:
        raise ShapeError(f"the identity initializer makes 2-D kernels only, not shape {tuple(shape)}")
    return jnp.eye(shape[0], shape[1], dtype=dtype)


def _fans(rule: Callable[..., Init]) -> Callable[[], Init]:
    return lambda: rule(in_axis=-2, out_axis=-1)


# canonical name -> factory of init(key, shape, dtype); fan_in is only the torch rule's business
_RULES: dict[str, Callable[[], Init]] = {
    "glorot_uniform": _fans(jax.nn.initializers.glorot_uniform),
    "glorot_normal": _fans(jax.nn.initializers.glorot_normal),
    "he_uniform": _fans(jax.nn.initializers.he_uniform),
    "he_normal": _fans(jax.nn.initializers.he_normal),
    "lecun_uniform": _fans(jax.nn.initializers.lecun_uniform),
    "lecun_normal": _fans(jax.nn.initializers.lecun_normal),
    "orthogonal": lambda: jax.nn.initializers.orthogonal(),
    "random_normal": lambda: _random_normal,
    "random_uniform": lambda: _random_uniform,
    "truncated_normal": lambda: _truncated_normal,
    "identity": lambda: _identity,
    "zeros": lambda: jax.nn.initializers.zeros,
    "ones": lambda: jax.nn.initializers.ones,
}
# Keras's other names for the same rules (keras.initializers.get accepts them all)
_ALIASES = {"normal": "random_normal", "uniform": "random_uniform", "variance_scaling": "lecun_normal",
            "zero": "zeros", "constant": "zeros", "one": "ones"}
NAMES = (*_RULES, *_ALIASES, "torch")
_LOOKUP = {name.replace("_", ""): _ALIASES.get(name, name) for name in NAMES}


def canonical(name: str) -> str:
    """The canonical name of initialiser ``name`` (snake_case or Keras class name, any case)."""
    key = name.lower().replace("_", "") if isinstance(name, str) else None
    if key not in _LOOKUP:
        raise ConfigError(choices_message("initializer", name, NAMES))
    return _LOOKUP[key]


def _torch_uniform(fan_in: int) -> Init:
    # torch.nn.Linear / Conv2d default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    # and the same bound for the bias.
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def initializer(name: str, fan_in: int) -> Init:
    """The initialiser called ``name``; ``fan_in`` is used by the torch rule.

    Args:
      name: one of ``NAMES`` or a Keras class name (``"HeNormal"``), any case.
      fan_in: number of inputs feeding one output unit (in_features * kernel area / groups).
    Returns:
      ``init(key, shape, dtype) -> array``.
    """
    name = canonical(name)
    if name == "torch":
        return _torch_uniform(fan_in)
    return _RULES[name]()
