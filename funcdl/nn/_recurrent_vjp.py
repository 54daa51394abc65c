"""Whole-sequence recurrences with hand-written backward passes (``jax.custom_vjp``).

Autodiff of a ``lax.scan`` differentiates each time step on its own: its
backward loop runs, every step, a small ``h_{t-1}^T @ dgates_t`` matmul for the
recurrent-kernel gradient and adds it to a carried accumulator. Here the
backward loop runs only the ``dh`` (and ``dc``) recurrence, one
``(B, G*H) @ (G*H, H)`` matmul a step, and keeps every step's gate gradients;
the weight gradients of the whole sequence are then ONE matmul::

    [dU; dW; db] = [h_{t-1}^T; x_t^T; 1] (H + F + 1, T*B) @ dgates (T*B, G*H)

The results equal ``jax.grad`` of the plain scans (kept below as ``*_scan``,
the references the tests and the benchmark compare with) up to float rounding.

Layouts, chosen so that XLA copies nothing it need not:

- Buffers are time-major, ``(T, B, G*H)``: a step reads and writes one slab.
- The projected inputs ``x_t W`` are overwritten, step by step, by the gate
  activations (the backward pass's residuals), which the backward pass
  overwrites in turn by the gate gradients: the sequence allocates one
  ``(T, B, G*H)`` buffer, the projection's own.
- ``h_{t-1}`` is written transposed into the upper rows of a
  ``(H + F + 1, T, B)`` block whose lower rows hold ``x^T`` and a row of ones,
  so that the weight gradients are the plain matmul above, no transposes.
- The backward loop writes step t's gradients at the start of step t-1 (see
  :func:`_reverse_in_place`): XLA then updates the buffer in place rather than
  copying all of it every step.
- Gate arithmetic runs in at least float32 (bfloat16 inputs are widened inside
  each fused step and rounded once when stored).

Forward-mode autodiff (``jax.jvp``, ``jax.hessian``) is not defined for these
functions: JAX refuses it with a ``TypeError`` naming ``custom_vjp``.
"""
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


# --------------------------------------------------------------------------
# Buffers and the pieces every recurrence shares


def _read(buffer: Array, t: Array | int, axis: int = 0) -> Array:
    """``buffer``'s slice ``t`` along ``axis`` (axis dropped); ``t`` is a loop index, never negative."""
    return lax.dynamic_index_in_dim(buffer, t, axis, keepdims=False, allow_negative_indices=False)


def _write(buffer: Array, value: Array, t: Array | int, axis: int = 0) -> Array:
    """``buffer`` with its slice ``t`` along ``axis`` replaced by ``value`` (in place under jit)."""
    return lax.dynamic_update_index_in_dim(buffer, value, t, axis, allow_negative_indices=False)


def _write_column(columns: Array, h: Array, t: Array) -> Array:
    """``columns`` (K, T, B) with rows ``:H`` of column ``t`` set to ``h.T`` (h: (B, H))."""
    return lax.dynamic_update_slice(columns, h.T[:, None, :].astype(columns.dtype), (0, t, 0),
                                    allow_negative_indices=False)


def _read_column(columns: Array, t: Array, hidden: int) -> Array:
    """``h`` (B, H) stored by :func:`_write_column` at column ``t``."""
    block = lax.dynamic_slice(columns, (0, t, 0), (hidden, 1, columns.shape[2]), allow_negative_indices=False)
    return block[:, 0, :].T


