"""Whole epochs as one XLA call, and the keys and batch order every epoch loop shares.

One epoch is one compiled program: the shuffled index array is cut into
``(num_batches, batch_size)``, ``lax.scan`` runs the train step over it, and
each batch is gathered from device-resident data inside the scan. The last
partial batch is filled up with examples from the start of the permutation and
masked out of the loss, so every epoch has the same shapes and nothing is
recompiled after the first one.

Keys: ``split_seed(seed)`` gives the initialisation key and the training key;
epoch ``e`` runs on ``epoch_key(train_key, e)``, which ``epoch_plan`` splits
into the shuffle key and the dropout key (step ``i`` drops out with
``fold_in(dropout_key, i)``). ``fit``, ``sweep`` and the benchmark all derive
their keys this way, so the same seed visits the same batches everywhere.
"""
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcdl import losses
from funcdl.errors import ConfigError
from funcdl.train.memory import compile_lowered
from funcdl.train.step import StepMetrics, TrainState, TrainStep, apply_model, count_correct

# epoch(state, x, y, key) -> (state, StepMetrics stacked over the epoch's steps)
TrainEpoch = Callable[[TrainState, Any, Any, jax.Array], tuple[TrainState, StepMetrics]]


def split_seed(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init_key, train_key) of a run seeded with ``seed`` (``check_seed``: a 64-bit integer)."""
    init_key, train_key = jax.random.split(jax.random.key(check_seed(seed)))
    return init_key, train_key


def check_seed(seed: Any, what: str = "seed") -> int:
    """``seed`` as an int; ConfigError unless it is an integer a PRNG key can hold: -2**63 <= seed < 2**63."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not -2 ** 63 <= int(seed) < 2 ** 63:
        raise ConfigError(f"{what} must be an integer from -2**63 to 2**63-1 (a PRNG key holds 64 bits), "
                          f"got {seed!r}")
    return int(seed)


def epoch_key(train_key: jax.Array, epoch: Any) -> jax.Array:
    """The key of epoch ``epoch`` (0-based; a Python int or a traced int32) of a run with ``train_key``."""
    return jax.random.fold_in(train_key, epoch)


