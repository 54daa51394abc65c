"""The errors funcdl raises on bad input.

Every error carries a one-line message that says what was wrong and what to do.
The CLI prints ``error: <message>`` and exits non-zero; nothing else is shown.
"""


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


class NonFiniteError(FuncdlError, FloatingPointError):
    """Training produced a non-finite loss or gradient.

    Attributes:
      step: the global step (0-based) at which the first non-finite value appeared.
      variables: the last good model variables (before that step).
    """

    def __init__(self, message, step=None, variables=None, opt_state=None):
        super().__init__(message)
        self.step = step
        self.variables = variables
        self.opt_state = opt_state


def choices_message(kind, name, choices):
    """One-line message for an unknown ``name`` of a ``kind`` with the valid choices."""
    return f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(choices))}"
