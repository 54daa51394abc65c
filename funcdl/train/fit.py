"""``fit``, ``evaluate`` and ``predict``: the Keras-style API over funcdl's compiled epochs.

``fit`` checks its input, builds the epoch program (``funcdl.train.program``)
and hands it to the loop every training run shares (``funcdl.train.loop``);
everything it returns is in the :class:`~funcdl.train.history.History`.
"""
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from funcdl import losses as losses_lib
from funcdl import optim as optim_lib
from funcdl.errors import ConfigError, DataError, NonFiniteError
from funcdl.train import augment as augment_lib
from funcdl.train import checkpoint, parallel
from funcdl.train import precision as precision_lib
from funcdl.train.callbacks import Callback
from funcdl.train.checks import (
    as_arrays,
    check_batch_size,
    check_data,
    check_epochs,
    check_model_fits,
    check_one_input,
    init_variables,
    out_of_memory,
)
from funcdl.train.epoch import epoch_key, make_eval, make_predict, split_seed
from funcdl.train.history import History
from funcdl.train.inputs import BatchSource, split_last, training_source
from funcdl.train.loop import check_callbacks, run_epochs
from funcdl.train.memory import compile_within
from funcdl.train.objective import Objective
from funcdl.train.objective import resolve as resolve_loss
from funcdl.train.program import EpochBuilder, build_epoch, choose_loop, eager_context
from funcdl.train.progress import Progress, check_log_every, logged_step
from funcdl.train.step import StepMetrics, TrainState, TrainStep, apply_model, make_train_step
from funcdl.train.stream import BatchChecks, StreamEpoch, stream_evaluator


