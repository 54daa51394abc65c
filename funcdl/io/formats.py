"""The registry of model-file formats: which reader and writer a file's name picks.

The core knows its own format (``*.funcdl``, and ``*.safetensors`` files that
carry funcdl's metadata). Packages that read and write other formats register
a :class:`Format` in the ``funcdl.formats`` entry-point group of their
``pyproject.toml`` (``interop`` registers PyTorch, Keras and SavedModel), so
the core never names them.
"""
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from funcdl.errors import ConfigError, FileFormatError
from funcdl.io.atomic import check_writable, write_error
from funcdl.io.model_file import load_model, read_header, save_model

GROUP = "funcdl.formats"

# read(path, model or None, input_shape or None, unsafe) -> (model, variables, input_shape)
Reader = Callable[[Path, Any, "tuple[int, ...] | None", bool], tuple]
# write(path, model, variables, input_shape)
Writer = Callable[[Path, Any, Any, "tuple[int, ...]"], None]


@dataclass(frozen=True)
class Format:
    """One kind of model file.

    Attributes:
      name: what ``funcdl convert`` / ``inspect`` call it, e.g. ``'torch'``.
      suffixes: the name endings it is chosen by (the longest match wins: ``.weights.h5`` over ``.h5``).
      read: the reader, or None for a format that is only written.
      write: the writer, or None for a format that is only read.
      recognizes: for files that share a suffix with another format: whether an existing file is this one.
      folder: written as a folder, chosen for an output name with no known suffix.
    """
    name: str
    suffixes: tuple[str, ...] = ()
    read: Reader | None = None
    write: Writer | None = None
    recognizes: Callable[[Path], bool] | None = None
    folder: bool = False


def _read_funcdl(path, model, input_shape, unsafe):
    loaded, variables, recorded = load_model(path)
    return loaded, variables, tuple(input_shape or recorded or ()) or None


def _write_funcdl(path, model, variables, input_shape):
    save_model(path, model, variables, input_shape=input_shape)


def _is_funcdl(path):
    return path.suffix.lower() == ".safetensors" and "funcdl.format" in read_header(path)[0]


FUNCDL = Format("funcdl", (".funcdl",), _read_funcdl, _write_funcdl, recognizes=_is_funcdl)


def registered() -> list[Format]:
    """funcdl's own format, then every format of the ``funcdl.formats`` group, in name order."""
    points = sorted(entry_points(group=GROUP), key=lambda point: point.name)
    return [FUNCDL] + [point.load() for point in points]


def find(path: str | Path, writing: bool = False) -> Format:
    """The format of ``path``: by content where a format recognizes the file, else by the name's suffix.

    Raises:
      FileFormatError: no registered format takes this name (the message lists the suffixes).
    """
    formats = registered()
    name = str(path).lower().rstrip("/")
    path = Path(path)
    if not writing and path.is_file():
        for candidate in formats:
            if candidate.recognizes is not None and candidate.recognizes(path):
                return candidate
    matches = [(len(suffix), candidate) for candidate in formats for suffix in candidate.suffixes
               if name.endswith(suffix)]
    if matches:
        return max(matches, key=lambda match: match[0])[1]
    folders = [candidate for candidate in formats if candidate.folder]
    if writing and folders and (path.is_dir() or not Path(name).suffix or str(path).endswith("/")):
        return folders[0]
    if not writing and path.is_dir():
        raise FileFormatError(f"{path} is a folder; funcdl reads model files, not folders — give a model file")
    suffixes = ", ".join(suffix for candidate in formats for suffix in candidate.suffixes)
    folder = f" or a folder name ({folders[0].name})" if writing and folders else ""
    raise FileFormatError(f"{path}: unknown model file type; use one of {suffixes}{folder}")


def load(path: str | Path, model: Any = None, input_shape: tuple[int, ...] | None = None,
         unsafe: bool = False) -> tuple:
    """``(model, variables, input_shape)`` from any registered format.

    Args:
      path: the file.
      model: the architecture, for weight-only files (others ignore it).
      input_shape: one example's shape (no batch axis), for files that do not record it.
      unsafe: let a framework run code stored in the file (Keras Lambda layers); never for untrusted files.
    """
    path = Path(path)
    if not path.exists():
        raise FileFormatError(f"{path} does not exist")
    chosen = find(path)
    if chosen.read is None:
        raise FileFormatError(f"{path}: {chosen.name} files are written, not read")
    return chosen.read(path, model, input_shape, unsafe)


def check_destination(path: str | Path) -> Format:
    """The format ``path`` would be written in; FileFormatError for an unknown type or an unwritable folder."""
    chosen = find(path, writing=True)
    if chosen.write is None:
        raise FileFormatError(f"{path}: {chosen.name} files are read, not written")
    check_writable(path)
    return chosen


def save(path: str | Path, model: Any, variables: Any, input_shape: tuple[int, ...] | None) -> str:
    """Write ``model`` to ``path`` in the format its name asks for; returns the format's name.

    Nothing partial is left behind on failure.
    """
    if not input_shape:
        raise ConfigError(f"the input shape is unknown; pass --input-shape to write {path}")
    chosen = check_destination(path)
    try:
        chosen.write(Path(path), model, variables, tuple(input_shape))  # type: ignore[misc]
    except OSError as err:  # the framework writers' own I/O (a full disk, a folder turned read-only)
        raise write_error(path, err) from err
    return chosen.name
