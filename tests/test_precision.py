"""Mixed precision: bf16 compute, float32 parameters and optimizer state, accuracy close to fp32."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn, precision
from funcdl.errors import ConfigError


def small_cnn():
    return nn.Sequential([nn.Conv2D(8, 3, strides=2), nn.relu, nn.Conv2D(16, 3, strides=2), nn.relu,
                          nn.Flatten(), nn.Dense(10)])


def test_bf16_computes_in_bfloat16_and_returns_float32():
    model = precision.apply_policy(small_cnn(), "bf16")
    x = jnp.ones((2, 12, 12, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: nothing runs eagerly
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))
    assert "bf16[2,5,5,8]" in jaxpr  # the first conv's output (a dot_general on CPU, a convolution elsewhere)
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).dtype == jnp.float32
    grads = jax.eval_shape(jax.grad(lambda p: model.apply({"params": p}, x).sum()), variables["params"])
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


def test_bf16_keeps_batchnorm_statistics_float32():
    model = precision.apply_policy(nn.Sequential([nn.Dense(4), nn.BatchNorm()]), "bf16")
    x = jnp.arange(12.0).reshape(3, 4)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    _, updated = jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    assert {leaf.dtype for leaf in jax.tree.leaves(updated)} == {jnp.dtype(jnp.float32)}


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose one of: bf16, fp32"):
        fd.fit(small_cnn(), (np.zeros((4, 12, 12, 1), np.float32), np.zeros(4, np.int32)), precision="fp16",
               verbose=False)


def test_bf16_accuracy_close_to_fp32_on_mnist_slice(data_dir):
    """~190 Adam steps of a small CNN on 2,000 real MNIST images: bf16 within 2 points of fp32."""
    data = fd.data.load("mnist", data_dir, limit=2000)
    accuracy = {}
    for policy in ("fp32", "bf16"):
        history = fd.fit(small_cnn(), data.train, optimizer=fd.optim.adam(2e-3), epochs=3, batch_size=32,
                         precision=policy, seed=0, verbose=False)
        for leaf in jax.tree.leaves((history.variables, history.opt_state)):
            assert leaf.dtype in (jnp.float32, jnp.int32)  # master weights and Adam moments stay fp32
        accuracy[policy] = fd.evaluate(small_cnn(), history.variables, data.test)["accuracy"]
    assert accuracy["fp32"] > 0.8
    assert abs(accuracy["bf16"] - accuracy["fp32"]) < 0.02, accuracy
