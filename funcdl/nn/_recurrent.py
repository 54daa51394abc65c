"""Recurrent layers over (batch, time, features): SimpleRNN, LSTM, GRU.

Weights are fused per gate family, in PyTorch's gate order:
``{'kernel': (in, G*H), 'recurrent_kernel': (H, G*H), 'bias': (G*H,),
'recurrent_bias': (G*H,)}`` with G = 1 (SimpleRNN), 4 (LSTM: i, f, g, o) or
3 (GRU: r, z, n); ``use_recurrent_bias=False`` drops ``recurrent_bias`` (keras'
single-bias form, which trains differently: one bias moves instead of two).
torch's ``weight_ih_l0`` is ``kernel.T``; keras' LSTM gate
order (i, f, c, o) is the same, keras' GRU order (z, r, h) is permuted by the
converters. The input projection for every time step is one matmul before the
loop; only ``h @ recurrent_kernel`` runs inside it. The recurrences have
hand-written backward passes (``funcdl.nn._recurrent_vjp``): the weight
gradients of a whole sequence are one matmul after the backward loop.

``reverse=True`` reads the time steps last to first (the backward half of a
bidirectional layer, torch's ``bidirectional=True``): with ``return_sequences``
the output stays aligned with the input, ``out[:, t]`` being the state after
``x[:, T-1], ..., x[:, t]``; without, it is the state after ``x[:, 0]``.
"""
import flax.linen as linen
import jax.numpy as jnp

from funcdl.nn._activations import get_activation
from funcdl.nn._base import Layer, check_existing, check_rank
from funcdl.nn._init import initializer
from funcdl.nn._recurrent_vjp import gru, lstm, simple_rnn


def _directed(layer, run, x):
    """``run(x)``, over the time steps last to first when ``layer.reverse`` (output aligned with ``x``)."""
    if not layer.reverse:
        return run(x)
    out = run(jnp.flip(x, axis=1))
    return jnp.flip(out, axis=1) if layer.return_sequences else out


def _weights(layer, x, gates, bias_init=None):
    """The layer's ``(kernel, bias, recurrent_kernel, recurrent_bias)``, created on first use.

    ``recurrent_bias`` is a zero constant (no param) when ``use_recurrent_bias`` is off.
    """
    check_rank(layer, x, (3,), "(batch, time, features)")
    check_existing(layer, x, "kernel", 0)
    hidden = layer.features * gates
    kernel = layer.param("kernel", initializer(layer.kernel_init, x.shape[-1]), (x.shape[-1], hidden))
    recurrent = layer.param("recurrent_kernel", initializer(layer.recurrent_init, layer.features),
                            (layer.features, hidden))
    bias = layer.param("bias", bias_init or initializer(layer.bias_init, layer.features), (hidden,))
    if layer.use_recurrent_bias:
        recurrent_bias = layer.param("recurrent_bias", linen.initializers.zeros, (hidden,))
    else:  # keras' LSTM / SimpleRNN (and GRU without reset_after) have a single bias
        recurrent_bias = jnp.zeros((hidden,), x.dtype)
    return kernel, bias, recurrent, recurrent_bias


class SimpleRNN(Layer):
    """h_t = activation(x_t W + b + h_{t-1} U + b_r); returns the last h or all of them.

    Args:
      features: hidden size H.
      activation: 'tanh' (default) or 'relu'.
      return_sequences: return (B, T, H) instead of the last step (B, H).
      use_recurrent_bias: learn a second bias on the recurrent side (torch) or not (keras).
      reverse: read the time steps last to first (see the module docstring).

    Shapes: (B, T, F) -> (B, H), or (B, T, H) with ``return_sequences``.
    """
    features: int
    activation: str = "tanh"
    return_sequences: bool = False
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"
    reverse: bool = False

    @linen.compact
    def __call__(self, x):
        weights = _weights(self, x, 1)
        return _directed(self, lambda x: simple_rnn(x, *weights, get_activation(self.activation),
                                                    self.return_sequences), x)


class LSTM(Layer):
    """Long short-term memory, torch/keras semantics (gates i, f, g, o; sigmoid and tanh).

    Args:
      features: hidden size H.
      return_sequences: return (B, T, H) instead of the last step (B, H).
      unit_forget_bias: initialise the forget-gate bias to 1 (keras default).
      use_recurrent_bias: learn a second bias on the recurrent side (torch) or not (keras).
      reverse: read the time steps last to first (see the module docstring).

    Shapes: (B, T, F) -> (B, H), or (B, T, H) with ``return_sequences``.
    """
    features: int
    return_sequences: bool = False
    unit_forget_bias: bool = True
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"
    reverse: bool = False

    @linen.compact
    def __call__(self, x):
        hidden = self.features
        base_init = initializer(self.bias_init, hidden)

        def bias_init(key, shape, dtype=jnp.float32):
            bias = base_init(key, shape, dtype)
            # keras' unit_forget_bias: start with the forget gate open.
            return bias.at[hidden:2 * hidden].set(1.0) if self.unit_forget_bias else bias
        weights = _weights(self, x, 4, bias_init)
        return _directed(self, lambda x: lstm(x, *weights, self.return_sequences), x)


class GRU(Layer):
    """Gated recurrent unit, torch semantics (gates r, z, n); keras with ``reset_after``.

    ``n = tanh(x W_n + b_n + r * (h U_n + b_rn))`` when ``reset_after`` (torch,
    keras default) else ``n = tanh(x W_n + b_n + (r * h) U_n + b_rn)``;
    ``h' = (1 - z) * n + z * h``.

    Args:
      features: hidden size H.
      return_sequences: return (B, T, H) instead of the last step (B, H).
      reset_after: where the reset gate applies (see above).
      use_recurrent_bias: learn a second bias on the recurrent side (torch) or not (keras).
      reverse: read the time steps last to first (see the module docstring).

    Shapes: (B, T, F) -> (B, H), or (B, T, H) with ``return_sequences``.
    """
    features: int
    return_sequences: bool = False
    reset_after: bool = True
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"
    reverse: bool = False

    @linen.compact
    def __call__(self, x):
        weights = _weights(self, x, 3)
        return _directed(self, lambda x: gru(x, *weights, self.reset_after, self.return_sequences), x)
