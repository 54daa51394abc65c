"""How a funcdl tensor is laid out in PyTorch and in Keras: the one place the converters and the bench read it.

funcdl holds images NHWC and kernels as XLA prefers them; torch holds images
NCHW. Every map is explicit (nanoGPT's ``from_pretrained`` style) and every
tensor's shape is checked before it is copied (:func:`checked`).

=========================  ===========================  =====================================================
funcdl                     torch                        map
=========================  ===========================  =====================================================
Dense kernel (in, out)     Linear weight (out, in)      :func:`linear_to_torch` / :func:`linear_from_torch`
Conv2D kernel HWIO         Conv2d weight OIHW           :func:`conv_to_torch` / :func:`conv_from_torch`
Conv2D kernel (k, 1, I, O) Conv1d weight (O, I, k)      :func:`conv1d_from_torch` (1-D runs as 2-D: ``interop.one_d``)
Flatten of an NHWC image   flatten of the NCHW image    :func:`flatten_permutation` (the next Linear's columns)
BatchNorm momentum m       momentum 1 - m               :func:`momentum_to_torch` (its own inverse)
LSTM / GRU / SimpleRNN     LSTM / GRU / RNN             kernels transposed (``weight_ih_l{k}``,
  kernel, recurrent_kernel                                ``weight_hh_l{k}``); gate order the same:
  bias, recurrent_bias     bias_ih_l{k}, bias_hh_l{k}     LSTM i, f, g, o; GRU r, z, n (:data:`TORCH_RECURRENT`)
=========================  ===========================  =====================================================

Keras holds images NHWC too, so kernels copy as they are; its weights are
named in :data:`KERAS_WEIGHTS`, and only the recurrent layers differ:

- keras LSTM / SimpleRNN have one bias; funcdl has ``bias`` and
  ``recurrent_bias`` (torch's two biases), so ``recurrent_bias`` is zero on
  import and folded into ``bias`` on export (exact: they are only ever summed).
- keras GRU gates are ordered z, r, h; funcdl's are r, z, n, so the first two
  H-wide blocks of every GRU tensor are swapped (:func:`swap_gru_gates`, its own inverse).
  ``reset_after=True`` keras GRUs store ``bias`` as (2, 3H) = [input; recurrent];
  ``reset_after=False`` ones have one (3H,) bias, and funcdl's recurrent bias
  folds into it (it is added outside the reset gate in both).
- a keras Bidirectional holds its forward and backward copies of one
  recurrent layer, their weights named alike (``forward_lstm/.../kernel``,
  ``backward_lstm/.../kernel``); here they are ``forward/kernel`` and
  ``backward/kernel``, each half laid out as its recurrent layer, and funcdl's
  are ``params/forward/...`` and ``params/backward/...``. torch's
  ``bidirectional=True`` modules suffix the backward half's tensors
  ``_reverse`` (:data:`TORCH_DIRECTIONS`).
"""
from typing import Any

import numpy as np

from funcdl.errors import ConversionError

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
# funcdl parameter name of a recurrent layer -> torch's (format with the layer number k of a stacked module)
TORCH_RECURRENT = {"kernel": "weight_ih_l{k}", "recurrent_kernel": "weight_hh_l{k}", "bias": "bias_ih_l{k}",
                   "recurrent_bias": "bias_hh_l{k}"}
# Bidirectional half -> suffix of its torch tensors (``weight_ih_l0`` / ``weight_ih_l0_reverse``)
TORCH_DIRECTIONS = {"forward": "", "backward": "_reverse"}
BIDIRECTIONAL_HALVES = tuple(TORCH_DIRECTIONS)
# gates per recurrent layer type (fused along the last axis of every recurrent tensor)
GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
RECURRENT = tuple(GATES)
# funcdl layer type -> ((funcdl tensor 'collection/name', keras weight name), ...)
KERAS_WEIGHTS = {
    "Dense": (("params/kernel", "kernel"), ("params/bias", "bias")),
    "Conv2D": (("params/kernel", "kernel"), ("params/bias", "bias")),
    "BatchNorm": (("params/scale", "gamma"), ("params/bias", "beta"),
                  ("batch_stats/mean", "moving_mean"), ("batch_stats/var", "moving_variance")),
    "LayerNorm": (("params/scale", "gamma"), ("params/bias", "beta")),
    "Embedding": (("params/embedding", "embeddings"),),
    "SimpleRNN": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
                  ("params/bias", "bias")),
    "LSTM": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
             ("params/bias", "bias")),
    "GRU": (("params/kernel", "kernel"), ("params/recurrent_kernel", "recurrent_kernel"),
            ("params/bias", "bias")),
    "Bidirectional": (),  # its recurrent layer's, twice: 'forward/...' and 'backward/...' (see the module docstring)
}


