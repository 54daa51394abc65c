"""The CPU convolution's hand-written gradient and the reshape pools: lax's values and gradients.

References are ``lax.conv_general_dilated`` and ``lax.reduce_window`` (and their
JAX autodiff), checked for every stride / padding / dilation case, batch
chunking, ``jit``, ``vmap``, bfloat16 and two devices.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import nn
from funcdl.nn import _conv_matmul
from funcdl.nn._conv_matmul import chunk_size, conv_matmul, im2col
from funcdl.nn._pool_blocks import max_pool

CONV_CASES = [  # kernel (kh, kw), strides, padding, dilation
    ((3, 3), (1, 1), "VALID", (1, 1)),
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1)),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ((3, 2), (2, 1), ((1, 2), (0, 1)), (2, 1)),
    ((3, 3), (1, 2), ((2, 0), (1, 3)), (1, 2)),
    ((5, 5), (1, 1), ((2, 2), (2, 2)), (1, 1)),
    ((1, 1), (2, 2), "VALID", (1, 1)),
    ((1, 1), (1, 1), "VALID", (1, 1)),
    ((2, 2), (3, 3), "SAME", (2, 2)),
]


def _reference(x, kernel, strides, padding, dilation):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=jax.lax.Precision.HIGHEST)


def _ours(x, kernel, strides, padding, dilation):
    pads = nn.explicit_padding(padding, x.shape[1:3], kernel.shape[:2], strides, dilation)
    return conv_matmul(x, kernel, strides, pads, dilation)


def _loss(conv):
    def loss(x, kernel, strides, padding, dilation):
        return jnp.sum(jnp.tanh(conv(x, kernel, strides, padding, dilation)) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=(2, 3, 4))


def _assert_close(got, want, rtol=1e-5):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert a.shape == b.shape and a.dtype == b.dtype
        scale = float(jnp.abs(b).max()) or 1.0
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=rtol,
                                   atol=rtol * scale)


@pytest.mark.parametrize("window, strides, padding, dilation", CONV_CASES)
@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])  # one example a chunk / the whole batch at once
def test_conv_matmul_values_and_gradients_match_lax(window, strides, padding, dilation, chunk_bytes,
                                                    monkeypatch):
    monkeypatch.setattr(_conv_matmul, "CHUNK_BYTES", chunk_bytes)
    x = jax.random.normal(jax.random.key(0), (3, 11, 10, 5))
    kernel = jax.random.normal(jax.random.key(1), window + (5, 7)) * 0.3
    args = (x, kernel, strides, padding, dilation)
    np.testing.assert_allclose(jax.jit(_ours, static_argnums=(2, 3, 4))(*args), _reference(*args),
                               rtol=1e-5, atol=1e-5)
    _assert_close(_loss(_ours)(*args), _loss(_reference)(*args))


def test_chunks_split_the_batch_by_patch_bytes(monkeypatch):
    assert chunk_size(64, 663_552) == 2    # the MNIST CNN's second conv: 2 examples of 648 KiB
    assert chunk_size(64, 10) == 64        # small patches: the whole batch in one product
    assert chunk_size(6, 700_000) == 2 and chunk_size(7, 700_000) == 1  # a divisor of the batch
    assert chunk_size(5, 10 << 20) == 1    # an example bigger than the budget: one at a time
    monkeypatch.setattr(_conv_matmul, "CHUNK_BYTES", 3 * (9 * 9) * (3 * 3 * 4) * 4)
    x, kernel = jnp.ones((6, 11, 11, 4)), jnp.ones((3, 3, 4, 2))
    # 3 examples' patches a chunk, (3, 9, 9, 36): the forward loop runs twice
    program = jax.jit(lambda x: _ours(x, kernel, (1, 1), "VALID", (1, 1))).lower(x).as_text()
    assert "tensor<3x9x9x36xf32>" in program and "convolution" not in program


def test_unused_input_gradient_is_not_computed(monkeypatch):
    monkeypatch.setattr(_conv_matmul, "CHUNK_BYTES", 1)
    x, kernel = jnp.ones((4, 9, 9, 1)), jnp.ones((3, 3, 1, 8))

    def loops(argnums):
        loss = lambda x, k: jnp.sum(jnp.tanh(_ours(x, k, (1, 1), "VALID", (1, 1))))  # noqa: E731
        return jax.jit(jax.grad(loss, argnums=argnums)).lower(x, kernel).as_text().count("stablehlo.while")
    # forward + kernel gradient; the input-gradient loop (a first layer's, on data) is dropped
    assert loops((1,)) == 2 and loops((0, 1)) == 3


def test_conv_matmul_exports_with_a_symbolic_batch(monkeypatch):
    monkeypatch.setattr(_conv_matmul, "CHUNK_BYTES", 1)  # a symbolic batch cannot be chunked: one product
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 9, 9, 3"), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x: _ours(x, kernel, (1, 1), "SAME", (1, 1))))(spec)
    x = jax.random.normal(jax.random.key(0), (5, 9, 9, 3))
    np.testing.assert_allclose(exported.call(x), _reference(x, kernel, (1, 1), "SAME", (1, 1)), rtol=1e-5,
                               atol=1e-5)


def test_conv_matmul_under_vmap_matches_lax():
    xs = jax.random.normal(jax.random.key(0), (3, 2, 9, 9, 4))
    kernels = jax.random.normal(jax.random.key(1), (3, 3, 3, 4, 6))
    args = ((2, 2), "SAME", (1, 1))

    def grads(conv):
        loss = jax.value_and_grad(lambda x, k: jnp.sum(jnp.sin(conv(x, k, *args))), argnums=(0, 1))
        return jax.jit(jax.vmap(loss))(xs, kernels)
    _assert_close(grads(_ours), grads(_reference))


def test_conv_matmul_in_bfloat16_matches_float32_within_bfloat16_rounding():
    x = jax.random.normal(jax.random.key(0), (4, 10, 10, 8))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 8, 16)) * 0.2
    args = ((1, 1), "SAME", (1, 1))
    got = _loss(_ours)(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), *args)
    want = _loss(_reference)(x, kernel, *args)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(got))
    _assert_close(jax.tree.map(lambda a: a.astype(jnp.float32), got), want, rtol=3e-2)


def test_conv2d_layer_uses_the_custom_gradient_for_one_group_only():
    x = jnp.ones((2, 8, 8, 4))
    single, grouped = nn.Conv2D(4, 3, implementation="matmul"), nn.Conv2D(4, 3, groups=2, implementation="matmul")
    for layer, custom in ((single, True), (grouped, False)):
        variables = layer.init(jax.random.key(0), x)
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda v, layer=layer: jnp.sum(layer.apply(v, x))))(variables))
        assert ("custom_vjp_call" in jaxpr) == custom


def test_im2col_orders_windows_like_the_hwio_kernel():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    patches = im2col(x, (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1))
    np.testing.assert_array_equal(patches[0, 0, 0], [0, 1, 4, 5])
    np.testing.assert_array_equal(patches[0, 1, 1], [10, 11, 14, 15])


TWO_DEVICES = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from funcdl.nn import _conv_matmul
from funcdl.nn._conv_matmul import conv_matmul
_conv_matmul.CHUNK_BYTES = 1   # one example a chunk: the scans run over the sharded batch
x = jax.random.normal(jax.random.key(0), (8, 9, 9, 3))
kernel = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
grad = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.tanh(conv_matmul(x, k, (1, 1), ((1, 1), (1, 1)), (1, 1)))),
                        argnums=(0, 1)))
one = grad(x, kernel)
mesh = Mesh(np.array(jax.devices()), ("data",))
sharded = grad(jax.device_put(x, NamedSharding(mesh, PartitionSpec("data"))), kernel)
print(json.dumps({"devices": jax.device_count(),
                  "difference": max(float(jnp.abs(a - b).max()) for a, b in zip(one, sharded))}))
"""


