"""Convolution as matrix products over shifted windows, with a hand-written, cache-blocked gradient.

This is how ``Conv2D`` computes on the CPU (``implementation='matmul'``, the
CPU's ``'auto'``). For an NHWC input ``x`` and an HWIO kernel, ``im2col``
concatenates the ``kh * kw`` strided slices of the padded input along
channels, so that the convolution is ``patches @ kernel.reshape(kh*kw*in, out)``.
The custom VJP computes

* ``d kernel = dy^T @ patches`` (one product per chunk of examples, summed in
  float32),
* ``d x = col2im(dy @ kernel^T)`` (the window slices of the product padded
  back into place and summed: the transpose of ``im2col``),

and it keeps only ``x`` and the kernel for the backward pass. Forward and
backward run over the batch in chunks of a few examples (``lax.scan``), sized
so that one chunk's patch matrix (``CHUNK_BYTES``) stays in the CPU cache
between being written and being multiplied.

Measured on the 2-core CPU, one training step inside the epoch's ``lax.scan``
(``python -m bench.conv_step``), against autodiff of ``patches @ kernel``:

* Autodiff computes the kernel gradient as ``patches^T @ dy``, transposed
  operand first, which XLA:CPU runs in Eigen instead of YNNPACK, 1.9x slower
  than the forward product; ``dy^T @ patches`` behind an optimization barrier
  (so that XLA does not fold the transposes back) runs at the forward's speed.
* Whole-batch patch matrices (42 MB for the CNN's second conv) leave the cache
  between being written and multiplied: chunks of 2 examples took the step from
  0.80 to 0.67-0.75 (CNN) and from 0.88 to 0.56-0.68 (ResNet) of autodiff's time;
  budgets of 0.5-3 MB are alike, bigger ones lose the cache, 1 example pays the
  loop.
* Not kept: XLA's convolution for the forward pass (YNNPACK's, on by default in
  jaxlib 0.10; fast only fused down to a scalar: a kept output made the step
  1.1-1.3x slower), for the input gradient (no faster than ``col2im``) and for
  the kernel gradient (its "kernel" is the 24x24 output: 2x slower); a
  YNNPACK-shaped kernel gradient (``dy^T`` copied first: 1.05x slower); patches
  built as two stacks of three (XLA:CPU fuses no concatenate of more than 8
  operands, nor one along a minor dimension of 128 or more; no faster); saving
  the patches instead of recomputing them per chunk (slower, 42 MB more); XLA
  CPU flags (YNNPACK fusion types, oneDNN: within noise).
"""
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

# Bytes of one chunk's patch matrix: 2 examples of the MNIST CNN's second conv (663 KB each) or of
# the ResNet's first stage (590 KB) -- the measured optimum of both.
CHUNK_BYTES = 3 << 19

Pads = tuple[tuple[int, int], tuple[int, int]]


def output_hw(in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int], pads: Pads,
              dilation: Sequence[int]) -> tuple[int, int]:
    """(out_h, out_w) of a convolution."""
    out_h, out_w = ((size + low + high - (k - 1) * d - 1) // s + 1
                    for size, (low, high), k, s, d in zip(in_hw, pads, window, strides, dilation))
    return out_h, out_w


def im2col(x: jax.Array, window: Sequence[int], strides: Sequence[int], pads: Pads,
           dilation: Sequence[int]) -> jax.Array:
    """The shifted windows of ``x`` side by side.

    Args:
      x: (B, H, W, C) NHWC input.
      window, strides, pads, dilation: of the convolution, as pairs.
    Returns:
      (B, out_h, out_w, kh * kw * C) patches, window position major, channel minor (HWIO order).
    """
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    out_h, out_w = output_hw(x.shape[1:3], window, strides, pads, dilation)
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    batch, channels = x.shape[0], x.shape[3]
    windows = [jax.lax.slice(x, (0, i * dh, j * dw, 0),
                             (batch, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, channels),
                             (1, sh, sw, 1))
               for i in range(kh) for j in range(kw)]
    return jnp.concatenate(windows, axis=-1) if len(windows) > 1 else windows[0]


def col2im(patches: jax.Array, in_hw: Sequence[int], window: Sequence[int], strides: Sequence[int],
           pads: Pads, dilation: Sequence[int]) -> jax.Array:
    """The transpose of ``im2col``: every window's slice of ``patches`` added back where it came from.

    Args:
      patches: (B, out_h, out_w, kh * kw * C), as ``im2col`` lays them out.
      in_hw: (H, W) of the unpadded input.
    Returns:
      (B, H, W, C).
    """
    (kh, kw), (sh, sw), (dh, dw) = window, strides, dilation
    out_h, out_w = patches.shape[1:3]
    channels = patches.shape[3] // (kh * kw)
    height, width = in_hw[0] + sum(pads[0]), in_hw[1] + sum(pads[1])
    zero = jnp.zeros((), patches.dtype)
    pieces = []
    for n, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
        top, left = i * dh, j * dw
        bottom, right = height - top - (out_h - 1) * sh - 1, width - left - (out_w - 1) * sw - 1
        pieces.append(jax.lax.pad(patches[..., n * channels:(n + 1) * channels], zero,
                                  ((0, 0, 0), (top, bottom, sh - 1), (left, right, sw - 1), (0, 0, 0))))
    total = sum(pieces[1:], start=pieces[0])
    return total[:, pads[0][0]:height - pads[0][1], pads[1][0]:width - pads[1][1], :]


