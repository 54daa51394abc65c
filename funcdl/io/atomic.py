"""The one atomic writer: every file or folder funcdl writes appears whole or not at all.

A temporary beside the destination is written and renamed onto it only once
the writing succeeded; on any failure the temporary is removed and the
destination is left as it was. What appears has the user's permissions (the
mode an ordinary ``open`` would give under the umask, or the mode of the file
it replaces), not the private mode of a temporary.

Temporaries are named ``.{name}.funcdl-{pid}-{random}{suffix}``, so one left
behind by a killed process is recognisably ours and whose: ``remove_stale``
deletes those of processes that no longer run, and nothing else.
"""
import contextlib
import ctypes
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from funcdl.errors import FileFormatError

_TEMPORARY = re.compile(r"^\..+\.funcdl-(?P<pid>\d+)-[a-z0-9_]{8}(\..*)?$")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", folder: bool = False, kind: str = "folder",
                entries: Collection[str] = (), force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    Args:
      path: the destination file (or folder).
      suffix: the temporary's ending; a writer that picks its format from the name (Keras) needs the real one.
      folder: the temporary is a fresh folder (a TensorFlow SavedModel); an existing folder at ``path`` is
        swapped for the new one in one step, and only if ``check_folder`` allows it.
      kind, entries, force: what a folder at ``path`` may be replaced as (see ``check_folder``).
    Raises:
      FileFormatError: the folder is missing or not writable, the destination is a folder that is not
        ours to replace, or an OSError while writing (disk full, permission denied, ...), as one line
        naming ``path``.
    """
    path = Path(path)
    directory = check_writable(path)
    if folder:
        check_folder(path, kind, entries, force)
    elif path.is_dir():
        raise FileFormatError(f"cannot write {path}: it is a folder; give a file name")
    remove_stale(directory, path.name)
    mode = _mode_for(path, folder)
    try:
        tmp = _temporary(path, directory, suffix, folder)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        yield tmp
        os.chmod(tmp, mode)
        _replace_folder(tmp, path) if folder else os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def _temporary(path, directory, suffix, folder):
    prefix = f".{path.name}.funcdl-{os.getpid()}-"
    if folder:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory))
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(handle)
    return Path(name)


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc), else by setting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path, folder):
    """The permissions of what ``path`` becomes: those of the file it replaces, else what the umask gives."""
    if path.exists() and path.is_dir() == folder:
        return stat.S_IMODE(path.stat().st_mode)
    return (0o777 if folder else 0o666) & ~umask()


def check_folder(path: str | Path, kind: str, entries: Collection[str], force: bool = False) -> None:
    """FileFormatError unless the folder ``path`` may be replaced by a new ``kind`` folder.

    Replaced are: a missing or empty folder, and a folder of that kind (it holds ``entries[0]``, the file
    that marks it, and nothing but ``entries``). A folder of that kind that holds other files too needs
    ``force``; any other folder, and the current folder or one holding it, is never replaced.

    Args:
      kind: what such a folder is, for the message (``'SavedModel'``).
      entries: the names such a folder holds; the first marks it (``saved_model.pb``).
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise FileFormatError(f"cannot write the {kind} folder {path}: a file of that name exists; "
                              "choose another name")
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise FileFormatError(f"cannot write the {kind} folder {path}: it is the current folder or holds it; "
                              f"give a new folder name, e.g. {path / 'model'}")
    held = sorted(entry.name for entry in path.iterdir())
    if not held:
        return
    entries = list(entries)
    if not entries or entries[0] not in held:
        raise FileFormatError(f"cannot write the {kind} folder {path}: it exists and is not a {kind} (it holds "
                              f"{_names(held)}); funcdl replaces only a {kind} folder: give a new folder name")
    foreign = [name for name in held if name not in entries]
    if foreign and not force:
        raise FileFormatError(f"cannot write the {kind} folder {path}: it also holds {_names(foreign)}, which "
                              f"replacing it would delete; pass --force (force=True) to replace the whole folder, "
                              "or give a new folder name")


def _names(names):
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _replace_folder(tmp, path):
    """Put the folder ``tmp`` at ``path``; an existing folder there is swapped out in one step, then deleted."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if _exchange(tmp, path):  # tmp now holds the old folder
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.funcdl-{os.getpid()}-", suffix=".old", dir=path.parent))
    os.replace(path, old / "previous")
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / "previous", path)
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):  # old kernel or a filesystem without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def remove_stale(directory: str | Path, name: str | None = None) -> list[Path]:
    """Delete funcdl's temporaries in ``directory`` left by processes that no longer run; returns what went.

    Args:
      name: only the temporaries of this destination name (all of funcdl's when None).
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path(directory).iterdir():
            match = _TEMPORARY.match(entry.name)
            if match is None or (name is not None and not entry.name.startswith(f".{name}.funcdl-")):
                continue
            if _running(int(match["pid"])):
                continue
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def save_png(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib ``figure`` to ``path`` as a PNG, atomically, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
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
