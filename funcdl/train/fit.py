"""``fit``, ``evaluate`` and ``predict``: the Keras-style API over funcdl's compiled epochs.

``fit`` checks its input, builds the epoch program (``funcdl.train.program``)
and hands it to the loop every training run shares (``funcdl.train.loop``);
everything it returns is in the :class:`~funcdl.train.history.History`.
"""
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcdl import losses as losses_lib
from funcdl import optim as optim_lib
from funcdl.errors import ConfigError, DataError, NonFiniteError
from funcdl.train import checkpoint, parallel
from funcdl.train import precision as precision_lib
from funcdl.train.callbacks import Callback
from funcdl.train.checks import as_arrays, check_batch_size, check_data, check_epochs, check_model_fits, init_variables
from funcdl.train.epoch import TrainEpoch, epoch_key, make_eval, make_predict, split_seed
from funcdl.train.history import History
from funcdl.train.loop import check_callbacks, run_epochs
from funcdl.train.objective import resolve as resolve_loss
from funcdl.train.program import EpochBuilder, build_epoch, choose_loop, eager_context
from funcdl.train.step import StepMetrics, TrainState


def fit(model: Any, x: Any, y: Any = None, *, batch_size: int = 32, epochs: int = 1,
        loss: str | Callable = "cross_entropy", optimizer: str | optax.GradientTransformation = "adam",
        verbose: bool = True, callbacks: Sequence[Callback] = (), validation_data: Any = None,
        shuffle: bool = True, seed: int = 0, variables: Any = None, resume: Any = None,
        eval_batch_size: int = 1024, skip_nonfinite: bool = False, eager: bool = False, loop: str = "auto",
        data_parallel: bool = False, precision: str = "fp32") -> History:
    """Train ``model`` on ``(x, y)``; each epoch is one compiled XLA program.

    Args:
      model: a funcdl layer (e.g. ``fd.nn.Sequential`` or a zoo model).
      x, y: training inputs (N, ...) and targets (N, ...), numpy arrays; or ``x`` alone as an
        ``(x, y)`` pair or a ``funcdl.data.ArrayDataset``. Images NHWC.
      batch_size, epochs: as in Keras; the last partial batch is padded and masked.
      loss: a loss name from ``funcdl.losses`` or a function ``(outputs, targets) -> (B,)``. A named loss is
        matched to the model's last layer (``from_logits`` from it; see ``funcdl.train.objective``).
      optimizer: an optax GradientTransformation (e.g. ``fd.optim.adam(1e-3)``) or a name.
      verbose: show a progress bar.
      callbacks: ``fd.callbacks.Callback`` objects (``EarlyStopping``, ``ModelCheckpoint``, monitors).
      validation_data: ``(x, y)`` evaluated after every epoch (``val_loss``, ``val_accuracy``).
      shuffle: reshuffle the examples every epoch.
      seed: initialisation, shuffling and dropout all derive from it (``funcdl.train.split_seed``).
      variables: start from these instead of a fresh ``model.init``.
      resume: a checkpoint folder written by ``ModelCheckpoint``: continue that run.
      eval_batch_size: batch size of the validation pass.
      skip_nonfinite: skip batches with a non-finite loss/gradient instead of stopping.
      eager: run the very same step op by op under ``jax.disable_jit()``.
      loop: how an epoch runs. ``'scan'``: the whole epoch is one XLA program (``lax.scan`` over
        the batches). ``'steps'``: the same epoch as one compiled call per step. ``'auto'``
        (default): ``'scan'``, except on the CPU for a model whose forward pass holds an XLA
        convolution (a user layer calling ``lax.conv_general_dilated``; funcdl's ``Conv2D`` uses
        matrix products there): XLA:CPU runs convolutions inside a loop several times slower than
        outside one. ``History.loop`` says which ran.
      data_parallel: split every batch over all devices (``batch_size`` must divide by their
        count); in a multi-process run each process passes its own shard (see ``funcdl.train.parallel``).
      precision: ``'fp32'`` or ``'bf16'`` (compute in bfloat16, float32 parameters; see
        ``funcdl.train.precision``).
    Returns:
      History with per-epoch logs, timings, and the final ``state`` (``variables``, ``opt_state``).
    Raises:
      FuncdlError subclasses for bad input; NonFiniteError (holding the last good variables).
    """
    objective = resolve_loss(loss, model)
    loss_fn, label_kind = objective.loss_fn, objective.label_kind
    optimizer = optim_lib.get(optimizer, 1e-3) if isinstance(optimizer, str) else optimizer
    model = precision_lib.apply_policy(model, precision)
    x, y = check_data(*as_arrays(x, y), label_kind)
    check_batch_size(batch_size, len(x))
    check_epochs(epochs)
    callbacks = check_callbacks(callbacks)
    init_key, train_key = split_seed(seed)
    variables = init_variables(model, init_key, x) if variables is None else variables
    check_model_fits(model, variables, x, y, label_kind)
    state, history = TrainState.create(variables, optimizer), History(seed=seed)
    if resume is not None:
        state, history = checkpoint.restore(resume, state, seed)
    history.loss = objective.description
    validate = None if validation_data is None else _evaluator(
        model, loss_fn, label_kind, validation_data, eval_batch_size, eager, state.variables, "validation data")
    mesh = _data_mesh(batch_size, eager) if data_parallel else None
    history.loop = choose_loop(loop, model, state.variables, x, eager, mesh is not None)
    state, data, train_key, validate = _place(mesh, state, x, y, train_key, validate)
    builder = EpochBuilder(model, loss_fn, optimizer, batch_size, shuffle, history.loop, eager, mesh)
    epoch, history.compile_seconds = build_epoch(builder, skip_nonfinite, state, *data, train_key)
    fit_epochs = FitEpochs(epoch, data, train_key, eager, validate, skip_nonfinite)
    history.state = run_epochs(fit_epochs, state, history, epochs, callbacks, verbose)
    return history