def fit(model: Any, x: Any, y: Any = None, *, batch_size: int | None = None, epochs: int = 1,
        loss: str | Callable = "cross_entropy", optimizer: str | optax.GradientTransformation = "adam",
        verbose: bool = True, callbacks: Sequence[Callback] = (), validation_split: float = 0.0,
        validation_data: Any = None, shuffle: bool = True, seed: int = 0, variables: Any = None,
        resume: Any = None, eval_batch_size: int = 1024, skip_nonfinite: bool = False, eager: bool = False,
        loop: str = "auto", data_parallel: bool = False, precision: str = "fp32", augment: Any = False,
        log_every: int | None = None, steps_per_epoch: int | None = None) -> History:
    """Train ``model`` on ``(x, y)``; each epoch is one compiled XLA program (or one compiled step per streamed batch).

    Args:
      model: a funcdl layer (e.g. ``fd.nn.Sequential`` or a zoo model).
      x, y: training inputs (N, ...) and targets (N, ...), numpy arrays; or ``x`` alone as an ``(x, y)`` pair,
        a ``funcdl.data.ArrayDataset``, a ``tf.data.Dataset`` / TFDS split (converted to arrays when it fits
        in memory, else streamed), or an iterable of ``(x, y)`` batches (a generator, a list, a torch
        DataLoader: streamed, one compiled step per batch). See ``funcdl.train.inputs``. Images NHWC.
      batch_size: examples per step (default 32, as Keras); the last partial batch is padded and masked.
        For streamed batches: the size the step is compiled for (default: the first batch's size).
      epochs: as in Keras.
      loss: a loss name from ``funcdl.losses`` or a function ``(outputs, targets) -> (B,)``. A named loss is
        matched to the model's last layer (``from_logits`` from it; see ``funcdl.train.objective``).
      optimizer: an optax GradientTransformation (e.g. ``fd.optim.adam(1e-3)``) or a name.
      verbose: show progress: bars on a terminal, one plain line per epoch otherwise.
      callbacks: ``fd.callbacks.Callback`` objects (``EarlyStopping``, ``ModelCheckpoint``, monitors).
      validation_split: as Keras: hold out the *last* fraction of ``x, y`` (before any shuffling) as
        validation data. Default 0: no validation, as in Keras (``funcdl train`` holds out 10 %, seeded).
        Arrays only; shuffle ordered data first, or split it with ``fd.data.train_validation_split``.
      validation_data: ``(x, y)`` (or an ArrayDataset, a tf.data.Dataset, a re-iterable of batches)
        evaluated after every epoch (``val_loss``, ``val_accuracy``). Not with ``validation_split``.
      shuffle: reshuffle the examples every epoch (arrays; streamed batches come in their own order).
      seed: initialisation, shuffling, dropout and augmentation all derive from it (``funcdl.train.split_seed``).
      variables: start from these instead of a fresh ``model.init``.
      resume: a checkpoint folder written by ``ModelCheckpoint``: continue that run.
      eval_batch_size: batch size of the validation pass (at most: on the CPU it is halved while one batch's
        buffers would pass 128 MiB, see ``funcdl.train.memory.compile_within``).
      skip_nonfinite: skip batches with a non-finite loss/gradient instead of stopping.
      eager: run the very same step op by op under ``jax.disable_jit()``.
      loop: how an epoch of arrays runs. ``'scan'``: the whole epoch is one XLA program (``lax.scan`` over
        the batches). ``'steps'``: the same epoch as one compiled call per step. ``'auto'``
        (default): ``'scan'``, except on the CPU for a model whose forward pass holds an XLA
        convolution (a user layer calling ``lax.conv_general_dilated``; funcdl's ``Conv2D`` uses
        matrix products there): XLA:CPU runs convolutions inside a loop several times slower than
        outside one. ``History.loop`` says which ran (``'stream'`` for streamed batches).
      data_parallel: split every batch over all devices (``batch_size`` must divide by their
        count); in a multi-process run each process passes its own shard (see ``funcdl.train.parallel``).
      precision: ``'fp32'`` or ``'bf16'`` (compute in bfloat16, float32 parameters; see
        ``funcdl.train.precision``).
      augment: True for random crops (padding 4) and horizontal flips of image batches inside the compiled
        step, or a function ``(key, x) -> x`` (see ``funcdl.train.augment``); evaluation never augments.
      log_every: report the loss every N steps from inside the compiled epoch (``history.step_losses``,
        and the progress display; see ``funcdl.train.progress``).
      steps_per_epoch: streamed data: batches per epoch (needed for a generator when ``epochs > 1``: it is
        read on from epoch to epoch); default: one pass over the source.
    Returns:
      History with per-epoch logs, timings, and the final ``state`` (``variables``, ``opt_state``).
    Raises:
      FuncdlError subclasses for bad input; NonFiniteError (holding the last good variables).
    """
    objective = resolve_loss(loss, model)
    optimizer = optim_lib.get(optimizer, 1e-3) if isinstance(optimizer, str) else optimizer
    model = precision_lib.apply_policy(model, precision)
    check_epochs(epochs)
    check_log_every(log_every)
    recorded = {"loss": loss, "precision": precision, "shuffle": shuffle, "skip_nonfinite": skip_nonfinite}
    run = _Run(model, objective, optimizer, augment_lib.get(augment), log_every, check_callbacks(callbacks),
               seed, eager, verbose, epochs, recorded)
    source = training_source(x, y, batch_size)
    if isinstance(source, BatchSource):
        return _fit_stream(run, source, batch_size, steps_per_epoch, validation_split, validation_data,
                           eval_batch_size, variables, resume, skip_nonfinite, (loop, data_parallel))
    if steps_per_epoch is not None:
        raise ConfigError("steps_per_epoch is for streamed batches (a generator, a DataLoader, a large "
                          "tf.data.Dataset); arrays train on every example each epoch")
    x, y = check_data(*source, objective.label_kind)
    validation = "validation_data" if validation_data is not None else ""
    if validation_split:
        if validation_data is not None:
            raise ConfigError("give validation_data or validation_split, not both")
        x, y, validation_data = split_last(x, y, validation_split)
        validation = f"validation_split {validation_split} (the last {len(validation_data[0])} examples)"
    batch_size = 32 if batch_size is None else batch_size
    check_batch_size(batch_size, len(x))
    state, history, train_key = run.start(variables, resume, x, y, batch_size)
    run.steps_per_epoch = math.ceil(len(x) / batch_size)
    history.validation = validation if validation_data is not None else ""
    validate = None if validation_data is None else _validator(run, validation_data, eval_batch_size,
                                                               state.variables, None)
    mesh = _data_mesh(batch_size, eager) if data_parallel else None
    history.loop = choose_loop(loop, model, state.variables, x, eager, mesh is not None)
    state, data, train_key, validate = _place(mesh, state, x, y, train_key, validate)
    builder = EpochBuilder(model, objective.loss_fn, optimizer, batch_size, shuffle, history.loop, eager, mesh,
                           run.wrap)
    with out_of_memory(batch_size):  # one line naming the batch size, at compile time or while running
        epoch, history.compile_seconds = build_epoch(builder, skip_nonfinite, state, *data, train_key)
        fit_epochs = FitEpochs(epoch, data, train_key, eager, validate, skip_nonfinite)
        return run.train(fit_epochs, state, history)


