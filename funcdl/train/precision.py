"""Mixed precision: compute in bfloat16 while parameters and optimizer state stay float32.

``fit(..., precision="bf16")`` wraps the model in :class:`Bf16Compute`: inside
the loss, the float32 parameters and inputs are cast to bfloat16, the forward
and backward pass run in bfloat16, and the outputs are cast back to float32
before the loss. The gradients arrive in float32 (the transpose of a cast is a
cast), so the optimizer updates float32 master weights: small updates are not
lost to bfloat16's 8-bit mantissa.
"""
from typing import Any

import jax
import jax.numpy as jnp

from funcdl.errors import ConfigError, choices_message
from funcdl.nn import takes_train

POLICIES = ("fp32", "bf16")


def _cast_floating(tree, dtype):
    """``tree`` with every floating-point array cast to ``dtype`` (integer inputs such as token ids stay)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
                        else a, tree)


class Bf16Compute:
    """``model`` run in bfloat16 on float32 variables; outputs come back float32.

    It has the model interface ``fit`` uses: ``init`` (float32 variables, as the
    model makes them) and ``apply(variables, x, train=..., rngs=..., mutable=...)``.
    Updated collections (BatchNorm statistics) are returned as float32.
    """

    def __init__(self, model):
        self.model = model
        self.model_takes_train = takes_train(model)

    def init(self, *args, **kwargs):
        return self.model.init(*args, **kwargs)

    def __call__(self, x, train=False):
        """Present only so ``apply_model`` passes ``train``; use ``apply``."""
        raise TypeError("Bf16Compute is used through apply(variables, x, ...)")

    def apply(self, variables, x, *args, train=False, **kwargs):
        if self.model_takes_train:
            kwargs["train"] = train
        outputs = self.model.apply(_cast_floating(variables, jnp.bfloat16), _cast_floating(x, jnp.bfloat16),
                                   *args, **kwargs)
        if kwargs.get("mutable"):
            outputs, updated = outputs
            return _cast_floating(outputs, jnp.float32), _cast_floating(updated, jnp.float32)
        return _cast_floating(outputs, jnp.float32)


def apply_policy(model: Any, precision: str) -> Any:
    """``model`` as it should compute under ``precision`` (``'fp32'``: unchanged; ``'bf16'``: Bf16Compute)."""
    if precision not in POLICIES:
        raise ConfigError(choices_message("precision", precision, POLICIES))
    return Bf16Compute(model) if precision == "bf16" else model
