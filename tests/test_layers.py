"""Layers: shapes through one harness, analytic values, pinned parameter counts, clear shape errors."""
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_harness import run_layer_test
from scipy.special import erf

import funcdl as fd
from funcdl import nn
from funcdl.errors import ConfigError, ShapeError


@pytest.mark.parametrize("layer, in_shape, out_shape, params", [
    (nn.Dense(5), (2, 3), (2, 5), {"kernel": (3, 5), "bias": (5,)}),
    (nn.Dense(5, use_bias=False, activation="relu"), (2, 4, 3), (2, 4, 5), {"kernel": (3, 5)}),
    (nn.Conv2D(4, 3), (2, 8, 8, 3), (2, 6, 6, 4), {"kernel": (3, 3, 3, 4), "bias": (4,)}),
    (nn.Conv2D(4, 3, strides=2, padding="same"), (2, 7, 7, 2), (2, 4, 4, 4), None),
    (nn.Conv2D(6, (3, 2), padding=((1, 2), (0, 1)), dilation=2, groups=2), (1, 9, 9, 4), (1, 8, 8, 6),
     {"kernel": (3, 2, 2, 6), "bias": (6,)}),
    (nn.MaxPool2D(2), (2, 6, 6, 3), (2, 3, 3, 3), {}),
    (nn.MaxPool2D(3, strides=1, padding="same"), (1, 5, 5, 2), (1, 5, 5, 2), {}),
    (nn.AvgPool2D(2, padding=1, count_include_pad=False), (1, 5, 5, 2), (1, 3, 3, 2), {}),
    (nn.Flatten(), (2, 3, 4, 5), (2, 60), {}),
    (nn.Reshape((4, -1)), (2, 3, 4), (2, 4, 3), {}),
    (nn.ImageRows(), (2, 28, 28, 1), (2, 28, 28), {}),
    (nn.Dropout(0.5), (2, 10), (2, 10), {}),
    (nn.BatchNorm(), (4, 5, 5, 3), (4, 5, 5, 3), {"scale": (3,), "bias": (3,)}),
    (nn.LayerNorm(num_axes=2), (2, 3, 4), (2, 3, 4), {"scale": (3, 4), "bias": (3, 4)}),
    (nn.Embedding(7, 4), (2, 5), (2, 5, 4), {"embedding": (7, 4)}),
    (nn.SimpleRNN(6), (2, 5, 3), (2, 6), {"kernel": (3, 6), "recurrent_kernel": (6, 6), "bias": (6,),
                                          "recurrent_bias": (6,)}),
    (nn.LSTM(6, return_sequences=True), (2, 5, 3), (2, 5, 6), {"kernel": (3, 24), "recurrent_kernel": (6, 24),
                                                               "bias": (24,), "recurrent_bias": (24,)}),
    (nn.GRU(6), (2, 5, 3), (2, 6), {"kernel": (3, 18), "recurrent_kernel": (6, 18), "bias": (18,),
                                    "recurrent_bias": (18,)}),
    (nn.GRU(6, reset_after=False, return_sequences=True), (2, 5, 3), (2, 5, 6), None),
    (nn.LeakyReLU(0.2), (2, 3), (2, 3), {}),
    (nn.Softplus(beta=2.0), (2, 3), (2, 3), {}),
    (nn.GELU(approximate=True), (2, 3), (2, 3), {}),
    (nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2), nn.log_softmax]), (3, 5), (3, 2), None),
])
def test_layer_harness(layer, in_shape, out_shape, params):
    dtype = jnp.int32 if isinstance(layer, nn.Embedding) else jnp.float32
    run_layer_test(layer, in_shape, out_shape, params, dtype=dtype)


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.BatchNorm(), nn.Sequential([nn.Dense(3), nn.Dropout(0.5)])])
def test_layer_harness_training_mode(layer):
    run_layer_test(layer, (8, 4), (8, 4) if not isinstance(layer, nn.Sequential) else (8, 3), train=True)


