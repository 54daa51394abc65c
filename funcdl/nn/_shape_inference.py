"""Shape inference, without running anything (``jax.eval_shape``): the one place model shapes are computed.

``init_shapes`` is the variables pytree ``init`` would make, ``layer_shapes``
every top-level layer's output shape, ``output_shape`` the model's; ``summary``
and ``check_variables`` build on them, and the converters read them instead of
inferring shapes themselves. Shapes are of one example: no batch axis.
"""
import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from funcdl.errors import FuncdlError, ShapeError
from funcdl.nn._dense import Embedding

Shape = tuple[int, ...]
ShapeLike = Sequence[int]


def count_params(tree: Any) -> int:
    """Number of scalars in a params pytree (or a whole variables dict)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def input_dtype(model: Any) -> Any:
    """int32 when ``model`` starts with an Embedding (it takes token ids), else float32."""
    layers = getattr(model, "layers", (model,))
    return jnp.int32 if layers and isinstance(layers[0], Embedding) else jnp.float32


@contextlib.contextmanager
def shape_errors(input_shape: ShapeLike) -> Iterator[None]:
    """Turn what flax / lax raise for an input that does not fit the model into one ShapeError line.

    Errors funcdl raises itself (a layer's own ShapeError naming it) pass through unchanged.
    """
    try:
        yield
    except FuncdlError:
        raise
    except Exception as err:  # flax / lax raise many types for shapes that do not fit
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ShapeError(f"input of shape {tuple(input_shape)} (per example) does not fit the model: "
                         f"{message}") from None


def _sample(input_shape, dtype):
    return jax.ShapeDtypeStruct((1,) + tuple(input_shape), dtype)


def init_shapes(model: Any, input_shape: ShapeLike, dtype: Any = None) -> Any:
    """The variables pytree ``model.init`` would make, as ShapeDtypeStructs (nothing is computed).

    Args:
      model: a funcdl layer or Sequential.
      input_shape: shape of one example, without the batch axis, e.g. (28, 28, 1).
      dtype: the input's dtype (default ``input_dtype(model)``).
    """
    sample = _sample(input_shape, dtype or input_dtype(model))
    with shape_errors(input_shape):
        return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)


def layer_shapes(model: Any, input_shape: ShapeLike, dtype: Any = None, variables: Any = None) -> list[Shape]:
    """``[input_shape, output of layer 0, output of layer 1, ...]``: what each top-level layer takes and gives.

    For a model without ``layers`` (a single layer) the list is ``[input_shape, output_shape]``.

    Args:
      variables: the variables (or their shapes) to run with; default ``init_shapes``.
    """
    dtype = dtype or input_dtype(model)
    variables = init_shapes(model, input_shape, dtype) if variables is None else variables

    def run(v, x):
        return model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    with shape_errors(input_shape):
        out, state = jax.eval_shape(run, variables, _sample(input_shape, dtype))
    if not hasattr(model, "layers"):
        return [tuple(input_shape), tuple(out.shape[1:])]
    captured = state["intermediates"]
    return [tuple(input_shape)] + [tuple(captured[f"layers_{index}"]["__call__"][0].shape[1:])
                                   for index in range(len(model.layers))]


def output_shape(model: Any, input_shape: ShapeLike, dtype: Any = None) -> Shape:
    """Shape of one example's output for one example of ``input_shape`` (no batch axis)."""
    return layer_shapes(model, input_shape, dtype)[-1]


def summary(model: Any, input_shape: ShapeLike, dtype: Any = None) -> list[dict]:
    """One row per top-level layer: name, type, output shape (no batch axis), parameter count.

    Returns:
      list of dicts ``{'name', 'type', 'output_shape', 'params'}``.
    """
    dtype = dtype or input_dtype(model)
    variables = init_shapes(model, input_shape, dtype)
    shapes = layer_shapes(model, input_shape, dtype, variables)[1:]
    params = variables.get("params", {})
    if not hasattr(model, "layers"):
        return [{"name": type(model).__name__, "type": type(model).__name__, "output_shape": shapes[0],
                 "params": count_params(params)}]
    return [{"name": f"layers_{index}", "type": type(layer).__name__, "output_shape": shape,
             "params": count_params(params.get(f"layers_{index}", {}))}
            for index, (layer, shape) in enumerate(zip(model.layers, shapes))]


def variable_shapes(tree: Any) -> dict[str, Shape]:
    """``{'params/layers_1/kernel': shape}`` for a variables pytree of arrays or ShapeDtypeStructs."""
    return {key: tuple(value.shape) for key, value in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def check_variables(model: Any, variables: Any, input_shape: ShapeLike, source: str = "variables",
                    error: type[FuncdlError] = ShapeError) -> None:
    """Raise ``error`` unless ``variables`` has exactly the tensor names and shapes ``model`` makes.

    Args:
      source: what to call the variables in the message (a file name, ``'to_torch'``, ...).
      error: the error of the caller's boundary (ShapeError for variables passed in, FileFormatError for a
        file's own tensors, ConversionError for another framework's).
    """
    expected = variable_shapes(init_shapes(model, input_shape))
    actual = {key: tuple(getattr(value, "shape", ())) for key, value in
              traverse_util.flatten_dict(dict(variables), sep="/").items()}
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    if missing or extra:
        raise error(f"{source}: tensors do not match the architecture (missing: {missing[:3]}, "
                    f"unexpected: {extra[:3]})")
    for key, shape in expected.items():
        if actual[key] != shape:
            raise error(f"{source}: tensor {key} has shape {actual[key]}, the architecture needs {shape}")
    check_dtypes(variables, source, error)


def check_dtypes(variables: Any, source: str = "variables", error: type[FuncdlError] = ShapeError) -> None:
    """Raise ``error`` naming the first tensor of ``variables`` that is not floating point (int, bool, complex).

    Weights are floating point: a layer computing in float32 would round an integer tensor silently and drop a
    complex one's imaginary part. float16, bfloat16 and float64 tensors are accepted (layers compute in their
    ``dtype``, float32 by default).
    """
    for key, value in traverse_util.flatten_dict(dict(variables), sep="/").items():
        dtype = getattr(value, "dtype", None)
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating):
            raise error(f"{source}: tensor {key} has dtype {jnp.dtype(dtype).name}; weights must be floating point "
                        "(float32, or float16/bfloat16/float64): convert them explicitly, e.g. to float32")
