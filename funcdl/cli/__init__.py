"""The ``funcdl`` command line: ``train`` (and the interop/bench commands registered below).

Every command is ``main(argv) -> exit code``; bad input prints one line
``error: ...`` on stderr and exits 2 (3 for a run stopped by a non-finite loss).
"""
import argparse
import importlib
import os
import sys

from funcdl.errors import FuncdlError, NonFiniteError

# name -> (module, help); each module has add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "train": ("funcdl.cli.train", "train a zoo model on a dataset with a jit-compiled epoch"),
    "convert": ("interop.cli", "convert a model file between funcdl, PyTorch, Keras and SavedModel"),
    "inspect": ("interop.cli", "show a model file's layers, shapes and parameter counts"),
    "compare": ("interop.cli", "run one model in every framework and report parity and speed"),
    "bench": ("bench.cli", "time the same models in every framework, side by side"),
    "sweep": ("funcdl.cli.sweep", "train many hyper-parameter settings at once with jax.vmap"),
}


def build_parser():
    """The argparse parser with one sub-parser per available command."""
    parser = argparse.ArgumentParser(prog="funcdl", description="pure-functional deep learning on JAX")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        command = sub.add_parser(name, help=help_text, description=help_text)
        getattr(module, f"add_{name}_arguments")(command)
        command.set_defaults(run=getattr(module, f"run_{name}"))
    return parser


def main(argv=None):
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
    except OSError as err:  # a folder that cannot be created or written, a full disk, ...
        where = f" ({err.filename})" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; check the path and permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _one_line_errors(parser):
    """Make argparse report bad arguments as one ``error: ...`` line (with the command's usage hint)."""
    def error(message, parser=parser):
        print(f"error: {parser.prog}: {message} (see '{parser.prog} --help')", file=sys.stderr)
        raise SystemExit(2)
    parser.error = error
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for sub in action.choices.values():
            sub.error = lambda message, sub=sub: error(message, sub)


def entry():
    """Console-script entry point."""
    sys.exit(main())

