"""Callbacks for ``fit``: called after every epoch with the epoch's logs.

A callback is any object with ``on_epoch_end(epoch, logs, run) -> bool | None``;
returning True stops training. ``run`` is the live :class:`funcdl.fit.History`.
"""
import math
from pathlib import Path

import jax

from funcdl.errors import ConfigError


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Args:
      monitor: a key of the epoch logs, e.g. 'val_loss', 'val_accuracy', 'loss'.
      patience: epochs without improvement to tolerate.
      min_delta: smallest change that counts as an improvement.
      mode: 'min', 'max' or 'auto' (max for names containing 'acc').
      restore_best: put the best epoch's variables back when stopping.
    """

    def __init__(self, monitor="val_loss", patience=3, min_delta=0.0, mode="auto", restore_best=True):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"EarlyStopping mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, abs(min_delta)
        self.sign = -1.0 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1.0
        self.restore_best = restore_best
        self.best, self.best_epoch, self.best_variables, self.wait = math.inf, None, None, 0

    def on_epoch_end(self, epoch, logs, run):
        if self.monitor not in logs:
            raise ConfigError(f"EarlyStopping monitors {self.monitor!r} but the logs only have "
                              f"{', '.join(sorted(logs))}")
        value = self.sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_variables = jax.device_get(run.variables)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            if self.restore_best and self.best_variables is not None:
                run.variables = jax.tree.map(jax.numpy.asarray, self.best_variables)
            run.stopped_epoch = epoch
            return True
        return False


class ModelCheckpoint:
    """Write a resumable checkpoint (see ``funcdl.checkpoint``) every ``every`` epochs into ``directory``."""

    def __init__(self, directory, every=1):
        if every < 1:
            raise ConfigError(f"ModelCheckpoint every must be >= 1, got {every}")
        self.directory, self.every = Path(directory), every

    def on_epoch_end(self, epoch, logs, run):
        if (epoch + 1) % self.every == 0:
            from funcdl.train import checkpoint
            checkpoint.save(self.directory, run)
        return False
