"""``funcdl convert``, ``funcdl inspect`` and ``funcdl compare``, registered in ``funcdl.commands``."""
import argparse
import json
from pathlib import Path
from typing import Any

from funcdl import models, nn
from funcdl.cli.registry import Command
from funcdl.errors import ConfigError, FileFormatError
from funcdl.io import formats, load_model
from interop import parity


def parse_input_shape(text: str) -> tuple[int, ...]:
    """(28, 28, 1) from '28,28,1' (or '28x28x1')."""
    try:
        shape = tuple(int(part) for part in str(text).replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape must be positive integers like 28,28,1; got {text!r}")
    return shape


def architecture(arch: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 10) -> tuple:
    """(model, input_shape) from a zoo name, a funcdl model file, or an architecture JSON file."""
    if arch in models.MODELS:
        return models.get(arch, num_classes), tuple(input_shape or (28, 28, 1))
    path = Path(arch)
    if not path.is_file():
        raise ConfigError(f"--arch must be a zoo model ({', '.join(models.MODELS)}), a .funcdl file or an "
                          f"architecture .json file; {arch!r} is none of these")
    if path.suffix == ".json":
        try:
            return nn.from_config(json.loads(path.read_text())), input_shape
        except json.JSONDecodeError as err:
            raise FileFormatError(f"{path} is not valid JSON: {err}") from None
    model, _, recorded = load_model(path)
    return model, tuple(input_shape or recorded or ())


def _common(parser):
    parser.add_argument("--arch", default=None,
                        help="architecture for weight-only files: a zoo model name, a .funcdl file or a .json "
                        "(default: the file's own)")
    parser.add_argument("--input-shape", default=None,
                        help="one example's shape, e.g. 28,28,1 (NHWC) (default: the file's own, if it has one)")
    parser.add_argument("--num-classes", type=int, default=10, help="outputs of a zoo --arch")
    parser.add_argument("--unsafe", action="store_true",
                        help="let Keras run code stored in a .keras file (Lambda layers); never for files "
                             "you do not trust")


def _load(args, path):
    """(model, variables, input_shape) of ``path``, with ``--arch`` / ``--input-shape`` where given."""
    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    model = None
    if args.arch:
        model, shape = architecture(args.arch, shape, args.num_classes)
    return formats.load(path, model, shape, unsafe=args.unsafe)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl convert``."""
    parser.add_argument("source", help="model file to read")
    parser.add_argument("destination", help="file to write (its name picks the format) or a SavedModel folder")
    _common(parser)


def run_convert(args: argparse.Namespace) -> int:
    """Read SOURCE, write DESTINATION; prints one line saying what was written."""
    formats.check_destination(args.destination)  # fail before reading when the output cannot be written
    model, variables, input_shape = _load(args, args.source)
    kind = formats.save(args.destination, model, variables, input_shape)
    print(f"wrote {args.destination} ({kind}): {len(getattr(model, 'layers', [model]))} layers, "
          f"{nn.count_params(variables.get('params', {})):,} parameters, input shape {tuple(input_shape)}")
    return 0


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl inspect``."""
    parser.add_argument("file", help="model file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _common(parser)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the file's layers, output shapes and parameter counts."""
    model, variables, input_shape = _load(args, args.file)
    rows: list[dict[str, Any]] = nn.summary(model, input_shape) if input_shape else [
        {"name": "-", "type": type(model).__name__, "output_shape": None, "params": nn.count_params(variables)}]
    total = nn.count_params(variables.get("params", {}))
    if args.json:
        print(json.dumps({"file": str(args.file), "format": formats.find(args.file).name,
                          "input_shape": list(input_shape or []), "params": total,
                          "layers": [{**r, "output_shape": list(r["output_shape"] or [])} for r in rows]}))
        return 0
    print(f"{args.file}: {formats.find(args.file).name} model, input shape {tuple(input_shape or ())}")
    print(f"{'layer':<12}{'type':<14}{'output shape':<20}{'params':>12}")
    for row in rows:
        shape = str(tuple(row["output_shape"])) if row["output_shape"] is not None else "-"
        print(f"{row['name']:<12}{row['type']:<14}{shape:<20}{row['params']:>12,}")
    print(f"{'total':<46}{total:>12,}")
    return 0


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl compare``."""
    parser.add_argument("file", help="model file")
    parser.add_argument("--frameworks", default=",".join(parity.RUNNERS),
                        help=f"comma-separated runners, any of: {', '.join(parity.RUNNERS)} (default: all)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps to compare")
    parser.add_argument("--optimizer", default="sgd", help="sgd, adam or rmsprop (matching flavors)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per batch")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random batches compared")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    _common(parser)


def run_compare(args: argparse.Namespace) -> int:
    """Run the parity harness on the file's model and print its report."""
    model, variables, input_shape = _load(args, args.file)
    report = parity.compare(model, variables, input_shape, runners=args.frameworks.split(","), steps=args.steps,
                            optimizer=args.optimizer, learning_rate=args.lr, batch_size=args.batch_size,
                            seed=args.seed)
    print(parity.format_report(report))
    if args.json:
        print(json.dumps(report))
    return 0 if report["ok"] else 1


CONVERT = Command("convert", "convert a model file between funcdl, PyTorch, Keras and SavedModel",
                  add_convert_arguments, run_convert)
INSPECT = Command("inspect", "show a model file's layers, shapes and parameter counts", add_inspect_arguments,
                  run_inspect)
COMPARE = Command("compare", "run one model in every framework and report parity and speed", add_compare_arguments,
                  run_compare)
