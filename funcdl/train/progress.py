"""What a training run shows while it runs, and the loss reported every N steps from inside the compiled epoch.

On a terminal: a tqdm bar over the epochs, or, with ``log_every``, one bar
per epoch over its steps (``epoch 3/10``) that moves as the compiled epoch
reports its loss. Piped into a file or another program (stderr not a
terminal): one plain line per epoch, and one per report, no carriage returns.

The report comes from inside the compiled program: :func:`logged_step` makes
the train step call ``jax.debug.callback`` with its loss at every ``every``-th
global step (a ``lax.cond``, so the other steps pay one integer test). The
epoch stays one XLA program and nothing recompiles. Each report is a round
trip to the host: ``bench/log_every.py`` measures the cost (on a 2-core CPU
about 1.03x the epoch every 100 steps, 2x every step).
"""
import math
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import jax
import numpy as np
from tqdm.auto import tqdm

from funcdl.errors import ConfigError
from funcdl.train.history import History
from funcdl.train.step import TrainStep


def check_log_every(log_every: Any) -> None:
    """ConfigError unless ``log_every`` is None or a positive integer."""
    if log_every is not None and (not isinstance(log_every, (int, np.integer)) or isinstance(log_every, bool)
                                  or log_every < 1):
        raise ConfigError(f"log_every must be a positive number of steps or None, got {log_every!r}")


def logged_step(step: TrainStep, every: int, report: Callable[[Any, Any], None],
                steps_per_epoch: int | None = None) -> TrainStep:
    """``step`` that calls ``report(global_step, loss)`` on the host after every ``every``-th step; same signature.

    The global step counts from 1 (the step just taken). With ``steps_per_epoch`` the count starts again
    every epoch (steps ``every``, ``2 * every``, ... of each epoch, as PyTorch's examples print them);
    without it (streamed batches of unknown count) every ``every``-th step of the run reports.
    """
    def train_step(state, *args):
        new_state, metrics = step(state, *args)
        number = state.step + 1
        in_epoch = number if steps_per_epoch is None else state.step % steps_per_epoch + 1
        jax.lax.cond(in_epoch % every == 0, lambda: jax.debug.callback(report, number, metrics.loss),
                     lambda: None)
        return new_state, metrics
    return train_step


def _shown(logs: dict[str, Any]) -> dict[str, str]:
    """The logs as shown: floats to 4 places; a sweep's per-model arrays as their range over the models."""
    shown = {}
    for key, value in logs.items():
        if isinstance(value, float):
            shown[key] = f"{value:.4f}"
        elif isinstance(value, np.ndarray) and value.ndim == 1 and value.size and value.dtype.kind == "f":
            finite = value[np.isfinite(value)]  # a diverged model's loss is not a number to show
            shown[key] = f"{finite.min():.4f}..{finite.max():.4f}" if finite.size else "nan"
    return shown


def _format(logs: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in _shown(logs).items())


class Progress:
    """The progress display of one training run (see the module); ``run_epochs`` drives it.

    Args:
      verbose: show anything at all.
      num_epochs: the run's last epoch (1-based count).
      desc: what trains ('fit', 'sweep (16 models)').
      steps_per_epoch: steps in an epoch, when known (for ``log_every`` bars).
      log_every: the report interval in steps, or None.
      stream: where to write (stderr by default); a terminal gets bars, anything else plain lines.
    """

    def __init__(self, verbose: bool, num_epochs: int, desc: str = "fit", steps_per_epoch: int | None = None,
                 log_every: int | None = None, stream: TextIO | None = None):
        self.verbose, self.num_epochs, self.desc = verbose, num_epochs, desc
        self.steps_per_epoch, self.log_every = steps_per_epoch, log_every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar: Any = None
        self.history: History | None = None
        self.epoch, self.first_step, self.last_step = 0, 0, 0
        self._lock = threading.Lock()  # reports arrive on XLA's thread while the main thread waits

    def begin(self, history: History) -> None:
        """Before the first epoch of the call (``history.epochs_done`` already trained)."""
        self.history = history
        if self.verbose and self.tty and self.log_every is None:
            self.bar = tqdm(total=self.num_epochs, initial=history.epochs_done, desc=self.desc, unit="epoch",
                            file=self.stream)

    def epoch_start(self, epoch: int, state: Any) -> None:
        """Epoch ``epoch`` (0-based) starts from ``state``."""
        self.epoch = epoch
        if self.log_every is None:
            return
        self.first_step = int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
        self.last_step = self.first_step
        if self.verbose and self.tty:
            self.bar = tqdm(total=self.steps_per_epoch, desc=f"{self.desc} epoch {epoch + 1}/{self.num_epochs}",
                            unit="step", file=self.stream, leave=True)

    def report(self, step: Any, loss: Any) -> None:
        """A report from the compiled epoch: the loss of global step ``step`` (1-based)."""
        step, loss = int(step), float(loss)
        with self._lock:
            if step <= self.last_step:  # a re-run of the epoch (non-finite check) or a second device
                return
            done, self.last_step = step - self.first_step, step
            if self.history is not None:
                self.history.step_losses.append((step, loss))
            if not self.verbose:
                return
            if self.bar is not None:
                self.bar.update(done - self.bar.n)
                self.bar.set_postfix(loss=f"{loss:.4f}")
            else:
                total = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
                print(f"{self.desc} epoch {self.epoch + 1}/{self.num_epochs} step {done}{total}: loss {loss:.4f}",
                      file=self.stream, flush=True)

    def epoch_end(self, epoch: int, logs: dict[str, Any], seconds: float) -> None:
        """Epoch ``epoch`` ended with ``logs`` after ``seconds`` of training."""
        if not self.verbose:
            return
        values = _shown(logs)
        if self.bar is not None and self.log_every is None:
            self.bar.update(1)
            self.bar.set_postfix(values)
        elif self.bar is not None:
            with self._lock:
                self.bar.update((self.bar.total or self.bar.n) - self.bar.n)
                self.bar.set_postfix(values)
                self.bar.close()
                self.bar = None
        else:
            shown = _format(logs)
            print(f"{self.desc} epoch {epoch + 1}/{self.num_epochs}: {shown + ', ' if shown else ''}"
                  f"{_seconds(seconds)}", file=self.stream, flush=True)

    def close(self) -> None:
        """After the last epoch."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 100 or not math.isfinite(seconds) else f"{seconds:.0f} s"