def test_conv_matmul_on_two_devices_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["difference"] < 1e-5


# ---- pooling

POOL_CASES = [  # pool_size, strides, padding, input (H, W)
    (2, None, "valid", (6, 6)),
    (2, None, "valid", (7, 5)),        # the last row / column belongs to no window
    (2, None, "same", (6, 8)),         # 'same' that pads nothing: still disjoint windows
    ((3, 2), None, "valid", (9, 8)),
    (4, None, "valid", (8, 8)),
    (3, 1, "same", (5, 5)),            # overlapping and padded: lax.reduce_window itself
    (2, None, "same", (5, 5)),         # padded: lax.reduce_window itself
]


def _ties(shape):
    """Small integers, so that windows hold equal maxima (the gradient must pick the first)."""
    return jax.random.randint(jax.random.key(0), shape, 0, 3).astype(jnp.float32)


def _pool_reference(kind, pool_size, strides, padding, x):
    window = (1,) + nn._conv.pair(pool_size, "p") + (1,)
    steps = (1,) + nn._conv.pair(strides if strides is not None else pool_size, "s") + (1,)
    pad = padding.upper()
    if kind == "max":
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, steps, pad)
    return jax.lax.reduce_window(x, 0.0, jax.lax.add, window, steps, pad) / (window[1] * window[2])


