"""Helpers shared by the framework bridges (PyTorch, Keras): lazy imports and checked copies."""
import importlib

import numpy as np

from funcdl.errors import FileFormatError, FuncdlError


def require(module, framework, extra):
    """Import ``module`` lazily, or raise FuncdlError saying which extra installs it.

    Args:
      module: the module to import, e.g. ``"torch"``.
      framework: its name for people, e.g. ``"PyTorch"``.
      extra: the funcdl extra that installs it, e.g. ``"torch"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FuncdlError(f"{framework} is not installed; install the extra: pip install 'funcdl[{extra}]'") from None


def checked(array, shape, name, source):
    """``array`` as a contiguous numpy array after checking it has ``shape`` (nanoGPT's check before copy)."""
    array = np.asarray(array)
    if tuple(array.shape) != tuple(shape):
        raise FileFormatError(f"{source}: tensor {name} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    return np.ascontiguousarray(array)
