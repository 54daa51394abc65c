"""The registry of model-file formats: which reader and writer a file's name picks.

The core knows its own format (``*.funcdl``, and ``*.safetensors`` files that
carry funcdl's metadata). Packages that read and write other formats register
a :class:`Format` in the ``funcdl.formats`` entry-point group of their
``pyproject.toml`` (``interop`` registers PyTorch, Keras and SavedModel), so
the core never names them.
"""
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from funcdl.errors import ConfigError, FileFormatError
from funcdl.io.atomic import atomic_path, check_folder, check_writable, write_error
from funcdl.io.model_file import load_model, read_header, read_metadata, save_model
from funcdl.io.sniff import misnamed

GROUP = "funcdl.formats"

# read(path, model or None, input_shape or None, unsafe) -> (model, variables, input_shape)
Reader = Callable[[Path, Any, "tuple[int, ...] | None", bool], tuple]
# write(path, model, variables, input_shape (a tuple, or a dict / tuple of them), metadata) -> whether the file
# keeps the metadata
Writer = Callable[[Path, Any, Any, Any, Mapping[str, str]], bool]


@dataclass(frozen=True)
class Format:
    """One kind of model file.

    Attributes:
      name: what ``funcdl convert`` / ``inspect`` call it, e.g. ``'torch'``.
      suffixes: the name endings it is chosen by (the longest match wins: ``.weights.h5`` over ``.h5``).
      read: the reader, or None for a format that is only written.
      write: the writer, or None for a format that is only read.
      recognizes: for files that share a suffix with another format: whether an existing file is this one.
      folder: written as a folder, chosen for an output name with no known suffix; ``write`` then writes
        into a new empty folder, which ``save`` puts in place atomically.
      entries: for a folder format, the names such a folder holds, the first marking it (an existing folder
        is replaced only if it is one of these, see ``funcdl.io.atomic.check_folder``).
      metadata: reads the metadata funcdl recorded in a file of this format (``{}`` when none), or None for a
        format that carries none.
      title: what people call it, for messages (default ``name``).
    """
    name: str
    suffixes: tuple[str, ...] = ()
    read: Reader | None = None
    write: Writer | None = None
    recognizes: Callable[[Path], bool] | None = None
    folder: bool = False
    entries: tuple[str, ...] = ()
    metadata: Callable[[Path], dict[str, str]] | None = None
    title: str = ""


def _read_funcdl(path, model, input_shape, unsafe):
    loaded, variables, recorded = load_model(path)
    shape = input_shape or recorded or None  # a Graph of several inputs records a dict (or tuple) of shapes
    return loaded, variables, shape if shape is None or isinstance(shape, Mapping) else tuple(shape)


def _write_funcdl(path, model, variables, input_shape, metadata):
    save_model(path, model, variables, input_shape=input_shape, metadata=metadata)
    return True


def _is_funcdl(path):
    return path.suffix.lower() == ".safetensors" and "funcdl.format" in read_header(path)[0]


FUNCDL = Format("funcdl", (".funcdl",), _read_funcdl, _write_funcdl, recognizes=_is_funcdl, metadata=read_metadata)


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
    reason = misnamed(path) if path.is_file() else None
    if reason:  # before a reader calls it damaged, or a pickle reader sees a file that is not one
        raise FileFormatError(reason)
    chosen = find(path)
    if chosen.read is None:
        raise FileFormatError(f"{path}: {chosen.name} files are written, not read")
    return chosen.read(path, model, input_shape, unsafe)


def metadata(path: str | Path) -> dict[str, str]:
    """The metadata funcdl recorded in the model file ``path`` (normalisation, dataset, classes); ``{}`` if none."""
    chosen = find(path)
    return {} if chosen.metadata is None else chosen.metadata(Path(path))


def check_destination(path: str | Path, source: str | Path | None = None, force: bool = False) -> Format:
    """The format ``path`` would be written in, after checking that writing it destroys nothing of the user's.

    Args:
      path: the destination.
      source: the file being converted: the destination must be neither that file (by any name: a symbolic
        or hard link counts) nor a folder holding it.
      force: replace a folder of the format that holds other files too (see ``funcdl.io.atomic.check_folder``).
    Raises:
      FileFormatError: an unknown type, an unwritable folder, the source itself, or a folder not ours to replace.
    """
    chosen = find(path, writing=True)
    if chosen.write is None:
        raise FileFormatError(f"{path}: {chosen.name} files are read, not written")
    if source is not None:
        _check_not_source(Path(path), Path(source))
    check_writable(path)
    if chosen.folder:
        check_folder(path, chosen.title or chosen.name, chosen.entries, force)
    elif Path(path).is_dir():
        raise FileFormatError(f"cannot write {path}: it is a folder; give a file name ({chosen.name})")
    return chosen


def _check_not_source(path: Path, source: Path) -> None:
    if path.exists() and source.exists() and os.path.samefile(path, source):
        raise FileFormatError(f"{path} is the file being converted ({source}); writing it would replace the "
                              "source: give another output name")
    if path.is_dir() and source.exists() and source.resolve().is_relative_to(path.resolve()):
        raise FileFormatError(f"cannot write {path}: it holds the file being converted ({source}), which "
                              "replacing the folder would delete; give a new folder name")


def save(path: str | Path, model: Any, variables: Any, input_shape: tuple[int, ...] | None,
         metadata: Mapping[str, str] | None = None, source: str | Path | None = None,
         force: bool = False) -> tuple[str, bool]:
    """Write ``model`` to ``path`` in the format its name asks for.

    Nothing partial is left behind on failure, and nothing of the user's is replaced (``check_destination``).

    Args:
      metadata: what to record beside the model (``funcdl.io.formats.metadata`` of the source).
      source, force: as in ``check_destination``.
    Returns:
      ``(format name, whether the file keeps the metadata)``.
    """
    if not input_shape:
        raise ConfigError(f"the input shape is unknown; pass --input-shape to write {path}")
    chosen = check_destination(path, source, force)
    # one shape, or a Graph's several (a dict by input name, or a tuple of shapes)
    shape: Any = dict(input_shape) if isinstance(input_shape, Mapping) else tuple(input_shape)
    write, extra = chosen.write, dict(metadata or {})
    try:
        if chosen.folder:
            with atomic_path(path, folder=True, kind=chosen.title or chosen.name, entries=chosen.entries,
                             force=force) as tmp:
                kept = write(tmp, model, variables, shape, extra)  # type: ignore[misc]
        else:
            kept = write(Path(path), model, variables, shape, extra)  # type: ignore[misc]
    except OSError as err:  # the framework writers' own I/O (a full disk, a folder turned read-only)
        raise write_error(path, err) from err
    return chosen.name, bool(kept)
