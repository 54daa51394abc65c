"""Seeing training: TensorBoard event files and a PNG report of per-layer weight statistics.

Both are ``fit`` callbacks (see ``funcdl.train.callbacks``)::

    board = fd.monitor.TensorBoard("runs/mlp", learning_rate=1e-3)
    report = fd.monitor.Report("runs/mlp/report.png")
    fd.fit(model, data, callbacks=[board, report], ...)
    report.save()

Per layer, after every epoch, they record the weight norm ``||W||`` and the
update/weight ratio ``||W_epoch - W_previous|| / ||W_previous||`` of the whole
epoch's update (what was applied between two epoch ends; the per-step ratio is
roughly this divided by the steps per epoch when updates point the same way).
A "layer" here is one parameter array, named by its pytree path, e.g.
``layers_0/kernel``. tensorboardX is imported only when a TensorBoard writer is
made (it imports torch itself when torch is installed); matplotlib only when a
report is saved.
"""
import math
import struct
from pathlib import Path
from typing import Any

import jax
import numpy as np

from funcdl.errors import DataError, require
from funcdl.io import save_png
from funcdl.train.callbacks import Callback
from funcdl.train.history import History
from funcdl.train.step import TrainState

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy")


def layer_arrays(params: Any) -> dict[str, np.ndarray]:
    """``{'layers_0/kernel': numpy array, ...}``: every parameter array on the host, by pytree path."""
    flat, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(params))
    return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(value, np.float32)
            for path, value in flat}


def update_ratio(previous: np.ndarray, current: np.ndarray) -> float:
    """``||current - previous|| / ||previous||`` (NaN when ``previous`` is all zeros, e.g. a fresh bias)."""
    norm = float(np.linalg.norm(previous))
    return float(np.linalg.norm(current - previous)) / norm if norm > 0 else math.nan


class LayerStats(Callback):
    """Callback recording, per epoch, the logs and each layer's weight norm and update/weight ratio.

    Attributes:
      logs: ``{'loss': [...], 'val_accuracy': [...], ...}`` per epoch.
      weight_norms, update_ratios: ``{'layers_0/kernel': [per-epoch floats], ...}``.
    """

    def __init__(self):
        self.logs, self.weight_norms, self.update_ratios = {}, {}, {}
        self.previous = None

    def on_train_begin(self, state: TrainState, history: History) -> None:
        self.previous = layer_arrays(state.variables["params"])

    def on_epoch_end(self, epoch, logs, state, history):
        current = layer_arrays(state.variables["params"])
        previous = self.previous if self.previous is not None else current
        for name, weights in current.items():
            self.weight_norms.setdefault(name, []).append(float(np.linalg.norm(weights)))
            self.update_ratios.setdefault(name, []).append(update_ratio(previous[name], weights))
        for key, value in logs.items():
            self.logs.setdefault(key, []).append(value)
        self.record(epoch, logs, state, previous, current)
        self.previous = current
        return None

    def record(self, epoch: int, logs: dict, state: TrainState, previous: dict, current: dict) -> None:
        """Hook for subclasses: called after the statistics of ``epoch`` are stored."""


def find_learning_rate(opt_state: Any) -> float | None:
    """The learning rate held in an optimizer state (``optax.inject_hyperparams``), or None."""
    flat, _ = jax.tree_util.tree_flatten_with_path(opt_state)
    for path, value in flat:
        if path and getattr(path[-1], "key", None) == "learning_rate":
            return float(np.asarray(jax.device_get(value)).reshape(-1)[0])
    return None


