"""funcdl layers: flax.linen modules with named params and a JSON-able architecture.

Images are NHWC. ``init(key, x) -> variables`` and ``apply(variables, x, train=...)``
are flax's own; ``variables['params']`` holds the weights and
``variables['batch_stats']`` the BatchNorm running statistics.
"""
from funcdl.nn._activations import (
    ACTIVATIONS, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Softplus, Tanh, gelu, gelu_tanh,
    get_activation, leaky_relu, linear, log_softmax, relu, sigmoid, softmax, softplus, tanh)
from funcdl.nn._base import REGISTRY, Layer, from_config, to_config
from funcdl.nn._conv import Conv2D, conv_as_matmul, conv_implementation
from funcdl.nn._dense import Dense, Embedding
from funcdl.nn._init import NAMES as initializers
from funcdl.nn._norm import BatchNorm, LayerNorm
from funcdl.nn._pool import AvgPool2D, MaxPool2D
from funcdl.nn._recurrent import GRU, LSTM, SimpleRNN
from funcdl.nn._sequential import Sequential
from funcdl.nn._shape import Dropout, Flatten, ImageRows, Reshape
from funcdl.nn._summary import count_params, input_dtype, output_shape, summary

__all__ = [
    "ACTIVATIONS", "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten", "GELU",
    "GRU", "ImageRows", "LSTM", "Layer", "LayerNorm", "LeakyReLU", "LogSoftmax", "MaxPool2D", "REGISTRY", "ReLU",
    "Reshape", "Sequential", "Sigmoid", "SimpleRNN", "Softmax", "Softplus", "Tanh", "conv_as_matmul",
    "conv_implementation", "count_params",
    "from_config", "gelu", "input_dtype", "gelu_tanh", "get_activation", "initializers", "leaky_relu", "linear",
    "log_softmax", "output_shape", "relu", "sigmoid", "softmax", "softplus", "summary", "tanh",
    "to_config",
]
