"""Sequential: a chain of layers, the container every zoo model and converter uses."""
from collections.abc import Sequence
from typing import Any

import flax.linen as linen

from funcdl.nn._activations import activation_layer
from funcdl.nn._base import Layer, takes_train


class Sequential(Layer):
    """Applies ``layers`` in order; bare activation functions become activation layers.

    Params are named by position: ``{'params': {'layers_1': {'kernel': ..., 'bias': ...}, ...}}``
    (layers without parameters keep their index but have no entry).

    Example::

        model = Sequential([Flatten(), Dense(128), relu, Dense(10)])
        variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        # {'params': {'layers_1': {'kernel': (784, 128), 'bias': (128,)},
        #             'layers_3': {'kernel': (128, 10), 'bias': (10,)}}}
    """
    layers: Sequence[Any] = ()

    def __post_init__(self):
        layers = tuple(layer if isinstance(layer, linen.Module) else activation_layer(layer)
                       for layer in self.layers)
        object.__setattr__(self, "layers", layers)
        super().__post_init__()

    def __call__(self, x, train=False):
        for layer in self.layers:
            x = layer(x, train=train) if takes_train(layer) else layer(x)
        return x
