"""Streamed epochs: one compiled step per batch, for data that does not fit on the device.

Each batch comes from the host (a generator, a DataLoader, a tf.data
pipeline: ``funcdl.train.inputs.BatchSource``), is checked, padded to the
run's batch size with copies of its own examples (masked out of the loss, so
a short last batch keeps the shapes and nothing recompiles) and handed to the
step compiled once for that shape. Dispatch is asynchronous, so the host
prepares batch ``i + 1`` while the device runs batch ``i``.

Keys are those of every funcdl epoch (``funcdl.train.epoch``): epoch ``e``
splits ``epoch_key(train_key, e)`` as ``epoch_plan`` does and step ``i`` drops
out with ``fold_in(dropout_key, i)``, so streaming the batches ``fit`` would
have made gives ``fit``'s numbers. Steps are guarded: after a non-finite loss
or gradient the rest of the epoch changes nothing (there is no re-run of a
stream from its start).
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import losses
from funcdl.errors import DataError
from funcdl.train.checks import check_data
from funcdl.train.inputs import BatchSource
from funcdl.train.memory import compile_lowered
from funcdl.train.step import StepMetrics, TrainState, TrainStep, apply_model, count_correct


def pad_batch(x: np.ndarray, y: np.ndarray, size: int, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, mask)`` of ``size`` examples: the batch, then copies of its first examples masked out."""
    count = len(x)
    if count > size:
        raise DataError(f"{where} has {count} examples, more than the batch size {size} the run was compiled "
                        "for (the first batch's size, or batch_size=); yield batches of at most that many")
    mask = (np.arange(size) < count).astype(np.float32)
    if count < size:
        fill = np.resize(np.arange(count), size - count)
        x, y = np.concatenate([x, x[fill]]), np.concatenate([y, y[fill]])
    return x, y, mask


class BatchChecks:
    """The host checks of every streamed batch: what ``fit`` checks of arrays, and the first batch's shapes."""

    def __init__(self, label_kind: str, sample_x: np.ndarray, sample_y: np.ndarray, classes: int | None):
        self.label_kind, self.classes = label_kind, classes
        self.x_shape, self.y_shape = sample_x.shape[1:], sample_y.shape[1:]

    def __call__(self, x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = check_data(x, y, self.label_kind, where)
        if x.shape[1:] != self.x_shape or y.shape[1:] != self.y_shape:
            raise DataError(f"{where} holds x of shape {x.shape[1:]} and y of shape {y.shape[1:]} per example; the "
                            f"first batch had {self.x_shape} and {self.y_shape}")
        if self.classes is not None and self.label_kind == "integer" and int(y.max()) >= self.classes:
            raise DataError(f"{where}: labels must be integers in [0, {self.classes}) for a model with "
                            f"{self.classes} outputs; found max={int(y.max())}")
        return x, y


class StreamEpoch:
    """``epoch(state, key) -> (state, StepMetrics stacked over its steps)`` over the source's next batches.

    Args:
      step: a guarded train step (``make_train_step(..., guard=True)``, possibly wrapped).
      source: where the batches come from; checks: ``BatchChecks`` of the run.
      batch_size: the padded batch size the step is compiled for.
      stop_on_nonfinite: after the first non-finite step the rest of the epoch changes nothing.
      eager: run the step op by op (nothing compiled).
    """

    def __init__(self, step: TrainStep, source: BatchSource, checks: BatchChecks, batch_size: int,
                 stop_on_nonfinite: bool = True, eager: bool = False):
        self.source, self.checks, self.batch_size, self.eager = source, checks, batch_size, eager

        def one_step(state, healthy, x, y, mask, dropout_key, i):
            key = jax.random.fold_in(dropout_key, i)
            if not stop_on_nonfinite:
                new_state, metrics = step(state, x, y, mask, key)
                return new_state, healthy, metrics
            new_state, metrics = step(state, x, y, mask, key, healthy)
            return new_state, healthy & metrics.finite, metrics
        self._one_step: Callable = one_step

    def compile(self, state: TrainState, x: np.ndarray, y: np.ndarray, key: jax.Array) -> "StreamEpoch":
        """AOT-compile the step for batches shaped like ``x``, ``y`` padded to the batch size; returns ``self``."""
        if not self.eager:
            x, y, mask = pad_batch(x, y, self.batch_size, "the first batch")
            _, dropout_key = jax.random.split(key)
            self._one_step = compile_lowered(jax.jit(self._one_step).lower(
                state, jnp.array(True), jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask), dropout_key,
                jnp.int32(0)))
        return self

    def __call__(self, state: TrainState, key: jax.Array) -> tuple[TrainState, StepMetrics]:
        _, dropout_key = jax.random.split(key)  # as epoch_plan splits an epoch's key
        healthy, metrics = jnp.array(True), []
        for i, (x, y) in enumerate(self.source.batches()):
            where = f"batch {i + 1} of {self.source.what}"
            x, y, mask = pad_batch(*self.checks(x, y, where), self.batch_size, where)
            state, healthy, step_metrics = self._one_step(state, healthy, jnp.asarray(x), jnp.asarray(y),
                                                          jnp.asarray(mask), dropout_key, jnp.int32(i))
            metrics.append(step_metrics)
        if not metrics:
            raise DataError(f"{self.source.what} ran out of batches: an epoch got none; give a source that can "
                            "be iterated again (a list, a DataLoader, a tf.data.Dataset) or fewer steps_per_epoch "
                            "x epochs batches")
        return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)


def stream_evaluator(model: Any, loss_fn: Callable, source: BatchSource, checks: BatchChecks,
                     eager: bool) -> Callable:
    """``variables -> {'loss', 'accuracy'}`` over every batch of ``source``, one compiled call a batch.

    Shorter batches are padded to the first batch's size (one compiled shape); a longer one compiles its own.
    """
    threshold = losses.binary_threshold(loss_fn)

    def evaluate_batch(variables, x, y, mask):
        outputs = apply_model(model, variables, x)
        return jnp.sum(loss_fn(outputs, y) * mask), count_correct(outputs, y, mask, threshold)
    run = evaluate_batch if eager else jax.jit(evaluate_batch)

    def evaluate(variables):
        totals, count, size = (jnp.zeros(()), jnp.zeros(())), 0, 0
        for i, (x, y) in enumerate(source.batches()):
            where = f"batch {i + 1} of {source.what}"
            x, y = checks(x, y, where)
            count, size = count + len(x), size or len(x)
            batch = run(variables, *(jnp.asarray(a) for a in pad_batch(x, y, max(size, len(x)), where)))
            totals = (totals[0] + batch[0], totals[1] + batch[1])  # summed on the device: no wait per batch
        if count == 0:
            raise DataError(f"{source.what} yielded no batches")
        return {"loss": float(totals[0]) / count, "accuracy": float(totals[1]) / count}
    return evaluate
