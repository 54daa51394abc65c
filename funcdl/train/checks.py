"""Checks run on the host before training, so bad input fails with one clear line."""
import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl.data import ArrayDataset, check_class_labels
from funcdl.errors import ConfigError, DataError, OutOfMemoryError, ShapeError


def as_arrays(x: Any, y: Any = None, what: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) numpy arrays from ``x, y``, or from ``x`` alone when it is an ``(x, y)`` pair or an ArrayDataset."""
    if y is None:
        if isinstance(x, ArrayDataset):
            x, y = x.x, x.y
        elif isinstance(x, (tuple, list)) and len(x) == 2:
            x, y = x
        else:
            raise DataError(f"{what} must be x and y arrays, an (x, y) pair or a funcdl.data.ArrayDataset, "
                            f"got {type(x).__name__} alone")
    return np.asarray(x), np.asarray(y)


def check_data(x: np.ndarray, y: np.ndarray, label_kind: str,
               what: str = "training data") -> tuple[np.ndarray, np.ndarray]:
    """Validate lengths, emptiness, dtypes, finiteness and labels; return (x, y) cast for training.

    Args:
      label_kind: 'integer', 'one_hot' or 'dense' (from ``losses.label_kind``).
    """
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{what} is empty; it needs at least one example")
    if y.ndim == 0 or len(x) != len(y):
        raise DataError(f"{what}: x has {len(x)} examples but y has {len(y) if y.ndim else 0}; they must match")
    if x.dtype.kind not in "biuf":  # complex numbers pass np.number but no layer takes them
        raise DataError(f"{what}: x has dtype {x.dtype}; it must be numeric (bool, integer or float)")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argwhere(bad.reshape(len(x), -1).any(1))[0, 0])
            raise DataError(f"{what}: x contains {int(bad.sum())} NaN/inf values (first in example {first}); "
                            "clean or impute them before training")
        x = x.astype(np.float32, copy=False)
    if label_kind == "integer":
        if y.ndim != 1:
            raise DataError(f"{what}: this loss takes integer class labels of shape (N,), got shape {y.shape}; "
                            "use a one-hot loss such as categorical_crossentropy for one-hot targets")
        return x, check_class_labels(y, what=what)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{what}: y has dtype {y.dtype}; it must be numeric")
    y = y.astype(np.float32, copy=False)
    if not np.isfinite(y).all():
        raise DataError(f"{what}: y contains NaN/inf values; clean them before training")
    return x, y


def check_batch_size(batch_size: int, num_examples: int | None = None) -> None:
    """Raise ConfigError unless 1 <= batch_size (<= num_examples, when given)."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_examples is not None and batch_size > num_examples:
        raise ConfigError(f"batch_size {batch_size} is larger than the {num_examples} training examples; "
                          f"use at most {num_examples}")


def check_epochs(epochs: int) -> None:
    """Raise ConfigError unless ``epochs`` is an integer >= 0 (0 compiles and returns the initial state)."""
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0, got {epochs!r}")


def check_one_input(model: Any) -> None:
    """ConfigError for a graph with several inputs, which ``fit``, ``evaluate`` and ``predict`` cannot feed."""
    specs = nn.input_specs(getattr(model, "model", model))  # a precision policy wraps the model as .model
    if specs is not None and len(specs) > 1:
        raise ConfigError(f"fit, evaluate and predict feed models with one input; this graph takes "
                          f"{len(specs)} ({', '.join(spec.name or '?' for spec in specs)}): train it with "
                          "funcdl.train.make_train_step and a loss of your own")


def init_variables(model: Any, key: jax.Array, x: np.ndarray) -> Any:
    """``model.init`` on the first example of ``x``; ShapeError when the input does not fit the model."""
    check_one_input(model)
    with nn.shape_errors(x.shape[1:]):
        return model.init(key, jnp.asarray(x[:1]))


def check_model_fits(model: Any, variables: Any, x: np.ndarray, y: np.ndarray, label_kind: str,
                     what: str = "") -> Any:
    """Run the model abstractly on one example; check its output against the labels.

    Raises ShapeError naming the problem when the input does not fit the model
    or the model's outputs cannot be scored against ``y`` (DataError for class labels past its outputs;
    ``what`` names the data in that message, e.g. ``'validation data'``).

    Returns:
      the ShapeDtypeStruct of the model's output for one example (batch axis 1).
    """
    check_one_input(model)
    sample = jax.ShapeDtypeStruct((1,) + x.shape[1:], jnp.asarray(x[:1]).dtype)
    with nn.shape_errors(x.shape[1:]):
        out = jax.eval_shape(lambda v, s: model.apply(v, s), variables, sample)
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ConfigError(f"fit and evaluate score models with one output; this one returns "
                          f"{nn.describe_shape(jax.tree.map(lambda a: tuple(a.shape[1:]), out))} per example: train it "
                          "with funcdl.train.make_train_step and a loss of your own")
    if label_kind == "integer":
        if out.ndim != 2:
            raise ShapeError(f"the model outputs shape {out.shape[1:]} per example; class labels need "
                             "a vector of class scores per example")
        top = int(y.max())
        if top >= out.shape[-1]:
            raise DataError(f"{what + ': ' if what else ''}labels must be integers in [0, {out.shape[-1]}) for a "
                            f"model with {out.shape[-1]} outputs; found max={top}")
    elif out.shape[1:] != y.shape[1:]:
        raise ShapeError(f"the model outputs shape {out.shape[1:]} per example but the targets have "
                         f"shape {y.shape[1:]}")
    return out


_RUNTIME_ERRORS = tuple(error for error in (getattr(jax.errors, "JaxRuntimeError", None),) if error is not None)


@contextlib.contextmanager
def out_of_memory(batch_size: int, what: str = "training") -> Iterator[None]:
    """Turn running out of device or host memory inside the block into one OutOfMemoryError naming the batch size.

    XLA reports it as a runtime error (``RESOURCE_EXHAUSTED`` on GPU and TPU, "Out of memory allocating ..." on
    the CPU), at compile time or while running; numpy as MemoryError.
    """
    try:
        yield
    except MemoryError as err:
        if isinstance(err, OutOfMemoryError):
            raise
        raise _out_of_memory(batch_size, what, str(err) or "host memory") from None
    except _RUNTIME_ERRORS as err:
        message = str(err)
        if "RESOURCE_EXHAUSTED" not in message and "out of memory" not in message.lower():
            raise
        raise _out_of_memory(batch_size, what, message) from None


def _out_of_memory(batch_size, what, message):
    detail = " ".join(message.split())
    detail = detail if len(detail) <= 120 else detail[:117] + "..."
    return OutOfMemoryError(f"out of memory {what} with batch size {batch_size} ({detail}); lower the batch size "
                            "(--batch-size) or free memory on the device")