def test_dense_ones_is_a_sum():
    layer = nn.Dense(3, kernel_init="ones", bias_init="ones")
    x = jnp.arange(8.0).reshape(2, 4)
    y = layer.apply(layer.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(y, [[7.0] * 3, [23.0] * 3])


def _conv_reference(x, kernel, stride, pad, dilation, groups):
    x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
    kh, kw, cin_g, cout = kernel.shape
    out_h = (x.shape[1] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (x.shape[2] - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, cout))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        for i in range(out_h):
            for j in range(out_w):
                patch = x[:, i * stride:i * stride + dilation * (kh - 1) + 1:dilation,
                          j * stride:j * stride + dilation * (kw - 1) + 1:dilation, g * cin_g:(g + 1) * cin_g]
                out[:, i, j, o] = np.tensordot(patch, kernel[..., o], axes=3)
    return out


@pytest.mark.parametrize("implementation", ["xla", "matmul", "auto"])
def test_conv2d_matches_direct_convolution(implementation):
    layer = nn.Conv2D(4, 3, strides=2, padding=((1, 2), (2, 1)), dilation=2, groups=2,
                      implementation=implementation)
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 4))
    variables = layer.init(jax.random.key(1), x)
    p = variables["params"]
    expected = _conv_reference(np.asarray(x, np.float64), np.asarray(p["kernel"], np.float64), 2,
                               ((1, 2), (2, 1)), 2, 2) + np.asarray(p["bias"])
    np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings", [
    dict(kernel_size=3), dict(kernel_size=3, strides=2, padding="same"),
    dict(kernel_size=(3, 2), strides=(2, 1), padding=((1, 2), (0, 1)), dilation=2),
    dict(kernel_size=3, padding="same", dilation=(2, 1)), dict(kernel_size=3, groups=3),
    dict(kernel_size=(1, 3), groups=6), dict(kernel_size=1, strides=2), dict(kernel_size=5, padding=2),
])
def test_conv2d_matmul_implementation_matches_xla_values_and_gradients(settings):
    x = jax.random.normal(jax.random.key(0), (2, 11, 10, 6))
    xla, matmul = (nn.Conv2D(12, implementation=name, **settings) for name in ("xla", "matmul"))
    variables = xla.init(jax.random.key(1), x)
    np.testing.assert_allclose(matmul.apply(variables, x), xla.apply(variables, x), rtol=1e-5, atol=1e-5)

    def grads(layer):
        return jax.grad(lambda v, x: jnp.sum(jnp.tanh(layer.apply(v, x)) ** 2), argnums=(0, 1))(variables, x)
    for got, want in zip(jax.tree.leaves(grads(matmul)), jax.tree.leaves(grads(xla))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))


def test_conv2d_auto_implementation_is_matmul_on_cpu_only():
    # On the CPU the CNN's jaxpr holds no convolution at all (XLA:CPU runs them slowly, worse in loops).
    assert jax.default_backend() == "cpu"
    assert nn.conv_implementation("auto") == "matmul" and nn.conv_implementation("xla") == "xla"
    x = jnp.zeros((1, 28, 28, 1))
    model = fd.models.cnn()
    variables = model.init(jax.random.key(0), x)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(model.apply)(variables, x))
    with pytest.raises(ConfigError, match="unknown convolution implementation 'cudnn'; choose one of auto, xla"):
        nn.Conv2D(3, implementation="cudnn").init(jax.random.key(0), x)