def checked(array: Any, shape: tuple, name: str, source: str) -> np.ndarray:
    """``array`` as a contiguous numpy array after checking it has ``shape``; ConversionError naming it if not."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(shape):
        raise ConversionError(f"{source}: tensor {name} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    return np.ascontiguousarray(array)


def linear_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Dense kernel (in, out) -> Linear weight (out, in); also a recurrent kernel (in, G*H) -> (G*H, in)."""
    return kernel.T


def linear_from_torch(weight: np.ndarray) -> np.ndarray:
    """Linear weight (out, in) -> Dense kernel (in, out)."""
    return weight.T


def conv_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Conv2D kernel HWIO (kh, kw, in, out) -> Conv2d weight OIHW (out, in, kh, kw)."""
    return kernel.transpose(3, 2, 0, 1)


def conv_from_torch(weight: np.ndarray) -> np.ndarray:
    """Conv2d weight OIHW -> Conv2D kernel HWIO."""
    return weight.transpose(2, 3, 1, 0)


def conv1d_to_2d(kernel: np.ndarray) -> np.ndarray:
    """Conv1D kernel (k, in, out) (keras) -> the (k, 1, in, out) Conv2D kernel funcdl runs it with."""
    return kernel[:, None]


def conv1d_from_torch(weight: np.ndarray) -> np.ndarray:
    """Conv1d weight (out, in, k) -> the (k, 1, in, out) Conv2D kernel funcdl runs it with."""
    return conv_from_torch(weight[..., None])


def kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Dense (2-D) or Conv2D (4-D) kernel in torch's layout."""
    return conv_to_torch(kernel) if kernel.ndim == 4 else linear_to_torch(kernel)


def flatten_permutation(channels: int, height: int, width: int) -> np.ndarray | None:
    """funcdl feature j of a flattened NHWC image is torch feature ``perm[j]`` of the NCHW one (None if equal).

    The Linear after the flatten takes ``weight[:, perm]`` in funcdl's order (its kernel's rows ``kernel[perm]``
    come from torch's columns), and per-feature vectors (BatchNorm) permute the same way.
    """
    if channels == 1 or height * width == 1:
        return None
    return np.arange(channels * height * width).reshape(channels, height, width).transpose(1, 2, 0).reshape(-1)


def momentum_to_torch(momentum: float) -> float:
    """funcdl / keras BatchNorm momentum (decay of the running average) <-> torch's (weight of the new batch)."""
    return round(1.0 - momentum, 12)


momentum_from_torch = momentum_to_torch  # the map is its own inverse


def swap_gru_gates(array: np.ndarray, hidden: int) -> np.ndarray:
    """Swap the first two ``hidden``-wide blocks of the last axis (keras z, r, h <-> funcdl r, z, n)."""
    return np.concatenate([array[..., hidden:2 * hidden], array[..., :hidden], array[..., 2 * hidden:]], axis=-1)


def fold_bias(bias: np.ndarray, recurrent_bias: np.ndarray) -> np.ndarray:
    """``bias + recurrent_bias``: keras' single bias of a two-bias funcdl layer."""
    # Adding an all-zero recurrent bias would turn -0.0 into 0.0: skip it so round trips stay bit-identical.
    return bias if not np.any(recurrent_bias) else bias + recurrent_bias


