"""The registry of ``funcdl`` sub-commands: the ``funcdl.commands`` entry-point group.

Each package that adds a sub-command names a :class:`Command` in its
``pyproject.toml`` (``[project.entry-points."funcdl.commands"]``): the core
registers ``train`` and ``sweep``, ``interop`` registers ``convert``,
``inspect`` and ``compare``, ``bench`` registers ``bench``. The core never
names the packages that extend it.
"""
import argparse
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

GROUP = "funcdl.commands"


@dataclass(frozen=True)
class Command:
    """One sub-command: its name, a one-line help, its options and what it runs.

    Attributes:
      name: the word after ``funcdl``.
      help: one line, shown in ``funcdl --help`` and as the command's description.
      add_arguments: ``add_arguments(parser)`` adds the command's options.
      run: ``run(args) -> exit code``; bad input raises a ``funcdl.errors`` error.
    """
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def commands() -> dict[str, Command]:
    """Every registered command by name, in name order.

    An entry point whose package is no longer installed (stale metadata) is
    left out; any other failure to load one is a bug and is raised.
    """
    found = {}
    for point in entry_points(group=GROUP):
        try:
            command = point.load()
        except ModuleNotFoundError as err:
            if err.name is None or not point.value.startswith(err.name):
                raise
            continue
        found[command.name] = command
    return dict(sorted(found.items()))
