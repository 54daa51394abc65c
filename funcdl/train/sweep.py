"""Hyper-parameter sweeps in one program: every (learning rate, seed) model trained at once with ``jax.vmap``.

    result = fd.sweep.sweep(model, x, y, lrs=[1e-3, 3e-3], seeds=[0, 1], epochs=5,
                            validation_data=(x_val, y_val))
    result.ranking()[0]      # {'lr': ..., 'seed': ..., 'val_accuracy': ..., ...}

The K = len(lrs) x len(seeds) models share one compiled program: the train
step is vmapped over (model state, learning rate, key) inside the scanned
epoch, and the learning rate reaches the optimizer as a traced array. The
epochs run in the loop ``fit`` runs in (``funcdl.train.loop``).

Each model follows exactly what ``fd.fit(model, data, seed=s, optimizer=<lr>)``
would do: initialisation, batch order and dropout keys all derive from its own
seed, so a sweep entry reproduces that separate fit (up to float rounding).
Models with the same seed and different learning rates therefore see the same
batches in the same order: learning rates are compared on paired data, and
seeds measure the spread over initialisation *and* data order together.
"""
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import nn
from funcdl import optim as optim_lib
from funcdl.errors import ConfigError, DataError
from funcdl.io import save_png
from funcdl.train.checks import as_arrays, check_batch_size, check_data, check_epochs, check_model_fits
from funcdl.train.epoch import epoch_key, make_eval, make_train_epoch, split_seed
from funcdl.train.history import History
from funcdl.train.loop import run_epochs
from funcdl.train.memory import compile_lowered
from funcdl.train.objective import resolve as resolve_loss
from funcdl.train.step import TrainState, make_train_step


@dataclass
class SweepResult:
    """What ``sweep`` returns: one row per model, in grid order (learning-rate major).

    Attributes:
      lrs, seeds: (K,) the learning rate and seed of each model.
      batch_sizes: (K,) the batch size of each model (models of one batch size share one program).
      history: ``{'loss', 'accuracy', 'val_loss', 'val_accuracy'}`` each (K, epochs).
      diverged: (K,) True where a step gave a non-finite loss (the model kept its last good state).
      variables: the trained variables stacked on a leading K axis.
      compile_seconds, epoch_seconds: compile time and wall time of each epoch (all models).
    """
    lrs: np.ndarray
    seeds: np.ndarray
    history: dict = field(default_factory=dict)
    diverged: Any = None
    variables: Any = None
    compile_seconds: float = 0.0
    epoch_seconds: list = field(default_factory=list)
    batch_sizes: Any = None

    def model_variables(self, index: int) -> Any:
        """The variables of model ``index`` (as ``fd.fit`` would return them)."""
        return jax.tree.map(lambda leaf: leaf[index], self.variables)

    def ranking(self) -> list[dict[str, Any]]:
        """Rows ``{'lr', 'seed', 'batch_size', 'loss', 'accuracy', 'val_loss', 'val_accuracy', 'diverged',
        'index'}``, best first.

        Best: not diverged, then highest final validation accuracy (training
        accuracy without validation data), then lowest final loss.
        """
        rows = []
        for index in range(len(self.lrs)):
            row = {"index": index, "lr": float(self.lrs[index]), "seed": int(self.seeds[index]),
                   "batch_size": int(self.batch_sizes[index]), "diverged": bool(self.diverged[index])}
            row.update({key: float(values[index, -1]) for key, values in self.history.items()})
            rows.append(row)
        metric = "val_accuracy" if "val_accuracy" in self.history else "accuracy"
        loss = "val_loss" if "val_loss" in self.history else "loss"
        return sorted(rows, key=lambda r: (r["diverged"], -_finite_or(r[metric], -math.inf),
                                           _finite_or(r[loss], math.inf)))


def _finite_or(value, default):
    return value if math.isfinite(value) else default


