"""The one epoch loop that ``fit`` and ``sweep`` share.

What runs an epoch differs (one model or a vmapped grid, scanned or stepped,
on one device or a mesh); what happens around it does not: the key of epoch
``e``, timing to the device's end, the count of recompiles, the logs, the
callbacks and the progress bar. An :class:`Epochs` object says how to run an
epoch and summarise it; :func:`run_epochs` does the rest.
"""
import time
from typing import Any, Protocol

import jax

from funcdl.errors import ConfigError
from funcdl.train.callbacks import Callback, Stop
from funcdl.train.history import History
from funcdl.train.progress import Progress
from funcdl.train.step import TrainState


class Epochs(Protocol):
    """How a training run runs one epoch and what it logs for it."""

    def prepare(self, epoch: int) -> Any:
        """What epoch ``epoch`` (0-based) runs on besides the state (its key), made before the epoch is timed."""

    def run(self, state: Any, prepared: Any) -> tuple[Any, Any]:
        """Train one epoch from ``state`` on ``prepare(epoch)``; returns ``(state, metrics)`` as device arrays."""

    def logs(self, epoch: int, before: Any, state: Any, metrics: Any, history: History) -> dict[str, Any]:
        """The logs of the epoch that took ``before`` to ``state`` (``metrics`` on the host).

        May record what it finds in ``history`` (skipped steps) or raise (a non-finite loss).
        """


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


def check_callbacks(callbacks: Any) -> tuple[Callback, ...]:
    """``callbacks`` as a tuple; ConfigError for anything that is not a ``funcdl.train.callbacks.Callback``."""
    callbacks = tuple(callbacks or ())
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise ConfigError(_not_a_callback(callback))
    return callbacks


# what a Keras user reaches for, and funcdl's way of doing it
KERAS_CALLBACKS = {
    "EarlyStopping": "fd.callbacks.EarlyStopping (the same arguments and defaults)",
    "ModelCheckpoint": "fd.callbacks.ModelCheckpoint (the same arguments; it writes a resumable checkpoint folder)",
    "BackupAndRestore": "fd.callbacks.ModelCheckpoint(dir) and fit(resume=dir)",
    "TensorBoard": "fd.monitor.TensorBoard(logdir)",
    "ReduceLROnPlateau": "optax.contrib.reduce_on_plateau chained after the optimizer",
    "LearningRateScheduler": "an optax schedule as the optimizer's learning rate (e.g. optax.cosine_decay_schedule)",
    "TerminateOnNaN": "nothing: fit stops on a non-finite loss by itself",
    "CSVLogger": "history.history after fit, or a fd.callbacks.Callback subclass",
    "ProgbarLogger": "verbose=True",
    "History": "the History that fit returns",
}


def _not_a_callback(callback: Any) -> str:
    """One line saying what to pass instead of ``callback`` (a Keras callback, or anything else)."""
    kind, module = type(callback).__name__, type(callback).__module__
    if module.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
        instead = KERAS_CALLBACKS.get(kind, "a fd.callbacks.Callback subclass (override on_epoch_end)")
        return f"fit got keras.callbacks.{kind}, a Keras callback, which cannot see a funcdl run; use {instead}"
    return (f"callbacks must be fd.callbacks.Callback instances (subclass it and override on_epoch_end), "
            f"got {kind}")


def run_epochs(epochs: Epochs, state: Any, history: History, num_epochs: int, callbacks: tuple[Callback, ...] = (),
               verbose: bool = True, desc: str = "fit", progress: Progress | None = None) -> Any:
    """Train from epoch ``history.epochs_done`` up to ``num_epochs``; returns the last state.

    After each epoch: its wall time (to the device's end) into ``history.epoch_seconds``, its logs into
    ``history``, then the callbacks in order (see ``funcdl.train.callbacks``); a ``Stop`` ends the run.
    ``history.compiles_after_first_epoch`` counts XLA compilations after this call's first epoch.
    ``progress`` shows the run (default: a ``Progress(verbose, num_epochs, desc)``).
    """
    for callback in callbacks:
        callback.on_train_begin(state, history)
    progress = progress if progress is not None else Progress(verbose, num_epochs, desc)
    progress.begin(history)
    first_epoch = history.epochs_done
    with CompileCounter() as counter:
        for epoch in range(history.epochs_done, num_epochs):
            before, prepared = state, epochs.prepare(epoch)
            progress.epoch_start(epoch, state)
            start = time.perf_counter()
            state, metrics = epochs.run(state, prepared)
            state = jax.block_until_ready(state)
            history.epoch_seconds.append(time.perf_counter() - start)
            logs = epochs.logs(epoch, before, state, jax.device_get(metrics), history)
            history.log(logs)
            history.epochs_done = epoch + 1
            if epoch == first_epoch:
                counter.count = 0  # the first epoch of a call may compile small helpers; count from here
            else:
                history.compiles_after_first_epoch = counter.count
            progress.epoch_end(epoch, logs, history.epoch_seconds[-1])
            state, stop = _end_of_epoch(callbacks, epoch, logs, state, history)
            if stop:
                history.stopped_epoch = epoch
                break
    progress.close()
    return _end_of_training(callbacks, state, history)


def _end_of_training(callbacks, state, history):
    """The state after every callback's ``on_train_end``, each seeing the state the one before returned."""
    for callback in callbacks:
        result = callback.on_train_end(state, history)
        if isinstance(result, TrainState):
            state = result
        elif result is not None:
            raise ConfigError(f"{type(callback).__name__}.on_train_end returned a {type(result).__name__}; "
                              "return None or a TrainState")
    return state


def _end_of_epoch(callbacks, epoch, logs, state, history):
    """(state, stop) after every callback's ``on_epoch_end``, each seeing the state the one before returned."""
    stop = False
    for callback in callbacks:
        result = callback.on_epoch_end(epoch, logs, state, history)
        if isinstance(result, Stop):
            stop = True
            state = state if result.state is None else result.state
        elif isinstance(result, TrainState):
            state = result
        elif result is not None:
            raise ConfigError(f"{type(callback).__name__}.on_epoch_end returned a {type(result).__name__}; "
                              "return None, a TrainState or fd.callbacks.Stop(...)")
    return state, stop
