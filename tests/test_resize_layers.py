"""UpSampling2D, ZeroPadding2D, PixelShuffle, Permute, RepeatVector and the added activations, vs numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_harness import run_layer_test

from funcdl import nn
from funcdl.errors import ConfigError, ShapeError


@pytest.mark.parametrize("layer, in_shape, out_shape", [
    (nn.UpSampling2D(2), (2, 3, 4, 5), (2, 6, 8, 5)),
    (nn.UpSampling2D((3, 2), interpolation="bilinear"), (1, 4, 5, 2), (1, 12, 10, 2)),
    (nn.ZeroPadding2D(((1, 2), (0, 3))), (2, 3, 4, 5), (2, 6, 7, 5)),
    (nn.ZeroPadding2D(1), (1, 3, 3, 2), (1, 5, 5, 2)),
    (nn.PixelShuffle(2), (2, 3, 4, 12), (2, 6, 8, 3)),
    (nn.PixelShuffle(3, order="tf"), (1, 2, 2, 18), (1, 6, 6, 2)),
    (nn.Permute((2, 1)), (2, 3, 4), (2, 4, 3)),
    (nn.Permute((3, 1, 2)), (2, 3, 4, 5), (2, 5, 3, 4)),
    (nn.RepeatVector(4), (2, 3), (2, 4, 3)),
])
def test_harness(layer, in_shape, out_shape):
    run_layer_test(layer, in_shape, out_shape, {})


def _x(shape):
    return np.asarray(jax.random.normal(jax.random.key(0), shape))


def test_upsampling_nearest_repeats_pixels():
    x = _x((2, 3, 4, 5))
    out = nn.UpSampling2D((2, 3)).apply({}, x)
    np.testing.assert_array_equal(out, x.repeat(2, axis=1).repeat(3, axis=2))


def _bilinear_axis(size, scale):
    """(out, in) interpolation matrix with half-pixel centres, clamped at the border (torch align_corners=False)."""
    matrix = np.zeros((size * scale, size))
    for out in range(size * scale):
        source = max((out + 0.5) / scale - 0.5, 0.0)
        low = int(np.floor(source))
        high, weight = min(low + 1, size - 1), source - low
        matrix[out, low] += 1 - weight
        matrix[out, high] += weight
    return matrix


@pytest.mark.parametrize("size", [2, (3, 2), (1, 4)])
def test_upsampling_bilinear_is_half_pixel_without_antialiasing(size):
    x = _x((2, 4, 5, 3))
    sh, sw = (size, size) if isinstance(size, int) else size
    expected = np.einsum("ph,qw,bhwc->bpqc", _bilinear_axis(4, sh), _bilinear_axis(5, sw), x.astype(np.float64))
    out = nn.UpSampling2D(size, interpolation="bilinear").apply({}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_zero_padding_matches_numpy():
    x = _x((2, 3, 4, 5))
    out = nn.ZeroPadding2D(((1, 2), (3, 0))).apply({}, x)
    np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (1, 2), (3, 0), (0, 0))))
    np.testing.assert_array_equal(nn.ZeroPadding2D((1, 2)).apply({}, x), np.pad(x, ((0, 0), (1, 1), (2, 2), (0, 0))))


@pytest.mark.parametrize("order", ["torch", "tf"])
def test_pixel_shuffle_channel_order(order):
    r, out_channels = 2, 3
    x = _x((2, 3, 4, out_channels * r * r))
    out = np.asarray(nn.PixelShuffle(r, order=order).apply({}, x))
    for c in range(out_channels):
        for i in range(r):
            for j in range(r):
                source = c * r * r + i * r + j if order == "torch" else (i * r + j) * out_channels + c
                np.testing.assert_array_equal(out[:, i::r, j::r, c], x[..., source])


def test_permute_and_repeat_vector_match_numpy():
    x = _x((2, 3, 4, 5))
    np.testing.assert_array_equal(nn.Permute((3, 1, 2)).apply({}, x), x.transpose(0, 3, 1, 2))
    v = _x((2, 3))
    np.testing.assert_array_equal(nn.RepeatVector(4).apply({}, v), np.stack([v] * 4, axis=1))


@pytest.mark.parametrize("layer, shape, error, match", [
    (nn.PixelShuffle(2), (1, 2, 2, 6), ShapeError, "divisible by 4"),
    (nn.PixelShuffle(2, order="caffe"), (1, 2, 2, 4), ConfigError, "'torch' or 'tf'"),
    (nn.UpSampling2D(2, interpolation="bicubic"), (1, 2, 2, 4), ConfigError, "nearest' or 'bilinear"),
    (nn.ZeroPadding2D(((1, -1), (0, 0))), (1, 2, 2, 4), ConfigError, "sizes >= 0"),
    (nn.Permute((1, 1)), (1, 2, 2), ShapeError, "permutation of 1..2"),
    (nn.RepeatVector(3), (1, 2, 2), ShapeError, r"\(batch, features\)"),
    (nn.UpSampling2D(2), (1, 2, 2), ShapeError, "NHWC"),
])
def test_bad_settings_and_shapes_say_what_is_wrong(layer, shape, error, match):
    with pytest.raises(error, match=match):
        layer.apply({}, jnp.zeros(shape))


_X = np.array([-30.0, -3.5, -3.0, -1.0, -0.2, 0.0, 0.5, 2.9, 3.0, 30.0])


@pytest.mark.parametrize("name, expected", [
    ("elu", np.where(_X > 0, _X, np.expm1(_X))),
    ("selu", 1.0507009873554805 * np.where(_X > 0, _X, 1.6732632423543772 * np.expm1(_X))),
    ("relu6", np.clip(_X, 0, 6)),
    ("hard_sigmoid", np.clip(_X / 6 + 0.5, 0, 1)),
    ("hard_swish", _X * np.clip(_X + 3, 0, 6) / 6),
    ("hardswish", _X * np.clip(_X + 3, 0, 6) / 6),
    ("silu", _X / (1 + np.exp(-_X))),
    ("swish", _X / (1 + np.exp(-_X))),
    ("softsign", _X / (1 + np.abs(_X))),
    ("mish", _X * np.tanh(np.log1p(np.exp(_X)))),
    ("exponential", np.exp(np.minimum(_X, 20))),
    ("linear", _X),
])
def test_activation_definitions(name, expected):
    x = jnp.asarray(np.minimum(_X, 20) if name == "exponential" else _X, jnp.float32)
    np.testing.assert_allclose(nn.get_activation(name)(x), expected, rtol=2e-6, atol=1e-7)
    row = nn.activation(name)
    if row.layer is not None:
        np.testing.assert_allclose(row.layer(**row.options).apply({}, x), expected, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(nn.Dense(1, activation=name).apply(
            {"params": {"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)}}, x[:, None])[:, 0], expected,
            rtol=2e-6, atol=1e-7)


def test_alias_names_map_back_to_their_first_row():
    assert nn.activation_of(nn.activation("swish").layer()).name == "silu"
    assert nn.activation_of(nn.activation("hardswish").layer()).name == "hard_swish"
    names = [row.torch for row in nn.TABLE if row.torch and not row.options]
    assert len(names) == len(set(names))  # one row per torch module: importers map it back unambiguously