def _wide(x: Array) -> Array:
    """``x`` in at least float32, for gate arithmetic (bfloat16 gates lose too much in a sigmoid)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _split(gates: Array, count: int) -> list:
    """The ``count`` equal blocks of the last axis of ``gates`` (B, count*H), in gate order."""
    return jnp.split(gates, count, axis=-1)


def _project(x: Array, kernel: Array) -> tuple:
    """Time-major inputs and their projection for every step, one matmul.

    Args:
      x: (B, T, F) inputs.
      kernel: (F, G*H) input kernel.
    Returns:
      (x_tbf (T, B, F), projected (T, B, G*H) = x_t @ kernel for every t).
    """
    x_tbf = jnp.swapaxes(x, 0, 1)  # small (F is the input width); the big projection is born time-major
    return x_tbf, jnp.einsum("tbf,fg->tbg", x_tbf, kernel)


def _columns(x_tbf: Array, hidden: int) -> Array:
    """The (H + F + 1, T, B) block ``[0; x^T; 1]``; rows ``:H`` take ``h_{t-1}^T`` in the forward loop."""
    steps, batch, _ = x_tbf.shape
    return jnp.concatenate([jnp.zeros((hidden, steps, batch), x_tbf.dtype), jnp.transpose(x_tbf, (2, 0, 1)),
                            jnp.ones((1, steps, batch), x_tbf.dtype)])


def _sum_over_steps(columns: Array, grads: Array) -> Array:
    """``sum over t, b of outer(columns[:, t, b], grads[t, b])``: (K, T, B), (T, B, G) -> (K, G).

    Accumulated in float32 (one long sum over T*B products) and returned in ``grads``' dtype.

    Contracting over (T, B) without a reshape keeps a batch-sharded (data-parallel)
    run sharded: each device sums its examples, XLA adds one all-reduce. The
    contracting dimensions are listed in memory order (einsum may list them
    otherwise, and XLA then transposes both operands before the matmul).
    """
    total = lax.dot_general(columns, grads, (((1, 2), (0, 1)), ((), ())), preferred_element_type=jnp.float32)
    return total.astype(grads.dtype)


def _split_weight_grads(total: Array, hidden: int) -> tuple:
    """``(dU (H, G), dW (F, G), db (G,))`` from the stacked ``[dU; dW; db]`` (H + F + 1, G)."""
    return total[:hidden], total[hidden:-1], total[-1]


def _input_grad(grads: Array, kernel: Array) -> Array:
    """dx (B, T, F) from the projection's gradient (T, B, G) and the kernel (F, G) (dead code if x is data)."""
    return jnp.einsum("tbg,fg->btf", grads, kernel)


def _reverse_in_place(step: Callable, carry: Any, buffers: Any) -> tuple:
    """Run ``step`` for t = T-1 down to 0, each step replacing what it read at ``t`` in ``buffers``.

    Step t's results are written at the start of step t-1, before anything
    reads: every read then sees the updated buffers, which XLA therefore
    updates in place. (Written at the end of step t, they would conflict with
    reads of the old buffers XLA may schedule after the write, and XLA would
    copy each whole buffer every step.)

    Args:
      step: ``step(carry, read, t) -> (carry, new)``; ``read`` and ``new`` have
        the structure of ``buffers``, sliced at ``t``.
      carry: the initial carry.
      buffers: a pytree of (T, ...) arrays.
    Returns:
      (final carry, buffers holding every step's ``new``).
    """
    steps = jax.tree.leaves(buffers)[0].shape[0]

    def body(k, state):
        carry, pending, buffers = state
        t = steps - 1 - k
        buffers = jax.tree.map(lambda b, p: _write(b, p, jnp.minimum(t + 1, steps - 1)), buffers, pending)
        carry, pending = step(carry, jax.tree.map(lambda b: _read(b, t), buffers), t)
        return carry, pending, buffers
    last = jax.tree.map(lambda b: b[steps - 1], buffers)  # the first "write" puts slice T-1 back unchanged
    carry, pending, buffers = lax.fori_loop(0, steps, body, (carry, last, buffers))
    return carry, jax.tree.map(lambda b, p: _write(b, p, 0), buffers, pending)


def _outputs(batch: int, steps: int, hidden: int, dtype: Any, return_sequences: bool) -> Array | None:
    """The (B, T, H) buffer of every step's output, or None when only the last step is returned."""
    return jnp.zeros((batch, steps, hidden), dtype) if return_sequences else None


def _store_output(outputs: Array | None, h: Array, t: Array) -> Array | None:
    """``outputs`` with step ``t``'s ``h`` written (unchanged None when only the last step is kept)."""
    return None if outputs is None else _write(outputs, h, t, axis=1)


def _result(outputs: Array | None, h: Array) -> Array:
    """(B, T, H) every step's output when kept, else the last (B, H)."""
    return h if outputs is None else outputs


def _output_grad(d_out: Array, return_sequences: bool, t: Array, dh: Array) -> Array:
    """``dh`` plus the loss's own gradient for step ``t``'s output (only when every step is returned)."""
    return dh + _read(d_out, t, axis=1) if return_sequences else dh


def _same_dtype(x: Any, kernel: Any, bias: Any, recurrent_kernel: Any, *more: Any) -> tuple:
    """Every argument cast to their common dtype, as the matmuls of the plain scans would promote them."""
    dtype = jnp.result_type(x, kernel, bias, recurrent_kernel, *more)
    return tuple(jnp.asarray(a).astype(dtype) for a in (x, kernel, bias, recurrent_kernel, *more))


