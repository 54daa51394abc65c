"""Options that ``funcdl train`` and ``funcdl sweep`` share, and the data they load from them."""
import argparse
import sys

from funcdl import data, losses, models, optim
from funcdl.errors import ConfigError, DataError


def add_data_arguments(parser: argparse.ArgumentParser, dataset: str) -> None:
    """``--model``, ``--dataset`` (default ``dataset``), ``--data-dir`` and how the data is prepared."""
    parser.add_argument("--model", default="mlp", help=f"zoo model: {', '.join(models.MODELS)} (default mlp)")
    parser.add_argument("--dataset", default=dataset,
                        help=f"mnist, digits, tfds:NAME, or auto (mnist when found, else digits; default {dataset})")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $FUNCDL_DATA_DIR)")
    parser.add_argument("--validation-split", type=float, default=0.0,
                        help="fraction of training data held out for validation (default 0: validate on test)")
    parser.add_argument("--normalize", action="store_true",
                        help="standardise inputs with the training mean/std (default: pixels in [0, 1])")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N train and test examples")


def add_training_arguments(parser: argparse.ArgumentParser, epochs: int) -> None:
    """``--epochs`` (default ``epochs``), ``--batch-size``, ``--optimizer``, ``--flavor``, ``--loss``."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", default="adam", help=f"one of {', '.join(optim.NAMES)} (default adam)")
    parser.add_argument("--flavor", default="torch", help="optimizer update rule: torch or keras (default torch)")
    parser.add_argument("--loss", default="cross_entropy", help="loss name (default cross_entropy)")


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` (print ``what`` as one JSON line last) and ``--quiet``."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON line last")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def check_training_arguments(args: argparse.Namespace) -> None:
    """ConfigError for a non-positive ``--epochs`` / ``--batch-size`` or an unknown loss or model name."""
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    losses.get(args.loss)
    models.get(args.model)


def load_data(args: argparse.Namespace, seed: int) -> data.Datasets:
    """The datasets ``args`` ask for; ``--dataset auto`` falls back to digits when MNIST is not found.

    Args:
      seed: seed of the validation split.
    """
    options = dict(validation_split=args.validation_split, seed=seed, limit=args.limit, normalize=args.normalize,
                   one_hot=losses.label_kind(args.loss) == "one_hot")
    if args.dataset == "auto":
        try:
            return data.load("mnist", args.data_dir, **options)
        except DataError as err:
            print(f"note: {err}; using the embedded digits instead", file=sys.stderr)
            return data.load("digits", args.data_dir, **options)
    return data.load(args.dataset, args.data_dir, **options)
