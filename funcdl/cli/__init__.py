"""The ``funcdl`` command line: one sub-command per registered :class:`~funcdl.cli.registry.Command`.

Every command is ``run(args) -> exit code``; bad input prints one line
``error: ...`` on stderr and exits 2 (3 for a run stopped by a non-finite loss).
"""
import argparse
import os
import sys

from funcdl.cli.registry import Command, commands
from funcdl.errors import FuncdlError, NonFiniteError

__all__ = ["Command", "DefaultsHelpFormatter", "build_parser", "commands", "entry", "main"]


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows every option's default: its own words when the help says it, else ``(default: X)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text.lower():
            return text
        return f"{text} (default: {shown_default(action.default)})".strip()


def shown_default(value: object) -> str:
    """A default as help shows it: off/on for flags, comma-joined lists, 'none' for None (``%`` escaped)."""
    if value is None:
        text = "none"
    elif isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, (list, tuple)):
        text = ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value)
    else:
        text = str(value)
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(prog="funcdl", description="pure-functional deep learning on JAX")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands().values():
        command_parser = sub.add_parser(command.name, help=command.help, description=command.help,
                                        formatter_class=DefaultsHelpFormatter)
        command.add_arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 3 non-finite loss)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter, if it is loaded
    parser = build_parser()
    _one_line_errors(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        return int(args.run(args) or 0)
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except FuncdlError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:  # out of host memory outside a compiled program (fit names the batch size itself)
        size = f" with batch size {args.batch_size}" if getattr(args, "batch_size", None) else ""
        print(f"error: out of memory{size}; lower --batch-size, use --limit, or free memory", file=sys.stderr)
        return 2
    except OSError as err:  # a folder that cannot be created or written, a full disk, ...
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; check the path and permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse report bad arguments as one ``error: ...`` line (with the command's usage hint)."""
    def error(message, parser=parser):
        print(f"error: {parser.prog}: {message} (see '{parser.prog} --help')", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error  # type: ignore[method-assign]
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for sub in action.choices.values():  # type: ignore[union-attr]
            sub.error = lambda message, sub=sub: error(message, sub)


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
