"""The one atomic writer: every file or folder funcdl writes appears whole or not at all.

A temporary beside the destination is written and renamed onto it only once
the writing succeeded; on any failure the temporary is removed and the
destination is left as it was.
"""
import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from funcdl.errors import FileFormatError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", folder: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Args:
      path: the destination file (or folder).
      suffix: the temporary's ending; a writer that picks its format from the name (Keras) needs the real one.
      folder: the temporary is a fresh folder (a TensorFlow SavedModel); an existing folder at ``path`` is
        replaced only once the new one is in place.
    Raises:
      FileFormatError: the folder is missing or not writable, or an OSError while writing (disk full,
        permission denied, ...), as one line naming ``path``.
    """
    path = Path(path)
    directory = check_writable(path)
    if folder and path.exists() and not path.is_dir():
        raise FileFormatError(f"cannot write the folder {path}: a file of that name exists")
    try:
        tmp = _temporary(path, directory, suffix, folder)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        yield tmp
        _replace_folder(tmp, path) if folder else os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def _temporary(path, directory, suffix, folder):
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=directory))
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=directory)
    os.close(handle)
    return Path(name)


def _replace_folder(tmp, path):
    """Move the folder ``tmp`` onto ``path``, replacing an existing folder only once the new one is in place."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / "previous")
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / "previous", path)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_png(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib ``figure`` to ``path`` as a PNG, atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
        tmp.chmod(0o644)  # a picture is for reading: not the private mode of a temporary file
    return path


def check_writable(path: str | Path) -> Path:
    """The folder ``path`` would be written in; FileFormatError if it is missing or not writable."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileFormatError(f"cannot write {path}: folder {directory} does not exist; create it first")
    if not os.access(directory, os.W_OK):
        raise FileFormatError(f"cannot write {path}: folder {directory} is not writable; choose another output")
    return directory


def write_error(path: str | Path, err: OSError) -> FileFormatError:
    """The one-line FileFormatError for an OSError raised while writing ``path``."""
    reason = err.strerror or (str(err).splitlines()[0] if str(err) else type(err).__name__)
    space = err.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))
    return FileFormatError(f"cannot write {path}: {reason}; "
                           f"{'free space or choose another output' if space else 'choose another output'}")
