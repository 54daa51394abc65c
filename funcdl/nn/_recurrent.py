"""Recurrent layers over (batch, time, features): SimpleRNN, LSTM, GRU.

Weights are fused per gate family, in PyTorch's gate order:
``{'kernel': (in, G*H), 'recurrent_kernel': (H, G*H), 'bias': (G*H,),
'recurrent_bias': (G*H,)}`` with G = 1 (SimpleRNN), 4 (LSTM: i, f, g, o) or
3 (GRU: r, z, n); ``use_recurrent_bias=False`` drops ``recurrent_bias`` (keras'
single-bias form, which trains differently: one bias moves instead of two).
torch's ``weight_ih_l0`` is ``kernel.T``; keras' LSTM gate
order (i, f, c, o) is the same, keras' GRU order (z, r, h) is permuted by the
converters. The input projection for every time step is one matmul before the
scan; only ``h @ recurrent_kernel`` runs inside it.
"""
import flax.linen as linen
import jax
import jax.numpy as jnp

from funcdl.nn._activations import get_activation
from funcdl.nn._base import Layer, check_existing, check_rank
from funcdl.nn._init import initializer


def _weights(layer, x, gates, bias_init=None):
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
    projected = jnp.einsum("btf,fg->tbg", x, kernel) + bias  # (T, B, G*H), time-major for the scan
    return projected, recurrent, recurrent_bias


def _finish(layer, outputs):
    outputs = jnp.swapaxes(outputs, 0, 1)  # (B, T, H)
    return outputs if layer.return_sequences else outputs[:, -1]


class SimpleRNN(Layer):
    """h_t = activation(x_t W + b + h_{t-1} U + b_r); returns the last h or all of them.

    Args:
      features: hidden size H.
      activation: 'tanh' (default) or 'relu'.
      return_sequences: return (B, T, H) instead of the last step (B, H).
      use_recurrent_bias: learn a second bias on the recurrent side (torch) or not (keras).
    """
    features: int
    activation: str = "tanh"
    return_sequences: bool = False
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"

    @linen.compact
    def __call__(self, x):
        projected, recurrent, recurrent_bias = _weights(self, x, 1)
        act = get_activation(self.activation)

        def step(h, xw):
            h = act(xw + h @ recurrent + recurrent_bias)
            return h, h
        h0 = jnp.zeros((x.shape[0], self.features), projected.dtype)
        return _finish(self, jax.lax.scan(step, h0, projected)[1])


class LSTM(Layer):
    """Long short-term memory, torch/keras semantics (gates i, f, g, o; sigmoid and tanh).

    Args:
      features: hidden size H.
      return_sequences: return (B, T, H) instead of the last step (B, H).
      unit_forget_bias: initialise the forget-gate bias to 1 (keras default).
      use_recurrent_bias: learn a second bias on the recurrent side (torch) or not (keras).
    """
    features: int
    return_sequences: bool = False
    unit_forget_bias: bool = True
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"

    @linen.compact
    def __call__(self, x):
        hidden = self.features
        base_init = initializer(self.bias_init, hidden)

        def bias_init(key, shape, dtype=jnp.float32):
            bias = base_init(key, shape, dtype)
            # keras' unit_forget_bias: start with the forget gate open.
            return bias.at[hidden:2 * hidden].set(1.0) if self.unit_forget_bias else bias
        projected, recurrent, recurrent_bias = _weights(self, x, 4, bias_init)

        def step(carry, xw):
            h, c = carry
            gates = xw + h @ recurrent + recurrent_bias
            i, f, g, o = (gates[:, k * hidden:(k + 1) * hidden] for k in range(4))
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        zeros = jnp.zeros((x.shape[0], hidden), projected.dtype)
        return _finish(self, jax.lax.scan(step, (zeros, zeros), projected)[1])


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
    """
    features: int
    return_sequences: bool = False
    reset_after: bool = True
    use_recurrent_bias: bool = True
    kernel_init: str = "glorot_uniform"
    recurrent_init: str = "orthogonal"
    bias_init: str = "zeros"

    @linen.compact
    def __call__(self, x):
        projected, recurrent, recurrent_bias = _weights(self, x, 3)
        hidden = self.features

        def step(h, xw):
            x_r, x_z, x_n = (xw[:, k * hidden:(k + 1) * hidden] for k in range(3))
            u_rz = h @ recurrent[:, :2 * hidden] + recurrent_bias[:2 * hidden]
            r = jax.nn.sigmoid(x_r + u_rz[:, :hidden])
            z = jax.nn.sigmoid(x_z + u_rz[:, hidden:])
            if self.reset_after:
                n = jnp.tanh(x_n + r * (h @ recurrent[:, 2 * hidden:] + recurrent_bias[2 * hidden:]))
            else:
                n = jnp.tanh(x_n + (r * h) @ recurrent[:, 2 * hidden:] + recurrent_bias[2 * hidden:])
            h = (1.0 - z) * n + z * h
            return h, h
        h0 = jnp.zeros((x.shape[0], hidden), projected.dtype)
        return _finish(self, jax.lax.scan(step, h0, projected)[1])