def _recurrent_from_keras(layer, tensors):
    kind = type(layer).__name__
    bias = tensors["params/bias"]
    if kind != "GRU":
        return {**tensors, "params/recurrent_bias": np.zeros_like(bias)}
    hidden = layer.features
    out = {key: swap_gru_gates(value, hidden) for key, value in tensors.items() if key != "params/bias"}
    if bias.ndim == 2:  # reset_after: (2, 3H) = [input bias; recurrent bias]
        out["params/bias"] = swap_gru_gates(bias[0], hidden)
        out["params/recurrent_bias"] = swap_gru_gates(bias[1], hidden)
    else:
        out["params/bias"] = swap_gru_gates(bias, hidden)
        out["params/recurrent_bias"] = np.zeros_like(bias)
    return out


def _recurrent_to_keras(layer, tensors):
    kind = type(layer).__name__
    bias = tensors["params/bias"]
    recurrent_bias = tensors.get("params/recurrent_bias", np.zeros_like(bias))  # absent: use_recurrent_bias=False
    out = {key: value for key, value in tensors.items() if key not in ("params/bias", "params/recurrent_bias")}
    if kind != "GRU":
        return {**out, "params/bias": fold_bias(bias, recurrent_bias)}
    hidden = layer.features
    out = {key: swap_gru_gates(value, hidden) for key, value in out.items()}
    if layer.reset_after:
        out["params/bias"] = np.stack([swap_gru_gates(bias, hidden), swap_gru_gates(recurrent_bias, hidden)])
    else:
        out["params/bias"] = swap_gru_gates(fold_bias(bias, recurrent_bias), hidden)
    return out


def _halves(tensors: dict[str, np.ndarray], key_of: Any) -> dict[str, dict[str, np.ndarray]]:
    """``{'forward': {...}, 'backward': {...}}`` of a Bidirectional's tensors, ``key_of(key) -> (half, rest)``."""
    halves: dict[str, dict[str, np.ndarray]] = {half: {} for half in BIDIRECTIONAL_HALVES}
    for key, value in tensors.items():
        half, rest = key_of(key)
        if half not in halves:
            raise ConversionError(f"Bidirectional tensor {key} belongs to neither half (forward, backward)")
        halves[half][rest] = value
    return halves


def _funcdl_half(key: str) -> tuple[str, str]:
    """('forward', 'params/kernel') from 'params/forward/kernel'."""
    collection, _, rest = key.partition("/")
    half, _, name = rest.partition("/")
    return half, f"{collection}/{name}"


def _bidirectional_from_keras(layer: Any, keras_weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for half, weights in _halves(keras_weights, lambda key: tuple(key.split("/", 1))).items():
        for key, value in weights_from_keras(layer.layer, weights).items():
            collection, name = key.split("/", 1)
            out[f"{collection}/{half}/{name}"] = value
    return out


def _bidirectional_to_keras(layer: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"{half}/{name}": value for half, weights in _halves(tensors, _funcdl_half).items()
            for name, value in weights_to_keras(layer.layer, weights).items()}


def weights_from_keras(layer: Any, keras_weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """funcdl tensors ``{'params/kernel': array, ...}`` of ``layer`` from its keras twin's weights.

    Args:
      layer: the funcdl layer.
      keras_weights: ``{keras weight name: np.ndarray}`` of the keras layer.
    Raises:
      ConversionError when a keras weight has no place in the table (nothing is dropped silently).
    """
    if type(layer).__name__ == "Bidirectional":
        return _bidirectional_from_keras(layer, keras_weights)
    table = KERAS_WEIGHTS[type(layer).__name__]
    unused = set(keras_weights) - {keras_name for _, keras_name in table}
    if unused:
        raise ConversionError(f"keras weights {sorted(unused)} of a {type(layer).__name__} have no funcdl "
                              "counterpart")
    tensors = {key: keras_weights[name] for key, name in table if name in keras_weights}
    if type(layer).__name__ in RECURRENT:
        tensors = _recurrent_from_keras(layer, tensors)
    return tensors


def weights_to_keras(layer: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{keras weight name: array}`` from funcdl tensors ``{'params/kernel': array, ...}`` of ``layer``."""
    if type(layer).__name__ == "Bidirectional":
        return _bidirectional_to_keras(layer, tensors)
    if type(layer).__name__ in RECURRENT:
        tensors = _recurrent_to_keras(layer, tensors)
    names = dict(KERAS_WEIGHTS[type(layer).__name__])
    return {names[key]: value for key, value in tensors.items()}