# --------------------------------------------------------------------------
# LSTM (gates i, f, g, o)


def _lstm_activations(pre: Array, hidden: int) -> Array:
    """[sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)] of the (B, 4H) pre-activations as one expression.

    tanh(g) = 2 sigmoid(2g) - 1: one sigmoid over the four gates, so that XLA
    fuses the whole (B, 4H) block into the store of the activations instead of
    computing four slices and concatenating them.
    """
    scale = jnp.concatenate([jnp.ones(2 * hidden), jnp.full(hidden, 2.0), jnp.ones(hidden)]).astype(pre.dtype)
    return jax.nn.sigmoid(pre * scale) * scale - (scale - 1)


def _lstm_forward(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array,
                  return_sequences: bool) -> tuple:
    """(output, residuals of the backward pass) of the LSTM over ``x``; shapes as in :func:`lstm`."""
    x_tbf, gates = _project(x, kernel)  # gates: x_t W per step, then overwritten by the activations
    steps, batch, _ = x_tbf.shape
    hidden = recurrent_kernel.shape[0]
    dtype = gates.dtype

    def step(t, carry):
        h, c, gates, columns, cells, outputs = carry
        pre = _wide(_read(gates, t)) + bias + h @ recurrent_kernel
        gates = _write(gates, _lstm_activations(pre, hidden).astype(dtype), t)
        # read back from the buffer: the activations are then computed by the store alone
        i, f, g, o = _split(_wide(_read(gates, t)), 4)
        columns, cells = _write_column(columns, h, t), _write(cells, c, t)
        c = (f * c + i * g).astype(dtype)
        h = (o * jnp.tanh(c)).astype(dtype)
        return h, c, gates, columns, cells, _store_output(outputs, h, t)
    zeros = jnp.zeros((batch, hidden), dtype)
    state = (zeros, zeros, gates, _columns(x_tbf, hidden), jnp.zeros((steps, batch, hidden), dtype),
             _outputs(batch, steps, hidden, dtype, return_sequences))
    h, _, gates, columns, cells, outputs = lax.fori_loop(0, steps, step, state)
    return _result(outputs, h), (kernel, recurrent_kernel, gates, columns, cells)


def _lstm_backward(return_sequences: bool, residuals: tuple, d_out: Array) -> tuple:
    """Gradients w.r.t. (x, kernel, bias, recurrent_kernel) from the output's cotangent ``d_out``."""
    kernel, recurrent_kernel, gates, columns, cells = residuals
    hidden, batch = recurrent_kernel.shape[0], gates.shape[1]
    wide = jnp.promote_types(gates.dtype, jnp.float32)
    recurrent_t = recurrent_kernel.T

    def step(carry, act, t):
        dh, dc = carry
        dh = _output_grad(d_out, return_sequences, t, dh)
        c_prev = _wide(_read(cells, t))
        i, f, g, o = _split(_wide(act), 4)
        tanh_c = jnp.tanh(f * c_prev + i * g)  # recomputed: cheaper than storing it
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        grads = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g * g),
                                 dh * tanh_c * o * (1 - o)], axis=-1).astype(gates.dtype)
        return ((grads @ recurrent_t).astype(wide), dc * f), grads
    dh = jnp.zeros((batch, hidden), wide) if return_sequences else d_out.astype(wide)
    _, grads = _reverse_in_place(step, (dh, jnp.zeros((batch, hidden), wide)), gates)
    d_recurrent, d_kernel, d_bias = _split_weight_grads(_sum_over_steps(columns, grads), hidden)
    return _input_grad(grads, kernel), d_kernel, d_bias, d_recurrent


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _lstm(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, return_sequences: bool) -> Array:
    """:func:`lstm` with both biases summed, differentiated by :func:`_lstm_backward`."""
    return _lstm_forward(x, kernel, bias, recurrent_kernel, return_sequences)[0]


_lstm.defvjp(_lstm_forward, _lstm_backward)


