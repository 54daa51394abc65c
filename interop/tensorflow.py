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
import contextlib
import errno
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.errors import FileFormatError, ShapeError
from funcdl.io import atomic_path
from funcdl.io.atomic import check_folder
from interop import frameworks


def _path_name(path):
    return "/".join(str(getattr(entry, "key", entry)) for entry in path)


def _inputs(model: Any, input_shape: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    """[(signature name, one example's shape, dtype)] of the model's inputs, in the order ``apply`` takes them.

    One input is ``x``; a Graph's several are named after its inputs ('.' and '-' become '_').
    """
    dtype = nn.input_dtype(model)
    if not isinstance(model, nn.Graph) or len(model.inputs) == 1:
        return [("x", tuple(int(d) for d in input_shape), dtype)]
    shapes = [input_shape[name] for name in model.input_names] if isinstance(input_shape, Mapping) else input_shape
    if len(shapes) != len(model.inputs):
        raise ShapeError(f"the model takes inputs {list(model.input_names)}: give one shape per input, got "
                         f"{input_shape}")
    return [(re.sub(r"[^A-Za-z0-9_]", "_", name), tuple(int(d) for d in shape), kind)
            for name, shape, kind in zip(model.input_names, shapes, dtype)]


def _named_outputs(y: Any) -> dict[str, Any]:
    """The serving signature's outputs: ``output`` for one array, ``output_0``, ... for a tuple, ``output_KEY``
    for a dict."""
    if isinstance(y, (tuple, list)):
        return {f"output_{i}": value for i, value in enumerate(y)}
    if isinstance(y, Mapping):
        return {re.sub(r"[^A-Za-z0-9_]", "_", f"output_{key}"): value for key, value in y.items()}
    return {"output": y}


def _module(tf, model, variables, inputs, batch_size, platforms):
    """A tf.Module holding the variables and a traced ``serve`` function."""
    # imports tensorflow: only once an export runs
    from jax.experimental import jax2tf  # noqa: PLC0415
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    module = tf.Module()
    module.funcdl_variables = [
        tf.Variable(np.asarray(leaf), trainable=_path_name(path).startswith("params/"), name=_path_name(path))
        for path, leaf in leaves]
    several = len(inputs) > 1
    converted = jax2tf.convert(
        lambda v, xs: model.apply(v, xs if several else xs[0]), with_gradient=False,
        polymorphic_shapes=[None, tuple("(b, ...)" for _ in inputs)] if batch_size is None else None,
        native_serialization_platforms=tuple(platforms) if platforms else None)
    specs = [tf.TensorSpec((batch_size,) + shape, tf.int32 if jnp.issubdtype(kind, jnp.integer) else tf.float32,
                           name=name) for name, shape, kind in inputs]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*xs):
        tree = jax.tree_util.tree_unflatten(treedef, list(module.funcdl_variables))
        return _named_outputs(converted(tree, tuple(xs)))
    module.serve = serve
    return module


# what a SavedModel folder holds; the first marks it (an existing folder is replaced only if it is one)
ENTRIES = ("saved_model.pb", "variables", "assets", "assets.extra", "fingerprint.pb", "saved_model.pbtxt",
           "keras_metadata.pb")
METADATA = "assets.extra/funcdl.json"  # assets.extra: TensorFlow's place for files a library keeps beside a model


def to_saved_model(model: Any, variables: Any, path: str | Path, input_shape: Sequence[int],
                   batch_size: int | None = None, platforms: Sequence[str] | None = None,
                   metadata: Mapping[str, str] | None = None, force: bool = False) -> Path:
    """Export ``model`` with ``variables`` as a TensorFlow SavedModel folder, atomically.

    Args:
      model: a funcdl layer or Sequential.
      variables: its ``{'params': ..., 'batch_stats': ...}``; each tensor becomes a ``tf.Variable``.
      path: the SavedModel folder to write. An existing folder is replaced (swapped in one step once the new
        one is complete) only if it is a SavedModel, or empty; one that also holds other files needs ``force``;
        any other folder is refused (``funcdl.io.atomic.check_folder``).
      input_shape: one example's shape without the batch axis (NHWC images).
      batch_size: None for a symbolic batch axis, or a fixed batch size.
      platforms: jax lowering platforms, e.g. ``("cpu", "cuda")``; None is jax's default backend.
      metadata: str -> str entries kept in ``assets.extra/funcdl.json`` (normalisation, dataset, classes).
      force: replace a SavedModel folder that holds other files too.
    Returns:
      the path written.
    """
    check_folder(path, "SavedModel", ENTRIES, force)  # before anything is traced
    with atomic_path(path, folder=True, kind="SavedModel", entries=ENTRIES, force=force) as tmp:
        write_saved_model(tmp, model, variables, input_shape, metadata, batch_size, platforms)
    return Path(path)


