"""The loss a model is trained on, matched to what the model outputs.

Keras's probability losses (``categorical_crossentropy``,
``sparse_categorical_crossentropy``, ``binary_crossentropy``, ``kl_divergence``)
take probabilities unless told ``from_logits=True``; PyTorch's
``cross_entropy`` takes logits. A model that outputs logits trained on a loss
that expects probabilities trains badly and says nothing (22 % instead of 89 %
on digits), so ``fit``, ``evaluate`` and ``sweep`` read what the model outputs
from its last layer and either give the loss what it expects or refuse with
one line saying what to change:

- last layer ``softmax`` / ``sigmoid`` (an activation layer, or ``Dense(activation=...)``):
  probabilities; ``log_softmax``: log-probabilities; anything else: logits.
- a loss named by string (or one of ``funcdl.losses``' own functions) gets
  ``from_logits`` from that; ``kl_divergence`` gets the softmax (or
  log-softmax, torch convention) of logits.
- a loss that takes logits (``cross_entropy``, ``binary_crossentropy_with_logits``)
  given probabilities, or an explicit ``from_logits`` that contradicts the model,
  is a ConfigError. A function of your own is used as it is.
"""
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from funcdl import losses as losses_lib
from funcdl import nn
from funcdl.errors import ConfigError

LOGITS, PROBABILITIES, LOG_PROBABILITIES = "logits", "probabilities", "log_probabilities"
_KIND_OF_ACTIVATION = {"softmax": PROBABILITIES, "sigmoid": PROBABILITIES, "log_softmax": LOG_PROBABILITIES}
_FROM_LOGITS_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
_LOGIT_LOSSES = {"cross_entropy": "sparse_categorical_crossentropy",
                 "binary_crossentropy_with_logits": "binary_crossentropy"}


@dataclass(frozen=True)
class Objective:
    """The loss a run trains on and how it was chosen.

    Attributes:
      loss_fn: ``(outputs, targets) -> (B,)``.
      label_kind: 'integer', 'one_hot' or 'dense' (``funcdl.losses.label_kind``).
      description: one line for reports, e.g. ``'categorical_crossentropy (from_logits=True: the model
        ends in Dense, which outputs logits)'``.
    """
    loss_fn: Callable
    label_kind: str
    description: str


def last_layer(model: Any) -> Any:
    """The layer that makes the model's output: the last of a Sequential (Dropout skipped), recursively."""
    layers = getattr(model, "layers", None)
    if isinstance(layers, (tuple, list)) and layers:
        real = [layer for layer in layers if not isinstance(layer, nn.Dropout)]
        return last_layer(real[-1] if real else layers[-1])
    inner = getattr(model, "model", None)  # a wrapper such as the bf16 policy
    return last_layer(inner) if inner is not None and hasattr(inner, "apply") else model


def output_kind(model: Any) -> tuple[str, str]:
    """(``'logits'``, ``'probabilities'`` or ``'log_probabilities'``, the last layer's name for messages)."""
    layer = last_layer(model)
    if isinstance(layer, nn.ActivationLayer):
        name = nn.activation_of(layer).name
        return _KIND_OF_ACTIVATION.get(name, LOGITS), type(layer).__name__
    activation = getattr(layer, "activation", None)
    if isinstance(activation, str):
        return _KIND_OF_ACTIVATION.get(activation, LOGITS), f"{type(layer).__name__}(activation={activation!r})"
    return LOGITS, type(layer).__name__


def _canonical(loss: str | Callable) -> tuple[str | None, dict[str, Any]]:
    """(canonical funcdl loss name or None for a function of the user's, the options bound to it)."""
    fn, options = losses_lib.get(loss), dict[str, Any]()
    while isinstance(fn, functools.partial):
        options = {**fn.keywords, **options}
        fn = fn.func
    names = [name for name in losses_lib.NAMES if losses_lib.get(name) is fn]
    return (names[0] if names else None), options


def _kl_of(convert: Callable, convention: str) -> Callable:
    def loss(outputs, targets):
        return losses_lib.kl_divergence(convert(outputs), targets, convention=convention)
    loss.label_kind = "one_hot"  # type: ignore[attr-defined]
    return loss


def resolve(loss: str | Callable, model: Any) -> Objective:
    """The loss function to train ``model`` on for ``loss``, matched to the model's output (see the module).

    Raises:
      ConfigError: an unknown loss name, or a loss that cannot take what the model outputs (says what to change).
    """
    label_kind = losses_lib.label_kind(loss)
    name, options = _canonical(loss)
    if name is None:
        return Objective(losses_lib.get(loss), label_kind, getattr(loss, "__name__", type(loss).__name__))
    kind, layer = output_kind(model)
    said = f"the model ends in {layer}, which outputs {kind.replace('_', '-')}"
    if name in _LOGIT_LOSSES and kind == PROBABILITIES:
        raise ConfigError(f"loss {name} takes logits but {said}; remove the final {layer} or use "
                          f"loss='{_LOGIT_LOSSES[name]}'")
    if name in _FROM_LOGITS_LOSSES:
        from_logits = kind != PROBABILITIES
        if options.get("from_logits", from_logits) != from_logits:
            raise ConfigError(f"loss {name} with from_logits={options['from_logits']} but {said}; "
                              f"use from_logits={from_logits} (or leave it out: funcdl picks it from the model)")
        fn = functools.partial(losses_lib.get(name), **{**options, "from_logits": from_logits})
        return Objective(fn, label_kind, f"{name} (from_logits={from_logits}: {said})")
    if name == "kl_divergence":
        return _resolve_kl(options, kind, layer, said)
    return Objective(losses_lib.get(loss), label_kind, name)


def _resolve_kl(options: dict[str, Any], kind: str, layer: str, said: str) -> Objective:
    convention = options.get("convention", "keras")
    wanted = PROBABILITIES if convention == "keras" else LOG_PROBABILITIES
    if kind == wanted:
        return Objective(functools.partial(losses_lib.kl_divergence, convention=convention), "one_hot",
                         f"kl_divergence ({convention} convention: {said})")
    if convention == "torch" and kind == PROBABILITIES:
        raise ConfigError(f"loss kl_div (torch convention) takes log-probabilities but {said}; end the model in "
                          "log_softmax instead, or use loss='kl_divergence' (Keras convention, probabilities)")
    convert = {(PROBABILITIES, LOGITS): jax.nn.softmax, (PROBABILITIES, LOG_PROBABILITIES): jax.numpy.exp,
               (LOG_PROBABILITIES, LOGITS): jax.nn.log_softmax}[(wanted, kind)]
    return Objective(_kl_of(convert, convention), "one_hot",
                     f"kl_divergence ({convention} convention, on the {convert.__name__} of the outputs: {said})")
