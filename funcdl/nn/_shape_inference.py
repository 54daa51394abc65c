"""Shape inference, without running anything (``jax.eval_shape``): the one place model shapes are computed.

``init_shapes`` is the variables pytree ``init`` would make, ``node_shapes``
the output shape of every top-level layer (a Sequential's ``layers_i``, a
Graph's inputs and nodes), ``output_shape`` the model's; ``summary`` and
``check_variables`` build on them, and the converters read them instead of
inferring shapes themselves. Shapes are of one example: no batch axis.

An ``input_shape`` is one shape, e.g. ``(28, 28, 1)``; for a Graph with
several inputs, a tuple of shapes in its inputs' order or a dict ``{name:
shape}``; for a Graph whose inputs declare their shapes it may be left out.
A model with several outputs has a tuple or dict of shapes as its output shape.
"""
import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from funcdl.errors import ConfigError, FuncdlError, ShapeError
from funcdl.nn._dense import Embedding
from funcdl.nn._graph import Graph
from funcdl.nn._symbolic import Input

Shape = tuple[int, ...]
ShapeLike = Sequence[int]
# one shape, or (for several inputs or outputs) a tuple or dict of shapes
ShapeTree = Any


def count_params(tree: Any) -> int:
    """Number of scalars in a params pytree (or a whole variables dict)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def input_specs(model: Any) -> tuple[Input, ...] | None:
    """The declared inputs of a Graph (or of a Sequential that starts with one), else None."""
    if isinstance(model, Graph):
        return tuple(model.inputs)
    layers = getattr(model, "layers", None)
    return input_specs(layers[0]) if isinstance(layers, tuple) and layers else None


def input_dtype(model: Any) -> Any:
    """The dtype ``model`` takes: a Graph's declared input dtype (a tuple of them for several inputs);
    int32 when the model starts with an Embedding (token ids); else float32."""
    specs = input_specs(model)
    if specs is not None:
        dtypes = tuple(jnp.dtype(spec.dtype) for spec in specs)
        return dtypes[0] if len(dtypes) == 1 else dtypes
    layers = getattr(model, "layers", (model,))
    return jnp.int32 if layers and isinstance(layers[0], Embedding) else jnp.float32


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in value)


def describe_shape(input_shape: ShapeTree) -> str:
    """``(28, 28, 1)``, ``((4,), (2,))`` or ``{'a': (4,)}``: an input shape for a message."""
    if isinstance(input_shape, Mapping):
        return str({key: describe_shape(value) for key, value in input_shape.items()})
    if _is_shape(input_shape) or not isinstance(input_shape, (tuple, list)):
        return str(tuple(input_shape)) if isinstance(input_shape, (tuple, list)) else repr(input_shape)
    return "(" + ", ".join(describe_shape(value) for value in input_shape) + ")"


def _declared(spec: Input) -> Shape:
    if spec.shape is None or None in spec.shape:
        raise ConfigError(f"graph input {spec.name!r} does not declare its full shape; give input_shape")
    return tuple(d for d in spec.shape if d is not None)


def _per_input(specs: tuple[Input, ...], input_shape: ShapeTree) -> list[Shape]:
    """One shape per declared input, from ``input_shape`` (or the declarations when it is None)."""
    names = [spec.name for spec in specs]
    if input_shape is None:
        return [_declared(spec) for spec in specs]
    if isinstance(input_shape, Mapping) and set(input_shape) == set(names):
        shapes = [input_shape[name] for name in names]
    elif len(specs) == 1 and _is_shape(input_shape):
        shapes = [input_shape]
    elif isinstance(input_shape, (tuple, list)) and len(input_shape) == len(specs):
        shapes = list(input_shape)
    else:
        shapes = []
    if not shapes or not all(_is_shape(shape) for shape in shapes):
        raise ShapeError(f"the model takes inputs {names}: give one shape per input (a tuple in that order or a "
                         f"dict by name), got {describe_shape(input_shape)}")
    return [tuple(shape) for shape in shapes]


def sample_input(model: Any, input_shape: ShapeTree = None, dtype: Any = None, batch: int = 1) -> Any:
    """The ShapeDtypeStruct(s) of a batch ``model`` takes: one, or a tuple in a Graph's input order.

    Args:
      input_shape: one example's shape(s) (see the module docstring); None for a Graph's declared shapes.
      dtype: the input dtype (default: ``input_dtype(model)``, per input for a Graph).
      batch: the batch size of the sample.
    """
    specs = input_specs(model)
    if specs is None:
        if input_shape is None:
            raise ConfigError(f"give the input shape of {type(model).__name__} (one example, e.g. (28, 28, 1))")
        return _structs(input_shape, dtype or input_dtype(model), batch)
    structs = tuple(jax.ShapeDtypeStruct((batch,) + shape, dtype or jnp.dtype(spec.dtype))
                    for spec, shape in zip(specs, _per_input(specs, input_shape)))
    return structs[0] if len(structs) == 1 else structs


def _structs(input_shape: ShapeTree, dtype: Any, batch: int) -> Any:
    """ShapeDtypeStructs of a shape, or of each shape of a tuple / dict of them (a merge layer's inputs)."""
    if _is_shape(input_shape):
        return jax.ShapeDtypeStruct((batch,) + tuple(input_shape), dtype)
    if isinstance(input_shape, Mapping) and input_shape:
        return {key: _structs(value, dtype, batch) for key, value in input_shape.items()}
    if isinstance(input_shape, (tuple, list)) and input_shape and all(
            isinstance(value, (tuple, list, Mapping)) for value in input_shape):
        return tuple(_structs(value, dtype, batch) for value in input_shape)
    raise ShapeError(f"input shape must be a tuple of sizes such as (28, 28, 1), got {describe_shape(input_shape)}")


def _per_example(tree: Any) -> ShapeTree:
    """The per-example shapes of a (tuple/dict) structure of batched arrays or ShapeDtypeStructs."""
    if isinstance(tree, Mapping):
        return {key: _per_example(value) for key, value in tree.items()}
    if isinstance(tree, (tuple, list)):
        return tuple(_per_example(value) for value in tree)
    return tuple(tree.shape[1:])


@contextlib.contextmanager
def shape_errors(input_shape: ShapeTree) -> Iterator[None]:
    """Turn what flax / lax raise for an input that does not fit the model into one ShapeError line.

    Errors funcdl raises itself (a layer's own ShapeError naming it) pass through unchanged.
    """
    try:
        yield
    except FuncdlError:
        raise
    except Exception as err:  # flax / lax raise many types for shapes that do not fit
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ShapeError(f"input of shape {describe_shape(input_shape)} (per example) does not fit the model: "
                         f"{message}") from None


def init_shapes(model: Any, input_shape: ShapeTree = None, dtype: Any = None) -> Any:
    """The variables pytree ``model.init`` would make, as ShapeDtypeStructs (nothing is computed).

    Args:
      model: a funcdl layer, Sequential or Graph.
      input_shape: shape of one example, without the batch axis, e.g. (28, 28, 1) (see the module docstring).
      dtype: the input's dtype (default ``input_dtype(model)``).
    """
    sample = sample_input(model, input_shape, dtype)
    with shape_errors(_per_example(sample)):
        return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)