def lstm(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
         return_sequences: bool = False) -> Array:
    """LSTM over a sequence from zero states, with the hand-written backward pass (torch gate order i, f, g, o).

    Args:
      x: (B, T, F) inputs.
      kernel: (F, 4H) input kernel.
      bias: (4H,) input bias.
      recurrent_kernel: (H, 4H) recurrent kernel.
      recurrent_bias: (4H,) recurrent bias (zeros for the one-bias form).
      return_sequences: return every step's output instead of the last one.
    Returns:
      (B, T, H) if ``return_sequences`` else (B, H).
    """
    x, kernel, bias, recurrent_kernel, recurrent_bias = _same_dtype(x, kernel, bias, recurrent_kernel,
                                                                    recurrent_bias)
    if x.shape[1] == 0:
        return lstm_scan(x, kernel, bias, recurrent_kernel, recurrent_bias, return_sequences)
    return _lstm(x, kernel, bias + recurrent_bias, recurrent_kernel, return_sequences)


# --------------------------------------------------------------------------
# GRU (gates r, z, n), reset gate applied after the recurrent matmul (torch, keras' default)


def _gru_forward(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias_n: Array,
                 return_sequences: bool) -> tuple:
    """(output, residuals) of the reset-after GRU; ``bias`` (3H,) holds the r, z biases of both sides."""
    x_tbf, gates = _project(x, kernel)  # gates: x_t W per step, then overwritten by [r, z, n]
    steps, batch, _ = x_tbf.shape
    hidden = recurrent_kernel.shape[0]
    dtype = gates.dtype

    def step(t, carry):
        h, gates, columns, candidates, outputs = carry
        x_rz, x_n = jnp.split(_wide(_read(gates, t)) + bias, [2 * hidden], axis=-1)
        u_rz, u_n = jnp.split(h @ recurrent_kernel, [2 * hidden], axis=-1)
        rz = jax.nn.sigmoid(x_rz + u_rz)  # both gates in one expression
        recurrent_n = u_n + recurrent_bias_n  # kept: the reset gate's gradient needs it
        n = jnp.tanh(x_n + rz[:, :hidden] * recurrent_n)
        gates = _write(gates, jnp.concatenate([rz, n], axis=-1).astype(dtype), t)
        candidates = _write(candidates, recurrent_n.astype(dtype), t)
        columns = _write_column(columns, h, t)
        _, z, n = _split(_wide(_read(gates, t)), 3)
        h = ((1 - z) * n + z * h).astype(dtype)
        return h, gates, columns, candidates, _store_output(outputs, h, t)
    state = (jnp.zeros((batch, hidden), dtype), gates, _columns(x_tbf, hidden),
             jnp.zeros((steps, batch, hidden), dtype), _outputs(batch, steps, hidden, dtype, return_sequences))
    h, gates, columns, candidates, outputs = lax.fori_loop(0, steps, step, state)
    return _result(outputs, h), (kernel, recurrent_kernel, gates, columns, candidates)


def _gru_backward(return_sequences: bool, residuals: tuple, d_out: Array) -> tuple:
    """Gradients w.r.t. (x, kernel, bias, recurrent_kernel, recurrent_bias_n) of the reset-after GRU."""
    kernel, recurrent_kernel, gates, columns, candidates = residuals
    hidden, batch = recurrent_kernel.shape[0], gates.shape[1]
    wide = jnp.promote_types(gates.dtype, jnp.float32)
    recurrent_t = recurrent_kernel.T

    def step(dh, read, t):
        act, recurrent_n = read
        dh = _output_grad(d_out, return_sequences, t, dh)
        r, z, n = _split(_wide(act), 3)
        h_prev = _wide(_read_column(columns, t, hidden))
        d_n = dh * (1 - z) * (1 - n * n)  # gradient of n's pre-activation (x side)
        d_r = d_n * _wide(recurrent_n) * r * (1 - r)
        d_z = dh * (h_prev - n) * z * (1 - z)
        d_hidden = jnp.concatenate([d_r, d_z, d_n * r], axis=-1).astype(gates.dtype)  # of h U + b_hn
        return dh * z + d_hidden @ recurrent_t, (d_hidden, d_n.astype(gates.dtype))
    dh = jnp.zeros((batch, hidden), wide) if return_sequences else d_out.astype(wide)
    _, (d_hidden, d_n) = _reverse_in_place(step, dh, (gates, candidates))
    d_recurrent, d_kernel_rz, d_bias_rz = _split_weight_grads(_sum_over_steps(columns, d_hidden), hidden)
    d_input_n = _sum_over_steps(columns[hidden:], d_n)  # (F + 1, H): the n columns of dW and db
    d_kernel = jnp.concatenate([d_kernel_rz[:, :2 * hidden], d_input_n[:-1]], axis=1)
    d_bias = jnp.concatenate([d_bias_rz[:2 * hidden], d_input_n[-1]])
    d_x = _input_grad(d_hidden[..., :2 * hidden], kernel[:, :2 * hidden]) + _input_grad(d_n, kernel[:, 2 * hidden:])
    return d_x, d_kernel, d_bias, d_recurrent, d_bias_rz[2 * hidden:]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _gru(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias_n: Array,
         return_sequences: bool) -> Array:
    """:func:`gru` (reset after) with the r, z biases summed, differentiated by :func:`_gru_backward`."""
    return _gru_forward(x, kernel, bias, recurrent_kernel, recurrent_bias_n, return_sequences)[0]