@pytest.mark.parametrize("pool_size, strides, padding, hw", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_reduce_window_values_and_gradients(kind, pool_size, strides, padding, hw):
    layer = (nn.MaxPool2D if kind == "max" else nn.AvgPool2D)(pool_size, strides=strides, padding=padding)
    x = _ties((2,) + hw + (3,))
    weights = jax.random.normal(jax.random.key(1), layer.apply({}, x).shape)

    def value_and_grad(pool):
        return jax.jit(jax.value_and_grad(lambda x: jnp.sum(pool(x) * weights)))(x)
    got = value_and_grad(lambda x: layer.apply({}, x))
    want = value_and_grad(lambda x: _pool_reference(kind, pool_size, strides, padding, x))
    if kind == "max":  # exact: the same element is chosen and nothing is summed
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    else:
        _assert_close(got, want)


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_window():
    x = jnp.array([[3.0, 5.0], [5.0, 1.0]]).reshape(1, 2, 2, 1)
    grad = jax.grad(lambda x: jnp.sum(max_pool(x, (2, 2))))(x)
    np.testing.assert_array_equal(grad[0, ..., 0], [[0, 1], [0, 0]])


def test_disjoint_pools_hold_no_reduce_window():
    x = jnp.ones((2, 8, 8, 3))
    for layer, disjoint in ((nn.MaxPool2D(2), True), (nn.AvgPool2D(8), True), (nn.MaxPool2D(3, strides=1), False)):
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, layer=layer: jnp.sum(layer.apply({}, x))))(x))
        assert ("reduce_window" in jaxpr or "select_and" in jaxpr) != disjoint


def test_pools_under_vmap_and_bfloat16():
    xs = _ties((3, 2, 6, 6, 4))
    layer = nn.MaxPool2D(2)

    def grads(pool, dtype):
        loss = jax.value_and_grad(lambda x: jnp.sum(jnp.sin(pool(x.astype(dtype)).astype(jnp.float32))))
        return jax.jit(jax.vmap(loss))(xs)
    reference = lambda x: _pool_reference("max", 2, None, "valid", x)  # noqa: E731
    for dtype in (jnp.float32, jnp.bfloat16):
        for a, b in zip(grads(lambda x: layer.apply({}, x), dtype), grads(reference, dtype)):
            np.testing.assert_array_equal(a, b)
