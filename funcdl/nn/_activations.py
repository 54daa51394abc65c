"""Activation functions and their parameter-free layers (one per torch.nn / keras activation)."""
import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, choices_message
from funcdl.nn._base import Layer


def relu(x):
    """max(x, 0)."""
    return jax.nn.relu(x)


def leaky_relu(x, negative_slope=0.01):
    """x if x >= 0 else negative_slope * x (torch default slope 0.01)."""
    return jnp.where(x >= 0, x, negative_slope * x)


def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


def tanh(x):
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def softmax(x, axis=-1):
    """Softmax over ``axis``."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    """Log-softmax over ``axis``."""
    return jax.nn.log_softmax(x, axis=axis)


def softplus(x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, linear above ``threshold`` like torch.nn.Softplus."""
    scaled = beta * x
    return jnp.where(scaled > threshold, x, jnp.logaddexp(scaled, 0.0) / beta)


def gelu(x, approximate=False):
    """GELU; exact (erf) by default as in torch and keras, tanh form with ``approximate=True``."""
    return jax.nn.gelu(x, approximate=approximate)


def gelu_tanh(x):
    """GELU, tanh approximation (torch ``approximate='tanh'``)."""
    return jax.nn.gelu(x, approximate=True)


def linear(x):
    """Identity (keras ``activation='linear'``)."""
    return x


ACTIVATIONS = {f.__name__: f for f in (relu, leaky_relu, sigmoid, tanh, softmax, log_softmax,
                                       softplus, gelu, gelu_tanh, linear)}


def get_activation(name):
    """The activation function called ``name`` (None or 'linear' is the identity)."""
    if name is None:
        return linear
    if name not in ACTIVATIONS:
        raise ConfigError(choices_message("activation", name, ACTIVATIONS))
    return ACTIVATIONS[name]


class ReLU(Layer):
    """relu as a layer."""
    def __call__(self, x):
        return relu(x)


class LeakyReLU(Layer):
    """leaky_relu as a layer."""
    negative_slope: float = 0.01

    def __call__(self, x):
        return leaky_relu(x, self.negative_slope)


class Sigmoid(Layer):
    """sigmoid as a layer."""
    def __call__(self, x):
        return sigmoid(x)


class Tanh(Layer):
    """tanh as a layer."""
    def __call__(self, x):
        return tanh(x)


class Softmax(Layer):
    """softmax over ``axis`` as a layer."""
    axis: int = -1

    def __call__(self, x):
        return softmax(x, self.axis)


class LogSoftmax(Layer):
    """log_softmax over ``axis`` as a layer."""
    axis: int = -1

    def __call__(self, x):
        return log_softmax(x, self.axis)


class Softplus(Layer):
    """softplus as a layer (torch's beta and threshold)."""
    beta: float = 1.0
    threshold: float = 20.0

    def __call__(self, x):
        return softplus(x, self.beta, self.threshold)


class GELU(Layer):
    """gelu as a layer; ``approximate=True`` is the tanh form."""
    approximate: bool = False

    def __call__(self, x):
        return gelu(x, self.approximate)


_LAYER_OF = {relu: ReLU, leaky_relu: LeakyReLU, sigmoid: Sigmoid, tanh: Tanh, softmax: Softmax,
             log_softmax: LogSoftmax, softplus: Softplus, gelu: GELU}


def activation_layer(function):
    """The layer for a bare activation function placed in a Sequential."""
    if function is gelu_tanh:
        return GELU(approximate=True)
    if function in _LAYER_OF:
        return _LAYER_OF[function]()
    name = getattr(function, "__name__", repr(function))
    raise ConfigError(
        f"{name} is not a funcdl activation; use one of {', '.join(sorted(ACTIVATIONS))} "
        "or wrap it in a funcdl.nn.Layer subclass")
