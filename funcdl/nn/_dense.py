"""Dense (fully connected) and Embedding layers."""
import flax.linen as linen
import jax.numpy as jnp

from funcdl.errors import ShapeError
from funcdl.nn._activations import get_activation
from funcdl.nn._base import Layer, check_existing, layer_path
from funcdl.nn._init import initializer


class Dense(Layer):
    """y = activation(x @ kernel + bias) over the last axis.

    Params: ``{'kernel': (in, features), 'bias': (features,)}`` (torch's
    ``weight`` is ``kernel.T``).

    Args:
      features: output size.
      use_bias: add a bias.
      activation: name of an activation applied to the output (keras style), or None.
      kernel_init, bias_init: initialiser names (see ``funcdl.nn.initializers``);
        ``"torch"`` is torch.nn.Linear's default.
    """
    features: int
    use_bias: bool = True
    activation: str | None = None
    kernel_init: str = "glorot_uniform"
    bias_init: str = "zeros"

    @linen.compact
    def __call__(self, x):
        check_existing(self, x, "kernel", 0)
        fan_in = x.shape[-1]
        kernel = self.param("kernel", initializer(self.kernel_init, fan_in), (fan_in, self.features))
        y = jnp.matmul(x, kernel.astype(x.dtype))
        if self.use_bias:
            bias = self.param("bias", initializer(self.bias_init, fan_in), (self.features,))
            y = y + bias.astype(y.dtype)
        return get_activation(self.activation)(y)


class Embedding(Layer):
    """Looks up rows of an embedding table: (B, ...) int -> (B, ..., features).

    Params: ``{'embedding': (num_embeddings, features)}``. Indices outside
    ``[0, num_embeddings)`` are clamped under jit (XLA gathers cannot raise).
    """
    num_embeddings: int
    features: int
    embedding_init: str = "normal"

    @linen.compact
    def __call__(self, x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            raise ShapeError(f"layer {layer_path(self)} (Embedding) expects integer indices but got dtype {x.dtype}")
        init = linen.initializers.normal(1.0) if self.embedding_init == "normal" else initializer(
            self.embedding_init, self.num_embeddings)
        table = self.param("embedding", init, (self.num_embeddings, self.features))
        return jnp.take(table, x, axis=0)