_gru.defvjp(_gru_forward, _gru_backward)


# --------------------------------------------------------------------------
# GRU with the reset gate applied before the recurrent matmul (keras reset_after=False)


def _gru_before_forward(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array,
                        return_sequences: bool) -> tuple:
    """(output, residuals) of the reset-before GRU; ``bias`` (3H,) holds both biases summed."""
    x_tbf, gates = _project(x, kernel)
    steps, batch, _ = x_tbf.shape
    hidden = recurrent_kernel.shape[0]
    dtype = gates.dtype
    recurrent_rz, recurrent_n = recurrent_kernel[:, :2 * hidden], recurrent_kernel[:, 2 * hidden:]

    def step(t, carry):
        h, gates, columns, resets, outputs = carry
        x_rz, x_n = jnp.split(_wide(_read(gates, t)) + bias, [2 * hidden], axis=-1)
        r, z = _split(jax.nn.sigmoid(x_rz + h @ recurrent_rz), 2)
        reset_h = (r * h).astype(dtype)
        n = jnp.tanh(x_n + reset_h @ recurrent_n)
        gates = _write(gates, jnp.concatenate([r, z, n], axis=-1).astype(dtype), t)
        columns, resets = _write_column(columns, h, t), _write_column(resets, reset_h, t)
        _, z, n = _split(_wide(_read(gates, t)), 3)
        h = ((1 - z) * n + z * h).astype(dtype)
        return h, gates, columns, resets, _store_output(outputs, h, t)
    state = (jnp.zeros((batch, hidden), dtype), gates, _columns(x_tbf, hidden),
             jnp.zeros((hidden, steps, batch), dtype), _outputs(batch, steps, hidden, dtype, return_sequences))
    h, gates, columns, resets, outputs = lax.fori_loop(0, steps, step, state)
    return _result(outputs, h), (kernel, recurrent_kernel, gates, columns, resets)


def _gru_before_backward(return_sequences: bool, residuals: tuple, d_out: Array) -> tuple:
    """Gradients w.r.t. (x, kernel, bias, recurrent_kernel) of the reset-before GRU."""
    kernel, recurrent_kernel, gates, columns, resets = residuals
    hidden, batch = recurrent_kernel.shape[0], gates.shape[1]
    wide = jnp.promote_types(gates.dtype, jnp.float32)
    recurrent_rz_t, recurrent_n_t = recurrent_kernel[:, :2 * hidden].T, recurrent_kernel[:, 2 * hidden:].T

    def step(dh, act, t):
        dh = _output_grad(d_out, return_sequences, t, dh)
        r, z, n = _split(_wide(act), 3)
        h_prev = _wide(_read_column(columns, t, hidden))
        d_n = (dh * (1 - z) * (1 - n * n)).astype(gates.dtype)
        d_reset_h = _wide(d_n @ recurrent_n_t)
        d_rz = jnp.concatenate([d_reset_h * h_prev * r * (1 - r), dh * (h_prev - n) * z * (1 - z)],
                               axis=-1).astype(gates.dtype)
        return dh * z + d_reset_h * r + d_rz @ recurrent_rz_t, jnp.concatenate([d_rz, d_n], axis=-1)
    dh = jnp.zeros((batch, hidden), wide) if return_sequences else d_out.astype(wide)
    _, grads = _reverse_in_place(step, dh, gates)
    d_recurrent_h, d_kernel, d_bias = _split_weight_grads(_sum_over_steps(columns, grads), hidden)
    d_recurrent_n = _sum_over_steps(resets, grads[..., 2 * hidden:])
    d_recurrent = jnp.concatenate([d_recurrent_h[:, :2 * hidden], d_recurrent_n], axis=1)
    return _input_grad(grads, kernel), d_kernel, d_bias, d_recurrent


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _gru_before(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, return_sequences: bool) -> Array:
    """:func:`gru` (reset before) with both biases summed, differentiated by :func:`_gru_before_backward`."""
    return _gru_before_forward(x, kernel, bias, recurrent_kernel, return_sequences)[0]