class TensorBoard(LayerStats):
    """Callback writing TensorBoard event files into ``logdir`` after every epoch (x-axis: epoch, 1-based).

    Scalars: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``,
    ``weight_norm/<layer>``, ``update_ratio/<layer>``. Histograms: ``weights/<layer>`` and
    ``update_weight_ratio/<layer>`` (``|W - W_previous| / rms(W_previous)`` per element, whose
    root mean square is the layer's update ratio).

    Args:
      logdir: folder for the event files (created).
      learning_rate: a float, or a schedule of the global step; default: read from the optimizer
        state when it holds one (``optax.inject_hyperparams``), else not logged.
      histograms: also write the histograms (they cost a host copy of every weight).
    """

    def __init__(self, logdir: str | Path, learning_rate: Any = None, histograms: bool = True):
        super().__init__()
        self.logdir, self.learning_rate, self.histograms = Path(logdir), learning_rate, histograms
        self.writer = None

    def _open(self):
        if self.writer is None:
            # imported only when a writer is made: it imports torch itself when torch is installed
            tensorboardx = require("tensorboardX", "tensorboardX (for TensorBoard logging)", "pip install tensorboardX")
            self.logdir.mkdir(parents=True, exist_ok=True)
            self.writer = tensorboardx.SummaryWriter(str(self.logdir))
        return self.writer

    def _current_learning_rate(self, state):
        if callable(self.learning_rate):
            return float(self.learning_rate(int(state.step)))
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return find_learning_rate(state.opt_state)

    def record(self, epoch, logs, state, previous, current):
        writer, step = self._open(), epoch + 1
        for key, value in logs.items():
            writer.add_scalar(key, value, step)
        learning_rate = self._current_learning_rate(state)
        if learning_rate is not None:
            writer.add_scalar("learning_rate", learning_rate, step)
        for name, weights in current.items():
            writer.add_scalar(f"weight_norm/{name}", self.weight_norms[name][-1], step)
            if math.isfinite(self.update_ratios[name][-1]):
                writer.add_scalar(f"update_ratio/{name}", self.update_ratios[name][-1], step)
            if self.histograms:
                writer.add_histogram(f"weights/{name}", weights, step)
                self._ratio_histogram(writer, name, previous[name], weights, step)
        writer.flush()

    @staticmethod
    def _ratio_histogram(writer, name, previous, weights, step):
        scale = math.sqrt(float(np.mean(np.square(previous))))
        if scale > 0 and previous is not weights:
            writer.add_histogram(f"update_weight_ratio/{name}", np.abs(weights - previous) / scale, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_events(logdir: str | Path) -> dict[str, dict]:
    """Scalars and histograms of every TensorBoard event file under ``logdir``, without TensorFlow.

    Returns:
      ``{'scalars': {tag: [(step, value), ...]}, 'histograms': {tag: [(step, number of values), ...]}}``
      in file order.
    """
    event_pb2 = require("tensorboardX.proto.event_pb2", "tensorboardX (for reading TensorBoard events)",
                        "pip install tensorboardX")
    files = sorted(Path(logdir).rglob("events.out.tfevents*"))
    if not files:
        raise DataError(f"no TensorBoard event files (events.out.tfevents*) under {logdir}")
    events: dict[str, dict[str, list]] = {"scalars": {}, "histograms": {}}
    for path in files:
        for record in _records(path.read_bytes()):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    events["scalars"].setdefault(value.tag, []).append((event.step, value.simple_value))
                elif value.HasField("histo"):
                    events["histograms"].setdefault(value.tag, []).append((event.step, int(value.histo.num)))
    return events


def _records(blob):
    """The payloads of a TFRecord file: (u64 length, u32 crc, payload, u32 crc) repeated."""
    offset = 0
    while offset + 12 <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        yield blob[offset + 12:offset + 12 + length]
        offset += 12 + length + 4


class Report(LayerStats):
    """Callback collecting what :func:`write_report` plots; ``save()`` writes the PNG to ``path``."""

    def __init__(self, path: str | Path, title: str = "training report"):
        super().__init__()
        self.path, self.title = Path(path), title

    def save(self, path: str | Path | None = None) -> Path:
        """Write the report PNG (to ``path`` or the one given at construction); returns the path."""
        return write_report(path or self.path, self, self.title)


def write_report(path: str | Path, stats: LayerStats, title: str = "training report") -> Path:
    """A 2x2 PNG: loss and accuracy curves, per-layer weight norms, per-layer update/weight ratios.

    Args:
      path: the PNG to write (its folder is created).
      stats: a :class:`LayerStats` (``Report`` / ``TensorBoard``) that watched a ``fit``.
    Returns:
      the path written.
    """
    # matplotlib is imported only when a report is made (no pyplot: no global state, Agg by default for savefig)
    from matplotlib.figure import Figure  # noqa: PLC0415

    if not stats.logs:
        raise DataError("nothing to report: the callback saw no epoch (pass it to fit's callbacks)")
    figure = Figure(figsize=(13, 9), layout="constrained")
    axes = figure.subplots(2, 2)
    figure.suptitle(title)
    _plot_curves(axes[0, 0], stats.logs, ("loss", "val_loss"), "loss", log=False)
    _plot_curves(axes[0, 1], stats.logs, ("accuracy", "val_accuracy"), "accuracy", log=False)
    _plot_curves(axes[1, 0], stats.weight_norms, sorted(stats.weight_norms), "weight norm ||W||", log=True)
    _plot_curves(axes[1, 1], stats.update_ratios, sorted(stats.update_ratios),
                 "update/weight ratio ||dW|| / ||W|| per epoch", log=True)
    return save_png(figure, path)


def _plot_curves(axis, series, names, title, log):
    # only when a report is made, as above
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415
    for name in names:
        values = np.asarray(series.get(name, []), np.float64)
        if values.size and np.isfinite(values).any():
            axis.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    axis.set_title(title)
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log and axis.lines:
        axis.set_yscale("log")
    if axis.lines:
        axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