def write_saved_model(folder: Path, model: Any, variables: Any, input_shape: Sequence[int],
                      metadata: Mapping[str, str] | None = None, batch_size: int | None = None,
                      platforms: Sequence[str] | None = None) -> bool:
    """Write the SavedModel of ``to_saved_model`` into ``folder``, a new empty folder; returns True (metadata kept).

    TensorFlow's own write errors (a full disk, a file size limit) become OSErrors, which the atomic writer
    reports as one line.
    """
    tf = frameworks.tensorflow()
    inputs = _inputs(model, input_shape)
    samples = tuple(jax.ShapeDtypeStruct((batch_size or 1,) + shape, kind) for _, shape, kind in inputs)
    # a ShapeError now, before anything is written
    jax.eval_shape(lambda v, x: model.apply(v, x), variables, samples if len(samples) > 1 else samples[0])
    module = _module(tf, model, variables, inputs, batch_size, platforms)
    concrete = module.serve.get_concrete_function()  # traces and lowers before anything is written
    try:
        with _native_log_held_back():
            tf.saved_model.save(module, str(folder), signatures={"serving_default": concrete})
    except tf.errors.OpError as err:
        raise _os_error(err, folder) from None
    if metadata:
        (folder / METADATA).parent.mkdir(exist_ok=True)
        (folder / METADATA).write_text(json.dumps(dict(metadata), indent=1))
    return True


@contextlib.contextmanager
def _native_log_held_back() -> Iterator[None]:
    """Hold back what TensorFlow's C++ code writes to stderr (file descriptor 2) while the block runs.

    A failed write is logged there beside the exception TensorFlow raises, which funcdl reports as one line;
    if the block succeeds, what was held back is written out as it would have been.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    succeeded = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if succeeded:
                held.seek(0)
                os.write(2, held.read())


def _os_error(err: Any, folder: Path) -> OSError:
    """The OSError a TensorFlow write error stands for (TensorFlow reports errno as text)."""
    message = (str(getattr(err, "message", "")) or str(err)).strip().splitlines()[0]
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EACCES, errno.EROFS):
        if os.strerror(code).lower() in message.lower():
            return OSError(code, os.strerror(code), str(folder))
    return OSError(errno.EIO, f"TensorFlow could not write the SavedModel: {message[:200]}", str(folder))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata ``to_saved_model`` kept in the SavedModel folder ``path`` (``{}`` when none)."""
    file = Path(path) / METADATA
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise FileFormatError(f"{file} is not a JSON object of strings")
    return data


def load_saved_model_outputs(path: str | Path, x: Any) -> Any:
    """Run a SavedModel written by ``to_saved_model`` on ``x`` in plain TensorFlow.

    Args:
      path: the SavedModel folder.
      x: one batch (an array), or for several inputs a tuple (in input order) or a dict by input name.
    Returns:
      a numpy array; for several outputs a tuple or dict of them, as ``model.apply`` gives.
    """
    tf = frameworks.tensorflow()
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileFormatError(f"{path} is not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    if isinstance(x, Mapping):
        outputs = serve(**{re.sub(r"[^A-Za-z0-9_]", "_", name): tf.constant(np.asarray(value), dtype=specs[
            re.sub(r"[^A-Za-z0-9_]", "_", name)].dtype) for name, value in x.items()})
    else:  # the module's own function keeps the inputs' order (the signature sorts them by name)
        xs = x if isinstance(x, (tuple, list)) else (x,)
        order = loaded.serve.input_signature
        outputs = loaded.serve(*(tf.constant(np.asarray(value), dtype=spec.dtype) for value, spec in zip(xs, order)))
    if set(outputs) == {"output"}:
        return np.asarray(outputs["output"])
    if all(re.fullmatch(r"output_\d+", key) for key in outputs):
        return tuple(np.asarray(outputs[f"output_{i}"]) for i in range(len(outputs)))
    return {key.removeprefix("output_"): np.asarray(value) for key, value in outputs.items()}
