"""One harness for every layer: init shapes, output shape and dtype, shape inference, jit == eager, config round trip.

A layer that takes several arrays (a merge layer, a Graph with several inputs) gets a tuple of input shapes;
one that returns several (a Graph with several outputs) a tuple or dict of expected output shapes.
"""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn


def _is_shape(value):
    return isinstance(value, tuple) and all(isinstance(d, int) for d in value)


def _inputs(input_shape, dtype, key):
    """An input of ``input_shape`` (a batch shape, or a tuple of them), random normal or small integers."""
    if not _is_shape(input_shape):
        keys = jax.random.split(key, len(input_shape))
        return tuple(_inputs(shape, dtype, k) for shape, k in zip(input_shape, keys))
    if jnp.issubdtype(dtype, jnp.integer):
        return jax.random.randint(key, input_shape, 0, 5).astype(dtype)
    return jax.random.normal(key, input_shape, dtype)


def _shapes(tree):
    """The shape (tree) of an output (tree): a tuple of ints per array."""
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def _per_example(shape):
    return shape[1:] if _is_shape(shape) else type(shape)(_per_example(s) for s in shape) \
        if isinstance(shape, tuple) else {k: _per_example(v) for k, v in shape.items()}


def run_layer_test(layer, input_shape, expected_output_shape, expected_params=None, dtype=jnp.float32,
                   train=False):
    """Check ``layer`` on a batch of ``input_shape`` (batch axis included).

    Checks that ``jax.eval_shape`` of ``apply``, the jitted and the eager outputs all have
    ``expected_output_shape``, that ``nn.output_shape`` (shape inference from ``init``'s variables)
    predicts it, that jit == eager, and that the config round trip gives the same layer and outputs.

    Args:
      input_shape: the input's shape, batch axis included (a tuple of shapes for several inputs).
      expected_output_shape: the output shape, batch axis included (a tuple/dict of them for several).
      expected_params: {name: shape} of the layer's params, or None to skip.
    Returns:
      (variables, output) for further analytic checks.
    """
    x = _inputs(input_shape, dtype, jax.random.key(0))
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
    assert _shapes(predicted) == expected_output_shape, (_shapes(predicted), expected_output_shape)
    assert _shapes(jitted) == expected_output_shape and _shapes(eager) == expected_output_shape
    assert jax.tree.map(lambda a: a.dtype, jitted) == jax.tree.map(lambda a: a.dtype, predicted)
    inferred = nn.output_shape(layer, _per_example(input_shape), dtype)
    assert inferred == _per_example(expected_output_shape), (inferred, expected_output_shape)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6),
                 jitted, eager)
    rebuilt = nn.from_config(nn.to_config(layer))
    assert nn.to_config(rebuilt) == nn.to_config(layer)
    again = jax.jit(lambda v, x: rebuilt.apply(v, x, rngs=rngs, mutable=mutable, **kwargs))(variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6),
                 again[0] if train else again, jitted)
    return variables, jitted
