"""Optimizers as optax GradientTransformations with the exact rules of PyTorch or Keras.

Every optimizer takes ``flavor="torch"`` (default) or ``flavor="keras"`` and then
follows that framework's update rule exactly, up to floating-point rounding
(epsilon placement, initial accumulators, where the learning rate enters
momentum, weight decay). Hyper-
parameters left as ``None`` take the chosen framework's default. ``learning_rate``
is a positive float or an optax schedule (a callable of the 0-based step count).

In the formulas below ``g`` is the gradient, ``p`` the parameter, ``t`` the
1-based step, ``bc1 = 1 - b1**t`` and ``bc2 = 1 - b2**t``.

Example::

    tx = funcdl.optim.adam(1e-3, flavor="keras")
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
"""
import inspect
from collections.abc import Callable
from typing import Any

import optax

from funcdl.errors import ConfigError, choices_message
from funcdl.optim import _keras, _torch
from funcdl.optim._common import (
    FLAVORS,
    check_decay_rate,
    check_flavor,
    check_learning_rate,
    check_non_negative,
    check_number,
    default,
    is_known_nonzero,
    may_be_nonzero,
)
from funcdl.optim._freeze import freeze

__all__ = ["FLAVORS", "NAMES", "adadelta", "adagrad", "adam", "adamw", "freeze", "get", "momentum",
           "nesterov", "rmsprop", "sgd"]

NAMES = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw")


def _check_momentum(optimizer, value):
    return check_number(optimizer, "momentum", value, 0.0, 1.0,
                        hint="use 0 for none or a value such as 0.9")


