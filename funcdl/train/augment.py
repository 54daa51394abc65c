"""Data augmentation inside the compiled epoch: random crops with padding and horizontal flips, on the device.

    history = fd.fit(model, data.train, augment=True, ...)          # crop_flip(padding=4, flip=True)
    history = fd.fit(model, data.train, augment=crop_flip(padding=2), ...)

An augmentation is a pure function ``augment(key, x) -> x`` of a batch of
NHWC images; ``augmented_step`` applies it to every training batch inside the
train step, keyed from the step's own key, so it runs in the same compiled
program as the rest of the step (no host work, no recompiles) and the same
seed gives the same crops. The dropout key is left as it is. Evaluation and
prediction never augment.
"""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, ShapeError
from funcdl.train.step import TrainStep

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # augment(key, x (B, H, W, C)) -> x (B, H, W, C)
AUGMENT_STREAM = 0x61756721  # folded into the step's key: the augmentation's own random stream


def random_crop_flip(key: jax.Array, x: jax.Array, padding: int = 4, flip: bool = True) -> jax.Array:
    """Each image zero-padded by ``padding``, cropped back to its size at a random offset, and mirrored
    left-right with probability 1/2 (the CIFAR standard: torchvision ``RandomCrop(32, padding=4)`` and
    ``RandomHorizontalFlip()``).

    Args:
      key: PRNG key; x: (B, H, W, C) images.
      padding: pixels added on each side before cropping (0: no crop).
      flip: mirror half of the images.
    Returns:
      (B, H, W, C), same dtype.
    """
    if x.ndim != 4:
        raise ShapeError(f"random crops and flips need images (B, H, W, C); got a batch of shape {tuple(x.shape)}")
    batch, height, width, channels = x.shape
    crop_key, flip_key = jax.random.split(key)
    if padding:
        offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)
        padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        x = jax.vmap(lambda image, at: jax.lax.dynamic_slice(image, (at[0], at[1], 0), (height, width, channels)))(
            padded, offsets)
    if flip:
        mirrored = jax.random.bernoulli(flip_key, 0.5, (batch,))
        x = jnp.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
    return x


def crop_flip(padding: int = 4, flip: bool = True) -> Augment:
    """``augment(key, x)``: :func:`random_crop_flip` with these settings."""
    if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
        raise ConfigError(f"crop padding must be an integer >= 0, got {padding!r}")

    def augment(key: jax.Array, x: jax.Array) -> jax.Array:
        return random_crop_flip(key, x, padding, flip)
    return augment


def get(augment: Any) -> Augment | None:
    """The augmentation ``fit(augment=...)`` asks for: None/False (none), True (``crop_flip()``) or a function."""
    if augment is None or augment is False:
        return None
    if augment is True:
        return crop_flip()
    if callable(augment):
        return augment
    raise ConfigError(f"augment must be True, False or a function (key, x) -> x, got {type(augment).__name__}")


def check_images(augment: Augment | None, shape: tuple[int, ...]) -> None:
    """ConfigError when the built-in crops and flips are asked of inputs that are not images (N, H, W, C)."""
    if augment is not None and getattr(augment, "__qualname__", "").startswith("crop_flip") and len(shape) != 4:
        raise ConfigError(f"augment crops and flips images (N, H, W, C); the inputs have shape {shape}")


def augmented_step(step: TrainStep, augment: Augment) -> TrainStep:
    """``step`` training on ``augment(fold_in(key, AUGMENT_STREAM), x)`` instead of ``x``; same signature."""
    def train_step(state, x, y, mask, key, *rest):
        return step(state, augment(jax.random.fold_in(key, AUGMENT_STREAM), x), y, mask, key, *rest)
    return train_step