@dataclass
class _Run:
    """What ``fit`` settles before it looks at the data, and the start and the run of the training loop."""
    model: Any
    objective: Objective
    optimizer: optax.GradientTransformation
    augment: Callable | None
    log_every: int | None
    callbacks: tuple[Callback, ...]
    seed: int
    eager: bool
    verbose: bool
    epochs: int
    recorded: dict[str, Any]  # fit's arguments a resume must repeat (with the batch size, seed and data)
    progress: Progress | None = None
    steps_per_epoch: int | None = None

    def start(self, variables: Any, resume: Any, x: np.ndarray, y: np.ndarray,
              batch_size: int) -> tuple[TrainState, History, Any]:
        """(state, history, train_key) from fresh or given variables, or a checkpoint; ``x, y``: the data (arrays)
        or its first batch (streamed)."""
        augment_lib.check_images(self.augment, x.shape)
        init_key, train_key = split_seed(self.seed)
        variables = init_variables(self.model, init_key, x) if variables is None else variables
        check_model_fits(self.model, variables, x, y, self.objective.label_kind)
        settings = checkpoint.run_settings(x, y, batch_size=batch_size, seed=self.seed, **self.recorded)
        state, history = TrainState.create(variables, self.optimizer), History(seed=self.seed, settings=settings)
        if resume is not None:
            state, history = checkpoint.restore(resume, state, self.seed, settings)
        history.loss = self.objective.description
        return state, history, train_key

    def wrap(self, step: TrainStep) -> TrainStep:
        """The train step with the run's augmentation and step reports."""
        if self.augment is not None:
            step = augment_lib.augmented_step(step, self.augment)
        if self.log_every is not None:
            step = logged_step(step, self.log_every, self._report, self.steps_per_epoch)
        return step

    def _report(self, step: Any, loss: Any) -> None:
        if self.progress is not None:
            self.progress.report(step, loss)

    def train(self, epochs: Any, state: TrainState, history: History) -> History:
        """Run the shared epoch loop; the final state goes into ``history``."""
        self.progress = Progress(self.verbose, self.epochs, "fit", self.steps_per_epoch, self.log_every)
        history.state = run_epochs(epochs, state, history, self.epochs, self.callbacks, self.verbose,
                                   progress=self.progress)
        return history


