"""Update rules of ``keras.optimizers`` as optax transformations.

keras applies weight decay decoupled from the gradient, to the variables,
before every step (``p <- p - p * wd * lr``), for every optimizer given one, and
folds the learning rate into the momentum buffers of SGD and RMSprop
(``v <- m*v - lr*g``), so with a schedule the old learning rates stay in the buffer.
"""
import optax

from funcdl.optim._common import decoupled_weight_decay_keras, may_be_nonzero, scale_by_adam_exact


def _with_weight_decay(update, learning_rate, weight_decay):
    """``update`` (which already contains ``-lr``) plus keras's decoupled weight decay."""
    if not may_be_nonzero(weight_decay):
        return update
    return optax.chain(update, decoupled_weight_decay_keras(learning_rate, weight_decay))


def sgd(learning_rate, momentum, nesterov, weight_decay):
    """``v <- m*v - lr*g; p <- p + (m*v - lr*g if nesterov else v)``."""
    # optax.trace on the already lr-scaled (negative) gradient is exactly keras's velocity
    update = optax.chain(
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum, nesterov=nesterov) if may_be_nonzero(momentum)
        else optax.identity())
    return _with_weight_decay(update, learning_rate, weight_decay)


def adagrad(learning_rate, initial_accumulator_value, eps, weight_decay):
    """``s <- s + g^2; p <- p - lr * g / sqrt(s + eps)`` (= ``optax.scale_by_rss``)."""
    update = optax.chain(
        optax.scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        optax.scale_by_learning_rate(learning_rate))
    return _with_weight_decay(update, learning_rate, weight_decay)


def adadelta(learning_rate, rho, eps, weight_decay):
    """Same rule as torch (``optax.scale_by_adadelta``), keras weight decay."""
    update = optax.chain(
        optax.scale_by_adadelta(rho=rho, eps=eps),
        optax.scale_by_learning_rate(learning_rate))
    return _with_weight_decay(update, learning_rate, weight_decay)


def rmsprop(learning_rate, rho, eps, momentum, centered, weight_decay):
    """RMSprop: ``v <- rho*v + (1-rho)*g^2; inc = lr*g/sqrt(v [- mean_g^2] + eps)``.

    Then ``buf <- m*buf + inc; p -= buf`` (lr inside the buffer), or ``p -= inc``.
    """
    if centered:
        scale = optax.scale_by_stddev(decay=rho, eps=eps, eps_in_sqrt=True)
    else:
        scale = optax.scale_by_rms(decay=rho, eps=eps, eps_in_sqrt=True)
    update = optax.chain(
        scale,
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum) if may_be_nonzero(momentum) else optax.identity())
    return _with_weight_decay(update, learning_rate, weight_decay)


def adam(learning_rate, b1, b2, eps, weight_decay, amsgrad):
    """``p <- p - lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)``; AdamW = Adam + decay."""
    update = optax.chain(
        scale_by_adam_exact(b1, b2, eps, amsgrad=amsgrad, eps_outside_bias_correction=True),
        optax.scale_by_learning_rate(learning_rate))
    return _with_weight_decay(update, learning_rate, weight_decay)
