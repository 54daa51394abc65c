"""Recurrent layers' hand-written backward passes equal autodiff of the plain scans.

Every option of every layer, values and gradients w.r.t. every input, under
jit, eager, vmap, bfloat16 and data parallelism (4 CPU devices, subprocess).
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.nn import _recurrent, _recurrent_vjp
from funcdl.train.precision import Bf16Compute

BATCH, STEPS, FEATURES, HIDDEN = 3, 5, 4, 6
ARGNUMS = (0, 1, 2, 3, 4)  # x, kernel, bias, recurrent_kernel, recurrent_bias


def _case(kind, **options):
    """(id, new function, reference function, gates) with ``options`` bound."""
    gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[kind]
    new, reference = getattr(_recurrent_vjp, kind), getattr(_recurrent_vjp, f"{kind}_scan")
    label = "-".join([kind] + [f"{k}={getattr(v, '__name__', v)}" for k, v in options.items()])
    return pytest.param(lambda *a: new(*a, **options), lambda *a: reference(*a, **options), gates, id=label)


CASES = [case for sequences in (False, True) for case in (
    _case("lstm", return_sequences=sequences),
    _case("gru", reset_after=True, return_sequences=sequences),
    _case("gru", reset_after=False, return_sequences=sequences),
    _case("simple_rnn", activation=jnp.tanh, return_sequences=sequences),
    _case("simple_rnn", activation=jax.nn.relu, return_sequences=sequences),
    _case("simple_rnn", activation=jax.nn.sigmoid, return_sequences=sequences),
)]


def _arguments(gates, key=0, dtype=jnp.float32):
    """(x, kernel, bias, recurrent_kernel, recurrent_bias), all non-zero, fixed key."""
    keys = jax.random.split(jax.random.key(key), 5)
    shapes = [(BATCH, STEPS, FEATURES), (FEATURES, gates * HIDDEN), (gates * HIDDEN,), (HIDDEN, gates * HIDDEN),
              (gates * HIDDEN,)]
    scales = [1.0, 0.5, 0.3, 0.5, 0.3]
    return tuple((jax.random.normal(k, s) * c).astype(dtype) for k, s, c in zip(keys, shapes, scales))


def _loss(fn, weights):
    """A loss that weighs every output element differently (so every output's gradient is checked)."""
    return lambda *args: jnp.sum(jnp.sin(fn(*args).astype(jnp.float32)) * weights)


def _weights(fn, args):
    return jax.random.normal(jax.random.key(7), jax.eval_shape(fn, *args).shape)


def _close(actual, expected, tolerance=1e-5):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32), rtol=tolerance,
                                   atol=tolerance)


@pytest.mark.parametrize("new, reference, gates", CASES)
def test_values_and_gradients_match_autodiff(new, reference, gates):
    args = _arguments(gates)
    weights = _weights(reference, args)
    _close(jax.jit(new)(*args), reference(*args))
    expected = jax.grad(_loss(reference, weights), ARGNUMS)(*args)
    _close(jax.jit(jax.grad(_loss(new, weights), ARGNUMS))(*args), expected)
    with jax.disable_jit():  # op by op, as fit(eager=True) runs it
        _close(jax.grad(_loss(new, weights), ARGNUMS)(*args), expected)


@pytest.mark.parametrize("new, reference, gates", CASES[:3])
def test_gradients_under_vmap(new, reference, gates):
    """Sweeps vmap whole training steps: a batch of 3 models, each with its own weights and inputs."""
    args = jax.tree.map(lambda *a: jnp.stack(a), *(_arguments(gates, key) for key in range(3)))
    weights = _weights(reference, [a[0] for a in args])
    expected = jax.vmap(jax.grad(_loss(reference, weights), ARGNUMS))(*args)
    _close(jax.jit(jax.vmap(jax.grad(_loss(new, weights), ARGNUMS)))(*args), expected)
    shared = jax.vmap(jax.grad(_loss(new, weights), ARGNUMS), in_axes=(0, None, None, None, None))
    first = [a[0] for a in args]  # only the inputs batched, the weights shared
    _close(shared(args[0], *first[1:]), jax.vmap(jax.grad(_loss(reference, weights), ARGNUMS),
                                                 in_axes=(0, None, None, None, None))(args[0], *first[1:]))


@pytest.mark.parametrize("new, reference, gates", CASES[:5])
def test_bfloat16_is_as_accurate_as_autodiff(new, reference, gates):
    """In bfloat16 the gradients stay bfloat16 and no further from the float32 ones than autodiff's."""
    args = _arguments(gates)
    low = tuple(a.astype(jnp.bfloat16) for a in args)
    weights = _weights(reference, args)
    exact = jax.grad(_loss(reference, weights), ARGNUMS)(*args)
    ours = jax.jit(jax.grad(_loss(new, weights), ARGNUMS))(*low)
    theirs = jax.grad(_loss(reference, weights), ARGNUMS)(*low)
    assert all(g.dtype == jnp.bfloat16 for g in ours)
    for mine, autodiff, truth in zip(ours, theirs, exact):
        scale = float(jnp.abs(truth).max())
        error = float(jnp.abs(mine.astype(jnp.float32) - truth).max())
        assert error <= 2 * float(jnp.abs(autodiff.astype(jnp.float32) - truth).max()) + 0.01 * scale


