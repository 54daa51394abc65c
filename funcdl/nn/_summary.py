"""Shapes and parameter counts of a model, without running it (``jax.eval_shape``)."""
import math

import jax
import jax.numpy as jnp

from funcdl.errors import ShapeError


def count_params(tree):
    """Number of scalars in a params pytree (or a whole variables dict)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def input_dtype(model):
    """int32 when ``model`` starts with an Embedding (it takes token ids), else float32."""
    from funcdl.nn._dense import Embedding
    layers = getattr(model, "layers", (model,))
    return jnp.int32 if layers and isinstance(layers[0], Embedding) else jnp.float32


def init_shapes(model, input_shape, dtype=None):
    """The variables pytree ``model.init`` would make, as ShapeDtypeStructs (nothing is computed).

    Args:
      model: a funcdl layer or Sequential.
      input_shape: shape of one example, without the batch axis, e.g. (28, 28, 1).
    """
    sample = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype or input_dtype(model))
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)


def output_shape(model, input_shape, dtype=None):
    """Shape of one example's output for one example of ``input_shape`` (no batch axis)."""
    dtype = dtype or input_dtype(model)
    variables = init_shapes(model, input_shape, dtype)
    sample = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, sample)
    return tuple(out.shape[1:])


def summary(model, input_shape, dtype=None):
    """One row per top-level layer: name, type, output shape (no batch axis), parameter count.

    Returns:
      list of dicts ``{'name', 'type', 'output_shape', 'params'}``.
    """
    dtype = dtype or input_dtype(model)
    variables = init_shapes(model, input_shape, dtype)
    sample = jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)

    def run(v, x):
        return model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    try:
        _, state = jax.eval_shape(run, variables, sample)
    except ShapeError:
        raise
    except (TypeError, ValueError) as err:
        raise ShapeError(f"model does not accept input of shape {tuple(input_shape)}: {err}") from None
    captured = state["intermediates"]
    params = variables.get("params", {})
    rows = []
    for index, layer in enumerate(getattr(model, "layers", (model,))):
        name = f"layers_{index}" if hasattr(model, "layers") else type(model).__name__
        out = captured.get(name, {}).get("__call__", (None,))[0] if hasattr(model, "layers") else None
        rows.append({"name": name, "type": type(layer).__name__,
                     "output_shape": tuple(out.shape[1:]) if out is not None else None,
                     "params": count_params(params.get(name, {}))})
    return rows
