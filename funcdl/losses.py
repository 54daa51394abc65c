"""Loss functions as pure jax functions, with PyTorch's and Keras' conventions.

Every loss has the signature ``loss(predictions, targets, **options)`` and
returns one loss per example, shape ``(B,)``: no batch reduction is done here,
so the training loop can take a masked mean that leaves out padded examples.
The plain batch mean of that vector equals the framework's default reduction
(torch ``reduction='mean'``, or ``'batchmean'`` for KL; keras
``sum_over_batch_size``). Where an example has more than one element (for
instance a sequence of tokens), the per-example value is the mean over its
elements, so that the batch mean is still the mean over all elements.

Shape checks are static, so they also work under ``jax.jit``; label ranges
(``0 <= label < C``, probabilities within ``[0, 1]``) cannot be checked under
jit and are left to the caller.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from funcdl.errors import ConfigError, ShapeError, choices_message

# keras.backend.epsilon(): the clipping bound of keras' probability losses.
KERAS_EPSILON = 1e-7
# torch.nn.functional.binary_cross_entropy clamps each log term at -100.
TORCH_LOG_CLAMP = -100.0

CONVENTIONS = ("keras", "torch")
LABEL_KINDS = ("integer", "one_hot", "dense")


# --------------------------------------------------------------------------
# Helpers


def _label_kind(kind):
    """Decorator recording which kind of targets a loss expects."""

    def mark(fn):
        fn.label_kind = kind
        return fn

    return mark


def _floating(x):
    """``x`` as a jax array with a floating dtype (integers become float32)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _shape_error(loss, expected, actual):
    return ShapeError(f"loss {loss}: expected {expected}, got {actual}")


def _same_shape(loss, predictions, targets):
    """Checks predictions and targets have one shape (no silent broadcasting).

    Returns both as arrays, targets cast to the predictions' floating dtype.
    """
    predictions = _floating(predictions)
    targets = jnp.asarray(targets)
    if predictions.ndim < 1:
        raise _shape_error(loss, "predictions of rank >= 1 (batch first)",
                           f"shape {predictions.shape}")
    if targets.shape != predictions.shape:
        raise _shape_error(loss, f"targets of shape {predictions.shape} like the predictions",
                           f"targets of shape {targets.shape}")
    return predictions, targets.astype(predictions.dtype)


def _check_convention(loss, convention):
    if convention not in CONVENTIONS:
        raise ConfigError(f"loss {loss}: " + choices_message("convention", convention, CONVENTIONS))


def _mean_per_example(x):
    """Mean over every axis but the first: shape (B, ...) -> (B,)."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _sum_per_example(x):
    """Sum over every axis but the first: shape (B, ...) -> (B,)."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def _is_zero(value):
    # A Python zero takes the fast path; anything else (maybe traced) does not.
    return isinstance(value, (int, float)) and value == 0


def _safe_log(x, where):
    """log(x) where ``where`` holds, else -inf; its gradient is 0 (not nan) elsewhere."""
    return jnp.where(where, jnp.log(jnp.where(where, x, 1.0)), -jnp.inf)


# --------------------------------------------------------------------------
# Regression losses


@_label_kind("dense")
def l1(predictions: Any, targets: Any) -> jax.Array:
    """Mean absolute error per example.

    Args:
      predictions: (B, ...) floats.
      targets: same shape as predictions.

    Returns:
      (B,) mean over the non-batch axes of ``|predictions - targets|``.
      Batch mean matches torch ``F.l1_loss`` and keras ``MeanAbsoluteError``.
    """
    predictions, targets = _same_shape("l1", predictions, targets)
    return _mean_per_example(jnp.abs(predictions - targets))


@_label_kind("dense")
def mse(predictions: Any, targets: Any) -> jax.Array:
    """Mean squared error per example.

    Args:
      predictions: (B, ...) floats.
      targets: same shape as predictions.

    Returns:
      (B,) mean over the non-batch axes of ``(predictions - targets)**2``.
      Batch mean matches torch ``F.mse_loss`` and keras ``MeanSquaredError``.
    """
    predictions, targets = _same_shape("mse", predictions, targets)
    return _mean_per_example(jnp.square(predictions - targets))


@_label_kind("dense")
def huber(predictions: Any, targets: Any, delta: float = 1.0) -> jax.Array:
    """Huber loss per example: quadratic within ``delta``, linear outside.

    Args:
      predictions: (B, ...) floats.
      targets: same shape as predictions.
      delta: where the loss changes from quadratic to linear.

    Returns:
      (B,) mean over the non-batch axes of the elementwise Huber loss.
      Matches torch ``F.huber_loss(delta=...)`` and keras ``Huber(delta=...)``
      (not torch ``smooth_l1_loss``, which is this divided by ``beta``).
    """
    predictions, targets = _same_shape("huber", predictions, targets)
    return _mean_per_example(optax.huber_loss(predictions, targets, delta=delta))


