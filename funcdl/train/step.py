"""Training: a pure train step, whole epochs as one XLA call, ``fit`` / ``evaluate`` / ``predict``.

One epoch is one compiled program: the shuffled index array is cut into
``(num_batches, batch_size)``, ``lax.scan`` runs the train step over it, and
each batch is gathered from device-resident data inside the scan. The last
partial batch is filled up with examples from the start of the permutation and
masked out of the loss, so every epoch has the same shapes and nothing is
recompiled after the first one.
"""
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funcdl.nn._base import takes_train


class TrainState(NamedTuple):
    """Everything a step changes: model variables, optimizer state, global step."""
    variables: Any
    opt_state: Any
    step: Any


class StepMetrics(NamedTuple):
    """Per-step outputs of the train step (stacked over an epoch by ``lax.scan``)."""
    loss: Any       # mean loss over the batch's real examples
    correct: Any    # number of correctly classified real examples (0 for regression)
    count: Any      # number of real examples in the batch
    finite: Any     # whether the loss (and, for a guarded step, every gradient) was finite


def apply_model(model, variables, x, train=False, **kwargs):
    """``model.apply`` passing ``train`` only to models whose ``__call__`` takes it."""
    if takes_train(model):
        return model.apply(variables, x, train=train, **kwargs)
    return model.apply(variables, x, **kwargs)


def masked_mean(per_example, mask):
    """Mean of ``per_example`` over the examples where ``mask`` is 1."""
    return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def count_correct(outputs, targets, mask):
    """Correct classifications among masked examples (argmax vs integer or one-hot targets)."""
    if outputs.ndim != 2 or outputs.shape[-1] < 2:
        return jnp.zeros((), jnp.float32)
    labels = targets if targets.ndim == 1 else jnp.argmax(targets, -1)
    return jnp.sum((jnp.argmax(outputs, -1) == labels) * mask)


def _select(ok, new, old):
    # A cond, not an elementwise where: on the CPU it saves reading both states every step (~14% of an
    # MLP step); under vmap (sweeps) JAX turns it into a select.
    return jax.lax.cond(ok, lambda new, old: new, lambda new, old: old, new, old)


def make_train_step(model, loss_fn, optimizer, guard=True):
    """A pure train step ``step(state, x, y, mask, key, active=True) -> (state, StepMetrics)``.

    With ``guard`` (the default) a step whose loss or gradients are not finite
    leaves ``state`` unchanged, and so does a step whose ``active`` flag is
    false (an epoch passes "no bad step yet" there, so one ``lax.cond`` per step
    decides both). With ``guard=False`` the step only updates: ``finite``
    reports the loss alone and ``active`` is ignored. ``fit`` runs unguarded
    steps and re-runs an epoch with guarded ones only when its losses or its
    final state are not finite; the per-step checks cost an MLP epoch ~20% on
    the CPU, where every extra operation in the loop body is paid 938 times.
    """
    def objective(params, variables, x, y, mask, key):
        outputs, new_state = apply_model(model, {**variables, "params": params}, x, train=True,
                                         rngs={"dropout": key}, mutable=["batch_stats"])
        return masked_mean(loss_fn(outputs, y), mask), (outputs, new_state)

    def step(state, x, y, mask, key, active=True):
        params = state.variables["params"]
        (loss, (outputs, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            params, state.variables, x, y, mask, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        variables = {**state.variables, **new_state, "params": optax.apply_updates(params, updates)}
        new = TrainState(variables, opt_state, state.step + 1)
        metrics = StepMetrics(loss, count_correct(outputs, y, mask), jnp.sum(mask), jnp.isfinite(loss))
        if not guard:
            return new, metrics
        finite = metrics.finite & all_finite(grads)
        skipped = TrainState(state.variables, state.opt_state, state.step + 1)
        return _select(finite & active, new, skipped), metrics._replace(finite=finite)
    return step


def all_finite(tree):
    """Whether every element of every leaf of ``tree`` is finite (a scalar bool array)."""
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def epoch_indices(key, num_examples, batch_size, shuffle=True):
    """(num_batches, batch_size) example indices and the 0/1 mask of real examples."""
    num_batches = math.ceil(num_examples / batch_size)
    order = jax.random.permutation(key, num_examples) if shuffle else jnp.arange(num_examples)
    padding = num_batches * batch_size - num_examples
    # Fill the last batch with real examples (so BatchNorm sees real data) and mask them out.
    order = jnp.concatenate([order, jnp.resize(order, padding)]) if padding else order
    mask = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
    return order.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def _guarded(step, stop_on_nonfinite):
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


def epoch_plan(key, num_examples, batch_size, shuffle=True):
    """(indices, masks, dropout_key) of the epoch keyed by ``key``: what every epoch loop runs over."""
    shuffle_key, dropout_key = jax.random.split(key)
    indices, masks = epoch_indices(shuffle_key, num_examples, batch_size, shuffle)
    return indices, masks, dropout_key


def make_train_epoch(step, batch_size, shuffle=True, stop_on_nonfinite=True):
    """``epoch(state, x, y, key) -> (state, StepMetrics stacked over steps)``, one scan over batches."""
    body = _guarded(step, stop_on_nonfinite)

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

    def __init__(self, step, batch_size, shuffle=True, stop_on_nonfinite=True):
        self.batch_size, self.shuffle = batch_size, shuffle
        body = _guarded(step, stop_on_nonfinite)

        def one_step(state, healthy, x, y, indices, masks, dropout_key, i):
            return body(state, healthy, x, y, indices[i], masks[i], dropout_key, i)
        self._one_step = one_step
        self._plan = self._step = None

    def compile(self, state, x, y, key):
        """AOT-compile the plan and the step for these shapes; returns ``self``."""
        self._plan = jax.jit(epoch_plan, static_argnums=(1, 2, 3)).lower(
            key, x.shape[0], self.batch_size, self.shuffle).compile()
        self._step = jax.jit(self._one_step).lower(
            state, jnp.array(True), x, y, *self._plan.out_info, jnp.int32(0)).compile()
        return self

    def __call__(self, state, x, y, key):
        indices, masks, dropout_key = self._plan(key)
        healthy, metrics = jnp.array(True), []
        for i in range(indices.shape[0]):
            state, healthy, step_metrics = self._step(state, healthy, x, y, indices, masks, dropout_key,
                                                      jnp.int32(i))
            metrics.append(step_metrics)
        return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)


def make_eval(model, loss_fn, batch_size):
    """``evaluate(variables, x, y) -> (loss_sum, correct, predictions)`` in one scan over batches."""
    def evaluate(variables, x, y):
        indices, masks = epoch_indices(None, x.shape[0], batch_size, shuffle=False)

        def body(totals, batch):
            index, mask = batch
            outputs = apply_model(model, variables, x[index])
            loss = jnp.sum(loss_fn(outputs, y[index]) * mask)
            correct = count_correct(outputs, y[index], mask)
            predicted = jnp.argmax(outputs, -1) if outputs.ndim == 2 and outputs.shape[-1] > 1 else index * 0
            return (totals[0] + loss, totals[1] + correct), predicted
        (loss, correct), predicted = jax.lax.scan(body, (jnp.zeros(()), jnp.zeros(())), (indices, masks))
        return loss, correct, predicted.reshape(-1)[:x.shape[0]]
    return evaluate