def test_pools_analytic():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(nn.MaxPool2D(2).apply({}, x)[0, ..., 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(nn.AvgPool2D(2).apply({}, x)[0, ..., 0], [[2.5, 4.5], [10.5, 12.5]])
    ones = jnp.ones((1, 3, 3, 1))
    included = nn.AvgPool2D(2, strides=1, padding=1).apply({}, ones)[0, ..., 0]
    excluded = nn.AvgPool2D(2, strides=1, padding=1, count_include_pad=False).apply({}, ones)[0, ..., 0]
    assert float(included[0, 0]) == 0.25 and float(included[1, 1]) == 1.0
    np.testing.assert_array_equal(excluded, np.ones((4, 4)))
    negative = -jnp.ones((1, 2, 2, 1))
    assert float(nn.MaxPool2D(2, strides=1, padding=1).apply({}, negative).max()) == -1.0


def test_batchnorm_train_and_inference():
    layer = nn.BatchNorm(momentum=0.9, epsilon=1e-5, unbiased_running_var=True)
    x = jax.random.normal(jax.random.key(0), (16, 3)) * 3.0 + 2.0
    variables = layer.init(jax.random.key(1), x)
    y, state = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1.0, atol=1e-3)
    stats = state["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * np.asarray(x).mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * np.asarray(x).var(0, ddof=1), rtol=1e-5)
    inference = layer.apply({**variables, **state}, x)
    expected = (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5)
    np.testing.assert_allclose(inference, expected, rtol=1e-5, atol=1e-5)


def test_layernorm_normalises_each_example():
    x = jax.random.normal(jax.random.key(0), (4, 6)) * 5 + 1
    layer = nn.LayerNorm()
    y = layer.apply(layer.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-3)


def test_embedding_looks_up_rows():
    layer = nn.Embedding(5, 3)
    idx = jnp.array([[0, 4], [2, 2]])
    variables = layer.init(jax.random.key(0), idx)
    table = variables["params"]["embedding"]
    np.testing.assert_array_equal(layer.apply(variables, idx), table[idx])
    with pytest.raises(ShapeError, match="integer indices"):
        layer.apply(variables, idx.astype(jnp.float32))


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _recurrent_reference(kind, p, x, reset_after=True):
    x = np.asarray(x, np.float64)
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    hidden = p["recurrent_kernel"].shape[0]
    h = np.zeros((x.shape[0], hidden))
    c = np.zeros_like(h)
    outputs = []
    for t in range(x.shape[1]):
        xw = x[:, t] @ p["kernel"] + p["bias"]
        if kind == "rnn":
            h = np.tanh(xw + h @ p["recurrent_kernel"] + p["recurrent_bias"])
        elif kind == "lstm":
            g = xw + h @ p["recurrent_kernel"] + p["recurrent_bias"]
            i, f, gg, o = np.split(g, 4, axis=1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
            h = _sigmoid(o) * np.tanh(c)
        else:
            u, ub = p["recurrent_kernel"], p["recurrent_bias"]
            xr, xz, xn = np.split(xw, 3, axis=1)
            hu = h @ u + ub
            r, z = _sigmoid(xr + hu[:, :hidden]), _sigmoid(xz + hu[:, hidden:2 * hidden])
            if reset_after:
                n = np.tanh(xn + r * hu[:, 2 * hidden:])
            else:
                n = np.tanh(xn + (r * h) @ u[:, 2 * hidden:] + ub[2 * hidden:])
            h = (1 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, 1)


@pytest.mark.parametrize("kind, layer", [
    ("rnn", nn.SimpleRNN(4, return_sequences=True)), ("lstm", nn.LSTM(4, return_sequences=True)),
    ("gru", nn.GRU(4, return_sequences=True)), ("gru_before", nn.GRU(4, return_sequences=True, reset_after=False)),
])
def test_recurrent_layers_match_reference(kind, layer):
    x = jax.random.normal(jax.random.key(0), (3, 6, 5))
    variables = layer.init(jax.random.key(1), x)
    params = jax.tree.map(lambda a: a + 0.1, variables["params"])  # non-zero recurrent bias too
    expected = _recurrent_reference(kind.split("_")[0], params, x, reset_after=kind != "gru_before")
    np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


def test_lstm_forget_bias_starts_at_one():
    bias = nn.LSTM(3).init(jax.random.key(0), jnp.zeros((1, 2, 4)))["params"]["bias"]
    np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])


def test_activation_values():
    x = jnp.array([-30.0, -1.0, 0.0, 0.5, 30.0])
    xs = np.asarray(x, np.float64)
    np.testing.assert_allclose(nn.relu(x), np.maximum(xs, 0))
    np.testing.assert_allclose(nn.leaky_relu(x, 0.1), np.where(xs >= 0, xs, 0.1 * xs), rtol=1e-6)
    np.testing.assert_allclose(nn.sigmoid(x), 1 / (1 + np.exp(-xs)), rtol=1e-6)
    np.testing.assert_allclose(nn.softplus(x), np.where(xs > 20, xs, np.log1p(np.exp(xs))), rtol=1e-6)
    np.testing.assert_allclose(nn.gelu(x), 0.5 * xs * (1 + erf(xs / np.sqrt(2))), rtol=1e-6, atol=1e-7)
    tanh_form = 0.5 * xs * (1 + np.tanh(np.sqrt(2 / np.pi) * (xs + 0.044715 * xs ** 3)))
    np.testing.assert_allclose(nn.gelu_tanh(x), tanh_form, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nn.softmax(x).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(nn.log_softmax(x)), nn.softmax(x), rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name, count", [("mlp", 101_770), ("cnn", 1_199_882), ("lstm", 82_186),
                                         ("gru", 61_962)])
