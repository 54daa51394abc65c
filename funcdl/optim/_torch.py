"""Update rules of ``torch.optim`` (single-tensor paths) as optax transformations.

torch applies weight decay as L2 on the gradient (``g <- g + wd * p``) in every
optimizer here except AdamW, and applies the learning rate last
(``p <- p - lr * direction``), so a changing learning rate never leaks into the
momentum or moment buffers.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funcdl.optim._common import may_be_nonzero, require_params, scale_by_adam_exact


def _l2(weight_decay):
    """torch's coupled weight decay: ``g <- g + weight_decay * p``."""
    if not may_be_nonzero(weight_decay):
        return optax.identity()
    inner = optax.add_decayed_weights(weight_decay)

    def update(updates, state, params=None):
        require_params(params, "weight decay")
        return inner.update(updates, state, params)

    return optax.GradientTransformation(inner.init, update)


class DampenedTraceState(NamedTuple):
    """torch SGD momentum buffer and the number of steps taken."""
    count: Any
    trace: Any


def _dampened_trace(momentum, dampening, nesterov):
    """torch SGD momentum: ``buf <- g`` on step 1, then ``buf <- m*buf + (1-d)*g``.

    With ``dampening == 0`` this is exactly ``optax.trace`` (zero-initialised
    buffer), which is used instead; only dampening needs the first-step special
    case. torch forbids nesterov with dampening, so the dampened path has none.
    """
    if nesterov or not may_be_nonzero(dampening):  # torch: nesterov needs dampening 0
        return optax.trace(decay=momentum, nesterov=nesterov)

    def init(params):
        return DampenedTraceState(count=jnp.zeros([], jnp.int32),
                                  trace=optax.tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        first = state.count == 0
        trace = jax.tree.map(
            lambda g, t: jnp.where(first, g, momentum * t + (1 - dampening) * g),
            updates, state.trace)
        return trace, DampenedTraceState(count=optax.safe_increment(state.count), trace=trace)

    return optax.GradientTransformation(init, update)


class TorchAdagradState(NamedTuple):
    """Sum of squared gradients."""
    sum_of_squares: Any


def _scale_by_adagrad(initial_accumulator_value, eps):
    """torch Adagrad direction: ``s <- s + g^2; g / (sqrt(s) + eps)`` (eps outside sqrt).

    ``optax.scale_by_rss`` puts eps inside the square root (the keras rule).
    """
    def init(params):
        return TorchAdagradState(optax.tree.full_like(params, initial_accumulator_value))

    def update(updates, state, params=None):
        del params
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        updates = jax.tree.map(lambda g, s: g / (jnp.sqrt(s) + eps), updates, sums)
        return updates, TorchAdagradState(sums)

    return optax.GradientTransformation(init, update)


def _decayed_learning_rate(learning_rate, lr_decay):
    """torch Adagrad's ``clr = lr / (1 + (step - 1) * lr_decay)`` as a schedule."""
    if not may_be_nonzero(lr_decay):
        return learning_rate
    if callable(learning_rate):
        return lambda count: learning_rate(count) / (1 + count * lr_decay)
    return lambda count: learning_rate / (1 + count * lr_decay)


def sgd(learning_rate, momentum, nesterov, weight_decay, dampening):
    """``g <- g + wd*p; buf <- m*buf + (1-d)*g; p <- p - lr*(g + m*buf if nesterov else buf)``."""
    return optax.chain(
        _l2(weight_decay),
        _dampened_trace(momentum, dampening, nesterov) if may_be_nonzero(momentum)
        else optax.identity(),
        optax.scale_by_learning_rate(learning_rate))


def adagrad(learning_rate, initial_accumulator_value, eps, weight_decay, lr_decay):
    """``g <- g + wd*p; s <- s + g^2; p <- p - lr/(1+t*lr_decay) * g/(sqrt(s)+eps)``."""
    return optax.chain(
        _l2(weight_decay),
        _scale_by_adagrad(initial_accumulator_value, eps),
        optax.scale_by_learning_rate(_decayed_learning_rate(learning_rate, lr_decay)))


def adadelta(learning_rate, rho, eps, weight_decay):
    """``g <- g + wd*p``, then ``optax.scale_by_adadelta`` (torch's exact rule), then ``-lr``."""
    return optax.chain(
        _l2(weight_decay),
        optax.scale_by_adadelta(rho=rho, eps=eps),
        optax.scale_by_learning_rate(learning_rate))


def rmsprop(learning_rate, rho, eps, momentum, centered, weight_decay):
    """RMSprop: ``g <- g + wd*p; v <- rho*v + (1-rho)*g^2; d = g/(sqrt(v [- mean_g^2]) + eps)``.

    Then ``buf <- m*buf + d; p -= lr*buf`` (lr outside the buffer), or ``p -= lr*d``.
    """
    if centered:
        scale = optax.scale_by_stddev(decay=rho, eps=eps, eps_in_sqrt=False)
    else:
        scale = optax.scale_by_rms(decay=rho, eps=eps, eps_in_sqrt=False)
    return optax.chain(
        _l2(weight_decay),
        scale,
        optax.trace(decay=momentum) if may_be_nonzero(momentum) else optax.identity(),
        optax.scale_by_learning_rate(learning_rate))


def adam(learning_rate, b1, b2, eps, weight_decay, amsgrad, decoupled):
    """torch Adam (L2 weight decay) or AdamW (``decoupled``: ``p <- p*(1 - lr*wd)``)."""
    if amsgrad:  # optax.scale_by_amsgrad maximises the bias-corrected v; torch the raw v
        direction = scale_by_adam_exact(b1, b2, eps, amsgrad=True,
                                        eps_outside_bias_correction=False)
    else:
        direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    decay_before, decay_after = (optax.identity(), _l2(weight_decay)) if decoupled else (
        _l2(weight_decay), optax.identity())
    return optax.chain(decay_before, direction, decay_after,
                       optax.scale_by_learning_rate(learning_rate))
