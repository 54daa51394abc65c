"""Options that ``funcdl train`` and ``funcdl sweep`` share, and the data they load from them."""
import argparse
import inspect
import sys
from collections.abc import Callable
from typing import Any

from funcdl import data, losses, models, optim
from funcdl.errors import ConfigError, DataError

VALIDATION_SPLIT = 0.1  # held out of the training data, seeded, unless --validation-split says otherwise


def add_data_arguments(parser: argparse.ArgumentParser, dataset: str) -> None:
    """``--model``, ``--dataset`` (default ``dataset``), ``--data-dir`` and how the data is prepared."""
    parser.add_argument("--model", default="mlp",
                        help=f"zoo model ({', '.join(models.MODELS)}); its input shape and classes come from the data")
    parser.add_argument("--dataset", default=dataset,
                        help=f"{', '.join(data.DATASETS)}, tfds:NAME, or auto (mnist when found, else digits; "
                        "an error when --data-dir is given and holds no MNIST)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding mnist/, cifar-10-batches-bin/ or cifar-100-binary/ "
                        "(default: $FUNCDL_DATA_DIR)")
    parser.add_argument("--validation-split", type=float, default=VALIDATION_SPLIT,
                        help="fraction of the training data held out for validation (val_* metrics, early "
                        "stopping, the sweep's ranking), a random split seeded by the run's seed; 0: none. The "
                        "test set is evaluated once, after training")
    parser.add_argument("--normalize", action="store_true",
                        help="standardise inputs with the training mean/std (off: pixels in [0, 1])")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N train and test examples (default: all)")


def add_training_arguments(parser: argparse.ArgumentParser, epochs: int, batch_sizes: bool = False) -> None:
    """``--epochs`` (default ``epochs``), ``--batch-size`` (a list with ``batch_sizes``), ``--optimizer``,
    ``--flavor``, ``--loss``."""
    parser.add_argument("--epochs", type=int, default=epochs, help="epochs to train")
    if batch_sizes:
        parser.add_argument("--batch-size", type=numbers("--batch-size", int), default=[64],
                            help="batch sizes, comma-separated (each trains its models in a program of its own)")
    else:
        parser.add_argument("--batch-size", type=int, default=64, help="examples per step")
    parser.add_argument("--optimizer", default="adam", help=f"one of {', '.join(optim.NAMES)}")
    parser.add_argument("--flavor", default="torch", help="optimizer update rule: torch or keras")
    parser.add_argument("--loss", default="cross_entropy",
                        help=f"{', '.join(losses.NAMES)}, or a Keras / PyTorch name of one (e.g. "
                        "CategoricalCrossentropy, BCEWithLogitsLoss); probability losses get from_logits from the "
                        "model's last layer")


def numbers(kind: str, convert: Callable[[str], Any]) -> Callable[[str], list]:
    """An argparse type: a comma-separated list of ``convert``-ed values."""
    def parse(text):
        try:
            return [convert(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a comma-separated list, got {text!r}") from None
    return parse


def add_output_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` (print ``what`` as one JSON line last) and ``--quiet``."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON line last")
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def check_training_arguments(args: argparse.Namespace) -> None:
    """ConfigError for a non-positive ``--epochs`` / ``--batch-size`` or an unknown loss or model name."""
    sizes = args.batch_size if isinstance(args.batch_size, list) else [args.batch_size]
    if not sizes:
        raise ConfigError("--batch-size needs at least one batch size")
    for flag, value in [("--epochs", args.epochs)] + [("--batch-size", size) for size in sizes]:
        if value < 1:
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    losses.get(args.loss)
    models.get(args.model)


def model_for(name: str, datasets: data.Datasets) -> Any:
    """The zoo model ``name`` for the data: its classes, and its input shape when the builder takes one."""
    build = models.MODELS.get(name)
    if build is not None and "input_shape" in inspect.signature(build).parameters:
        return build(num_classes=datasets.num_classes, input_shape=datasets.input_shape)
    return models.get(name, datasets.num_classes)


def load_data(args: argparse.Namespace, seed: int) -> data.Datasets:
    """The datasets ``args`` ask for; ``--dataset auto`` falls back to digits when MNIST is not found (and no
    ``--data-dir`` was given).

    Args:
      seed: seed of the validation split.
    """
    options = dict(validation_split=args.validation_split, seed=seed, limit=args.limit, normalize=args.normalize,
                   one_hot=losses.label_kind(args.loss) == "one_hot")
    if args.dataset == "auto":
        try:
            return data.load("mnist", args.data_dir, **options)
        except DataError as err:
            if args.data_dir:  # a folder the user named: its MNIST is what they asked for
                raise DataError(f"--dataset auto: {err}") from None
            print(f"note: {err}; using the embedded digits instead", file=sys.stderr)
            return data.load("digits", args.data_dir, **options)
    return data.load(args.dataset, args.data_dir, **options)
