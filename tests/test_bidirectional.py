"""Recurrent layers read backwards (``reverse``) and Bidirectional: values, gradients, configs, graphs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_harness import run_layer_test
from test_layers import _recurrent_reference

from funcdl import nn
from funcdl.errors import ConfigError
from funcdl.nn import _recurrent_vjp as vjp

_KINDS = {"rnn": nn.SimpleRNN, "lstm": nn.LSTM, "gru": nn.GRU}
_SCANS = {"rnn": vjp.simple_rnn_scan, "lstm": vjp.lstm_scan, "gru": vjp.gru_scan}


def _params(layer, x, seed=1):
    variables = layer.init(jax.random.key(seed), x)
    return jax.tree.map(lambda a: a + 0.1, variables["params"])  # non-zero recurrent bias too


def _reversed_reference(kind, params, x, return_sequences):
    """The forward reference on the time-flipped input, its sequence flipped back (aligned with x)."""
    out = _recurrent_reference(kind, params, np.asarray(x)[:, ::-1])
    return out[:, ::-1] if return_sequences else out[:, -1]


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_reverse_matches_the_reference(kind, return_sequences):
    x = jax.random.normal(jax.random.key(0), (3, 6, 5))
    layer = _KINDS[kind](4, return_sequences=return_sequences, reverse=True)
    params = _params(layer, x)
    expected = _reversed_reference(kind, params, x, return_sequences)
    np.testing.assert_allclose(layer.apply({"params": params}, x), expected, rtol=1e-5, atol=1e-5)


def test_reverse_sequence_output_is_aligned_with_the_input():
    """out[:, t] has read x[:, T-1..t]: changing x[:, 0] changes only out[:, 0]."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    layer = nn.GRU(4, return_sequences=True, reverse=True)
    variables = layer.init(jax.random.key(1), x)
    changed = layer.apply(variables, x.at[:, 0].add(1.0)) - layer.apply(variables, x)
    assert np.abs(np.asarray(changed[:, 0])).max() > 1e-3
    np.testing.assert_array_equal(changed[:, 1:], 0.0)


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("return_sequences", [True, False])
def test_reverse_gradients_match_autodiff_of_the_plain_scan(kind, return_sequences):
    x = jax.random.normal(jax.random.key(0), (3, 7, 5))
    layer = _KINDS[kind](4, return_sequences=return_sequences, reverse=True)
    params = _params(layer, x)
    cotangent = jax.random.normal(jax.random.key(2), layer.apply({"params": params}, x).shape)

    def fast(p, x):
        return jnp.sum(layer.apply({"params": p}, x) * cotangent)

    def plain(p, x):
        args = (jnp.flip(x, 1), p["kernel"], p["bias"], p["recurrent_kernel"], p["recurrent_bias"])
        out = _SCANS[kind](*args, return_sequences=return_sequences)
        return jnp.sum((jnp.flip(out, 1) if return_sequences else out) * cotangent)
    got, want = jax.grad(fast, argnums=(0, 1))(params, x), jax.grad(plain, argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)


_MERGES = {"concat": lambda f, b: np.concatenate([f, b], -1), "sum": np.add, "mul": np.multiply,
           "ave": lambda f, b: (f + b) / 2}


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("merge_mode", sorted(_MERGES) + [None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_matches_both_directions_merged(kind, merge_mode, return_sequences):
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    layer = nn.Bidirectional(_KINDS[kind](4, return_sequences=return_sequences), merge_mode=merge_mode)
    params = _params(layer, x)
    forward = _recurrent_reference(kind, params["forward"], x)
    forward = forward if return_sequences else forward[:, -1]
    backward = _reversed_reference(kind, params["backward"], x, return_sequences)
    out = layer.apply({"params": params}, x)
    if merge_mode is None:
        np.testing.assert_allclose(out[0], forward, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out[1], backward, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(out, _MERGES[merge_mode](forward, backward), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer, out_shape", [
    (nn.Bidirectional(nn.LSTM(4, return_sequences=True)), (2, 5, 8)),
    (nn.Bidirectional(nn.GRU(4, reset_after=False), merge_mode="sum"), (2, 4)),
    (nn.Bidirectional(nn.SimpleRNN(4, activation="relu", use_recurrent_bias=False), merge_mode=None),
     ((2, 4), (2, 4))),
])
def test_bidirectional_harness(layer, out_shape):
    inner = nn.to_config(layer.layer)
    run_layer_test(layer, (2, 5, 3), out_shape, {"forward": _shapes(layer.layer), "backward": _shapes(layer.layer)})
    assert nn.to_config(layer)["layer"] == inner and inner["reverse"] is False


def _shapes(inner):
    variables = inner.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    return jax.tree.map(lambda a: a.shape, variables["params"])


def test_bidirectional_backward_copy_is_the_reversed_layer():
    x = jax.random.normal(jax.random.key(0), (2, 5, 3))
    layer = nn.Bidirectional(nn.LSTM(4, return_sequences=True), merge_mode=None)
    params = _params(layer, x)
    _, backward = layer.apply({"params": params}, x)
    alone = nn.LSTM(4, return_sequences=True, reverse=True).apply({"params": params["backward"]}, x)
    np.testing.assert_array_equal(backward, alone)


def test_bidirectional_two_outputs_in_a_graph():
    x = nn.Input((5, 3), name="tokens")
    forward, backward = nn.Bidirectional(nn.GRU(4, return_sequences=True), merge_mode=None, name="bi")(x)
    y = nn.Add(name="add")([forward, backward])
    model = nn.Graph(inputs=x, outputs=(y, backward))
    assert model.node("add").inputs == ("bi:0", "bi:1")
    rebuilt = nn.from_config(nn.to_config(model))
    assert nn.to_config(rebuilt) == nn.to_config(model)
    data = jax.random.normal(jax.random.key(0), (2, 5, 3))
    variables = model.init(jax.random.key(1), data)
    added, second = rebuilt.apply(variables, data)
    f, b = nn.Bidirectional(nn.GRU(4, return_sequences=True), merge_mode=None).apply(
        {"params": variables["params"]["bi"]}, data)
    np.testing.assert_allclose(added, f + b, rtol=1e-6)
    np.testing.assert_array_equal(second, b)
    assert nn.node_shapes(model)["bi"] == ((5, 4), (5, 4))
    assert "bi" in str(nn.summary(model))


@pytest.mark.parametrize("kwargs, match", [
    ({"layer": nn.Dense(3)}, "SimpleRNN, LSTM or GRU"),
    ({"layer": nn.LSTM(3, reverse=True)}, "reverse=False"),
    ({"layer": nn.LSTM(3), "merge_mode": "max"}, "merge_mode"),
])
def test_bidirectional_refuses_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        nn.Bidirectional(**kwargs)
    with pytest.raises(ConfigError, match=match):
        nn.from_config({"type": "Bidirectional", **{k: nn.to_config(v) if isinstance(v, nn.Layer) else v
                                                     for k, v in kwargs.items()}})
