"""funcdl -> TensorFlow SavedModel through ``jax2tf``, with the weights stored as ``tf.Variable``s.

The model's ``apply`` is converted once (``jax.export`` serialisation, which
is jax2tf's only mode in recent jax) with the variables as an argument, so
the SavedModel holds one variable per funcdl tensor instead of constants
baked into the graph, and its batch axis is symbolic unless ``batch_size``
is given::

    to_saved_model(model, variables, "exported/", input_shape=(28, 28, 1))
    y = load_saved_model_outputs("exported/", x)   # == model.apply(variables, x)

The module keeps the variables in ``loaded.funcdl_variables`` (named by
pytree path, e.g. ``params/layers_1/kernel``; batch_stats are not trainable)
and serves ``signatures['serving_default'](x=...) -> {'output': y}``.
"""
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.errors import FileFormatError
from funcdl.io import atomic_path
from interop import frameworks


def _path_name(path):
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def _module(tf, model, variables, input_shape, batch_size, platforms):
    """A tf.Module holding the variables and a traced ``serve`` function."""
    # imports tensorflow: only once an export runs
    from jax.experimental import jax2tf  # noqa: PLC0415
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    module = tf.Module()
    module.funcdl_variables = [
        tf.Variable(np.asarray(leaf), trainable=_path_name(path).startswith("params/"), name=_path_name(path))
        for path, leaf in leaves]
    converted = jax2tf.convert(
        lambda v, x: model.apply(v, x), with_gradient=False,
        polymorphic_shapes=[None, "(b, ...)"] if batch_size is None else None,
        native_serialization_platforms=tuple(platforms) if platforms else None)
    dtype = tf.int32 if nn.input_dtype(model) == jnp.int32 else tf.float32
    spec = tf.TensorSpec((batch_size,) + tuple(input_shape), dtype, name="x")

    @tf.function(input_signature=[spec], autograph=False)
    def serve(x):
        tree = jax.tree_util.tree_unflatten(treedef, list(module.funcdl_variables))
        return {"output": converted(tree, x)}
    module.serve = serve
    return module


def to_saved_model(model: Any, variables: Any, path: str | Path, input_shape: Sequence[int],
                   batch_size: int | None = None, platforms: Sequence[str] | None = None) -> Path:
    """Export ``model`` with ``variables`` as a TensorFlow SavedModel folder, atomically.

    Args:
      model: a funcdl layer or Sequential.
      variables: its ``{'params': ..., 'batch_stats': ...}``; each tensor becomes a ``tf.Variable``.
      path: the SavedModel folder to write (replaced only once the new one is complete).
      input_shape: one example's shape without the batch axis (NHWC images).
      batch_size: None for a symbolic batch axis, or a fixed batch size.
      platforms: jax lowering platforms, e.g. ``("cpu", "cuda")``; None is jax's default backend.
    Returns:
      the path written.
    """
    tf = frameworks.tensorflow()
    input_shape = tuple(int(d) for d in input_shape)
    sample = jax.ShapeDtypeStruct((batch_size or 1,) + input_shape, nn.input_dtype(model))
    jax.eval_shape(lambda v, x: model.apply(v, x), variables, sample)  # ShapeError now, before anything exists
    module = _module(tf, model, variables, input_shape, batch_size, platforms)
    concrete = module.serve.get_concrete_function()  # traces and lowers before the folder exists
    with atomic_path(path, folder=True) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": concrete})
    return Path(path)


def load_saved_model_outputs(path: str | Path, x: Any) -> np.ndarray:
    """Run a SavedModel written by ``to_saved_model`` on ``x`` in plain TensorFlow; returns a numpy array."""
    tf = frameworks.tensorflow()
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileFormatError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["x"]
    return np.asarray(serve(x=tf.constant(np.asarray(x), dtype=spec.dtype))["output"])