def epoch_indices(key: jax.Array | None, num_examples: int, batch_size: int,
                  shuffle: bool = True) -> tuple[jax.Array, jax.Array]:
    """(num_batches, batch_size) example indices and the 0/1 mask of real examples (same shape)."""
    num_batches = math.ceil(num_examples / batch_size)
    if not shuffle:
        order = jnp.arange(num_examples)
    elif key is None:
        raise ConfigError("shuffling an epoch needs a key")
    else:
        order = jax.random.permutation(key, num_examples)
    padding = num_batches * batch_size - num_examples
    # Fill the last batch with real examples (so BatchNorm sees real data) and mask them out.
    order = jnp.concatenate([order, jnp.resize(order, (padding,))]) if padding else order
    mask = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
    return order.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def epoch_plan(key: jax.Array, num_examples: int, batch_size: int,
               shuffle: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(indices, masks, dropout_key) of the epoch keyed by ``key``: what every epoch loop runs over."""
    shuffle_key, dropout_key = jax.random.split(key)
    indices, masks = epoch_indices(shuffle_key, num_examples, batch_size, shuffle)
    return indices, masks, dropout_key


def _indexed(step, stop_on_nonfinite):
    """The step as an epoch runs it: batch ``i`` gathered by index, dropout key ``fold_in(key, i)``."""
    def body(state, healthy, x, y, index, mask, dropout_key, i):
        key = jax.random.fold_in(dropout_key, i)
        if not stop_on_nonfinite:
            new_state, metrics = step(state, x[index], y[index], mask, key)
            return new_state, healthy, metrics
        # After the first bad step the rest of the epoch changes nothing.
        new_state, metrics = step(state, x[index], y[index], mask, key, healthy)
        return new_state, healthy & metrics.finite, metrics
    return body


def make_train_epoch(step: TrainStep, batch_size: int, shuffle: bool = True,
                     stop_on_nonfinite: bool = True) -> TrainEpoch:
    """``epoch(state, x, y, key) -> (state, StepMetrics stacked over steps)``, one scan over batches.

    Args:
      step: from ``make_train_step``; with ``stop_on_nonfinite`` (which needs a guarded step) the
        steps after the first non-finite one change nothing.
      batch_size, shuffle: as in ``fit``.
    Returns:
      ``epoch``: ``x`` (N, ...), ``y`` (N, ...) on the device, ``key`` from ``epoch_key``.
    """
    body = _indexed(step, stop_on_nonfinite)

    def epoch(state, x, y, key):
        indices, masks, dropout_key = epoch_plan(key, x.shape[0], batch_size, shuffle)

        def scan_body(carry, batch):
            index, mask, i = batch
            state, healthy, metrics = body(*carry, x, y, index, mask, dropout_key, i)
            return (state, healthy), metrics
        (state, _), metrics = jax.lax.scan(scan_body, (state, jnp.array(True)),
                                           (indices, masks, jnp.arange(indices.shape[0])))
        return state, metrics
    return epoch


class SteppedEpoch:
    """The epoch of ``make_train_epoch`` run as one compiled call per step instead of one scan.

    Same batches, masks, dropout keys and non-finite handling, so the same
    numbers (up to XLA's fusion choices). It exists for XLA:CPU, which runs
    convolutions inside loops several times slower than outside them (see
    ``fit(loop=...)``); everywhere else the scanned epoch is the faster one.
    Call ``compile(state, x, y, key)`` once, then ``epoch(state, x, y, key)``.
    """

    def __init__(self, step: TrainStep, batch_size: int, shuffle: bool = True, stop_on_nonfinite: bool = True):
        self.batch_size, self.shuffle = batch_size, shuffle
        body = _indexed(step, stop_on_nonfinite)

        def one_step(state, healthy, x, y, indices, masks, dropout_key, i):
            return body(state, healthy, x, y, indices[i], masks[i], dropout_key, i)
        self._one_step = one_step
        self._plan: Any = None
        self._step: Any = None

    def compile(self, state: TrainState, x: Any, y: Any, key: jax.Array) -> "SteppedEpoch":
        """AOT-compile the plan and the step for these shapes; returns ``self``."""
        self._plan = compile_lowered(jax.jit(epoch_plan, static_argnums=(1, 2, 3)).lower(
            key, x.shape[0], self.batch_size, self.shuffle))
        self._step = compile_lowered(jax.jit(self._one_step).lower(
            state, jnp.array(True), x, y, *self._plan.out_info, jnp.int32(0)))
        return self

    def __call__(self, state: TrainState, x: Any, y: Any, key: jax.Array) -> tuple[TrainState, StepMetrics]:
        indices, masks, dropout_key = self._plan(key)
        healthy, metrics = jnp.array(True), []
        for i in range(indices.shape[0]):
            state, healthy, step_metrics = self._step(state, healthy, x, y, indices, masks, dropout_key,
                                                      jnp.int32(i))
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)


def make_eval(model: Any, loss_fn: Callable, batch_size: int) -> Callable:
    """``evaluate(variables, x, y) -> (loss_sum, correct, predictions (N,))`` in one scan over batches."""
    threshold = losses.binary_threshold(loss_fn)

    def evaluate(variables, x, y):
        indices, masks = epoch_indices(None, x.shape[0], batch_size, shuffle=False)

        def body(totals, batch):
            index, mask = batch
            outputs = apply_model(model, variables, x[index])
            loss = jnp.sum(loss_fn(outputs, y[index]) * mask)
            correct = count_correct(outputs, y[index], mask, threshold)
            predicted = _predicted_class(outputs, threshold, index)
            return (totals[0] + loss, totals[1] + correct), predicted
        (loss, correct), predicted = jax.lax.scan(body, (jnp.zeros(()), jnp.zeros(())), (indices, masks))
        return loss, correct, predicted.reshape(-1)[:x.shape[0]]
    return evaluate


def _predicted_class(outputs, threshold, index):
    """(B,) predicted classes: argmax of class scores, ``outputs > threshold`` of one binary output, else 0."""
    if threshold is not None and outputs.shape[1:] == (1,):
        return (outputs[:, 0] > threshold).astype(jnp.int32)
    return jnp.argmax(outputs, -1) if outputs.ndim == 2 and outputs.shape[-1] > 1 else index * 0


def make_predict(model: Any, batch_size: int) -> Callable:
    """``predict(variables, x) -> outputs (N, ...)`` in inference mode, batched under one ``lax.map``.

    A model with several outputs gives them as its tuple or dict of (N, ...) arrays.
    """
    def predict(variables, x):
        indices, _ = epoch_indices(None, x.shape[0], batch_size, shuffle=False)
        outputs = jax.lax.map(lambda index: model.apply(variables, x[index]), indices)
        return jax.tree.map(lambda out: out.reshape((-1,) + out.shape[2:])[:x.shape[0]], outputs)
    return predict
