"""1-D convolution and pooling as their 2-D twins, for every importer (funcdl has 2-D layers only).

A (batch, length, channels) sequence is reshaped to a (batch, length, 1, channels) image, the 2-D layer
runs with a (k, 1) window, and the result is reshaped back to (batch, length', features). Exact: the
extra axis has size 1 and the window never moves along it. The kernel maps are in ``interop.layouts``
(``conv1d_to_2d``, ``conv1d_from_torch``).
"""
from typing import Any

from funcdl import nn

Spec = tuple[type, dict[str, Any]]


def one_d(size: int) -> tuple[int, int]:
    """A 1-D size (kernel, stride, dilation) as the 2-D pair that acts along the length only."""
    return (int(size), 1)


def padding(pads: Any) -> Any:
    """A 1-D padding ('valid', 'same', an int or (before, after)) as the 2-D one (nothing along the extra axis)."""
    if isinstance(pads, str):
        return pads
    before, after = (pads, pads) if isinstance(pads, int) else tuple(pads)
    return ((int(before), int(after)), (0, 0))


def as_2d(layer: type, options: dict[str, Any], channels: int, features: int) -> list[Spec]:
    """[(class, options), ...] computing the 1-D twin of the 2-D ``layer`` on (batch, length, channels)."""
    return [(nn.Reshape, {"shape": (-1, 1, int(channels))}), (layer, options),
            (nn.Reshape, {"shape": (-1, int(features))})]


def build(specs: list[Spec]) -> list[nn.Layer]:
    """The layers of ``as_2d``'s specs."""
    return [cls(**options) for cls, options in specs]
