"""Callbacks for ``fit``: told about the start of training and the end of every epoch.

A callback subclasses :class:`Callback`. After every epoch ``fit`` calls
``on_epoch_end(epoch, logs, state, history)`` with that epoch's logs, the
training state and the history so far, and the callback returns what it
changes instead of changing shared objects:

- ``None``: nothing; training goes on.
- a ``TrainState``: training goes on from that state.
- ``Stop(state=None)``: training ends after this epoch (on ``state`` when given).

Callbacks run in list order, each seeing the state the one before returned.
"""
import math
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


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of the epoch logs, e.g. 'val_loss', 'val_accuracy', 'loss'.
      patience: epochs without improvement to tolerate.
      min_delta: smallest change that counts as an improvement.
      mode: 'min', 'max' or 'auto' (max for names containing 'acc').
      restore_best: end on the best epoch's variables (the optimizer state and step stay the last epoch's).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"EarlyStopping mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.sign = -1.0 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1.0
        self.restore_best = restore_best
        self.best, self.best_epoch, self.best_variables, self.wait = math.inf, None, None, 0

    def on_epoch_end(self, epoch, logs, state, history):
        if self.monitor not in logs:
            raise ConfigError(f"EarlyStopping monitors {self.monitor!r} but the logs only have "
                              f"{', '.join(sorted(logs))}")
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_variables = jax.device_get(state.variables)
            return None
        self.wait += 1
        if self.wait < self.patience:
            return None
        if self.restore_best and self.best_variables is not None:
            return Stop(state._replace(variables=jax.tree.map(jnp.asarray, self.best_variables)))
        return Stop()


class ModelCheckpoint(Callback):
    """Write a resumable checkpoint (see ``funcdl.train.checkpoint``) every ``every`` epochs into ``directory``.

    ``settings`` (JSON-able) are recorded beside the run's own (``History.settings``); a resume must repeat them
    (the command line records its model, optimizer, learning rate, dataset, ...).
    """

    def __init__(self, directory: str | Path, every: int = 1, settings: dict[str, Any] | None = None):
        if every < 1:
            raise ConfigError(f"ModelCheckpoint every must be >= 1, got {every}")
        self.directory, self.every, self.settings = Path(directory), every, dict(settings or {})

    def on_epoch_end(self, epoch, logs, state, history):
        if (epoch + 1) % self.every == 0:
            checkpoint.save(self.directory, state, history, self.settings)
        return None