def _data_mesh(batch_size, eager):
    if eager:
        raise ConfigError("data_parallel runs compiled programs; it cannot be combined with eager")
    return parallel.data_mesh(batch_size)


def _place(mesh: Any, state: TrainState, x: np.ndarray, y: np.ndarray, train_key: jax.Array,
           validate: Callable | None) -> tuple[TrainState, tuple[Any, Any], jax.Array, Callable | None]:
    """(state, data, train_key, validate) on the device, or over ``mesh`` (state replicated, batches split)."""
    if mesh is None:
        return state, (jnp.asarray(x), jnp.asarray(y)), train_key, validate
    state, data, train_key = parallel.place(mesh, state, x, y, train_key)
    return state, data, train_key, None if validate is None else parallel.on_host(validate)


class FitEpochs:
    """``fit``'s epochs for the shared loop: the epoch program on the placed data, logs with validation.

    Args:
      epoch: ``epoch(state, x, y, key) -> (state, StepMetrics)`` (``funcdl.train.program.build_epoch``).
      data: the (placed) training arrays ``(x, y)``.
      train_key: the run's training key; epoch ``e`` runs on ``epoch_key(train_key, e)``.
      validate: ``variables -> {'loss', 'accuracy', ...}``, or None.
      skip_nonfinite: count skipped steps instead of raising NonFiniteError.
    """

    def __init__(self, epoch: TrainEpoch, data: tuple[Any, Any], train_key: jax.Array, eager: bool,
                 validate: Callable | None, skip_nonfinite: bool):
        self.epoch, self.data, self.train_key, self.eager = epoch, data, train_key, eager
        self.validate, self.skip_nonfinite = validate, skip_nonfinite

    def prepare(self, epoch: int) -> jax.Array:
        return epoch_key(self.train_key, epoch)

    def run(self, state: TrainState, key: jax.Array) -> tuple[TrainState, StepMetrics]:
        with eager_context(self.eager):
            return self.epoch(state, *self.data, key)

    def logs(self, epoch: int, before: TrainState, state: TrainState, metrics: StepMetrics,
             history: History) -> dict[str, float]:
        finite = np.asarray(metrics.finite)
        if not finite.all() and self.skip_nonfinite:
            history.skipped_steps += int((~finite).sum())
        elif not finite.all():
            batch = int(np.argmin(finite))
            step = int(before.step) + batch
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step} (epoch {epoch + 1}, batch {batch + 1}); training "
                "stopped and the last good parameters were kept; lower the learning rate or skip such batches "
                "(skip_nonfinite=True / --skip-nonfinite)", step=step, variables=state.variables,
                opt_state=state.opt_state)
        logs = epoch_logs(metrics)
        if self.validate is not None:
            result = self.validate(state.variables)
            logs.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
        return logs


