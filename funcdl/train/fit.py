"""``fit``, ``evaluate`` and ``predict``: the Keras-style API over funcdl's compiled epochs."""
import contextlib
import functools
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from funcdl import losses as losses_lib
from funcdl import optim as optim_lib
from funcdl.train import parallel
from funcdl.train import precision as precision_lib
from funcdl.errors import ConfigError, DataError, FuncdlError, NonFiniteError, ShapeError
from funcdl.train.step import (SteppedEpoch, TrainState, all_finite, apply_model, make_eval, make_train_epoch,
                          make_train_step)
from funcdl.train.checks import as_arrays, check_batch_size, check_data, check_epochs, check_model_fits


@dataclass
class History:
    """What ``fit`` returns: per-epoch logs plus the trained variables and optimizer state.

    Attributes:
      history: ``{'loss': [...], 'accuracy': [...], 'val_loss': [...], 'val_accuracy': [...]}``.
      epoch_seconds: wall time of each training epoch (validation excluded).
      compile_seconds: time to trace and compile the epoch program.
      compiles_after_first_epoch: XLA compilations seen after epoch 1 (0 in steady state).
      loop: ``'scan'`` (each epoch one XLA program) or ``'steps'`` (one compiled call per step).
      variables, opt_state, step: the final training state.
    """
    history: dict = field(default_factory=dict)
    epoch_seconds: list = field(default_factory=list)
    compile_seconds: float = 0.0
    compiles_after_first_epoch: int = 0
    skipped_steps: int = 0
    stopped_epoch: Any = None
    epochs_done: int = 0
    variables: Any = None
    opt_state: Any = None
    step: int = 0
    seed: int = 0
    loop: str = "scan"

    def log(self, logs):
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)


