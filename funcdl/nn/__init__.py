"""funcdl layers: flax.linen modules with named params and a JSON-able architecture.

Images are NHWC. ``init(key, x) -> variables`` and ``apply(variables, x, train=...)``
are flax's own; ``variables['params']`` holds the weights and
``variables['batch_stats']`` the BatchNorm running statistics.
"""
from funcdl.nn._activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    SELU,
    TABLE,
    Activation,
    ActivationLayer,
    Exponential,
    HardSigmoid,
    HardSwish,
    LeakyReLU,
    LogSoftmax,
    Mish,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Softsign,
    Tanh,
    activation,
    activation_layer,
    activation_of,
    elu,
    exponential,
    gelu,
    gelu_tanh,
    get_activation,
    hard_sigmoid,
    hard_swish,
    leaky_relu,
    linear,
    log_softmax,
    mish,
    option_names,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    softsign,
    tanh,
)
from funcdl.nn._base import REGISTRY, Layer, takes_train
from funcdl.nn._bidirectional import MERGE_MODES, Bidirectional
from funcdl.nn._config import from_config, to_config
from funcdl.nn._conv import Conv2D, conv_as_matmul, conv_implementation, explicit_padding, padding_spec, pair
from funcdl.nn._dense import Dense, Embedding
from funcdl.nn._global_pool import (
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
)
from funcdl.nn._graph import Graph, Node, as_graph, parse_ref
from funcdl.nn._init import NAMES as initializers
from funcdl.nn._merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from funcdl.nn._norm import BatchNorm, LayerNorm
from funcdl.nn._pool import AvgPool2D, MaxPool2D
from funcdl.nn._preprocessing import Normalization, Rescaling
from funcdl.nn._recurrent import GRU, LSTM, SimpleRNN
from funcdl.nn._resize import PixelShuffle, UpSampling2D, ZeroPadding2D, padding_pairs
from funcdl.nn._sequential import Sequential
from funcdl.nn._shape import Dropout, Flatten, ImageRows, Permute, RepeatVector, Reshape
from funcdl.nn._shape_inference import (
    check_dtypes,
    check_variables,
    count_params,
    describe_shape,
    init_shapes,
    input_dtype,
    input_specs,
    layer_shapes,
    node_shapes,
    output_shape,
    sample_input,
    shape_errors,
    variable_shapes,
)
from funcdl.nn._summary import Summary, summary
from funcdl.nn._symbolic import Input, Symbol

__all__ = [
    "ACTIVATIONS", "Activation", "ActivationLayer", "activation", "activation_layer", "activation_of", "option_names",
    "TABLE",
    "Add", "as_graph", "Average", "Concatenate", "describe_shape", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Graph", "Input", "Maximum", "Minimum", "Multiply", "Node",
    "Normalization", "Rescaling",
    "input_specs", "node_shapes", "parse_ref", "sample_input", "Subtract", "Summary", "Symbol",
    "AvgPool2D", "BatchNorm", "check_dtypes", "check_variables", "Conv2D", "conv_as_matmul", "conv_implementation",
    "count_params", "Dense", "Dropout", "Embedding", "explicit_padding", "Flatten", "from_config", "GELU", "gelu",
    "gelu_tanh", "get_activation", "GRU", "ImageRows", "init_shapes", "initializers", "input_dtype", "Layer",
    "layer_shapes", "LayerNorm", "leaky_relu", "LeakyReLU", "linear", "log_softmax", "LogSoftmax", "LSTM",
    "MaxPool2D", "output_shape", "padding_spec", "pair", "REGISTRY", "ReLU", "relu", "Reshape", "Sequential",
    "shape_errors", "Sigmoid", "sigmoid", "SimpleRNN", "Softmax", "softmax", "Softplus", "softplus", "summary",
    "takes_train", "Tanh", "tanh", "to_config", "variable_shapes", "ELU", "HardSwish", "ReLU6", "SiLU",
    "Bidirectional", "MERGE_MODES", "UpSampling2D", "ZeroPadding2D", "padding_pairs", "PixelShuffle", "Permute",
    "RepeatVector", "SELU", "HardSigmoid", "Softsign", "Mish", "Exponential", "elu", "exponential", "hard_sigmoid",
    "hard_swish", "mish", "relu6", "selu", "silu", "softsign",
]