_gru_before.defvjp(_gru_before_forward, _gru_before_backward)


def gru(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
        reset_after: bool = True, return_sequences: bool = False) -> Array:
    """GRU over a sequence from a zero state, with the hand-written backward pass (torch gate order r, z, n).

    ``n = tanh(x W_n + b_n + r * (h U_n + b_rn))`` when ``reset_after`` else
    ``n = tanh(x W_n + b_n + (r * h) U_n + b_rn)``; ``h' = (1 - z) * n + z * h``.

    Args:
      x: (B, T, F) inputs.
      kernel: (F, 3H) input kernel.
      bias: (3H,) input bias.
      recurrent_kernel: (H, 3H) recurrent kernel.
      recurrent_bias: (3H,) recurrent bias (zeros for the one-bias form).
      reset_after: where the reset gate applies (see above).
      return_sequences: return every step's output instead of the last one.
    Returns:
      (B, T, H) if ``return_sequences`` else (B, H).
    """
    x, kernel, bias, recurrent_kernel, recurrent_bias = _same_dtype(x, kernel, bias, recurrent_kernel,
                                                                    recurrent_bias)
    if x.shape[1] == 0:
        return gru_scan(x, kernel, bias, recurrent_kernel, recurrent_bias, reset_after, return_sequences)
    hidden = recurrent_kernel.shape[0]
    if not reset_after:
        return _gru_before(x, kernel, bias + recurrent_bias, recurrent_kernel, return_sequences)
    summed = bias + jnp.concatenate([recurrent_bias[:2 * hidden], jnp.zeros_like(recurrent_bias[2 * hidden:])])
    return _gru(x, kernel, summed, recurrent_kernel, recurrent_bias[2 * hidden:], return_sequences)


# --------------------------------------------------------------------------
# SimpleRNN


def _simple_rnn_forward(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, activation: Callable,
                        return_sequences: bool) -> tuple:
    """(output, residuals) of the simple RNN; ``bias`` (H,) holds both biases summed."""
    x_tbf, pre = _project(x, kernel)  # pre: x_t W per step, then the pre-activations
    steps, batch, _ = x_tbf.shape
    hidden = recurrent_kernel.shape[0]

    def step(t, carry):
        h, pre, columns, outputs = carry
        pre = _write(pre, _read(pre, t) + bias + h @ recurrent_kernel, t)
        columns = _write_column(columns, h, t)
        h = activation(_read(pre, t))
        return h, pre, columns, _store_output(outputs, h, t)
    state = (jnp.zeros((batch, hidden), pre.dtype), pre, _columns(x_tbf, hidden),
             _outputs(batch, steps, hidden, pre.dtype, return_sequences))
    h, pre, columns, outputs = lax.fori_loop(0, steps, step, state)
    return _result(outputs, h), (kernel, recurrent_kernel, pre, columns)


def _simple_rnn_backward(activation: Callable, return_sequences: bool, residuals: tuple, d_out: Array) -> tuple:
    """Gradients w.r.t. (x, kernel, bias, recurrent_kernel) of the simple RNN."""
    kernel, recurrent_kernel, pre, columns = residuals
    hidden, batch = recurrent_kernel.shape[0], pre.shape[1]
    recurrent_t = recurrent_kernel.T

    def step(dh, pre_t, t):
        dh = _output_grad(d_out, return_sequences, t, dh)
        d_pre = jax.vjp(activation, pre_t)[1](dh)[0]  # any elementwise activation, differentiated by jax
        return d_pre @ recurrent_t, d_pre
    dh = jnp.zeros((batch, hidden), pre.dtype) if return_sequences else d_out.astype(pre.dtype)
    _, grads = _reverse_in_place(step, dh, pre)
    d_recurrent, d_kernel, d_bias = _split_weight_grads(_sum_over_steps(columns, grads), hidden)
    return _input_grad(grads, kernel), d_kernel, d_bias, d_recurrent


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _simple_rnn(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, activation: Callable,
                return_sequences: bool) -> Array:
    """:func:`simple_rnn` with both biases summed, differentiated by :func:`_simple_rnn_backward`."""
    return _simple_rnn_forward(x, kernel, bias, recurrent_kernel, activation, return_sequences)[0]


