"""2-D convolution on NHWC images."""
import flax.linen as linen
import jax

from funcdl.errors import ConfigError
from funcdl.nn._activations import get_activation
from funcdl.nn._base import Layer, check_last_dim, check_rank
from funcdl.nn._init import initializer


def pair(value, what):
    """(a, b) from an int or a pair."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise ConfigError(f"{what} must be an int or a pair of ints, got {value!r}")


def padding_spec(padding):
    """lax padding from 'valid' / 'same' / int / (ph, pw) / ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ConfigError(f"padding must be 'valid', 'same', an int or pairs of ints, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        if all(isinstance(p, int) for p in padding):
            return ((padding[0], padding[0]), (padding[1], padding[1]))
        if all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding):
            return tuple(tuple(int(v) for v in p) for p in padding)
    raise ConfigError(f"padding must be 'valid', 'same', an int or pairs of ints, got {padding!r}")


class Conv2D(Layer):
    """2-D convolution, NHWC in and out.

    Params: ``{'kernel': (kh, kw, in // groups, features), 'bias': (features,)}``
    (HWIO; torch's ``weight`` is ``kernel.transpose(3, 2, 0, 1)``).

    Args:
      features: output channels.
      kernel_size: int or (kh, kw).
      strides: int or (sh, sw).
      padding: 'valid', 'same' (TF/XLA rule: any odd extra goes bottom/right), an int,
        (ph, pw) or ((top, bottom), (left, right)).
      dilation: int or (dh, dw).
      groups: feature groups (in and features must both divide by it).
      use_bias, activation, kernel_init, bias_init: as in Dense.
    """
    features: int
    kernel_size: object = 3
    strides: object = 1
    padding: object = "valid"
    dilation: object = 1
    groups: int = 1
    use_bias: bool = True
    activation: str | None = None
    kernel_init: str = "glorot_uniform"
    bias_init: str = "zeros"

    @linen.compact
    def __call__(self, x):
        check_rank(self, x, (4,), "NHWC (batch, height, width, channels)")
        kh, kw = pair(self.kernel_size, "kernel_size")
        if self.has_variable("params", "kernel"):
            check_last_dim(self, x, self.get_variable("params", "kernel").shape[2] * self.groups, "channels")
        in_channels = x.shape[-1]
        if in_channels % self.groups or self.features % self.groups:
            raise ConfigError(f"Conv2D groups={self.groups} must divide input channels {in_channels} "
                              f"and features {self.features}")
        fan_in = kh * kw * in_channels // self.groups
        kernel = self.param("kernel", initializer(self.kernel_init, fan_in),
                            (kh, kw, in_channels // self.groups, self.features))
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), window_strides=pair(self.strides, "strides"),
            padding=padding_spec(self.padding), rhs_dilation=pair(self.dilation, "dilation"),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups)
        if self.use_bias:
            y = y + self.param("bias", initializer(self.bias_init, fan_in), (self.features,)).astype(y.dtype)
        return get_activation(self.activation)(y)
