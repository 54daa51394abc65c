"""Callbacks for ``fit``: told about the start of training and the end of every epoch.

A callback subclasses :class:`Callback`. After every epoch ``fit`` calls
``on_epoch_end(epoch, logs, state, history)`` with that epoch's logs, the
training state and the history so far, and the callback returns what it
changes instead of changing shared objects:

- ``None``: nothing; training goes on.
- a ``TrainState``: training goes on from that state.
- ``Stop(state=None)``: training ends after this epoch (on ``state`` when given).

Callbacks run in list order, each seeing the state the one before returned.
``on_train_end(state, history)`` may return the state the run ends on
(``EarlyStopping(restore_best_weights=True)`` does). ``EarlyStopping`` and
``ModelCheckpoint`` take Keras's arguments with Keras's defaults.
"""
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError
from funcdl.train import checkpoint
from funcdl.train.history import History
from funcdl.train.step import TrainState


class Stop(NamedTuple):
    """What ``on_epoch_end`` returns to end training after this epoch; ``state`` is the one to end on."""
    state: TrainState | None = None


class Callback:
    """Base class of ``fit`` callbacks; both hooks do nothing unless overridden."""

    def on_train_begin(self, state: TrainState, history: History) -> None:
        """Called once before the first epoch of a ``fit`` call (with the resumed history, if any)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any], state: TrainState,
                     history: History) -> TrainState | Stop | None:
        """Called after epoch ``epoch`` (0-based) with its ``logs``; returns None, a new state, or a Stop."""
        return None

    def on_train_end(self, state: TrainState, history: History) -> TrainState | None:
        """Called once after the last epoch of a ``fit`` call; returns None or the state to end on."""
        return None


class _Monitor:
    """Keras's rule for "did ``monitor`` improve": ``mode`` 'min', 'max' or 'auto', by more than ``min_delta``."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"{owner} mode must be 'auto', 'min' or 'max', got {mode!r}")
        # 'auto' as Keras decides it for its built-in metrics: accuracies and AUC go up, losses and the rest down
        name = monitor.removeprefix("val_")
        self.owner, self.monitor = owner, monitor
        self.maximize = mode == "max" or (mode == "auto" and ("acc" in name or "auc" in name))
        self.min_delta = abs(min_delta)

    def value(self, logs: dict[str, Any]) -> float:
        if self.monitor not in logs:
            raise ConfigError(f"{self.owner} monitors {self.monitor!r} but the logs only have "
                              f"{', '.join(sorted(logs))}")
        return float(logs[self.monitor])

    def improved(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.maximize:
            return value - self.min_delta > reference
        return value + self.min_delta < reference


class EarlyStopping(Callback):
    """Stop when ``monitor`` has stopped improving: Keras's ``EarlyStopping``, with its arguments and defaults.

    Every epoch from ``start_from_epoch`` on counts as a wait; an improvement on the best value so far (by more
    than ``min_delta``) that also beats ``baseline`` (when given) resets the count. Training stops after an
    epoch (not the first) that brings the count to ``patience`` (so ``patience=0`` stops at the first epoch
    without improvement). With ``restore_best_weights`` the run ends on the variables of the best epoch
    (whether it stopped early or not; the optimizer state and step stay the last epoch's).

    Args:
      monitor: a key of the epoch logs, e.g. 'val_loss', 'val_accuracy', 'loss'.
      min_delta: smallest change that counts as an improvement.
      patience: epochs without improvement to tolerate.
      verbose: 1 prints one line when it stops (and when it restores).
      mode: 'min', 'max' or 'auto' (max for accuracies and AUC, min for everything else).
      baseline: a value the monitored quantity must beat for the wait to reset.
      restore_best_weights: end on the best epoch's variables.
      start_from_epoch: epochs to train before monitoring starts.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0):
        self.rule = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.monitor, self.patience, self.verbose, self.baseline = monitor, patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.on_train_begin(None, None)

    def on_train_begin(self, state, history):
        # as Keras: the same object can be given to another fit
        self.wait, self.stopped_epoch, self.best, self.best_epoch, self.best_variables = 0, 0, None, 0, None

    def on_epoch_end(self, epoch, logs, state, history):
        value = self.rule.value(logs)
        if epoch < self.start_from_epoch:
            return None
        if self.restore_best_weights and self.best_variables is None:
            self.best_variables, self.best_epoch = jax.device_get(state.variables), epoch
        self.wait += 1
        if self.rule.improved(value, self.best):
            self.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_variables = jax.device_get(state.variables)
            if self.baseline is None or self.rule.improved(value, self.baseline):
                self.wait = 0
            return None
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping", file=sys.stderr)
            return Stop()
        return None

    def on_train_end(self, state, history):
        if not self.restore_best_weights or self.best_variables is None:
            return None
        if self.verbose:
            print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.", file=sys.stderr)
        return state._replace(variables=jax.tree.map(jnp.asarray, self.best_variables))


class ModelCheckpoint(Callback):
    """Write a resumable checkpoint (see ``funcdl.train.checkpoint``): Keras's ``ModelCheckpoint`` arguments.

    The checkpoint is a folder holding the whole training state (variables, optimizer state, step, the
    history so far), which ``fit(resume=...)`` / ``funcdl train --resume`` continues from.

    Args:
      filepath: the checkpoint folder; may hold Keras-style fields filled from the epoch (1-based) and its logs,
        e.g. ``'ckpt/epoch{epoch:02d}-{val_loss:.3f}'``.
      monitor, mode: what ``save_best_only`` compares, as in ``EarlyStopping``.
      verbose: 1 prints one line per checkpoint written.
      save_best_only: write only when ``monitor`` improves on the best value so far (the folder then holds
        the best epoch's state).
      save_weights_only: Keras's option; funcdl checkpoints always hold the whole state (save the weights
        alone with ``fd.save_model``), so only False is accepted.
      save_freq: ``'epoch'`` (Keras's per-batch integers are refused: checkpoints are written at epoch ends).
      initial_value_threshold: the value ``monitor`` must beat for the first ``save_best_only`` write.
      every: write every ``every`` epochs (funcdl's; with ``save_best_only``, only those epochs are compared).
      settings: JSON-able settings recorded beside the run's own (``History.settings``); a resume must repeat
        them (the command line records its model, optimizer, learning rate, dataset, ...).
    """

    def __init__(self, filepath: str | Path, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None, every: int = 1,
                 settings: dict[str, Any] | None = None):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"ModelCheckpoint every must be >= 1, got {every}")
        if save_freq != "epoch":
            raise ConfigError(f"ModelCheckpoint save_freq must be 'epoch', got {save_freq!r}: funcdl writes "
                              "checkpoints at epoch ends (every=N for every N epochs)")
        if save_weights_only:
            raise ConfigError("ModelCheckpoint writes the whole training state, so that a run can resume; "
                              "save the weights alone with fd.save_model(path, model, history.variables, ...)")
        self.rule = _Monitor("ModelCheckpoint", monitor, mode, 0.0)
        self.filepath, self.every, self.verbose = str(filepath), every, verbose
        self.save_best_only, self.best = save_best_only, initial_value_threshold
        self.settings = dict(settings or {})

    def on_epoch_end(self, epoch, logs, state, history):
        if (epoch + 1) % self.every:
            return None
        if self.save_best_only:
            value = self.rule.value(logs)
            if not self.rule.improved(value, self.best):
                return None
            self.best = value
        folder = Path(_fill(self.filepath, epoch, logs))
        checkpoint.save(folder, state, history, self.settings)
        if self.verbose:
            print(f"Epoch {epoch + 1}: checkpoint written to {folder}", file=sys.stderr)
        return None


def _fill(filepath: str, epoch: int, logs: dict[str, Any]) -> str:
    """``filepath`` with Keras-style fields ``{epoch}`` (1-based) and ``{<log key>}`` filled in."""
    try:
        return filepath.format(epoch=epoch + 1, **logs)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"ModelCheckpoint filepath {filepath!r} has a field the epoch and logs cannot fill "
                          f"({type(e).__name__}: {e}); fields: epoch, {', '.join(sorted(logs))}") from None
