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
    finite: Any     # whether the loss and every gradient were finite


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
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)


def make_train_step(model, loss_fn, optimizer, skip_nonfinite=False):
    """A pure train step ``step(state, x, y, mask, key) -> (state, StepMetrics)``.

    A step whose loss or gradients are not finite leaves ``state`` unchanged
    (and, unless ``skip_nonfinite``, so does every later step of the epoch, so
    ``fit`` can stop with the last good parameters).
    """
    def objective(params, variables, x, y, mask, key):
        outputs, new_state = apply_model(model, {**variables, "params": params}, x, train=True,
                                         rngs={"dropout": key}, mutable=["batch_stats"])
        return masked_mean(loss_fn(outputs, y), mask), (outputs, new_state)

    def step(state, x, y, mask, key):
        params = state.variables["params"]
        (loss, (outputs, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            params, state.variables, x, y, mask, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        variables = {**state.variables, **new_state, "params": optax.apply_updates(params, updates)}
        finite = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(g))
                                                          for g in jax.tree.leaves(grads)]))
        new = TrainState(variables, opt_state, state.step + 1)
        skipped = TrainState(state.variables, state.opt_state, state.step + 1)
        return _select(finite, new, skipped), StepMetrics(
            loss, count_correct(outputs, y, mask), jnp.sum(mask), finite)
    return step


def epoch_indices(key, num_examples, batch_size, shuffle=True):
    """(num_batches, batch_size) example indices and the 0/1 mask of real examples."""
    num_batches = math.ceil(num_examples / batch_size)
    order = jax.random.permutation(key, num_examples) if shuffle else jnp.arange(num_examples)
    padding = num_batches * batch_size - num_examples
    # Fill the last batch with real examples (so BatchNorm sees real data) and mask them out.
    order = jnp.concatenate([order, jnp.resize(order, padding)]) if padding else order
    mask = (jnp.arange(num_batches * batch_size) < num_examples).astype(jnp.float32)
    return order.reshape(num_batches, batch_size), mask.reshape(num_batches, batch_size)


def make_train_epoch(step, batch_size, shuffle=True, stop_on_nonfinite=True):
    """``epoch(state, x, y, key) -> (state, StepMetrics stacked over steps)``, one scan over batches."""
    def epoch(state, x, y, key):
        shuffle_key, dropout_key = jax.random.split(key)
        indices, masks = epoch_indices(shuffle_key, x.shape[0], batch_size, shuffle)

        def body(carry, batch):
            state, healthy = carry
            index, mask, i = batch
            new_state, metrics = step(state, x[index], y[index], mask, jax.random.fold_in(dropout_key, i))
            if stop_on_nonfinite:
                # After the first bad step the rest of the epoch changes nothing.
                new_state = _select(healthy, new_state, state)
                healthy = healthy & metrics.finite
            return (new_state, healthy), metrics
        (state, _), metrics = jax.lax.scan(body, (state, jnp.array(True)),
                                           (indices, masks, jnp.arange(indices.shape[0])))
        return state, metrics
    return epoch


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