def sgd(learning_rate: float | optax.Schedule, momentum: float = 0.0, nesterov: bool = False,
        weight_decay: float = 0.0, dampening: float = 0.0, flavor: str = "torch") -> optax.GradientTransformation:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Args:
      learning_rate: positive float or optax schedule.
      momentum: momentum factor in [0, 1]; 0 turns momentum off.
      nesterov: use Nesterov momentum (needs ``momentum > 0``).
      weight_decay: torch: L2 added to the gradient; keras: decoupled decay.
      dampening: torch only; dampening of the momentum (not with nesterov).
      flavor: ``"torch"`` or ``"keras"``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule:
      torch: ``g += wd*p; buf = m*buf + (1-d)*g`` (``buf = g`` on step 1);
      ``p -= lr * (g + m*buf if nesterov else buf)``.
      keras: ``p -= lr*wd*p; v = m*v - lr*g; p += (m*v - lr*g if nesterov else v)``
      (the learning rate is folded into the velocity).
    """
    flavor = check_flavor(flavor)
    check_learning_rate("sgd", learning_rate)
    momentum = _check_momentum("sgd", momentum)
    weight_decay = check_non_negative("sgd", "weight_decay", weight_decay)
    dampening = check_number("sgd", "dampening", dampening, 0.0, 1.0, hint="use 0 for none")
    if nesterov and (not may_be_nonzero(momentum) or is_known_nonzero(dampening)):
        raise ConfigError("sgd: nesterov needs momentum > 0 and dampening = 0; "
                          "pass e.g. momentum=0.9 or nesterov=False")
    if flavor == "keras":
        if is_known_nonzero(dampening):
            raise ConfigError("sgd: keras has no dampening; use flavor='torch' or dampening=0")
        return _keras.sgd(learning_rate, momentum, bool(nesterov), weight_decay)
    return _torch.sgd(learning_rate, momentum, bool(nesterov), weight_decay, dampening)


def momentum(learning_rate: float | optax.Schedule, momentum: float = 0.9, nesterov: bool = False,
             weight_decay: float = 0.0, dampening: float = 0.0,
             flavor: str = "torch") -> optax.GradientTransformation:
    """SGD with heavy-ball momentum: :func:`sgd` with ``momentum=0.9`` by default.

    Args:
      learning_rate: positive float or optax schedule.
      momentum: momentum factor in [0, 1].
      nesterov, weight_decay, dampening, flavor: as in :func:`sgd`.

    Returns:
      An ``optax.GradientTransformation`` (see :func:`sgd` for the rule).
    """
    return sgd(learning_rate, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
               dampening=dampening, flavor=flavor)


def nesterov(learning_rate: float | optax.Schedule, momentum: float = 0.9, weight_decay: float = 0.0,
             flavor: str = "torch") -> optax.GradientTransformation:
    """SGD with Nesterov momentum: :func:`sgd` with ``nesterov=True, momentum=0.9``.

    Args:
      learning_rate: positive float or optax schedule.
      momentum: momentum factor in (0, 1].
      weight_decay, flavor: as in :func:`sgd`.

    Returns:
      An ``optax.GradientTransformation`` (see :func:`sgd` for the rule).
    """
    return sgd(learning_rate, momentum=momentum, nesterov=True, weight_decay=weight_decay,
               flavor=flavor)


def adagrad(learning_rate: float | optax.Schedule, initial_accumulator_value: float | None = None,
            eps: float | None = None, weight_decay: float = 0.0, flavor: str = "torch",
            lr_decay: float = 0.0) -> optax.GradientTransformation:
    """Adagrad: steps scaled by the root of the sum of all squared gradients.

    Args:
      learning_rate: positive float or optax schedule.
      initial_accumulator_value: start of the sum of squares (torch 0, keras 0.1).
      eps: stability term (torch 1e-10 outside the sqrt, keras 1e-7 inside).
      weight_decay: torch: L2 added to the gradient; keras: decoupled decay.
      flavor: ``"torch"`` or ``"keras"``.
      lr_decay: torch only; ``lr_t = lr / (1 + (t-1) * lr_decay)``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule:
      torch: ``g += wd*p; s += g^2; p -= lr_t * g / (sqrt(s) + eps)``.
      keras: ``p -= lr*wd*p; s += g^2; p -= lr * g / sqrt(s + eps)``.
    """
    flavor = check_flavor(flavor)
    check_learning_rate("adagrad", learning_rate)
    initial = check_non_negative("adagrad", "initial_accumulator_value",
                                 default(initial_accumulator_value, flavor,
                                         "adagrad_initial_accumulator_value"))
    eps = check_non_negative("adagrad", "eps", default(eps, flavor, "adagrad_eps"))
    weight_decay = check_non_negative("adagrad", "weight_decay", weight_decay)
    lr_decay = check_non_negative("adagrad", "lr_decay", lr_decay)
    if flavor == "keras":
        if is_known_nonzero(lr_decay):
            raise ConfigError("adagrad: keras has no lr_decay; use a learning-rate "
                              "schedule or flavor='torch'")
        return _keras.adagrad(learning_rate, initial, eps, weight_decay)
    return _torch.adagrad(learning_rate, initial, eps, weight_decay, lr_decay)


def adadelta(learning_rate: float | optax.Schedule, rho: float | None = None, eps: float | None = None,
             weight_decay: float = 0.0, flavor: str = "torch") -> optax.GradientTransformation:
    """Adadelta: steps scaled by the ratio of RMS(updates) to RMS(gradients).

    Args:
      learning_rate: positive float or optax schedule (torch's default is 1.0,
        keras's 0.001; it is required here).
      rho: decay rate in [0, 1) (torch 0.9, keras 0.95).
      eps: stability term inside both square roots (torch 1e-6, keras 1e-7).
      weight_decay: torch: L2 added to the gradient; keras: decoupled decay.
      flavor: ``"torch"`` or ``"keras"``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule (both flavors, after torch ``g += wd*p`` / keras ``p -= lr*wd*p``):
      ``a = rho*a + (1-rho)*g^2; d = sqrt(u + eps) / sqrt(a + eps) * g;
      u = rho*u + (1-rho)*d^2; p -= lr*d``.
    """
    flavor = check_flavor(flavor)
    check_learning_rate("adadelta", learning_rate)
    rho = check_decay_rate("adadelta", "rho", default(rho, flavor, "adadelta_rho"))
    eps = check_non_negative("adadelta", "eps", default(eps, flavor, "adadelta_eps"))
    weight_decay = check_non_negative("adadelta", "weight_decay", weight_decay)
    build = _keras.adadelta if flavor == "keras" else _torch.adadelta
    return build(learning_rate, rho, eps, weight_decay)


def rmsprop(learning_rate: float | optax.Schedule, rho: float | None = None, eps: float | None = None,
            momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0,
            flavor: str = "torch") -> optax.GradientTransformation:
    """RMSprop: steps scaled by the root of a moving average of squared gradients.

    Args:
      learning_rate: positive float or optax schedule.
      rho: decay rate in [0, 1) (torch's ``alpha`` 0.99, keras 0.9).
      eps: stability term (torch 1e-8 outside the sqrt, keras 1e-7 inside).
      momentum: momentum factor in [0, 1]; 0 turns it off.
      centered: divide by the centred variance ``v - mean_g^2`` instead of ``v``.
      weight_decay: torch: L2 added to the gradient; keras: decoupled decay.
      flavor: ``"torch"`` or ``"keras"``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule (``v = rho*v + (1-rho)*g^2``, ``mg = rho*mg + (1-rho)*g`` if centered,
    ``c = v - mg^2`` if centered else ``v``):
      torch: ``g += wd*p; d = g / (sqrt(c) + eps); buf = m*buf + d; p -= lr*buf``.
      keras: ``p -= lr*wd*p; d = lr*g / sqrt(c + eps); buf = m*buf + d; p -= buf``.
    """
    flavor = check_flavor(flavor)
    check_learning_rate("rmsprop", learning_rate)
    rho = check_decay_rate("rmsprop", "rho", default(rho, flavor, "rmsprop_rho"))
    eps = check_non_negative("rmsprop", "eps", default(eps, flavor, "rmsprop_eps"))
    momentum = _check_momentum("rmsprop", momentum)
    weight_decay = check_non_negative("rmsprop", "weight_decay", weight_decay)
    build = _keras.rmsprop if flavor == "keras" else _torch.rmsprop
    return build(learning_rate, rho, eps, momentum, bool(centered), weight_decay)


def _adam_arguments(optimizer, learning_rate, b1, b2, eps, weight_decay, flavor):
    """Validates the shared Adam/AdamW arguments; returns (b1, b2, eps, weight_decay)."""
    check_learning_rate(optimizer, learning_rate)
    b1 = check_decay_rate(optimizer, "b1", b1)
    b2 = check_decay_rate(optimizer, "b2", b2)
    eps = check_non_negative(optimizer, "eps", default(eps, flavor, "adam_eps"))
    weight_decay = check_non_negative(optimizer, "weight_decay", weight_decay)
    return b1, b2, eps, weight_decay


def adam(learning_rate: float | optax.Schedule, b1: float = 0.9, b2: float = 0.999, eps: float | None = None,
         weight_decay: float = 0.0, amsgrad: bool = False, flavor: str = "torch") -> optax.GradientTransformation:
    """Adam (optionally AMSGrad).

    Args:
      learning_rate: positive float or optax schedule.
      b1, b2: decay rates of the first and second moments, in [0, 1).
      eps: stability term (torch 1e-8, keras 1e-7; see the rule for where).
      weight_decay: torch: L2 added to the gradient; keras: decoupled decay
        (keras Adam with weight decay is keras AdamW).
      amsgrad: use the running maximum of the raw second moment ``v``.
      flavor: ``"torch"`` or ``"keras"``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule (``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``, ``v <- max`` if amsgrad):
      torch: ``g += wd*p`` first; ``p -= lr * (m/bc1) / (sqrt(v)/sqrt(bc2) + eps)``.
      keras: ``p -= lr*wd*p`` first; ``p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)``
      (eps is added before the bias correction).
    """
    flavor = check_flavor(flavor)
    b1, b2, eps, weight_decay = _adam_arguments("adam", learning_rate, b1, b2, eps,
                                                weight_decay, flavor)
    if flavor == "keras":
        return _keras.adam(learning_rate, b1, b2, eps, weight_decay, bool(amsgrad))
    return _torch.adam(learning_rate, b1, b2, eps, weight_decay, bool(amsgrad), decoupled=False)


def adamw(learning_rate: float | optax.Schedule, b1: float = 0.9, b2: float = 0.999, eps: float | None = None,
          weight_decay: float | None = None, amsgrad: bool = False,
          flavor: str = "torch") -> optax.GradientTransformation:
    """Adam with decoupled weight decay.

    Args:
      learning_rate: positive float or optax schedule.
      b1, b2: decay rates of the first and second moments, in [0, 1).
      eps: stability term (torch 1e-8, keras 1e-7).
      weight_decay: decoupled decay (torch 0.01, keras 0.004).
      amsgrad: use the running maximum of the raw second moment ``v``.
      flavor: ``"torch"`` or ``"keras"``.

    Returns:
      An ``optax.GradientTransformation``.

    Update rule: both flavors shrink ``p -= lr*wd*p`` and then take the
    :func:`adam` step of their flavor on the undecayed gradient.
    """
    flavor = check_flavor(flavor)
    weight_decay = default(weight_decay, flavor, "adamw_weight_decay")
    b1, b2, eps, weight_decay = _adam_arguments("adamw", learning_rate, b1, b2, eps,
                                                weight_decay, flavor)
    if flavor == "keras":
        return _keras.adam(learning_rate, b1, b2, eps, weight_decay, bool(amsgrad))
    return _torch.adam(learning_rate, b1, b2, eps, weight_decay, bool(amsgrad), decoupled=True)


_BUILDERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad, "adadelta": adadelta,
    "rmsprop": rmsprop, "adam": adam, "adamw": adamw,
}


def _options(name):
    """Keyword options ``get`` accepts for optimizer ``name`` (besides learning_rate, flavor)."""
    return sorted(set(inspect.signature(_BUILDERS[name]).parameters) - {"learning_rate", "flavor"})


def get(name: str, learning_rate: float | optax.Schedule, flavor: str = "torch",
        **kwargs: Any) -> optax.GradientTransformation:
    """The optimizer called ``name`` (one of NAMES) with the given hyper-parameters.

    Args:
      name: optimizer name, e.g. ``"adam"`` (case-insensitive).
      learning_rate: positive float or optax schedule.
      flavor: ``"torch"`` or ``"keras"``.
      **kwargs: hyper-parameters of that optimizer (see its function).

    Returns:
      An ``optax.GradientTransformation``.
    """
    key = name.lower() if isinstance(name, str) else None
    if key not in _BUILDERS:
        raise ConfigError(choices_message("optimizer", name, NAMES))
    check_flavor(flavor)
    unknown = sorted(set(kwargs) - set(_options(key)))
    if unknown:
        raise ConfigError(f"optimizer {key!r} has no option {unknown[0]!r}; "
                          f"valid options: {', '.join(_options(key))}")
    return _BUILDERS[key](learning_rate, flavor=flavor, **kwargs)