class CompileCounter:
    """Counts XLA backend compilations while active (a jax.monitoring listener)."""

    def __init__(self):
        self.count = 0

    def __call__(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


def _resolve(loss, optimizer):
    loss_fn = losses_lib.get(loss)
    if isinstance(optimizer, str):
        optimizer = optim_lib.get(optimizer, 1e-3)
    return loss_fn, losses_lib.label_kind(loss), optimizer


def _compile(fn, eager, *args):
    """(callable, seconds): an AOT-compiled ``fn`` for these argument shapes, or ``fn`` itself when eager."""
    if eager:
        return fn, 0.0
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _epoch_logs(metrics, prefix=""):
    count = np.asarray(metrics.count)
    ok = np.asarray(metrics.finite)
    total = max(float(count[ok].sum()), 1.0)
    logs = {prefix + "loss": float((np.asarray(metrics.loss)[ok] * count[ok]).sum() / total)}
    logs[prefix + "accuracy"] = float(np.asarray(metrics.correct)[ok].sum() / total)
    return logs


def _init(model, key, x):
    try:
        return model.init(key, jnp.asarray(x[:1]))
    except FuncdlError:
        raise
    except Exception as err:  # flax / lax raise many types for shapes that do not fit
        raise ShapeError(f"input of shape {tuple(x.shape[1:])} (per example) does not fit the model: "
                         f"{str(err).splitlines()[0]}") from None


def _evaluator(model, loss_fn, label_kind, data, batch_size, eager, variables, what):
    """``variables -> {'loss', 'accuracy', 'predicted'}`` over ``data``, compiled once."""
    check_batch_size(batch_size)
    x, y = check_data(*as_arrays(data, what), label_kind, what)
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    fn, _ = _compile(make_eval(model, loss_fn, min(batch_size, len(x))), eager, variables, xd, yd)

    def evaluate(variables):
        with jax.disable_jit() if eager else contextlib.nullcontext():
            loss_sum, correct, predicted = fn(variables, xd, yd)
        return {"loss": float(loss_sum) / len(x), "accuracy": float(correct) / len(x),
                "predicted": np.asarray(predicted), "labels": y}
    return evaluate


def _raise_if_nonfinite(metrics, run, epoch, step_before, skip):
    finite = np.asarray(metrics.finite)
    if finite.all():
        return
    if skip:
        run.skipped_steps += int((~finite).sum())
        return
    batch = int(np.argmin(finite))
    step = step_before + batch
    raise NonFiniteError(
        f"non-finite loss or gradient at step {step} (epoch {epoch + 1}, batch {batch + 1}); training stopped "
        "and the last good parameters were kept; lower the learning rate or skip such batches "
        "(skip_nonfinite=True / --skip-nonfinite)", step=step, variables=run.variables, opt_state=run.opt_state)


def fit(model, train_data, *, loss="cross_entropy", optimizer="adam", epochs=1, batch_size=32,
        validation_data=None, seed=0, variables=None, callbacks=(), eager=False, shuffle=True,
        skip_nonfinite=False, verbose=True, eval_batch_size=1024, resume=None, data_parallel=False,
        precision="fp32", loop="auto"):
    """Train ``model`` on ``train_data``; each epoch is one compiled XLA program.

    Args:
      model: a funcdl layer (e.g. ``fd.nn.Sequential`` or a zoo model).
      train_data: ``(x, y)`` numpy arrays or a ``funcdl.data.ArrayDataset``; images NHWC.
      loss: a loss name from ``funcdl.losses`` or a function ``(outputs, targets) -> (B,)``.
      optimizer: an optax GradientTransformation (e.g. ``fd.optim.adam(1e-3)``) or a name.
      epochs, batch_size: as in Keras; the last partial batch is padded and masked.
      validation_data: evaluated after every epoch (``val_loss``, ``val_accuracy``).
      seed: initialisation, shuffling and dropout all derive from it.
      variables: start from these instead of a fresh ``model.init``.
      callbacks: objects with ``on_epoch_end(epoch, logs, run)`` (see ``funcdl.callbacks``) and
        optionally ``on_train_begin(run)``.
      eager: run the very same step op by op under ``jax.disable_jit()``.
      skip_nonfinite: skip batches with a non-finite loss/gradient instead of stopping.
      resume: a checkpoint folder written by ``ModelCheckpoint``: continue that run.
      data_parallel: split every batch over all devices (``batch_size`` must divide by their
        count); in a multi-process run each process passes its own shard (see ``funcdl.parallel``).
      precision: ``'fp32'`` or ``'bf16'`` (compute in bfloat16, float32 parameters; see
        ``funcdl.precision``).
      loop: how an epoch runs. ``'scan'``: the whole epoch is one XLA program (``lax.scan`` over
        the batches). ``'steps'``: the same epoch as one compiled call per step. ``'auto'``
        (default): ``'scan'``, except on the CPU for a model whose forward pass holds an XLA
        convolution (a user layer calling ``lax.conv_general_dilated``; funcdl's ``Conv2D`` uses
        matrix products there): XLA:CPU runs convolutions inside a loop several times slower than
        outside one. ``History.loop`` says which ran.
    Returns:
      History with per-epoch logs, timings, and the trained ``variables`` / ``opt_state``.
    Raises:
      FuncdlError subclasses for bad input; NonFiniteError (holding the last good variables).
    """
    loss_fn, label_kind, optimizer = _resolve(loss, optimizer)
    model = precision_lib.apply_policy(model, precision)
    x, y = check_data(*as_arrays(train_data), label_kind)
    check_batch_size(batch_size, len(x))
    check_epochs(epochs)
    init_key, train_key = jax.random.split(jax.random.key(seed))
    variables = _init(model, init_key, x) if variables is None else variables
    check_model_fits(model, variables, x, y, label_kind)
    run = History(variables=variables, opt_state=optimizer.init(variables["params"]), seed=seed)
    if resume is not None:
        from funcdl.train import checkpoint
        checkpoint.restore(resume, run)
    validate = None
    if validation_data is not None:
        validate = _evaluator(model, loss_fn, label_kind, validation_data, eval_batch_size, eager,
                              run.variables, "validation data")
    # --- data parallel (funcdl.parallel): batches split over a 'data' mesh, state replicated.
    mesh = _data_mesh(batch_size, eager) if data_parallel else None
    run.loop = _choose_loop(loop, model, run.variables, x, eager, mesh is not None)
    state = TrainState(run.variables, run.opt_state, jnp.asarray(run.step, jnp.int32))
    if mesh is None:
        data = (jnp.asarray(x), jnp.asarray(y))
    else:
        state, data, train_key = parallel.place(mesh, state, x, y, train_key)
        validate = None if validate is None else parallel.on_host(validate)
    # --- end data parallel

    def runner(guard, stop_on_nonfinite):
        step = make_train_step(model, loss_fn, optimizer, guard)
        step = step if mesh is None else parallel.shard_batches(step, mesh)
        if run.loop == "steps":
            start = time.perf_counter()
            stepped = SteppedEpoch(step, batch_size, shuffle, stop_on_nonfinite).compile(state, *data, train_key)
            return stepped, time.perf_counter() - start
        epoch_fn = make_train_epoch(step, batch_size, shuffle, stop_on_nonfinite)
        epoch_fn = epoch_fn if mesh is None else parallel.replicated_outputs(mesh, epoch_fn)
        return _compile(epoch_fn, eager, state, *data, train_key)

    # Epochs run unguarded steps (no per-step finiteness checks); an epoch whose losses or final state
    # are not finite is run again from its start with guarded steps, which stop at the first bad one.
    # skip_nonfinite needs the per-step guard throughout.
    fast, run.compile_seconds = runner(guard=skip_nonfinite, stop_on_nonfinite=False)
    healthy = guarded = None
    if not skip_nonfinite:
        guarded = functools.cache(lambda: runner(guard=True, stop_on_nonfinite=True)[0])
        # the epoch's per-step finite flags: the compiled scan says their placement; the step loop
        # stacks them on the default device
        finite = fast.out_info[1].finite if hasattr(fast, "out_info") else jax.ShapeDtypeStruct(
            (math.ceil(len(x) / batch_size),), jnp.bool_)
        healthy, seconds = _compile(_healthy, eager, state, finite)
        run.compile_seconds += seconds
    _train_epochs(run, fast, healthy, guarded, state, data, validate, train_key, epochs, callbacks, eager,
                  skip_nonfinite, verbose)
    return run


LOOPS = ("auto", "scan", "steps")


def uses_convolution(model, variables, x):
    """Whether the model's forward pass contains a convolution (looked up in its jaxpr)."""
    jaxpr = jax.make_jaxpr(lambda v, x: apply_model(model, v, x))(variables, jnp.asarray(x[:1]))
    return "conv_general_dilated" in str(jaxpr)


def _choose_loop(loop, model, variables, x, eager, data_parallel):
    if loop not in LOOPS:
        raise ConfigError(f"unknown loop {loop!r}; choose one of {', '.join(LOOPS)}")
    if loop == "steps" and (eager or data_parallel):
        raise ConfigError("loop='steps' runs one compiled call per step; it cannot be combined with eager "
                          "or data_parallel (use loop='scan')")
    if loop != "auto":
        return loop
    if eager or data_parallel or jax.default_backend() != "cpu":
        return "scan"
    return "steps" if uses_convolution(model, variables, x) else "scan"


def _data_mesh(batch_size, eager):
    if eager:
        raise ConfigError("data_parallel runs compiled programs; it cannot be combined with eager")
    return parallel.data_mesh(batch_size)


def _train_epochs(run, runner, healthy, guarded, state, data, validate, train_key, epochs, callbacks, eager, skip,
                  verbose):
    """The epoch loop. An epoch that ``healthy(state, finite)`` finds non-finite is run again from its
    start by ``guarded()``, whose steps stop at the first bad one."""
    for callback in callbacks:  # optional hook: LayerStats-style callbacks keep the starting weights
        if hasattr(callback, "on_train_begin"):
            callback.on_train_begin(run)
    bar = tqdm(range(run.epochs_done, epochs), desc="fit", unit="epoch", file=sys.stderr,
               disable=not verbose, initial=run.epochs_done, total=epochs)
    first_epoch = run.epochs_done
    with CompileCounter() as counter:
        for epoch in bar:
            epoch_key = jax.random.fold_in(train_key, epoch)
            step_before, state_before = run.step, state
            start = time.perf_counter()
            with jax.disable_jit() if eager else contextlib.nullcontext():
                state, metrics = runner(state, *data, epoch_key)
            if healthy is not None and not bool(healthy(state, metrics.finite)):
                with jax.disable_jit() if eager else contextlib.nullcontext():
                    state, metrics = guarded()(state_before, *data, epoch_key)
            state = jax.block_until_ready(state)
            run.epoch_seconds.append(time.perf_counter() - start)
            metrics = jax.device_get(metrics)
            run.variables, run.opt_state, run.step = state.variables, state.opt_state, int(state.step)
            _raise_if_nonfinite(metrics, run, epoch, step_before, skip)
            logs = _epoch_logs(metrics)
            if validate is not None:
                result = validate(run.variables)
                logs.update(val_loss=result["loss"], val_accuracy=result["accuracy"])
            run.log(logs)
            run.epochs_done = epoch + 1
            if epoch == first_epoch:
                counter.count = 0  # the first epoch of a call may compile small helpers; count from here
            else:
                run.compiles_after_first_epoch = counter.count
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            if any([bool(cb.on_epoch_end(epoch, logs, run)) for cb in callbacks]):
                break
    bar.close()


def _healthy(state, finite):
    """Whether an epoch's every loss (``finite``) and its final state are finite."""
    return all_finite(state) & jnp.all(finite)


def evaluate(model, variables, data, *, loss="cross_entropy", batch_size=1024, eager=False):
    """Loss, accuracy and confusion matrix of ``model`` on ``data``.

    Returns:
      ``{'loss': float, 'accuracy': float, 'confusion_matrix': (K, K) int array or None}``;
      rows are true classes, columns predicted classes.
    """
    loss_fn, label_kind, _ = _resolve(loss, None)
    x, y = check_data(*as_arrays(data, "evaluation data"), label_kind, "evaluation data")
    check_model_fits(model, variables, x, y, label_kind)
    result = _evaluator(model, loss_fn, label_kind, (x, y), batch_size, eager, variables,
                        "evaluation data")(variables)
    matrix = None
    if label_kind in ("integer", "one_hot"):
        labels = result["labels"] if label_kind == "integer" else np.argmax(result["labels"], -1)
        classes = int(max(labels.max(), result["predicted"].max())) + 1
        matrix = np.bincount(labels * classes + result["predicted"], minlength=classes * classes)
        matrix = matrix.reshape(classes, classes)
    return {"loss": result["loss"], "accuracy": result["accuracy"], "confusion_matrix": matrix}


def predict(model, variables, x, *, batch_size=1024):
    """Model outputs for every example of ``x`` (inference mode), batched under one compiled scan."""
    check_batch_size(batch_size)
    x = np.asarray(x, np.float32) if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)
    if x.ndim == 0 or len(x) == 0:
        raise DataError("predict needs at least one example")
    size = min(batch_size, len(x))

    def run(variables, x):
        from funcdl.train.step import epoch_indices
        indices, _ = epoch_indices(None, x.shape[0], size, shuffle=False)
        outputs = jax.lax.map(lambda index: model.apply(variables, x[index]), indices)
        return outputs.reshape((-1,) + outputs.shape[2:])[:x.shape[0]]
    return np.asarray(jax.jit(run)(variables, jnp.asarray(x)))
