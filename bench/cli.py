"""``funcdl bench``: time the same models in every framework, side by side, and write a table, JSON and chart.

Registered in the ``funcdl.commands`` entry-point group; the suite imports a
framework only inside the worker process that runs it.
"""
import argparse
import json
import logging
import re
import sys
import tempfile
from pathlib import Path

from bench import _fair, report, suite
from bench._flops import MATMUL_SIZE
from funcdl.cli.registry import Command
from funcdl.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl bench``."""
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: every framework on the CPU; gpu: on the CUDA device (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="few batches per timed epoch (extrapolated), accuracy for the MLP only")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write the files (default bench/results)")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $FUNCDL_DATA_DIR)")
    parser.add_argument("--models", nargs="+", choices=suite.MODEL_NAMES, default=list(suite.MODEL_NAMES),
                        metavar="MODEL",
                        help=f"models to run (default all: {' '.join(suite.MODEL_NAMES)})")
    parser.add_argument("--runners", nargs="+", choices=suite.RUNNER_NAMES, default=list(suite.RUNNER_NAMES),
                        metavar="RUNNER",
                        help=f"runners to run (default all: {' '.join(suite.RUNNER_NAMES)})")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs after the warm-up (default 3)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches per timed epoch, extrapolated to a full epoch "
                        "(default: all; --quick: 16, cnn 8, resnet 4)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell before it is stopped")
    parser.add_argument("--threads", type=int, default=_fair.DEFAULT_THREADS, metavar="N",
                        help="CPU threads for every framework: each worker is pinned to N CPUs and torch, "
                        f"TensorFlow and XLA are set to N (default {_fair.DEFAULT_THREADS})")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to run when the machine is busy (load average, other processes using CPU)")
    parser.add_argument("--matmul-size", type=int, default=MATMUL_SIZE, metavar="N",
                        help=f"side of the float32 matmul timed in every worker as its peak (default {MATMUL_SIZE})")
    parser.add_argument("--stem", default=None,
                        help="name of the written files without extension (default DEVICE-DATE[-quick])")
    parser.add_argument("--shared-processes", action="store_true",
                        help="one worker per framework instead of one per cell (faster; peak memory then shared)")


def _check(args):
    for flag, value in (("--epochs", args.epochs), ("--batches", args.batches), ("--timeout", args.timeout),
                        ("--threads", args.threads), ("--matmul-size", args.matmul_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    if args.stem is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.stem):
        raise ConfigError(f"--stem must be a plain file name (letters, digits, '.', '_', '-'), got {args.stem!r}")


def _logger(quiet):
    logger = logging.getLogger("funcdl.bench")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    return logger


def run(args: argparse.Namespace) -> int:
    """Run the suite, write ``{device}-{date}.json/.md/.png``, print the table (or the JSON line)."""
    _check(args)
    logger = _logger(quiet=args.json)
    log_path = Path(tempfile.gettempdir()) / "funcdl-bench-workers.log"
    log_path.write_text("")
    logger.info("workers' stderr: %s", log_path)
    record = suite.run_suite(args.suite, args.quick, args.models, args.runners, args.data_dir, args.epochs,
                             args.batches, args.timeout, args.shared_processes, log_path=log_path,
                             threads=args.threads, strict=args.strict, matmul_size=args.matmul_size)
    paths = report.write(record, args.out, args.stem)
    logger.info("wrote %s", ", ".join(str(path) for path in paths.values()))
    if args.json:
        print(json.dumps(record))
    else:
        print(report.markdown(record))
    measured = [row for row in record["rows"] if row["samples_per_second"] is not None]
    return 0 if measured else 1


COMMAND = Command("bench", "time the same models in every framework, side by side", add_arguments, run)
