"""Run folders (``--out``, ``--resume``): checked before training, and locked while a run uses them.

A training run may take hours, so the folders it will write are checked before it starts (a typo must not throw
away a finished run), and two runs never write the same folder at once: the run holds an OS lock
(``fcntl.flock``) on ``DIR/.funcdl.lock``, which the kernel releases when the process ends, however it ends.
A folder's stale temporaries (funcdl's, left by a killed write) are deleted once its lock is held.
"""
import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from funcdl.errors import ConfigError
from funcdl.io.atomic import remove_stale

try:
    import fcntl
except ImportError:  # Windows: no flock; run folders are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK = ".funcdl.lock"


def check_output_folder(path: str | Path, flag: str) -> None:
    """ConfigError unless ``path`` is a writable folder, or one that can be made (its nearest existing parent is a
    writable folder); nothing is created.

    Args:
      flag: the option that named it, for the message (``'--out'``).
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {path} exists and is not a folder; give a folder path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {path} is not writable; choose another folder")
        return
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path} cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path} cannot be created: {parent} is not writable; choose another folder")


@contextlib.contextmanager
def locked(folders: Sequence[tuple[str, str | Path]]) -> Iterator[None]:
    """Create and lock each ``(flag, folder)`` for the block; ConfigError if another run holds one.

    On exit the locks are released, the lock files removed, and folders this call created are removed again
    if nothing was written into them.
    """
    with contextlib.ExitStack() as stack:
        seen: set[Path] = set()
        for flag, folder in folders:
            if Path(folder).resolve() not in seen:  # --out and --resume may name one folder
                seen.add(Path(folder).resolve())
                stack.enter_context(_locked(Path(folder), flag))
        yield


@contextlib.contextmanager
def _locked(folder: Path, flag: str) -> Iterator[None]:
    created = _make(folder)
    try:
        handle = _acquire(folder, flag)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        remove_stale(folder)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(folder / LOCK)  # while still held: a run waiting on this file then sees it replaced
        os.close(handle)
        _remove_empty(created)


def _make(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    for candidate in [folder, *folder.absolute().parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(created: list[Path]) -> None:
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: what a run wrote stays


def _acquire(folder: Path, flag: str) -> int:
    """An open handle of ``folder/.funcdl.lock`` holding its exclusive lock, with this run written into it."""
    path = folder / LOCK
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 200).decode("utf-8", "replace").strip().splitlines()
            os.close(handle)
            who = f" ({holder[0]})" if holder else ""
            raise ConfigError(f"{flag} {folder} is in use by another funcdl run{who}; wait for it to end or choose "
                              "another folder") from None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)  # the previous holder removed the file as we opened it: lock the new one
    os.ftruncate(handle, 0)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
    command = command if len(command) <= 100 else command[:97] + "..."
    os.write(handle, f"pid {os.getpid()}, started {started}: {command}\n".encode())
    return handle
