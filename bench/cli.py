"""``funcdl bench``: time the same models in every framework, side by side, and write a table, JSON and chart.

The suite lives in the repository's ``bench/`` folder (not installed with the
package): this command finds it next to the ``funcdl`` package of a source
checkout and imports it only when the command runs, so ``import funcdl`` never
pulls in torch or TensorFlow.
"""
import importlib
import json
import logging
import sys
import tempfile
from pathlib import Path

from funcdl.errors import ConfigError

MODEL_NAMES = ("mlp", "cnn", "lstm", "gru", "resnet")
RUNNER_NAMES = ("funcdl", "funcdl-eager", "jax-handwritten", "torch-eager", "torch-compile", "torch-cudagraph",
                "keras-tf", "keras-tf-xla", "tf-function", "keras-jax")


def bench_dir():
    """The repository's ``bench/`` folder (next to the ``funcdl`` package)."""
    import funcdl
    return Path(funcdl.__file__).resolve().parents[1] / "bench"


def load_suite():
    """``(bench.suite, bench.report)`` from the source checkout, or ConfigError saying where it looked."""
    folder = bench_dir()
    if not (folder / "suite.py").is_file():
        raise ConfigError(f"funcdl bench needs the benchmark suite from a source checkout, expected at {folder}; "
                          "it is not installed with the package (clone the repository and `pip install -e .`)")
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("bench.suite"), importlib.import_module("bench.report")


def add_bench_arguments(parser):
    """Options of ``funcdl bench``."""
    parser.add_argument("--suite", choices=("cpu", "gpu"), default="cpu",
                        help="cpu: every framework on the CPU; gpu: on the CUDA device (default cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="few batches per timed epoch (extrapolated), accuracy for the MLP only")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    parser.add_argument("--out", default=None, metavar="DIR", help="where to write the files (default bench/results)")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $FUNCDL_DATA_DIR)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), metavar="MODEL",
                        help=f"models to run (default all: {' '.join(MODEL_NAMES)})")
    parser.add_argument("--runners", nargs="+", choices=RUNNER_NAMES, default=list(RUNNER_NAMES), metavar="RUNNER",
                        help=f"runners to run (default all: {' '.join(RUNNER_NAMES)})")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs after the warm-up (default 3)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches per timed epoch, extrapolated to a full epoch "
                        "(default: all; --quick: 16, cnn 8, resnet 4)")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell before it is stopped")
    parser.add_argument("--shared-processes", action="store_true",
                        help="one worker per framework instead of one per cell (faster; peak memory then shared)")


def _check(args):
    for flag, value in (("--epochs", args.epochs), ("--batches", args.batches), ("--timeout", args.timeout)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")


def _logger(quiet):
    logger = logging.getLogger("funcdl.bench")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    return logger


def run_bench(args):
    """Run the suite, write ``{device}-{date}.json/.md/.png``, print the table (or the JSON line)."""
    _check(args)
    suite, report = load_suite()
    logger = _logger(quiet=args.json)
    log_path = Path(tempfile.gettempdir()) / "funcdl-bench-workers.log"
    log_path.write_text("")
    logger.info("workers' stderr: %s", log_path)
    record = suite.run_suite(args.suite, args.quick, args.models, args.runners, args.data_dir, args.epochs,
                             args.batches, args.timeout, args.shared_processes, log_path=log_path)
    paths = report.write(record, args.out)
    logger.info("wrote %s", ", ".join(str(path) for path in paths.values()))
    if args.json:
        print(json.dumps(record))
    else:
        print(report.markdown(record))
    measured = [row for row in record["rows"] if row["samples_per_second"] is not None]
    return 0 if measured else 1
