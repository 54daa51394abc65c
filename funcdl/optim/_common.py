"""Validation, framework defaults and transformations shared by both flavors."""
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from funcdl.errors import ConfigError, choices_message

FLAVORS = ("torch", "keras")

# Each framework's own default for the hyper-parameters left as ``None``
# (torch.optim constructors / keras.optimizers constructors).
DEFAULTS = {
    "torch": {
        "adam_eps": 1e-8, "adamw_weight_decay": 1e-2,
        "rmsprop_rho": 0.99, "rmsprop_eps": 1e-8,
        "adagrad_initial_accumulator_value": 0.0, "adagrad_eps": 1e-10,
        "adadelta_rho": 0.9, "adadelta_eps": 1e-6,
    },
    "keras": {
        "adam_eps": 1e-7, "adamw_weight_decay": 4e-3,
        "rmsprop_rho": 0.9, "rmsprop_eps": 1e-7,
        "adagrad_initial_accumulator_value": 0.1, "adagrad_eps": 1e-7,
        "adadelta_rho": 0.95, "adadelta_eps": 1e-7,
    },
}


def check_flavor(flavor):
    """Returns ``flavor`` if it is one of FLAVORS, else raises ConfigError listing them."""
    if not isinstance(flavor, str) or flavor not in FLAVORS:
        raise ConfigError(choices_message("optimizer flavor", flavor, FLAVORS))
    return flavor


def default(value, flavor, key):
    """``value``, or the framework default named ``key`` when ``value`` is None."""
    return DEFAULTS[flavor][key] if value is None else value


def check_learning_rate(optimizer, learning_rate):
    """Raises ConfigError unless ``learning_rate`` is a positive number or a schedule."""
    if callable(learning_rate) or isinstance(learning_rate, jax.core.Tracer):
        # a schedule, or a value injected by optax.inject_hyperparams under jit:
        # neither can be checked here
        return learning_rate
    try:
        value = float(learning_rate)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(learning_rate, bool) or not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"{optimizer}: learning_rate must be a positive number or a schedule "
            f"(callable of the step count), got {learning_rate!r}; pass e.g. 1e-3")
    return learning_rate


def check_number(optimizer, name, value, low, high, high_open=False, hint=""):
    """Raises ConfigError unless ``value`` is finite and ``low <= value <= high``.

    ``high`` is excluded when ``high_open``. Returns the value as a float, but a
    ``jax.Array`` (as ``optax.inject_hyperparams`` passes) unchanged, so that the
    optimizer is built the same way at init (concrete) and under jit (traced).
    """
    if isinstance(value, jax.core.Tracer):
        return value  # injected under jit: unknown until run
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    above = number >= high if high_open else number > high
    if isinstance(value, bool) or not math.isfinite(number) or number < low or above:
        interval = f"in [{low}, {high}" + (")" if high_open else "]")
        if high == math.inf:
            interval = f">= {low} and finite"
        raise ConfigError(f"{optimizer}: {name} must be {interval}, got {value!r}"
                          f"{'; ' + hint if hint else ''}")
    return value if isinstance(value, jax.Array) else number


def check_decay_rate(optimizer, name, value):
    """A moving-average decay rate (rho, beta): must lie in [0, 1)."""
    return check_number(optimizer, name, value, 0.0, 1.0, high_open=True,
                        hint="use a decay rate such as 0.9")


def check_non_negative(optimizer, name, value):
    """eps, weight decay, accumulator values: finite and >= 0."""
    return check_number(optimizer, name, value, 0.0, math.inf, hint=f"pass {name}=0 to turn it off")


def may_be_nonzero(value):
    """Whether a component switched on by ``value`` must be built.

    True for any ``jax.Array``: ``optax.inject_hyperparams`` passes concrete arrays
    at init and tracers under jit, and both must build the same state. The
    component then runs with whatever value arrives, and a zero leaves it exact
    (``g + 0*p``, ``optax.trace`` with decay 0).
    """
    return isinstance(value, jax.Array) or value != 0


def is_known_nonzero(value):
    """For validation: a traced value cannot be rejected, so it counts as zero."""
    return not isinstance(value, jax.core.Tracer) and value != 0


def learning_rate_at(learning_rate, count):
    """The learning rate of step ``count`` (0-based), for a number or a schedule."""
    return learning_rate(count) if callable(learning_rate) else learning_rate


def bias_correction(decay, count, dtype):
    """``1 - decay**count`` in ``dtype`` (cast so float32 params stay float32 under x64)."""
    return 1 - jnp.power(jnp.asarray(decay, dtype), count.astype(dtype))


def require_params(params, optimizer):
    """Weight decay reads the parameters: raise a clear error when they are missing."""
    if params is None:
        raise ConfigError(f"{optimizer}: weight_decay needs the parameters; call "
                          "update(grads, state, params) with params")


class CountState(NamedTuple):
    """Number of updates applied so far (used to evaluate learning-rate schedules)."""
    count: Any


def decoupled_weight_decay_keras(learning_rate, weight_decay):
    """Keras weight decay: ``p <- p - p * weight_decay * lr`` before the optimizer step.

    Keras (``BaseOptimizer._apply_weight_decay``) shrinks the variables in place
    and then applies the step; as the step does not read the variables, that equals
    adding ``-lr * weight_decay * p`` (``p`` before the step) to the step's update.
    """
    def init(params):
        del params
        return CountState(count=jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        require_params(params, "weight decay (keras flavor)")
        rate = learning_rate_at(learning_rate, state.count)
        updates = jax.tree.map(
            lambda u, p: u - p * jnp.asarray(weight_decay, p.dtype) * jnp.asarray(rate, p.dtype),
            updates, params)
        return updates, CountState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


class AdamState(NamedTuple):
    """Adam moments; ``nu_max`` is the running maximum of ``nu`` (empty unless amsgrad)."""
    count: Any
    mu: Any
    nu: Any
    nu_max: Any


def scale_by_adam_exact(b1, b2, eps, amsgrad, eps_outside_bias_correction):
    """Adam direction with the exact epsilon placement of torch or keras.

    torch (``eps_outside_bias_correction=False``): ``m_hat / (sqrt(v) / sqrt(bc2) + eps)``
    keras (``True``): ``m * sqrt(bc2) / bc1 / (sqrt(v) + eps)``, i.e. eps is added
    before the bias correction. With amsgrad both take the running maximum of the
    raw (uncorrected) ``v`` -- unlike ``optax.scale_by_amsgrad``, which takes the
    maximum of the bias-corrected one.
    """
    def init(params):
        zeros = optax.tree.zeros_like(params)
        return AdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros,
                         nu_max=optax.tree.zeros_like(params) if amsgrad else ())

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu) if amsgrad else ()
        count = optax.safe_increment(state.count)
        updates = jax.tree.map(lambda m, v: _adam_direction(m, v, count), mu,
                               nu_max if amsgrad else nu)
        return updates, AdamState(count=count, mu=mu, nu=nu, nu_max=nu_max)

    def _adam_direction(m, v, count):
        bc1, bc2 = bias_correction(b1, count, m.dtype), bias_correction(b2, count, m.dtype)
        if eps_outside_bias_correction:
            return m * (jnp.sqrt(bc2) / bc1) / (jnp.sqrt(v) + eps)
        return (m / bc1) / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)

    return optax.GradientTransformation(init, update)
