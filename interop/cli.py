"""``funcdl convert``, ``funcdl inspect`` and ``funcdl compare``, registered in ``funcdl.commands``."""
import argparse
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from funcdl import models, nn
from funcdl.cli.registry import Command
from funcdl.errors import ConfigError, ConversionError, FileFormatError
from funcdl.io import formats, load_model
from funcdl.io.sniff import sniff
from interop import keras, parity, pytorch
from interop.keras import _graph_export as keras_graph_export


def parse_input_shape(text: str) -> tuple[int, ...]:
    """(28, 28, 1) from '28,28,1' (or '28x28x1'); every part must be a positive integer ('28,x' is refused)."""
    try:
        shape = tuple(int(part) for part in re.split(r"[,x]", str(text).strip()))
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
        return _architecture_json(path), input_shape
    model, _, recorded = load_model(path)
    shape = input_shape or recorded or ()  # a Graph of several inputs records a dict of shapes
    return model, shape if isinstance(shape, dict) else tuple(shape)


def _architecture_json(path: Path) -> Any:
    """The model an architecture ``.json`` describes; one FileFormatError line for binary, broken or deep JSON."""
    try:
        return nn.from_config(json.loads(path.read_text(encoding="utf-8")))
    except UnicodeDecodeError:
        kind = sniff(path)
        raise FileFormatError(f"{path} is not valid JSON: it is {kind.name if kind else 'binary, not text'}; give "
                              "an architecture .json (what funcdl.nn.to_config writes)") from None
    except json.JSONDecodeError as err:
        raise FileFormatError(f"{path} is not valid JSON: {err}") from None
    except RecursionError:
        raise FileFormatError(f"{path} is not a valid architecture: it is nested too deeply") from None


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
    parser.add_argument("source", nargs="?", help="model file to read")
    parser.add_argument("destination", nargs="?",
                        help="file to write (its name picks the format) or a SavedModel folder: "
                        "a new one, or an existing SavedModel, which is replaced; any other folder is refused")
    parser.add_argument("--list-supported", action="store_true",
                        help="print the layers and ops each conversion supports, and exit")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing SavedModel folder even if it holds other files too")
    parser.add_argument("--strict-batchnorm", action="store_true",
                        help="refuse to write a torch BatchNorm for Keras (torch updates the running variance with "
                        "the unbiased estimate during training, Keras with the biased one) instead of converting "
                        "it, exact in inference, with a one-line note")
    _common(parser)


def _shape_text(input_shape: Any) -> str:
    """One input's shape as a tuple, several (a graph's) as a tuple or dict of tuples."""
    if isinstance(input_shape, dict):
        return str({name: tuple(shape) for name, shape in input_shape.items()})
    return str(tuple(input_shape))


def run_convert(args: argparse.Namespace) -> int:
    """Read SOURCE, write DESTINATION; prints one line saying what was written and what metadata it kept."""
    if args.list_supported:
        print(supported_text())
        return 0
    if not args.source or not args.destination:
        raise ConfigError("funcdl convert needs SOURCE and DESTINATION files (or --list-supported)")
    # fail before reading when the output cannot be written or would replace something of the user's
    formats.check_destination(args.destination, source=args.source, force=args.force)
    model, variables, input_shape = _load(args, args.source)
    _check_strict_batchnorm(args, model)
    metadata = formats.metadata(args.source)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", keras.ConversionNote)
        kind, kept = formats.save(args.destination, model, variables, input_shape, metadata, source=args.source,
                                  force=args.force)
    for note in {str(note.message) for note in notes if issubclass(note.category, keras.ConversionNote)}:
        print(f"note: {note}", file=sys.stderr)
    layers = getattr(model, "layers", None) or getattr(model, "nodes", None) or [model]  # a Graph's are its nodes
    print(f"wrote {args.destination} ({kind}): {len(layers)} layers, "
          f"{nn.count_params(variables.get('params', {})):,} parameters, input shape {_shape_text(input_shape)}"
          f"{_metadata_note(metadata, kept, args.destination)}")
    return 0


def _check_strict_batchnorm(args: argparse.Namespace, model: Any) -> None:
    """With ``--strict-batchnorm``, refuse a Keras destination for a model holding torch-style BatchNorm layers."""
    found = keras.unbiased_batchnorms(model) if args.strict_batchnorm else []
    if found and formats.find(args.destination, writing=True).name.startswith("keras"):
        raise ConversionError(f"layer {found[0]} is a torch BatchNorm, which updates its running "
                              "variance with the unbiased estimate during training, Keras with the biased one; "
                              "--strict-batchnorm refuses it (without it, it converts, exact in inference)")


_MERGES = "Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, GlobalAverage/MaxPooling1D/2D"
# funcdl layers to_torch writes (``interop.pytorch._plan``), kept here so listing them needs no torch
_TO_TORCH = ("Dense, Conv2D, MaxPool2D, AvgPool2D, BatchNorm, LayerNorm, Embedding, SimpleRNN, LSTM, GRU, "
             "Bidirectional, Dropout, Flatten, Reshape, ImageRows, Permute, RepeatVector, UpSampling2D, "
             "ZeroPadding2D, PixelShuffle, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, LogSoftmax, Softplus, GELU, "
             "ReLU6, SiLU, HardSwish, ELU, SELU, HardSigmoid, Softsign, Mish, Exponential")