def grid(lrs: Sequence[float], seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(K,) learning rates and (K,) int seeds of every (lr, seed) pair, learning-rate major."""
    lrs, seeds = list(lrs), list(seeds)
    if not lrs or not seeds:
        raise ConfigError("a sweep needs at least one learning rate and one seed")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning rates must be positive numbers, got {lr!r}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seeds must be integers, got {seed!r}")
    pairs = list(itertools.product(lrs, seeds))
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.int64)


def _optimizer_factory(optimizer, flavor):
    """``learning_rate -> GradientTransformation`` from a name or a factory."""
    if isinstance(optimizer, str):
        optim_lib.get(optimizer, 1e-3, flavor=flavor)  # unknown names fail here, once, with the choices
        return lambda learning_rate: optim_lib.get(optimizer, learning_rate, flavor=flavor)
    if callable(optimizer):
        return optimizer
    raise ConfigError("sweep optimizer must be a name such as 'adam' or a function learning_rate -> optimizer")


def _initial_states(model, make_optimizer, init_keys, lrs, x):
    """The K models' TrainStates, stacked: vmapped ``init`` then optimizer ``init``."""
    sample = jnp.asarray(x[:1])
    with nn.shape_errors(x.shape[1:]):
        jax.eval_shape(model.init, init_keys[0], sample)  # fail once, clearly, before vmapping
    # jit: one small program instead of every init op dispatched (and compiled) one by one
    variables = jax.jit(jax.vmap(lambda key: model.init(key, sample)))(init_keys)
    opt_state = jax.jit(jax.vmap(lambda lr, params: make_optimizer(lr).init(params)))(
        jnp.asarray(lrs, jnp.float32), variables["params"])
    return TrainState(variables, opt_state, jnp.zeros(len(lrs), jnp.int32))


def _make_program(model, loss_fn, make_optimizer, batch_size, shuffle, eval_batch_size):
    """``program(lrs, states, x, y, train_keys, epoch, x_val, y_val) -> (states, metrics, validation)``.

    One epoch of every model (the train step vmapped inside the scan), then the
    vmapped evaluation on the validation data (None when there is none).
    """
    def model_epoch(lr, state, x, y, train_key, epoch):
        step = make_train_step(model, loss_fn, make_optimizer(lr))
        epoch_fn = make_train_epoch(step, batch_size, shuffle, stop_on_nonfinite=True)
        return epoch_fn(state, x, y, epoch_key(train_key, epoch))

    def program(lrs, states, x, y, train_keys, epoch, x_val, y_val):
        states, metrics = jax.vmap(model_epoch, in_axes=(0, 0, None, None, 0, None))(
            lrs, states, x, y, train_keys, epoch)
        if x_val is None:
            return states, metrics, None
        evaluate = make_eval(model, loss_fn, min(eval_batch_size, x_val.shape[0]))
        loss_sum, correct, _ = jax.vmap(evaluate, in_axes=(0, None, None))(states.variables, x_val, y_val)
        return states, metrics, (loss_sum, correct)
    return program


def _epoch_logs(metrics, validation, num_validation):
    """Per-model epoch logs ``{'loss': (K,), 'accuracy': (K,), ...}`` and (K,) 'any step non-finite'."""
    ok = np.asarray(metrics.finite)
    count = np.asarray(metrics.count) * ok
    total = np.where(count.sum(1) > 0, count.sum(1), np.nan)  # NaN: no finite step this epoch
    logs = {"loss": (np.nan_to_num(np.asarray(metrics.loss)) * count).sum(1) / total,
            "accuracy": (np.asarray(metrics.correct) * ok).sum(1) / total}
    if validation is not None:
        # divided on the host in float64, as fit does, so the numbers match a separate fit's
        logs["val_loss"], logs["val_accuracy"] = (np.asarray(v, np.float64) / num_validation for v in validation)
    return logs, ~ok.all(1)


class SweepEpochs:
    """The sweep's epochs for the shared loop: every model's epoch and validation in one compiled program.

    ``run`` calls the program on the K stacked states; ``logs`` gives per-model (K,) arrays and marks
    the models whose epoch had a non-finite step in ``diverged``.
    """

    def __init__(self, program: Callable, arguments: list, num_validation: int | None):
        self.program, self.arguments, self.num_validation = program, arguments, num_validation
        self.diverged = np.zeros(len(arguments[0]), bool)

    @classmethod
    def build(cls, program: Callable, lrs: np.ndarray, states: TrainState, x: np.ndarray, y: np.ndarray,
              train_keys: jax.Array, validation: tuple | None) -> tuple["SweepEpochs", float]:
        """(the compiled sweep, seconds spent compiling) for these arrays."""
        x_val, y_val = validation if validation is not None else (None, None)
        arguments = [jnp.asarray(lrs, jnp.float32), states, jnp.asarray(x), jnp.asarray(y), train_keys,
                     jnp.int32(0), None if x_val is None else jnp.asarray(x_val),
                     None if y_val is None else jnp.asarray(y_val)]
        start = time.perf_counter()
        compiled = compile_lowered(jax.jit(program).lower(*arguments))
        return cls(compiled, arguments, None if x_val is None else len(x_val)), time.perf_counter() - start

    def prepare(self, epoch: int) -> jax.Array:
        return jnp.int32(epoch)

    def run(self, states: TrainState, epoch: jax.Array) -> tuple[TrainState, tuple]:
        lrs, _, x, y, train_keys, _, x_val, y_val = self.arguments
        states, metrics, validation = self.program(lrs, states, x, y, train_keys, epoch, x_val, y_val)
        return states, (metrics, validation)

    def logs(self, epoch: int, before: TrainState, states: TrainState, metrics: tuple[Any, Any],
             history: History) -> dict[str, np.ndarray]:
        logs, bad = _epoch_logs(*metrics, self.num_validation)
        self.diverged |= bad
        return logs


def sweep(model: Any, x: Any, y: Any = None, *, lrs: Sequence[float], seeds: Sequence[int],
          loss: str | Callable = "cross_entropy", optimizer: str | Callable = "adam", flavor: str = "torch",
          epochs: int = 1, batch_size: int | Sequence[int] = 32, validation_data: Any = None, shuffle: bool = True,
          eval_batch_size: int = 1024, verbose: bool = True) -> SweepResult:
    """Train one model per (learning rate, seed[, batch size]) setting, each batch size's models in one program.

    Args:
      model: a funcdl layer, as for ``fd.fit``.
      x, y: the training data, as for ``fd.fit``; images NHWC.
      lrs, seeds: the grid; K = len(lrs) * len(seeds) models per batch size, learning-rate major.
      loss: a loss name or function, as for ``fd.fit``.
      optimizer: an optimizer name of ``funcdl.optim`` (with ``flavor``), or a function
        ``learning_rate -> GradientTransformation`` that accepts a traced learning rate.
      epochs, shuffle, eval_batch_size: as for ``fd.fit``.
      batch_size: one batch size, or several: the models of each batch size train in a program of their own
        (shapes differ), one after the other; rows are batch-size major.
      validation_data: evaluated for every model after every epoch (what ``ranking`` ranks on).
    Returns:
      SweepResult (per-model histories (K, epochs), stacked variables, ranking()).
    """
    sizes = [batch_size] if isinstance(batch_size, (int, np.integer)) else list(batch_size)
    if not sizes:
        raise ConfigError("a sweep needs at least one batch size")
    lr_grid, seed_grid = grid(lrs, seeds)
    make_optimizer = _optimizer_factory(optimizer, flavor)
    objective = resolve_loss(loss, model)
    x, y = check_data(*as_arrays(x, y), objective.label_kind)
    for size in sizes:
        check_batch_size(size, len(x))
    check_epochs(epochs)
    validation = None if validation_data is None else check_data(
        *as_arrays(validation_data, what="validation data"), objective.label_kind, "validation data")
    parts = [_sweep_batch_size(model, objective, make_optimizer, x, y, lr_grid, seed_grid, size, epochs, shuffle,
                               validation, eval_batch_size, verbose) for size in sizes]
    return parts[0] if len(parts) == 1 else _concatenate(parts)


def _sweep_batch_size(model, objective, make_optimizer, x, y, lr_grid, seed_grid, batch_size, epochs, shuffle,
                      validation, eval_batch_size, verbose):
    """The SweepResult of every (lr, seed) model at one batch size: one compiled program."""
    keys = [split_seed(int(seed)) for seed in seed_grid]
    init_keys, train_keys = jnp.stack([key[0] for key in keys]), jnp.stack([key[1] for key in keys])
    states = _initial_states(model, make_optimizer, init_keys, lr_grid, x)
    check_model_fits(model, jax.tree.map(lambda leaf: leaf[0], states.variables), x, y, objective.label_kind)
    if validation is not None:
        check_model_fits(model, jax.tree.map(lambda leaf: leaf[0], states.variables), *validation,
                         objective.label_kind, "validation data")
    program = _make_program(model, objective.loss_fn, make_optimizer, batch_size, shuffle, eval_batch_size)
    sweep_epochs, seconds = SweepEpochs.build(program, lr_grid, states, x, y, train_keys, validation)
    history = History(compile_seconds=seconds)
    states = run_epochs(sweep_epochs, states, history, epochs, verbose=verbose,
                        desc=f"sweep ({len(lr_grid)} models, batch {batch_size})")
    return SweepResult(lr_grid, seed_grid, {key: np.stack(values, axis=1) for key, values in history.history.items()},
                       sweep_epochs.diverged, states.variables, seconds, history.epoch_seconds,
                       np.full(len(lr_grid), batch_size))


def _concatenate(parts: list[SweepResult]) -> SweepResult:
    """One SweepResult of the models of several batch sizes (batch-size major); epoch times add up."""
    def join(*arrays):
        return np.concatenate([np.asarray(a) for a in arrays])
    return SweepResult(join(*(p.lrs for p in parts)), join(*(p.seeds for p in parts)),
                       {key: join(*(p.history[key] for p in parts)) for key in parts[0].history},
                       join(*(p.diverged for p in parts)), jax.tree.map(join, *(p.variables for p in parts)),
                       sum(p.compile_seconds for p in parts),
                       [sum(seconds) for seconds in zip(*(p.epoch_seconds for p in parts))],
                       join(*(p.batch_sizes for p in parts)))


def plot(result: SweepResult, path: str | Path, metric: str = "val_accuracy") -> Path:
    """Write a PNG of ``metric`` per epoch, one line per model (colour: learning rate, style: seed).

    Returns:
      the path written.
    """
    # matplotlib is imported only when a plot is made: importing funcdl stays fast (no pyplot: no global state)
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    if metric not in result.history:
        raise DataError(f"the sweep has no {metric!r} to plot; it has {', '.join(sorted(result.history))}")
    values = result.history[metric]
    lrs, seeds = sorted(set(result.lrs.tolist())), sorted(set(result.seeds.tolist()))
    figure = Figure(figsize=(10, 6), layout="constrained")
    axis = figure.subplots()
    styles = ("-", "--", ":", "-.")
    palette = [f"C{i % 10}" for i in range(len(lrs))]
    epochs = np.arange(1, values.shape[1] + 1)
    for index in range(len(result.lrs)):
        color = palette[lrs.index(float(result.lrs[index]))]
        style = styles[seeds.index(int(result.seeds[index])) % len(styles)]
        batch = f" batch={int(result.batch_sizes[index])}" if len(set(result.batch_sizes.tolist())) > 1 else ""
        axis.plot(epochs, values[index], style, color=color, marker="o", markersize=3,
                  label=f"lr={float(result.lrs[index]):.3g} seed={int(result.seeds[index])}{batch}")
    axis.set(xlabel="epoch", ylabel=metric, title=f"sweep: {metric} per epoch ({len(result.lrs)} models)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small", ncol=max(1, len(seeds)), loc="best")
    return save_png(figure, path)