def test_zoo_parameter_counts(name, count):
    model = fd.models.get(name)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert nn.count_params(variables["params"]) == count
    assert nn.output_shape(model, (28, 28, 1)) == (10,)


def test_summary_rows():
    rows = nn.summary(fd.models.cnn(), (28, 28, 1), print_fn=None).rows
    assert [r["output_shape"] for r in rows[:4]] == [(26, 26, 32), (26, 26, 32), (24, 24, 64), (24, 24, 64)]
    assert sum(r["params"] for r in rows) == 1_199_882


def test_dense_shape_error_names_the_layer():
    model = fd.models.mlp()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(ShapeError, match=r"layers_1 \(Dense\) expects input with 784 features.*\(2, 64\)"):
        model.apply(variables, jnp.zeros((2, 8, 8, 1)))


def test_conv_rank_error():
    with pytest.raises(ShapeError, match=r"Conv2D.*NHWC.*\(2, 28, 28\)"):
        nn.Conv2D(3).init(jax.random.key(0), jnp.zeros((2, 28, 28)))


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown layer 'Conv3D'; choose one of: .*Conv2D"):
        nn.from_config({"type": "Conv3D"})
    with pytest.raises(ConfigError, match="Dense has no setting 'units'"):
        nn.from_config({"type": "Dense", "units": 3})
    with pytest.raises(ConfigError, match="not a funcdl activation"):
        nn.Sequential([jnp.sin])
    with pytest.raises(ConfigError, match="padding must be"):
        nn.Conv2D(3, padding="full").init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


def test_user_defined_layer_round_trips():
    class ScaledLinear(nn.Layer):
        features: int
        scale: float = 2.0

        @linen.compact
        def __call__(self, x):
            w = self.param("weight", linen.initializers.ones, (x.shape[-1], self.features))
            return self.scale * x @ w

    model = nn.Sequential([ScaledLinear(3, scale=0.5), nn.relu])
    config = nn.to_config(model)
    assert config["layers"][0] == {"type": "ScaledLinear", "features": 3, "scale": 0.5}
    rebuilt = nn.from_config(config)
    x = jnp.ones((2, 4))
    np.testing.assert_allclose(rebuilt.apply(model.init(jax.random.key(0), x), x), np.full((2, 3), 2.0))


def test_builtin_layer_names_are_reserved():
    with pytest.raises(ConfigError, match="taken by a built-in"):
        class Dense(nn.Layer):  # noqa: F811 - the clash is the point
            pass