README_BEGIN, README_END = "<!-- supported-begin: generated by `make readme-tables` -->", "<!-- supported-end -->"


def _aten_ops() -> str:
    """The ATen ops the ``.pt2`` reader maps (``interop.pytorch``'s list, without its title)."""
    return pytorch.SUPPORTED_ATEN.removeprefix(".pt2 ATen ops: ")


def supported_rows() -> list[tuple[str, str, str]]:
    """``[(framework, what, the supported pieces)]``: what ``--list-supported`` prints and the README's tables hold."""
    rows = [("PyTorch", f"from_torch {kind} (tracing a torch.nn.Module)", items)
            for kind, items in pytorch.SUPPORTED_ROWS]
    rows += [("PyTorch", "ATen ops of a torch.export .pt2 (from_exported)", _aten_ops()),
             ("PyTorch", "funcdl layers to_torch writes (.pt/.pth/.pt2/.safetensors)",
              f"{_TO_TORCH}; in graphs also {_MERGES}, nested Sequential/Graph nodes, several inputs and outputs"),
             ("Keras", "from_keras layers (.keras, .h5 of Keras 2 and 3, Keras 2 weights-only .h5 with --arch)",
              ", ".join(keras.SUPPORTED)),
             ("Keras", "funcdl layers to_keras writes (.keras/.h5/.weights.h5)",
              ", ".join(keras_graph_export.SUPPORTED) + "; nested Sequential/Graph nodes, several inputs and outputs"),
             ("TensorFlow", "funcdl models to_saved_model writes (a SavedModel folder)",
              "any funcdl model, through jax2tf; several inputs and outputs")]
    return rows


def supported_text() -> str:
    """What each conversion supports, one short paragraph per row (``funcdl convert --list-supported``)."""
    return "\n\n".join(f"{framework}, {what}:\n  {items}" for framework, what, items in supported_rows())


def supported_markdown() -> str:
    """The README's supported-layer tables, one per framework, from ``supported_rows``."""
    lines: list[str] = []
    for framework in dict.fromkeys(framework for framework, _, _ in supported_rows()):
        lines += ["", f"**{framework}**", "", "| conversion | supported |", "| --- | --- |"]
        lines += [f"| {what} | {items.replace('|', '/')} |" for name, what, items in supported_rows()
                  if name == framework]
    return "\n".join([README_BEGIN, *lines, "", README_END])


def write_readme_tables(path: str | Path = "README.md") -> bool:
    """Replace the generated block of the README at ``path`` with ``supported_markdown()``; True if it changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    updated = text[:start] + supported_markdown() + text[end:]
    if updated != text:
        path.write_text(updated, encoding="utf-8")
    return updated != text


def _metadata_note(metadata: dict[str, str], kept: bool, destination: str) -> str:
    """What became of the source's metadata (normalisation, dataset, classes), for the output line."""
    if not metadata:
        return ""
    names = ", ".join(sorted(metadata))
    if kept:
        return f"; kept its metadata ({names})"
    return (f"; dropped its metadata ({names}): {Path(destination).suffix or 'such'} files cannot carry it "
            "(.funcdl, .safetensors, .pt2, .keras, .h5 and SavedModel folders can)")


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl inspect``."""
    parser.add_argument("file", help="model file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    _common(parser)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the file's layers, output shapes and parameter counts (``funcdl.nn.summary``'s table)."""
    model, variables, input_shape = _load(args, args.file)
    table = nn.summary(model, input_shape, print_fn=None, variables=variables) if input_shape else None
    rows: list[dict[str, Any]] = table.rows if table else [
        {"name": "-", "type": type(model).__name__, "output_shape": None, "params": nn.count_params(variables)}]
    total = nn.count_params(variables.get("params", {}))
    if args.json:
        print(json.dumps({"file": str(args.file), "format": formats.find(args.file).name,
                          "input_shape": _jsonable(input_shape or []), "params": total,
                          "layers": [{**r, "output_shape": _jsonable(r["output_shape"] or [])} for r in rows]}))
        return 0
    print(f"{args.file}: {formats.find(args.file).name} model, input shape {nn.describe_shape(input_shape or ())}")
    if table is None:
        print(f"{type(model).__name__}: {total:,} parameters (no input shape recorded: give --input-shape "
              "for the layer table)")
    else:
        print(table.text)
    return 0


def _jsonable(shape: Any) -> Any:
    """A shape (or a tuple / dict of shapes) as JSON lists."""
    if isinstance(shape, dict):
        return {key: _jsonable(value) for key, value in shape.items()}
    return [_jsonable(value) if isinstance(value, (tuple, list, dict)) else value for value in shape]


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
    parser.add_argument("--loss", default=None,
                        help=f"loss compared, any of: {', '.join(parity.LOSSES)} (default: picked from the "
                        "model's output: cross_entropy for logits, sparse_categorical_crossentropy after a "
                        "softmax, binary_crossentropy after one sigmoid unit, else mse)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line last")
    _common(parser)


def run_compare(args: argparse.Namespace) -> int:
    """Run the parity harness on the file's model and print its report."""
    model, variables, input_shape = _load(args, args.file)
    report = parity.compare(model, variables, input_shape, runners=args.frameworks.split(","), steps=args.steps,
                            optimizer=args.optimizer, learning_rate=args.lr, batch_size=args.batch_size,
                            seed=args.seed, loss=args.loss)
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
