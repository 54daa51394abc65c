"""One harness for every layer: init shapes, output shape and dtype, jit == eager, config round trip."""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn


def run_layer_test(layer, input_shape, expected_output_shape, expected_params=None, dtype=jnp.float32,
                   train=False):
    """Check ``layer`` on a batch of ``input_shape`` (batch axis included).

    Args:
      expected_output_shape: the output shape, batch axis included.
      expected_params: {name: shape} of the layer's params, or None to skip.
    Returns:
      (variables, output) for further analytic checks.
    """
    key = jax.random.key(0)
    if jnp.issubdtype(dtype, jnp.integer):
        x = jax.random.randint(key, input_shape, 0, 5).astype(dtype)
    else:
        x = jax.random.normal(key, input_shape, dtype)
    variables = layer.init(jax.random.key(1), x)
    if expected_params is not None:
        shapes = jax.tree.map(lambda a: a.shape, variables.get("params", {}))
        assert shapes == expected_params, shapes
    rngs = {"dropout": jax.random.key(2)}
    kwargs = {"train": train} if train else {}
    mutable = ["batch_stats"] if train else False

    def apply(v, x):
        out = layer.apply(v, x, rngs=rngs, mutable=mutable, **kwargs)
        return out[0] if train else out
    predicted = jax.eval_shape(apply, variables, x)
    jitted = jax.jit(apply)(variables, x)
    with jax.disable_jit():
        eager = apply(variables, x)
    assert predicted.shape == expected_output_shape, (predicted.shape, expected_output_shape)
    assert jitted.shape == expected_output_shape and jitted.dtype == predicted.dtype
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=2e-5, atol=2e-6)
    rebuilt = nn.from_config(nn.to_config(layer))
    assert nn.to_config(rebuilt) == nn.to_config(layer)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v, x: rebuilt.apply(v, x, rngs=rngs, mutable=mutable,
                                                                          **kwargs))(variables, x)[0]
                                          if train else rebuilt.apply(variables, x, **kwargs)),
                               np.asarray(jitted), rtol=2e-5, atol=2e-6)
    return variables, jitted