def node_shapes(model: Any, input_shape: ShapeTree = None, dtype: Any = None,
                variables: Any = None) -> dict[str, ShapeTree]:
    """``{name: output shape}`` of the model's inputs and top-level layers, in order.

    A Graph's names are its inputs' and nodes'; a Sequential's are ``'input'`` and ``'layers_0'``, ...
    (its params keys; see ``as_graph``); a single layer gives ``'input'`` and ``'output'``.

    Args:
      variables: the variables (or their shapes) to run with; default ``init_shapes``.
    """
    sample = sample_input(model, input_shape, dtype)
    variables = init_shapes(model, input_shape, dtype) if variables is None else variables

    def run(v, x):
        return model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    with shape_errors(_per_example(sample)):
        out, state = jax.eval_shape(run, variables, sample)
    captured = state["intermediates"]
    if isinstance(model, Graph):
        samples = sample if len(model.inputs) > 1 else (sample,)
        shapes = {spec.name: _per_example(struct) for spec, struct in zip(model.inputs, samples)}
        return shapes | {node.name: _per_example(captured[node.name]["__call__"][0]) for node in model.nodes}
    shapes = {"input": _per_example(sample)}
    if not isinstance(getattr(model, "layers", None), tuple):
        return shapes | {"output": _per_example(out)}
    return shapes | {f"layers_{index}": _per_example(captured[f"layers_{index}"]["__call__"][0])
                     for index in range(len(model.layers))}


def layer_shapes(model: Any, input_shape: ShapeTree = None, dtype: Any = None,
                 variables: Any = None) -> list[ShapeTree]:
    """``[input_shape, output of layer 0, output of layer 1, ...]``: what each top-level layer takes and gives.

    For a Graph: its input shape(s), then each node's output in node order. For a single layer (no
    ``layers``) the list is ``[input_shape, output_shape]``.
    """
    shapes = list(node_shapes(model, input_shape, dtype, variables).values())
    if isinstance(model, Graph) and len(model.inputs) > 1:
        return [tuple(shapes[:len(model.inputs)])] + shapes[len(model.inputs):]
    return shapes


def output_shape(model: Any, input_shape: ShapeTree = None, dtype: Any = None) -> ShapeTree:
    """Shape of one example's output for one example of ``input_shape`` (no batch axis).

    A tuple (or dict) of shapes for a model with several outputs.
    """
    sample = sample_input(model, input_shape, dtype)
    variables = init_shapes(model, input_shape, dtype)
    with shape_errors(_per_example(sample)):
        return _per_example(jax.eval_shape(model.apply, variables, sample))


def variable_shapes(tree: Any) -> dict[str, Shape]:
    """``{'params/layers_1/kernel': shape}`` for a variables pytree of arrays or ShapeDtypeStructs."""
    return {key: tuple(value.shape) for key, value in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def check_variables(model: Any, variables: Any, input_shape: ShapeTree, source: str = "variables",
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
