"""The pure train step: one optimizer update of the model variables on one batch.

    state = TrainState.create(variables, optimizer)
    step = make_train_step(model, loss_fn, optimizer)
    state, metrics = jax.jit(step)(state, x, y, mask, key)

``mask`` marks the batch's real examples (1) and its padding (0), so a padded
last batch keeps the shapes of the others and nothing is recompiled.
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funcdl import losses
from funcdl.nn import takes_train


class TrainState(NamedTuple):
    """Everything a step changes: model variables, optimizer state, global step (an int32 array)."""
    variables: Any
    opt_state: Any
    step: Any

    @classmethod
    def create(cls, variables: Any, optimizer: optax.GradientTransformation) -> "TrainState":
        """The state before the first step: ``variables``, the optimizer's initial state, step 0."""
        return cls(variables, optimizer.init(variables["params"]), jnp.asarray(0, jnp.int32))


class StepMetrics(NamedTuple):
    """Per-step outputs of the train step (stacked over an epoch by ``lax.scan``)."""
    loss: Any       # mean loss over the batch's real examples
    correct: Any    # number of correctly classified real examples (0 for regression)
    count: Any      # number of real examples in the batch
    finite: Any     # whether the loss (and, for a guarded step, every gradient) was finite


# step(state, x, y, mask, key, active=True) -> (state, StepMetrics)
TrainStep = Callable[..., tuple[TrainState, StepMetrics]]


def apply_model(model: Any, variables: Any, x: Any, train: bool = False, **kwargs: Any) -> Any:
    """``model.apply`` passing ``train`` only to models whose ``__call__`` takes it."""
    if takes_train(model):
        return model.apply(variables, x, train=train, **kwargs)
    return model.apply(variables, x, **kwargs)


def masked_mean(per_example: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``per_example`` (B,) over the examples where ``mask`` (B,) is 1."""
    return jnp.sum(per_example * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def count_correct(outputs: jax.Array, targets: jax.Array, mask: jax.Array,
                  threshold: float | None = None) -> jax.Array:
    """Correct classifications among masked examples.

    Args:
      outputs: (B, C) class scores, compared by argmax with integer (B,) or one-hot (B, C) targets; or, with
        ``threshold``, binary outputs (B, ...) (``outputs > threshold`` vs ``targets > 0.5``, each example
        counting the share of its elements that agree, as Keras's ``binary_accuracy``).
      threshold: the binary decision threshold (``funcdl.losses.binary_threshold``), or None.
    Returns:
      a float scalar (0 for outputs that are neither).
    """
    if not hasattr(outputs, "ndim"):  # several outputs (a tuple or dict): no class scores to count
        return jnp.zeros((), jnp.float32)
    if threshold is not None:
        agree = ((outputs > threshold) == (targets > 0.5)).reshape(outputs.shape[0], -1)
        return jnp.sum(jnp.mean(agree, axis=1) * mask)
    if outputs.ndim != 2 or outputs.shape[-1] < 2:
        return jnp.zeros((), jnp.float32)
    labels = targets if targets.ndim == 1 else jnp.argmax(targets, -1)
    return jnp.sum((jnp.argmax(outputs, -1) == labels) * mask)


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of every leaf of ``tree`` is finite (a scalar bool array)."""
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _select(ok, new, old):
    # A cond, not an elementwise where: on the CPU it saves reading both states every step (measured with
    # bench/fit_vs_scan.py); under vmap (sweeps) JAX turns it into a select.
    return jax.lax.cond(ok, lambda new, old: new, lambda new, old: old, new, old)


def make_train_step(model: Any, loss_fn: Callable, optimizer: optax.GradientTransformation,
                    guard: bool = True) -> TrainStep:
    """A pure train step ``step(state, x, y, mask, key, active=True) -> (state, StepMetrics)``.

    With ``guard`` (the default) a step whose loss or gradients are not finite
    leaves ``state`` unchanged, and so does a step whose ``active`` flag is
    false (an epoch passes "no bad step yet" there, so one ``lax.cond`` per step
    decides both). With ``guard=False`` the step only updates: ``finite``
    reports the loss alone and ``active`` is ignored. ``fit`` runs unguarded
    steps and re-runs an epoch with guarded ones only when its losses or its
    final state are not finite, because per-step checks are paid at every step.

    Args:
      model: a funcdl layer; ``loss_fn``: ``(outputs, targets) -> (B,)``; ``optimizer``: an optax transformation.
    Returns:
      ``step``: ``x`` (B, ...), ``y`` (B, ...), ``mask`` (B,) 0/1 floats, ``key`` the dropout key.
    """
    threshold = losses.binary_threshold(loss_fn)

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
        metrics = StepMetrics(loss, count_correct(outputs, y, mask, threshold), jnp.sum(mask), jnp.isfinite(loss))
        if not guard:
            return new, metrics
        finite = metrics.finite & all_finite(grads)
        skipped = TrainState(state.variables, state.opt_state, state.step + 1)
        return _select(finite & active, new, skipped), metrics._replace(finite=finite)
    return step