def _fit_stream(run: _Run, source: BatchSource, batch_size: int | None, steps_per_epoch: int | None,
                validation_split: float, validation_data: Any, eval_batch_size: int, variables: Any, resume: Any,
                skip_nonfinite: bool, arrays_only: tuple[str, bool]) -> History:
    """``fit`` over streamed batches: one compiled step per batch, in the shared epoch loop."""
    _check_stream_settings(source, run.epochs, steps_per_epoch, validation_split, *arrays_only)
    source.steps_per_epoch = steps_per_epoch
    x, y = check_data(*source.first(), run.objective.label_kind, f"batch 1 of {source.what}")
    size = len(x) if batch_size is None else batch_size
    check_batch_size(size)
    state, history, train_key = run.start(variables, resume, x, y, size)
    out = jax.eval_shape(lambda v, s: apply_model(run.model, v, s), state.variables, jnp.asarray(x[:1]))
    checks = BatchChecks(run.objective.label_kind, x, y, out.shape[-1] if out.ndim == 2 else None)
    history.loop, history.validation = "stream", "validation_data" if validation_data is not None else ""
    validate = None if validation_data is None else _validator(run, validation_data, eval_batch_size,
                                                               state.variables, checks)
    run.steps_per_epoch = source.steps
    step = run.wrap(make_train_step(run.model, run.objective.loss_fn, run.optimizer, guard=True))
    start = time.perf_counter()
    with out_of_memory(size):  # one line naming the batch size, at compile time or while running
        epoch = StreamEpoch(step, source, checks, size, not skip_nonfinite, run.eager).compile(
            state, x, y, epoch_key(train_key, 0))
        history.compile_seconds = time.perf_counter() - start
        fit_epochs = FitEpochs(epoch, (), train_key, run.eager, validate, skip_nonfinite)
        return run.train(fit_epochs, state, history)


def _check_stream_settings(source, epochs, steps_per_epoch, validation_split, loop, data_parallel):
    if validation_split:
        raise ConfigError("validation_split holds out the last examples of arrays; with streamed batches pass "
                          "validation_data instead")
    if loop != "auto" or data_parallel:
        raise ConfigError("streamed batches run one compiled step per batch on one device; loop= and "
                          "data_parallel= apply to arrays")
    if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int)
                                        or steps_per_epoch < 1):
        raise ConfigError(f"steps_per_epoch must be a positive integer or None, got {steps_per_epoch!r}")
    if not source.reiterable and epochs > 1 and steps_per_epoch is None:
        raise ConfigError(f"a {source.what} generator is used up after one pass; for {epochs} epochs pass "
                          "steps_per_epoch=N (batches per epoch, read on from one epoch to the next), or give "
                          "a source that can be iterated again (a list, a DataLoader, a tf.data.Dataset)")


def _data_mesh(batch_size, eager):
    if eager:
        raise ConfigError("data_parallel runs compiled programs; it cannot be combined with eager")
    return parallel.data_mesh(batch_size)


def _place(mesh: Any, state: TrainState, x: np.ndarray, y: np.ndarray, train_key: jax.Array,
           validate: Callable | None) -> tuple[TrainState, tuple[Any, Any], jax.Array, Callable | None]:
    """(state, data, train_key, validate) on the device, or over ``mesh`` (state replicated, batches split)."""
    if mesh is None:
        # device_put copies the arrays once; jnp.asarray went through a second, temporary copy (+188 MB for MNIST)
        return state, (jax.device_put(x), jax.device_put(y)), train_key, validate
    state, data, train_key = parallel.place(mesh, state, x, y, train_key)
    return state, data, train_key, None if validate is None else parallel.on_host(validate)