def epoch_logs(metrics: StepMetrics) -> dict[str, float]:
    """``{'loss', 'accuracy'}`` of an epoch from its per-step metrics (non-finite steps left out)."""
    count = np.asarray(metrics.count)
    ok = np.asarray(metrics.finite)
    total = max(float(count[ok].sum()), 1.0)
    return {"loss": float((np.asarray(metrics.loss)[ok] * count[ok]).sum() / total),
            "accuracy": float(np.asarray(metrics.correct)[ok].sum() / total)}


def _evaluator(model, loss_fn, label_kind, data, batch_size, eager, variables, what):
    """``variables -> {'loss', 'accuracy', 'predicted', 'labels'}`` over ``data``, compiled once."""
    check_batch_size(batch_size)
    x, y = check_data(*as_arrays(data, what=what), label_kind, what)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    fn = make_eval(model, loss_fn, min(batch_size, len(x)))
    fn = fn if eager else jax.jit(fn).lower(variables, xd, yd).compile()

    def evaluate(variables):
        with eager_context(eager):
            loss_sum, correct, predicted = fn(variables, xd, yd)
        return {"loss": float(loss_sum) / len(x), "accuracy": float(correct) / len(x),
                "predicted": np.asarray(predicted), "labels": y}
    return evaluate


def evaluate(model: Any, variables: Any, data: Any, *, loss: str | Callable = "cross_entropy",
             batch_size: int = 1024, eager: bool = False) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix of ``model`` on ``data`` (an ``(x, y)`` pair or an ArrayDataset).

    Returns:
      ``{'loss': float, 'accuracy': float, 'confusion_matrix': (K, K) int array or None}``;
      rows are true classes, columns predicted classes.
    """
    objective = resolve_loss(loss, model)
    loss_fn, label_kind = objective.loss_fn, objective.label_kind
    x, y = check_data(*as_arrays(data, what="evaluation data"), label_kind, "evaluation data")
    check_model_fits(model, variables, x, y, label_kind)
    result = _evaluator(model, loss_fn, label_kind, (x, y), batch_size, eager, variables,
                        "evaluation data")(variables)
    binary = losses_lib.binary_threshold(loss_fn) is not None and y.shape[1:] == (1,)
    return {"loss": result["loss"], "accuracy": result["accuracy"],
            "confusion_matrix": _confusion_matrix(result, label_kind, binary)}


def _confusion_matrix(result, label_kind, binary):
    """(K, K) counts, rows true classes, columns predicted; None for targets that are not classes."""
    if label_kind == "integer":
        labels = result["labels"]
    elif label_kind == "one_hot":
        labels = np.argmax(result["labels"], -1)
    elif binary:  # one binary output (B, 1): classes 0 and 1
        labels = (result["labels"][:, 0] > 0.5).astype(np.int32)
    else:
        return None
    classes = int(max(labels.max(), result["predicted"].max())) + 1
    matrix = np.bincount(labels * classes + result["predicted"], minlength=classes * classes)
    return matrix.reshape(classes, classes)


def predict(model: Any, variables: Any, x: Any, *, batch_size: int = 1024) -> np.ndarray:
    """Model outputs (N, ...) for every example of ``x`` (inference mode), batched under one compiled call."""
    check_batch_size(batch_size)
    x = np.asarray(x, np.float32) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise DataError("predict needs at least one example")
    return np.asarray(jax.jit(make_predict(model, min(batch_size, len(x))))(variables, jnp.asarray(x)))
