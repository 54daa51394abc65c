"""Checks run on the host before training, so bad input fails with one clear line."""
import jax
import jax.numpy as jnp
import numpy as np

from funcdl.errors import ConfigError, DataError, ShapeError


def as_arrays(data, what="training data"):
    """(x, y) numpy arrays from an ``(x, y)`` pair or an object with ``.x`` / ``.y``."""
    if hasattr(data, "x") and hasattr(data, "y"):
        x, y = data.x, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise DataError(f"{what} must be an (x, y) pair or a funcdl.data.ArrayDataset, got {type(data).__name__}")
    return np.asarray(x), np.asarray(y)


def check_data(x, y, label_kind, what="training data"):
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
        y = _integer_labels(y, what)
    else:
        if not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{what}: y has dtype {y.dtype}; it must be numeric")
        y = y.astype(np.float32, copy=False)
        if not np.isfinite(y).all():
            raise DataError(f"{what}: y contains NaN/inf values; clean them before training")
    return x, y


def _integer_labels(y, what):
    if y.ndim != 1:
        raise DataError(f"{what}: this loss takes integer class labels of shape (N,), got shape {y.shape}; "
                        "use a one-hot loss such as categorical_crossentropy for one-hot targets")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{what}: class labels must be whole numbers, found non-integer values")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: class labels have dtype {y.dtype}; they must be integers")
    if y.size and y.min() < 0:
        raise DataError(f"{what}: labels must be integers >= 0; found min={int(y.min())}")
    return y.astype(np.int32)


def check_batch_size(batch_size, num_examples=None):
    """Raise ConfigError unless 1 <= batch_size (<= num_examples, when given)."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if num_examples is not None and batch_size > num_examples:
        raise ConfigError(f"batch_size {batch_size} is larger than the {num_examples} training examples; "
                          f"use at most {num_examples}")


def check_model_fits(model, variables, x, y, label_kind):
    """Run the model abstractly on one example; check its output against the labels.

    Raises ShapeError naming the problem when the input does not fit the model
    or the model's outputs cannot be scored against ``y``.
    """
    sample = jax.ShapeDtypeStruct((1,) + x.shape[1:], jnp.asarray(x[:1]).dtype)
    try:
        out = jax.eval_shape(lambda v, s: model.apply(v, s), variables, sample)
    except ShapeError:
        raise
    except Exception as err:  # flax / lax raise many types for mismatched shapes
        message = str(err).splitlines()[0]
        raise ShapeError(f"input of shape {tuple(x.shape[1:])} (per example) does not fit the model: {message}") \
            from None
    if label_kind == "integer":
        if out.ndim != 2:
            raise ShapeError(f"the model outputs shape {out.shape[1:]} per example; class labels need "
                             "a vector of class scores per example")
        top = int(y.max())
        if top >= out.shape[-1]:
            raise DataError(f"labels must be integers in [0, {out.shape[-1]}) for a model with "
                            f"{out.shape[-1]} outputs; found max={top}")
    elif out.shape[1:] != y.shape[1:]:
        raise ShapeError(f"the model outputs shape {out.shape[1:]} per example but the targets have "
                         f"shape {y.shape[1:]}")
    return out


def check_epochs(epochs):
    """Raise ConfigError unless ``epochs`` is an integer >= 0 (0 compiles and returns the initial state)."""
    if not isinstance(epochs, (int, np.integer)) or isinstance(epochs, bool) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0, got {epochs!r}")
