"""Activations: the one table their functions, their layers and every converter's mapping come from.

Each :class:`Activation` row names a funcdl activation, its function, the
parameter-free layer computing it (generated from the function: its keyword
options become the layer's fields) and its twins in PyTorch (``torch.nn``
class name) and Keras (``activation=`` name). ``Dense(activation=...)``,
``Sequential``'s bare functions, the PyTorch and Keras converters all read
this table, so an activation added here is one row.
"""
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, choices_message
from funcdl.nn._base import Layer


def relu(x: jax.Array) -> jax.Array:
    """max(x, 0)."""
    return jax.nn.relu(x)


def leaky_relu(x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """x if x >= 0 else negative_slope * x (torch default slope 0.01)."""
    return jnp.where(x >= 0, x, negative_slope * x)


def sigmoid(x: jax.Array) -> jax.Array:
    """1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Softmax over ``axis``."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    """Log-softmax over ``axis``."""
    return jax.nn.log_softmax(x, axis=axis)


def softplus(x: jax.Array, beta: float = 1.0, threshold: float = 20.0) -> jax.Array:
    """log(1 + exp(beta x)) / beta, linear above ``threshold`` like torch.nn.Softplus."""
    scaled = beta * x
    return jnp.where(scaled > threshold, x, jnp.logaddexp(scaled, 0.0) / beta)


def relu6(x: jax.Array) -> jax.Array:
    """min(max(x, 0), 6)."""
    return jnp.clip(x, 0.0, 6.0)


def silu(x: jax.Array) -> jax.Array:
    """x * sigmoid(x) (swish)."""
    return jax.nn.silu(x)


def hard_swish(x: jax.Array) -> jax.Array:
    """x * relu6(x + 3) / 6, as torch.nn.Hardswish."""
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """x if x > 0 else alpha * (exp(x) - 1)."""
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


def selu(x: jax.Array) -> jax.Array:
    """scale * elu(x, alpha) with the self-normalising constants (scale 1.0507..., alpha 1.6732...)."""
    return jax.nn.selu(x)


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """relu6(x + 3) / 6, as torch.nn.Hardsigmoid and Keras 3 (Keras 2's was clip(0.2 x + 0.5, 0, 1))."""
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def softsign(x: jax.Array) -> jax.Array:
    """x / (1 + |x|)."""
    return x / (1.0 + jnp.abs(x))


def mish(x: jax.Array) -> jax.Array:
    """x * tanh(softplus(x))."""
    return x * jnp.tanh(jax.nn.softplus(x))


def exponential(x: jax.Array) -> jax.Array:
    """exp(x) (keras ``activation='exponential'``)."""
    return jnp.exp(x)


def gelu(x: jax.Array, approximate: bool = False) -> jax.Array:
    """GELU; exact (erf) by default as in torch and keras, tanh form with ``approximate=True``."""
    return jax.nn.gelu(x, approximate=approximate)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU, tanh approximation (torch ``approximate='tanh'``)."""
    return jax.nn.gelu(x, approximate=True)


def linear(x: jax.Array) -> jax.Array:
    """Identity (keras ``activation='linear'``)."""
    return x


class ActivationLayer(Layer):
    """Base of the activation layers: ``__call__`` applies ``function`` with the layer's fields as options."""
    function: ClassVar[Callable] = staticmethod(linear)  # each generated class sets its own (not a field)

    def options(self) -> dict[str, Any]:
        """The layer's settings, as keyword options of its function."""
        return {name: getattr(self, name) for name in option_names(type(self).function)}

    def __call__(self, x):
        return type(self).function(x, **self.options())


def option_names(function: Callable) -> tuple[str, ...]:
    """The keyword options of an activation function (its parameters after ``x``)."""
    return tuple(list(inspect.signature(function).parameters)[1:])


def _layer_class(name: str, function: Callable) -> Any:
    """The layer computing ``function``: one dataclass field per keyword option, with its default.

    (Typed ``Any``: its fields are made here, where a type checker cannot see them.)
    """
    parameters = list(inspect.signature(function).parameters.values())[1:]
    namespace: dict[str, Any] = {
        "__module__": __name__, "__qualname__": name,
        "__doc__": f"``{function.__name__}`` as a layer: {inspect.getdoc(function)}",
        "__annotations__": {p.name: type(p.default) for p in parameters},
        **{p.name: p.default for p in parameters},
    }
    cls = type(name, (ActivationLayer,), namespace)
    cls.function = staticmethod(function)  # type: ignore[attr-defined]
    return cls


ReLU = _layer_class("ReLU", relu)
LeakyReLU = _layer_class("LeakyReLU", leaky_relu)
Sigmoid = _layer_class("Sigmoid", sigmoid)
Tanh = _layer_class("Tanh", tanh)
Softmax = _layer_class("Softmax", softmax)
LogSoftmax = _layer_class("LogSoftmax", log_softmax)
Softplus = _layer_class("Softplus", softplus)
GELU = _layer_class("GELU", gelu)
ReLU6 = _layer_class("ReLU6", relu6)
SiLU = _layer_class("SiLU", silu)
HardSwish = _layer_class("HardSwish", hard_swish)
ELU = _layer_class("ELU", elu)
SELU = _layer_class("SELU", selu)
HardSigmoid = _layer_class("HardSigmoid", hard_sigmoid)
Softsign = _layer_class("Softsign", softsign)
Mish = _layer_class("Mish", mish)
Exponential = _layer_class("Exponential", exponential)


@dataclass(frozen=True)
class Activation:
    """One activation and its twins.

    Attributes:
      name: funcdl's name (``Dense(activation=name)``, ``fd.nn.ACTIVATIONS[name]``).
      function: ``function(x, **options) -> y``.
      layer: the layer computing it, or None for 'linear' (the identity, no layer).
      options: the layer settings that make it compute ``function`` exactly (``gelu_tanh``: approximate).
      torch: the ``torch.nn`` module class computing it (by name), or None (none exists, or an alias row).
      keras: Keras' ``activation=`` name for it, or None where Keras' differs (its ``leaky_relu``
        slope is 0.2).
      elementwise: it acts on each value alone (so on each time step of a sequence alone).
    """
    name: str
    function: Callable
    layer: type[ActivationLayer] | None
    options: dict[str, Any] = field(default_factory=dict)
    torch: str | None = None
    keras: str | None = None
    elementwise: bool = True


TABLE = (
    Activation("relu", relu, ReLU, torch="ReLU", keras="relu"),
    Activation("leaky_relu", leaky_relu, LeakyReLU, torch="LeakyReLU"),
    Activation("sigmoid", sigmoid, Sigmoid, torch="Sigmoid", keras="sigmoid"),
    Activation("tanh", tanh, Tanh, torch="Tanh", keras="tanh"),
    Activation("softmax", softmax, Softmax, torch="Softmax", keras="softmax", elementwise=False),
    Activation("log_softmax", log_softmax, LogSoftmax, torch="LogSoftmax", keras="log_softmax", elementwise=False),
    Activation("softplus", softplus, Softplus, torch="Softplus", keras="softplus"),
    Activation("gelu", gelu, GELU, torch="GELU", keras="gelu"),
    Activation("gelu_tanh", gelu_tanh, GELU, {"approximate": True}, torch="GELU"),
    Activation("relu6", relu6, ReLU6, torch="ReLU6", keras="relu6"),
    Activation("silu", silu, SiLU, torch="SiLU", keras="silu"),
    Activation("hard_swish", hard_swish, HardSwish, torch="Hardswish", keras="hard_silu"),
    Activation("elu", elu, ELU, torch="ELU", keras="elu"),
    Activation("selu", selu, SELU, torch="SELU", keras="selu"),
    Activation("hard_sigmoid", hard_sigmoid, HardSigmoid, torch="Hardsigmoid", keras="hard_sigmoid"),
    Activation("softsign", softsign, Softsign, torch="Softsign", keras="softsign"),
    Activation("mish", mish, Mish, torch="Mish", keras="mish"),
    Activation("exponential", exponential, Exponential, keras="exponential"),
    Activation("linear", linear, None, keras="linear"),
    # other names of the rows above (after them: a layer maps back to its first row's name)
    Activation("swish", silu, SiLU, keras="swish"),
    Activation("hardswish", hard_swish, HardSwish, keras="hard_swish"),
)
BY_NAME = {row.name: row for row in TABLE}
ACTIVATIONS = {row.name: row.function for row in TABLE}
LAYERS = tuple(dict.fromkeys(row.layer for row in TABLE if row.layer is not None))


def activation(name: str) -> Activation:
    """The table row of the activation called ``name``."""
    if name not in BY_NAME:
        raise ConfigError(choices_message("activation", name, BY_NAME))
    return BY_NAME[name]


def get_activation(name: str | None) -> Callable:
    """The activation function called ``name`` (None or 'linear' is the identity)."""
    return linear if name is None else activation(name).function


def activation_of(layer: ActivationLayer) -> Activation:
    """The table row computing what the activation ``layer`` computes with its settings (its function's, else
    the row of its type whose options it holds, e.g. ``GELU(approximate=True)`` -> gelu_tanh)."""
    rows = [row for row in TABLE if row.layer is type(layer)]
    for row in rows:
        if row.options and all(getattr(layer, key) == value for key, value in row.options.items()):
            return row
    return next(row for row in rows if not row.options)


def activation_layer(function: Callable) -> ActivationLayer:
    """The layer for a bare activation function placed in a Sequential."""
    for row in TABLE:
        if row.function is function and row.layer is not None:
            return row.layer(**row.options)
    name = getattr(function, "__name__", repr(function))
    raise ConfigError(
        f"{name} is not a funcdl activation; use one of {', '.join(sorted(ACTIVATIONS))} "
        "or wrap it in a funcdl.nn.Layer subclass")
