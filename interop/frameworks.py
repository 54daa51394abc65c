"""The frameworks interop bridges to, imported only when a conversion asks for them.

Each function imports its framework on first use and raises
``funcdl.errors.MissingDependencyError`` naming the extra to install when it
is missing, so ``import interop`` (and the ``funcdl`` CLI) never loads them.
"""
import os
from types import ModuleType

from funcdl.errors import require

TORCH_INSTALL = "pip install 'funcdl[torch]'"
TF_INSTALL = "pip install 'funcdl[tf]'"


def torch() -> ModuleType:
    """PyTorch."""
    return require("torch", "PyTorch", TORCH_INSTALL)


def tensorflow() -> ModuleType:
    """TensorFlow (its C++ start-up messages silenced unless the user asked for them)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return require("tensorflow", "TensorFlow/Keras", TF_INSTALL)


def keras() -> ModuleType:
    """Keras 3, on the TensorFlow backend unless ``KERAS_BACKEND`` says otherwise."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return require("keras", "TensorFlow/Keras", TF_INSTALL)