# --------------------------------------------------------------------------
# Classification losses with integer labels


def _check_integer_labels(loss, logits, labels, min_rank):
    """Checks logits (B, ..., C) against integer labels (B, ...)."""
    if logits.ndim < min_rank:
        raise _shape_error(loss, f"predictions of rank >= {min_rank} (B, ..., C)",
                           f"shape {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise _shape_error(loss, f"labels of shape {logits.shape[:-1]} for predictions "
                           f"{logits.shape}", f"labels of shape {labels.shape}")


@_label_kind("integer")
def cross_entropy(logits: Any, labels: Any, label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy from logits and integer class labels (PyTorch).

    Args:
      logits: (B, C) unnormalised scores.
      labels: (B,) integer class indices in ``[0, C)`` (not checked under jit;
        torch's ``ignore_index`` is not supported: mask those examples out).
      label_smoothing: torch's smoothing: the target is
        ``(1 - s) * one_hot + s / C``.

    Returns:
      (B,) losses: torch ``F.cross_entropy(..., reduction='none')``; their mean
      is torch's default ``reduction='mean'``.
    """
    logits = _floating(logits)
    labels = jnp.asarray(labels)
    if logits.ndim != 2:
        raise _shape_error("cross_entropy", "logits of shape (B, C)", f"shape {logits.shape}")
    _check_integer_labels("cross_entropy", logits, labels, 2)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ShapeError(f"loss cross_entropy: expected integer labels, got dtype {labels.dtype}")
    if _is_zero(label_smoothing):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    # torch: (1 - s) * nll + s * (mean over classes of -log p).
    uniform = -jnp.mean(log_probs, axis=-1)
    return (1.0 - label_smoothing) * nll + label_smoothing * uniform


@_label_kind("integer")
def sparse_categorical_crossentropy(predictions: Any, labels: Any,
                                    from_logits: bool = False) -> jax.Array:
    """Categorical cross-entropy with integer labels (Keras).

    Args:
      predictions: (B, ..., C) probabilities, or logits with ``from_logits``.
      labels: (B, ...) integer class indices (a trailing axis of size 1 is
        squeezed and float labels are truncated to integers, as keras does).
      from_logits: whether predictions are logits.

    Returns:
      (B,) losses, the mean over the non-class axes of keras
      ``sparse_categorical_crossentropy``. Probabilities are clipped to
      ``[1e-7, 1 - 1e-7]`` and renormalised through a softmax of their logs,
      exactly as keras' TensorFlow backend does.
    """
    predictions = _floating(predictions)
    labels = jnp.asarray(labels)
    if labels.ndim == predictions.ndim and labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    _check_integer_labels("sparse_categorical_crossentropy", predictions, labels, 2)
    labels = labels.astype(jnp.int32)
    if not from_logits:
        # keras: log(clip(p)) is fed to softmax cross-entropy, which
        # renormalises the clipped probabilities.
        predictions = jnp.log(jnp.clip(predictions, KERAS_EPSILON, 1.0 - KERAS_EPSILON))
    losses = optax.softmax_cross_entropy_with_integer_labels(predictions, labels)
    return _mean_per_example(losses)


# --------------------------------------------------------------------------
# Classification losses with one-hot or probability targets


def _check_distributions(loss, predictions, targets):
    predictions, targets = _same_shape(loss, predictions, targets)
    if predictions.ndim < 2:
        raise _shape_error(loss, "predictions of rank >= 2 (B, ..., C)",
                           f"shape {predictions.shape}")
    return predictions, targets


@_label_kind("one_hot")
def categorical_crossentropy(predictions: Any, one_hot_targets: Any, from_logits: bool = False,
                             label_smoothing: float = 0.0) -> jax.Array:
    """Categorical cross-entropy with one-hot (or probability) targets (Keras).

    Args:
      predictions: (B, ..., C) probabilities, or logits with ``from_logits``.
      one_hot_targets: same shape, one-hot or probability targets.
      from_logits: whether predictions are logits.
      label_smoothing: keras' smoothing: targets become ``t * (1 - s) + s / C``.

    Returns:
      (B,) losses, the mean over the non-class axes of keras
      ``categorical_crossentropy``. Probabilities are divided by their sum and
      then clipped to ``[1e-7, 1 - 1e-7]``, as keras' TensorFlow backend does.
    """
    predictions, targets = _check_distributions(
        "categorical_crossentropy", predictions, one_hot_targets)
    if not _is_zero(label_smoothing):
        targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[-1]
    if from_logits:
        losses = optax.softmax_cross_entropy(predictions, targets)
    else:
        probs = predictions / jnp.sum(predictions, axis=-1, keepdims=True)
        probs = jnp.clip(probs, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        losses = -jnp.sum(targets * jnp.log(probs), axis=-1)
    return _mean_per_example(losses)


@_label_kind("one_hot")
def kl_divergence(predictions: Any, targets: Any, convention: str = "keras") -> jax.Array:
    """Kullback-Leibler divergence KL(targets || predictions) per example.

    Args:
      predictions: (B, ..., C). With ``convention="keras"``: probabilities.
        With ``convention="torch"``: LOG-probabilities (as torch ``kl_div``'s
        ``input``), e.g. the output of ``jax.nn.log_softmax``.
      targets: same shape, probabilities (never log-probabilities).
      convention: "keras" or "torch".

    Returns:
      (B,) losses.
      keras: both clipped to ``[1e-7, 1]``, ``sum(t * log(t / p))`` over the
        last axis, then the mean over any other non-batch axes; batch mean is
        keras ``KLDivergence()``.
      torch: ``sum(t * (log t - input))`` over all non-batch axes, with 0 where
        ``t == 0``; batch mean is torch
        ``F.kl_div(input, target, reduction='batchmean')``.
    """
    _check_convention("kl_divergence", convention)
    predictions, targets = _check_distributions("kl_divergence", predictions, targets)
    if convention == "keras":
        targets = jnp.clip(targets, KERAS_EPSILON, 1.0)
        predictions = jnp.clip(predictions, KERAS_EPSILON, 1.0)
        return _mean_per_example(jnp.sum(targets * jnp.log(targets / predictions), axis=-1))
    positive = targets > 0
    pointwise = targets * (_safe_log(targets, positive) - predictions)
    # 0 where t == 0, even when the log-probability there is -inf.
    return _sum_per_example(jnp.where(positive, pointwise, 0.0))


# --------------------------------------------------------------------------
# Binary losses


@_label_kind("dense")
def binary_crossentropy_with_logits(logits: Any, targets: Any) -> jax.Array:
    """Numerically stable binary cross-entropy from logits per example.

    Args:
      logits: (B, ...) unnormalised scores.
      targets: same shape, targets in ``[0, 1]`` (soft targets allowed).

    Returns:
      (B,) mean over the non-batch axes. Matches torch
      ``F.binary_cross_entropy_with_logits`` and keras
      ``binary_crossentropy(from_logits=True)``, which agree.
    """
    logits, targets = _same_shape("binary_crossentropy_with_logits", logits, targets)
    return _mean_per_example(optax.sigmoid_binary_cross_entropy(logits, targets))


@_label_kind("dense")
def binary_crossentropy(probabilities: Any, targets: Any, convention: str = "keras",
                        from_logits: bool = False) -> jax.Array:
    """Binary cross-entropy from probabilities per example.

    Args:
      probabilities: (B, ...) probabilities in ``[0, 1]`` (logits with
        ``from_logits=True``, which is ``binary_crossentropy_with_logits``).
      targets: same shape, targets in ``[0, 1]``.
      convention: "keras" clips probabilities to ``[1e-7, 1 - 1e-7]`` (keras
        ``BinaryCrossentropy``); "torch" clamps each log term at -100 (torch
        ``F.binary_cross_entropy``). They differ only near 0 and 1.
      from_logits: whether the first argument holds logits (keras' option).

    Returns:
      (B,) mean over the non-batch axes.
    """
    _check_convention("binary_crossentropy", convention)
    if from_logits:
        return binary_crossentropy_with_logits(probabilities, targets)
    p, t = _same_shape("binary_crossentropy", probabilities, targets)
    if convention == "keras":
        p = jnp.clip(p, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
        losses = -(t * jnp.log(p) + (1.0 - t) * jnp.log(1.0 - p))
    else:
        # Guarded logs: a probability of exactly 0 or 1 gives -100, not -inf,
        # and a zero gradient rather than nan.
        log_p = jnp.maximum(_safe_log(p, p > 0), TORCH_LOG_CLAMP)
        q = jnp.where(p < 1, p, 0.0)
        log_not_p = jnp.where(p < 1, jnp.maximum(jnp.log1p(-q), TORCH_LOG_CLAMP),
                              TORCH_LOG_CLAMP)
        losses = -(t * log_p + (1.0 - t) * log_not_p)
    return _mean_per_example(losses)


# Module-level aliases (the same function objects).
mae = mean_absolute_error = l1
mean_squared_error = mse
kld = kl_divergence
bce_with_logits = binary_crossentropy_with_logits


# --------------------------------------------------------------------------
# Registry

_LOSSES = {
    "l1": l1,
    "mse": mse,
    "huber": huber,
    "cross_entropy": cross_entropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "kl_divergence": kl_divergence,
    "binary_crossentropy": binary_crossentropy,
    "binary_crossentropy_with_logits": binary_crossentropy_with_logits,
}

NAMES = tuple(_LOSSES)

# Alias -> (canonical name, options bound by the alias). Matched lower-cased,
# so keras' and torch's class names work too ("MeanSquaredError", "MSELoss").
# Torch's names for probability losses bind torch's convention: with "kl_div"
# the predictions are log-probabilities, as in torch.
_ALIASES = {
    "mae": ("l1", {}),
    "mean_absolute_error": ("l1", {}),
    "meanabsoluteerror": ("l1", {}),
    "l1_loss": ("l1", {}),
    "l1loss": ("l1", {}),
    "mean_squared_error": ("mse", {}),
    "meansquarederror": ("mse", {}),
    "mse_loss": ("mse", {}),
    "mseloss": ("mse", {}),
    "huber_loss": ("huber", {}),
    "huberloss": ("huber", {}),
    "crossentropyloss": ("cross_entropy", {}),
    "sparsecategoricalcrossentropy": ("sparse_categorical_crossentropy", {}),
    "categoricalcrossentropy": ("categorical_crossentropy", {}),
    "kld": ("kl_divergence", {}),
    "kldivergence": ("kl_divergence", {}),
    "kullback_leibler_divergence": ("kl_divergence", {}),
    "kl_div": ("kl_divergence", {"convention": "torch"}),
    "kldivloss": ("kl_divergence", {"convention": "torch"}),
    "binarycrossentropy": ("binary_crossentropy", {}),
    "binary_cross_entropy": ("binary_crossentropy", {"convention": "torch"}),
    "bceloss": ("binary_crossentropy", {"convention": "torch"}),
    "bce_with_logits": ("binary_crossentropy_with_logits", {}),
    "binary_cross_entropy_with_logits": ("binary_crossentropy_with_logits", {}),
    "bcewithlogitsloss": ("binary_crossentropy_with_logits", {}),
}


def get(name: str | Callable) -> Callable:
    """The loss function for a name, alias or callable.

    Args:
      name: a canonical name (see ``NAMES``), a keras- or torch-style alias
        (case-insensitive, e.g. "mean_squared_error", "MSELoss", "kl_div"), or a
        callable, which is returned as is. "kl_div", "KLDivLoss",
        "binary_cross_entropy" and "BCELoss" return the loss with
        ``convention="torch"`` bound (so "kl_div" expects log-probabilities).

    Returns:
      A callable ``loss(predictions, targets, **options) -> (B,)``.

    Raises:
      ConfigError: for an unknown name; the message lists the choices.
    """
    if callable(name):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key in _LOSSES:
        return _LOSSES[key]
    if key in _ALIASES:
        canonical, options = _ALIASES[key]
        fn = _LOSSES[canonical]
        if not options:
            return fn
        bound = functools.partial(fn, **options)
        bound.__name__ = canonical  # type: ignore[attr-defined]
        bound.__doc__ = fn.__doc__
        bound.label_kind = fn.label_kind  # type: ignore[attr-defined]
        return bound
    raise ConfigError(choices_message("loss", name, NAMES))


def label_kind(name_or_fn: str | Callable) -> str:
    """Which targets a loss expects: "integer", "one_hot" or "dense".

    Args:
      name_or_fn: anything ``get`` accepts. A callable of your own may carry a
        ``label_kind`` attribute; without one it is taken to be "dense".

    Returns:
      "integer" (class indices, shape (B,)) for cross_entropy and
      sparse_categorical_crossentropy; "one_hot" (shape (B, C)) for
      categorical_crossentropy and kl_divergence; "dense" (targets shaped like
      the predictions) for regression and binary losses.
    """
    fn = get(name_or_fn)
    while True:
        kind = getattr(fn, "label_kind", None)
        if kind is not None:
            break
        if not isinstance(fn, functools.partial):
            return "dense"
        fn = fn.func
    if kind not in LABEL_KINDS:
        raise ConfigError(choices_message("label kind", kind, LABEL_KINDS))
    return kind


def binary_threshold(name_or_fn: str | Callable) -> float | None:
    """The decision threshold of a binary loss's outputs, for accuracy: 0 for logits, 0.5 for probabilities.

    Args:
      name_or_fn: anything ``get`` accepts (partials of funcdl's losses are unwrapped).

    Returns:
      0.0 for ``binary_crossentropy_with_logits`` and ``binary_crossentropy(from_logits=True)``, 0.5 for
      ``binary_crossentropy``, None for every other loss (not a binary task).
    """
    fn, options = get(name_or_fn), dict[str, Any]()
    while isinstance(fn, functools.partial):
        options = {**fn.keywords, **options}
        fn = fn.func
    if fn is binary_crossentropy_with_logits or (fn is binary_crossentropy and options.get("from_logits")):
        return 0.0
    return 0.5 if fn is binary_crossentropy else None