def _layer(kind, **options):
    label = "-".join([kind.__name__] + [f"{k}={v}" for k, v in options.items()])
    return pytest.param(kind(HIDDEN, **options), id=label)


LAYERS = [
    _layer(nn.LSTM), _layer(nn.LSTM, return_sequences=True, unit_forget_bias=False),
    _layer(nn.LSTM, use_recurrent_bias=False), _layer(nn.GRU), _layer(nn.GRU, reset_after=False),
    _layer(nn.GRU, return_sequences=True, use_recurrent_bias=False),
    _layer(nn.GRU, reset_after=False, use_recurrent_bias=False), _layer(nn.SimpleRNN),
    _layer(nn.SimpleRNN, activation="relu", return_sequences=True), _layer(nn.SimpleRNN, use_recurrent_bias=False),
]


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_match_the_scan_layers(layer, monkeypatch):
    """The layers' outputs and parameter gradients, against the same layers traced with the plain scans."""
    model = nn.Sequential([nn.Dense(FEATURES), layer])  # x's gradient flows into the Dense below
    x = jax.random.normal(jax.random.key(3), (BATCH, STEPS, 3))
    variables = model.init(jax.random.key(4), x)
    params = jax.tree.map(lambda a: a + 0.1, variables["params"])  # non-zero biases
    weights = _weights(lambda p: model.apply({"params": p}, x), (params,))

    def run():
        loss = _loss(lambda p: model.apply({"params": p}, x), weights)
        return jax.jit(model.apply)({"params": params}, x), jax.jit(jax.grad(loss))(params)
    new = run()
    for name in ("lstm", "gru", "simple_rnn"):
        monkeypatch.setattr(_recurrent, name, getattr(_recurrent_vjp, f"{name}_scan"))
    _close(new, run())


def test_model_in_bfloat16_gets_float32_gradients():
    model = Bf16Compute(fd.models.lstm(hidden=8))
    x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
    variables = model.init(jax.random.key(1), x)
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x)))(variables["params"])
    assert all(g.dtype == jnp.float32 and jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))


def test_forward_mode_is_refused():
    args = _arguments(4)
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda k: _recurrent_vjp.lstm(args[0], k, *args[2:]), (args[1],), (jnp.ones_like(args[1]),))


def test_empty_sequence_returns_empty_outputs():
    args = _arguments(3)
    x = jnp.zeros((BATCH, 0, FEATURES))
    assert _recurrent_vjp.gru(x, *args[1:], return_sequences=True).shape == (BATCH, 0, HIDDEN)


def test_weight_gradients_are_one_matmul_after_the_loop():
    """The recurrent kernel's gradient is computed outside the backward loop, over all steps at once."""
    args = _arguments(4)
    loss = _loss(_recurrent_vjp.lstm, _weights(_recurrent_vjp.lstm, args))
    text = jax.jit(jax.grad(loss, 3)).lower(*args).compile().as_text()
    # the one (H + F + 1, T*B) x (T*B, 4H) matmul: [dU; dW; db] for all steps together
    assert f"f32[{HIDDEN + FEATURES + 1},{4 * HIDDEN}]" in text


FOUR_DEVICES = r"""
import json
import jax, numpy as np
import funcdl as fd
from funcdl import nn

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 7, 5)).astype(np.float32)
y = rng.integers(0, 3, 64).astype(np.int32)
differences = {}
for name, layers in {"lstm": [nn.LSTM(8, return_sequences=True), nn.LSTM(6)],
                     "gru": [nn.GRU(8, return_sequences=True), nn.GRU(6, reset_after=False)],
                     "rnn": [nn.SimpleRNN(8, activation="relu", return_sequences=True), nn.SimpleRNN(6)]}.items():
    model = nn.Sequential(layers + [nn.Dense(3)])
    kwargs = dict(optimizer=fd.optim.adam(1e-2), epochs=2, batch_size=16, verbose=False)
    one = fd.fit(model, (x, y), **kwargs)
    four = fd.fit(model, (x, y), data_parallel=True, **kwargs)
    differences[name] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                            for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(four.variables)))
print(json.dumps({"devices": jax.device_count(), "differences": differences}))
"""


def test_data_parallel_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    assert all(difference < 1e-5 for difference in result["differences"].values()), result


def test_rnn_step_bench_times_the_same_computation_three_ways():
    """bench.rnn_step's runners start from the same logits and end its epoch with the same weights."""
    pytest.importorskip("torch")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-m", "bench.rnn_step", "--models", "gru", "--steps", "2", "--rounds", "1"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    gru = json.loads(done.stdout.strip().splitlines()[-1])["models"]["gru"]
    assert all(gru[runner]["ms_per_step_median"] > 0 for runner in ("funcdl", "funcdl-autodiff", "torch-eager"))
    assert gru["torch_logits_max_abs_diff"] < 1e-5
    assert gru["autodiff_params_max_abs_diff"] < 1e-4  # Adam moves every weight by ~1e-3 a step: a wrong gradient shows