def chunk_size(batch: int, bytes_per_example: int) -> int:
    """The largest divisor of ``batch`` whose patch matrices fit in ``CHUNK_BYTES`` (at least 1).

    A symbolic batch size (shape-polymorphic export) is not chunked: it comes back as it is.
    """
    if not isinstance(batch, int):
        return batch
    fitting = max(1, min(batch, CHUNK_BYTES // max(bytes_per_example, 1)))
    return next(size for size in range(fitting, 0, -1) if batch % size == 0)


def _over_chunks(body: Callable, carry: Any, arrays: Sequence[jax.Array], size: int) -> tuple[Any, Any]:
    """``lax.scan(body, carry, arrays)`` over consecutive chunks of ``size`` examples of ``arrays``.

    Returns (final carry, outputs stacked back to the full batch). One chunk runs ``body`` directly.
    """
    batch = arrays[0].shape[0]
    if not isinstance(batch, int) or size == batch:
        carry, out = body(carry, tuple(arrays))
        return carry, out
    chunks = tuple(a.reshape((batch // size, size) + a.shape[1:]) for a in arrays)
    carry, out = jax.lax.scan(body, carry, chunks)
    return carry, None if out is None else out.reshape((batch,) + out.shape[2:])


def _chunk_of(x_shape: Sequence[int], kernel: jax.Array, strides: Sequence[int], pads: Pads,
              dilation: Sequence[int]) -> int:
    """Examples a chunk for this convolution (its patch matrix per example decides)."""
    out_h, out_w = output_hw(x_shape[1:3], kernel.shape[:2], strides, pads, dilation)
    return chunk_size(x_shape[0], out_h * out_w * kernel.shape[0] * kernel.shape[1] * kernel.shape[2]
                      * kernel.dtype.itemsize)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_matmul(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
                dilation: tuple[int, int]) -> jax.Array:
    """NHWC x HWIO convolution (one feature group) as chunked ``im2col(x) @ kernel``.

    Args:
      x: (B, H, W, C).
      kernel: (kh, kw, C, F), the same dtype as ``x``.
      strides, dilation: pairs of ints.
      pads: ((top, bottom), (left, right)), explicit.
    Returns:
      (B, out_h, out_w, F): ``lax.conv_general_dilated``'s result up to summation order.
    """
    weights = kernel.reshape(-1, kernel.shape[-1])

    def chunk(_, arrays):
        return None, im2col(arrays[0], kernel.shape[:2], strides, pads, dilation) @ weights
    return _over_chunks(chunk, None, (x,), _chunk_of(x.shape, kernel, strides, pads, dilation))[1]


def _forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
             dilation: tuple[int, int]) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The convolution and its residuals: only the input and the kernel (patches are recomputed)."""
    return conv_matmul(x, kernel, strides, pads, dilation), (x, kernel)


def _backward(strides: tuple[int, int], pads: Pads, dilation: tuple[int, int],
              residuals: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(d x, d kernel) from the output's cotangent ``dy`` (B, out_h, out_w, F)."""
    x, kernel = residuals
    return (_input_gradient(dy, kernel, x, strides, pads, dilation),
            _kernel_gradient(x, dy, kernel, strides, pads, dilation))


def _input_gradient(dy: jax.Array, kernel: jax.Array, x: jax.Array, strides: tuple[int, int], pads: Pads,
                    dilation: tuple[int, int]) -> jax.Array:
    """d x = col2im(dy @ kernel^T), chunk by chunk (a separate scan: dropped when x needs no gradient)."""
    # materialised once, so the product inside the loop has its canonical (K, N) right operand
    transposed = kernel.reshape(-1, kernel.shape[-1]).T

    def chunk(_, arrays):
        return None, col2im(arrays[0] @ transposed, x.shape[1:3], kernel.shape[:2], strides, pads, dilation)
    _, dx = _over_chunks(chunk, None, (dy,), _chunk_of(x.shape, kernel, strides, pads, dilation))
    return dx.astype(x.dtype)


def _kernel_gradient(x: jax.Array, dy: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads,
                     dilation: tuple[int, int]) -> jax.Array:
    """d kernel = sum over chunks of dy^T @ im2col(x), accumulated in float32."""
    features = kernel.shape[-1]

    def chunk(total, arrays):
        x_chunk, dy_chunk = arrays
        patches = im2col(x_chunk, kernel.shape[:2], strides, pads, dilation)
        # (F, M) @ (M, K): the barrier keeps XLA from folding the transposes into a (M, K)^T (M, F)
        # product, which XLA:CPU runs in Eigen at about half the speed.
        product = jax.lax.dot(dy_chunk.reshape(-1, features).T, patches.reshape(-1, patches.shape[-1]),
                              preferred_element_type=jnp.float32)
        return total + jax.lax.optimization_barrier(product), None
    start = jnp.zeros((features, kernel.shape[0] * kernel.shape[1] * kernel.shape[2]), jnp.float32)
    total, _ = _over_chunks(chunk, start, (x, dy), _chunk_of(x.shape, kernel, strides, pads, dilation))
    return total.T.reshape(kernel.shape).astype(kernel.dtype)


conv_matmul.defvjp(_forward, _backward)