class FitEpochs:
    """``fit``'s epochs for the shared loop: the epoch program on the placed data, logs with validation.

    Args:
      epoch: ``epoch(state, *data, key) -> (state, StepMetrics)``: ``funcdl.train.program.build_epoch``'s, or a
        ``funcdl.train.stream.StreamEpoch`` (which brings its own batches).
      data: the (placed) training arrays ``(x, y)``, or ``()`` for a StreamEpoch.
      train_key: the run's training key; epoch ``e`` runs on ``epoch_key(train_key, e)``.
      validate: ``variables -> {'loss', 'accuracy', ...}``, or None.
      skip_nonfinite: count skipped steps instead of raising NonFiniteError.
    """

    def __init__(self, epoch: Callable[..., tuple[TrainState, StepMetrics]], data: tuple[Any, ...],
                 train_key: jax.Array, eager: bool,
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


def _validator(run: _Run, data: Any, batch_size: int, variables: Any, checks: BatchChecks | None) -> Callable:
    """``variables -> {'loss', 'accuracy', ...}`` over the validation data: arrays, or batches streamed each time."""
    label_kind = run.objective.label_kind
    source = training_source(data, what="validation data")
    if not isinstance(source, BatchSource):
        return _evaluator(run.model, run.objective.loss_fn, label_kind, source, batch_size, run.eager, variables,
                          "validation data")
    if not source.reiterable:
        raise ConfigError("validation_data is a generator, used up after one pass; give arrays, a "
                          "tf.data.Dataset, or a list or DataLoader of batches")
    if checks is None:
        checks = BatchChecks(label_kind, *check_data(*source.first(), label_kind, "batch 1 of validation data"),
                             None)
    return stream_evaluator(run.model, run.objective.loss_fn, source, checks, run.eager)


def _evaluator(model, loss_fn, label_kind, data, batch_size, eager, variables, what):
    """``variables -> {'loss', 'accuracy', 'predicted', 'labels'}`` over ``data``, compiled once."""
    check_batch_size(batch_size)
    x, y = check_data(*as_arrays(data, what=what), label_kind, what)
    check_model_fits(model, variables, x, y, label_kind, what)  # labels past the model's outputs would give NaN
    batch = min(batch_size, len(x))
    with out_of_memory(batch, f"evaluating the {what}"):
        xd, yd = jax.device_put(x), jax.device_put(y)  # one copy (see _place)
        if eager:
            fn = make_eval(model, loss_fn, batch)
        else:  # fewer examples a batch where one batch's buffers would take too much host memory
            fn, batch = compile_within(lambda size: make_eval(model, loss_fn, size), batch, (variables, xd, yd))

    def evaluate(variables):
        with eager_context(eager), out_of_memory(batch, f"evaluating the {what}"):
            loss_sum, correct, predicted = fn(variables, xd, yd)
        return {"loss": float(loss_sum) / len(x), "accuracy": float(correct) / len(x),
                "predicted": np.asarray(predicted), "labels": y}
    return evaluate


def evaluate(model: Any, variables: Any, data: Any, *, loss: str | Callable = "cross_entropy",
             batch_size: int = 1024, eager: bool = False) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix of ``model`` on ``data`` (an ``(x, y)`` pair or an ArrayDataset).

    ``batch_size`` is the most examples a batch: on the CPU it is halved while one batch's buffers would pass
    128 MiB (``funcdl.train.memory.compile_within``).
    Returns:
      ``{'loss': float, 'accuracy': float, 'confusion_matrix': (K, K) int array or None}``;
      rows are true classes, columns predicted classes.
    """
    objective = resolve_loss(loss, model)
    loss_fn, label_kind = objective.loss_fn, objective.label_kind
    x, y = check_data(*as_arrays(data, what="evaluation data"), label_kind, "evaluation data")
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


def predict(model: Any, variables: Any, x: Any, *, batch_size: int = 1024) -> Any:
    """Model outputs (N, ...) for every example of ``x`` (inference mode), batched under one compiled call.

    Numpy arrays: one, or a tuple / dict of them for a graph with several outputs.
    """
    check_batch_size(batch_size)
    check_one_input(model)
    x = np.asarray(x, np.float32) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise DataError("predict needs at least one example")
    return jax.tree.map(np.asarray, jax.jit(make_predict(model, min(batch_size, len(x))))(variables, jnp.asarray(x)))
