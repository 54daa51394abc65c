"""Layers that resize NHWC images without weights: UpSampling2D, ZeroPadding2D, PixelShuffle."""
import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._base import Layer, check_rank, layer_path
from funcdl.nn._conv import pair

_NHWC = "NHWC (batch, height, width, channels)"


class UpSampling2D(Layer):
    """Enlarge images by integer factors: (B, H, W, C) -> (B, H * sh, W * sw, C).

    Args:
      size: int or (sh, sw).
      interpolation: 'nearest' (repeat each pixel) or 'bilinear' (half-pixel centres, no antialiasing: torch's
        ``Upsample(mode='bilinear', align_corners=False)`` and Keras' ``UpSampling2D(interpolation='bilinear')``).
    """
    size: object = 2
    interpolation: str = "nearest"

    def __call__(self, x):
        check_rank(self, x, (4,), _NHWC)
        sh, sw = pair(self.size, "size")
        if sh < 1 or sw < 1:
            raise ConfigError(f"UpSampling2D size must be positive, got {self.size!r}")
        if self.interpolation == "nearest":
            return jnp.repeat(jnp.repeat(x, sh, axis=1), sw, axis=2)
        if self.interpolation == "bilinear":
            shape = (x.shape[0], x.shape[1] * sh, x.shape[2] * sw, x.shape[3])
            return jax.image.resize(x, shape, "bilinear", antialias=False).astype(x.dtype)
        raise ConfigError(f"UpSampling2D interpolation must be 'nearest' or 'bilinear', got {self.interpolation!r}")


def padding_pairs(padding: object) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` from an int, a pair (h, w) or two pairs, checked non-negative."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        pairs = tuple((p, p) if isinstance(p, int) and not isinstance(p, bool) else tuple(p) for p in padding)
        if all(len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
               for p in pairs):
            return pairs[0], pairs[1]
    raise ConfigError(f"padding must be an int, (h, w) or ((top, bottom), (left, right)) of sizes >= 0, "
                      f"got {padding!r}")


class ZeroPadding2D(Layer):
    """Pad images with zeros: (B, H, W, C) -> (B, top + H + bottom, left + W + right, C).

    Args:
      padding: ((top, bottom), (left, right)); an int or (h, w) pads both sides alike.
    """
    padding: object = ((1, 1), (1, 1))

    def __call__(self, x):
        check_rank(self, x, (4,), _NHWC)
        rows, columns = padding_pairs(self.padding)
        return jnp.pad(x, ((0, 0), rows, columns, (0, 0)))


class PixelShuffle(Layer):
    """Move channels into space (sub-pixel convolution): (B, H, W, C * r * r) -> (B, H * r, W * r, C).

    Args:
      factor: r.
      order: which input channel lands where. 'torch' (``torch.nn.PixelShuffle``): channel
        ``c * r * r + i * r + j`` becomes channel ``c`` at (h * r + i, w * r + j). 'tf'
        (``tf.nn.depth_to_space``): channel ``(i * r + j) * C + c`` does.
    """
    factor: int = 2
    order: str = "torch"

    def __call__(self, x):
        check_rank(self, x, (4,), _NHWC)
        r = self.factor
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ConfigError(f"PixelShuffle factor must be a positive int, got {r!r}")
        if self.order not in ("torch", "tf"):
            raise ConfigError(f"PixelShuffle order must be 'torch' or 'tf', got {self.order!r}")
        batch, height, width, channels = x.shape
        if channels % (r * r):
            raise ShapeError(f"layer {layer_path(self)} (PixelShuffle) needs channels divisible by {r * r} "
                             f"(factor {r} squared), got shape {tuple(x.shape)}")
        out = channels // (r * r)
        if self.order == "torch":  # channel axis is (c, i, j)
            blocks = x.reshape(batch, height, width, out, r, r).transpose(0, 1, 4, 2, 5, 3)
        else:  # channel axis is (i, j, c)
            blocks = x.reshape(batch, height, width, r, r, out).transpose(0, 1, 3, 2, 4, 5)
        return blocks.reshape(batch, height * r, width * r, out)