_simple_rnn.defvjp(_simple_rnn_forward, _simple_rnn_backward)


def simple_rnn(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
               activation: Callable = jnp.tanh, return_sequences: bool = False) -> Array:
    """``h_t = activation(x_t W + b + h_{t-1} U + b_r)`` from a zero state, with the hand-written backward pass.

    Args:
      x: (B, T, F) inputs.
      kernel: (F, H) input kernel.
      bias: (H,) input bias.
      recurrent_kernel: (H, H) recurrent kernel.
      recurrent_bias: (H,) recurrent bias (zeros for the one-bias form).
      activation: an elementwise function (B, H) -> (B, H), e.g. tanh or relu.
      return_sequences: return every step's output instead of the last one.
    Returns:
      (B, T, H) if ``return_sequences`` else (B, H).
    """
    x, kernel, bias, recurrent_kernel, recurrent_bias = _same_dtype(x, kernel, bias, recurrent_kernel,
                                                                    recurrent_bias)
    if x.shape[1] == 0:
        return simple_rnn_scan(x, kernel, bias, recurrent_kernel, recurrent_bias, activation, return_sequences)
    return _simple_rnn(x, kernel, bias + recurrent_bias, recurrent_kernel, activation, return_sequences)


# --------------------------------------------------------------------------
# References: the plain scans, differentiated by autodiff (same signatures)


def _scan_result(outputs: Array, return_sequences: bool) -> Array:
    """(T, B, H) scan outputs as (B, T, H), or the last step (B, H)."""
    outputs = jnp.swapaxes(outputs, 0, 1)
    return outputs if return_sequences else outputs[:, -1]


def lstm_scan(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
              return_sequences: bool = False) -> Array:
    """:func:`lstm` as a plain ``lax.scan``, differentiated by autodiff (the reference)."""
    projected = jnp.einsum("btf,fg->tbg", x, kernel) + bias  # (T, B, 4H)
    hidden = recurrent_kernel.shape[0]

    def step(carry, xw):
        h, c = carry
        i, f, g, o = _split(xw + h @ recurrent_kernel + recurrent_bias, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    zeros = jnp.zeros((x.shape[0], hidden), projected.dtype)
    return _scan_result(lax.scan(step, (zeros, zeros), projected)[1], return_sequences)


def gru_scan(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
             reset_after: bool = True, return_sequences: bool = False) -> Array:
    """:func:`gru` as a plain ``lax.scan``, differentiated by autodiff (the reference)."""
    projected = jnp.einsum("btf,fg->tbg", x, kernel) + bias  # (T, B, 3H)
    hidden = recurrent_kernel.shape[0]

    def step(h, xw):
        x_r, x_z, x_n = _split(xw, 3)
        u_rz = h @ recurrent_kernel[:, :2 * hidden] + recurrent_bias[:2 * hidden]
        r = jax.nn.sigmoid(x_r + u_rz[:, :hidden])
        z = jax.nn.sigmoid(x_z + u_rz[:, hidden:])
        if reset_after:
            n = jnp.tanh(x_n + r * (h @ recurrent_kernel[:, 2 * hidden:] + recurrent_bias[2 * hidden:]))
        else:
            n = jnp.tanh(x_n + (r * h) @ recurrent_kernel[:, 2 * hidden:] + recurrent_bias[2 * hidden:])
        h = (1.0 - z) * n + z * h
        return h, h
    h0 = jnp.zeros((x.shape[0], hidden), projected.dtype)
    return _scan_result(lax.scan(step, h0, projected)[1], return_sequences)


def simple_rnn_scan(x: Array, kernel: Array, bias: Array, recurrent_kernel: Array, recurrent_bias: Array,
                    activation: Callable = jnp.tanh, return_sequences: bool = False) -> Array:
    """:func:`simple_rnn` as a plain ``lax.scan``, differentiated by autodiff (the reference)."""
    projected = jnp.einsum("btf,fg->tbg", x, kernel) + bias  # (T, B, H)

    def step(h, xw):
        h = activation(xw + h @ recurrent_kernel + recurrent_bias)
        return h, h
    h0 = jnp.zeros((x.shape[0], recurrent_kernel.shape[0]), projected.dtype)
    return _scan_result(lax.scan(step, h0, projected)[1], return_sequences)
