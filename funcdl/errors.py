"""The errors funcdl raises on bad input, and ``require`` for optional libraries.

Every error carries a one-line message that says what was wrong and what to do.
The CLI prints ``error: <message>`` and exits non-zero; nothing else is shown.

At each boundary one error says what went wrong there: an input or variables
that do not fit a model are a ShapeError; a file that cannot be read safely,
or whose tensors do not fit its own recorded architecture, a FileFormatError;
a model or weights that cannot be moved exactly between funcdl, PyTorch and
Keras (an unsupported layer or option, tensors that do not fit the target) a
ConversionError. ``nn.check_variables`` is the one check, raising the error
its caller names.
"""
import importlib
from types import ModuleType
from typing import Any


class FuncdlError(Exception):
    """Base class of every error funcdl raises for bad input or failed runs."""


class ConfigError(FuncdlError, ValueError):
    """An unknown name or an invalid setting (model, dataset, optimizer, loss, layer)."""


class ShapeError(FuncdlError, ValueError):
    """An input whose shape, rank or dtype does not fit the model or the function."""


class DataError(FuncdlError, ValueError):
    """Missing, malformed or inconsistent data (files, labels, datasets)."""


class FileFormatError(FuncdlError, ValueError):
    """A model, weight or checkpoint file that cannot be read safely."""


class ConversionError(FuncdlError, ValueError):
    """A model or weights that cannot be converted exactly between funcdl, PyTorch and Keras."""


class MissingDependencyError(FuncdlError, ImportError):
    """An optional library a feature needs (PyTorch, TensorFlow/Keras, tensorboardX) is not installed."""


class OutOfMemoryError(FuncdlError, MemoryError):
    """The device or host ran out of memory compiling or running a program (too large a batch, as a rule)."""


class NonFiniteError(FuncdlError, FloatingPointError):
    """Training produced a non-finite loss or gradient.

    Attributes:
      step: the global step (0-based) at which the first non-finite value appeared.
      variables: the last good model variables (before that step).
    """

    def __init__(self, message: str, step: int | None = None, variables: Any = None, opt_state: Any = None):
        super().__init__(message)
        self.step = step
        self.variables = variables
        self.opt_state = opt_state


def choices_message(kind: str, name: object, choices: Any) -> str:
    """One-line message for an unknown ``name`` of a ``kind`` with the valid choices."""
    return f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}"


def require(module: str, what: str, install: str) -> ModuleType:
    """Import the optional library ``module``, or raise MissingDependencyError saying how to install it.

    Args:
      module: the module to import, e.g. ``"torch"``.
      what: its name for people, e.g. ``"PyTorch"``.
      install: the command that installs it, e.g. ``"pip install 'funcdl[torch]'"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} is not installed; install it: {install}") from None
