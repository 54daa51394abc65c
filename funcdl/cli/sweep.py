"""``funcdl sweep``: train every (learning rate, seed) model at once, print a ranked table, plot them.

    funcdl sweep --model mlp --dataset digits --lr 1e-4,3e-4,1e-3,3e-3 --seeds 0,1,2,3 --epochs 10

writes ``DIR/sweep.png`` (validation accuracy per epoch, one line per model)
and ``DIR/sweep.json`` (every model's history and the ranking); ``--out DIR``
defaults to a new ``runs/sweep-DATE-TIME``.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax

from funcdl import models
from funcdl.cli import options
from funcdl.cli.registry import Command
from funcdl.io import atomic_path, run_folder
from funcdl.train import sweep as sweep_lib
from funcdl.train.epoch import check_seed


def _numbers(kind, convert):
    def parse(text):
        try:
            return [convert(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be a comma-separated list, got {text!r}") from None
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl sweep``."""
    options.add_data_arguments(parser, dataset="digits")
    options.add_training_arguments(parser, epochs=5)
    parser.add_argument("--lr", type=_numbers("--lr", float), default=[1e-4, 3e-4, 1e-3, 3e-3],
                        help="learning rates, comma-separated (default 1e-4,3e-4,1e-3,3e-3)")
    parser.add_argument("--seeds", type=_numbers("--seeds", int), default=[0, 1],
                        help="seeds, comma-separated (default 0,1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for sweep.png and sweep.json (default runs/sweep-DATE-TIME)")
    options.add_output_arguments(parser, "the ranking")


def run(args: argparse.Namespace) -> int:
    """Run the sweep, print the ranked table, write the plot and the JSON; returns the exit code."""
    options.check_training_arguments(args)
    datasets = options.load_data(args, seed=0)  # the validation split's seed; the model seeds are --seeds
    model = models.get(args.model, datasets.num_classes)
    result = sweep_lib.sweep(model, datasets.train, lrs=args.lr, seeds=args.seeds, loss=args.loss,
                             optimizer=args.optimizer, flavor=args.flavor, epochs=args.epochs,
                             batch_size=args.batch_size, validation_data=datasets.validation or datasets.test,
                             verbose=not args.quiet)
    ranking = result.ranking()
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    plot_path = sweep_lib.plot(result, out / "sweep.png")
    summary = _summary(args, datasets, result, ranking)
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2))
    print(_table(ranking))
    print(f"{len(ranking)} models in one program: compile {result.compile_seconds:.2f} s, "
          f"{sum(result.epoch_seconds):.2f} s for {args.epochs} epochs; plot: {plot_path}", file=sys.stderr)
    if args.json:
        print(json.dumps(_json_safe({k: summary[k] for k in ("model", "dataset", "models", "ranking")})))
    return 0


def _summary(args, datasets, result, ranking):
    return {"model": args.model, "dataset": datasets.name, "optimizer": args.optimizer, "flavor": args.flavor,
            "batch_size": args.batch_size, "epochs": args.epochs, "models": len(ranking),
            "device": str(jax.devices()[0].device_kind), "compile_seconds": result.compile_seconds,
            "epoch_seconds": result.epoch_seconds, "ranking": ranking,
            "history": {key: values.tolist() for key, values in result.history.items()},
            "lrs": result.lrs.tolist(), "seeds": result.seeds.tolist()}


def _json_safe(value):
    """``value`` with NaN/inf (a diverged model's loss) as null, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _table(ranking):
    header = f"{'rank':>4}  {'lr':>9}  {'seed':>4}  {'val_acc':>7}  {'val_loss':>8}  {'loss':>8}"
    lines = [header, "-" * len(header)]
    for rank, row in enumerate(ranking, 1):
        lines.append(f"{rank:>4}  {row['lr']:>9.3g}  {row['seed']:>4}  {100 * row.get('val_accuracy', 0):>6.2f}%  "
                     f"{row.get('val_loss', float('nan')):>8.4f}  {row['loss']:>8.4f}"
                     + ("  diverged" if row["diverged"] else ""))
    return "\n".join(lines)


def run_guarded(args: argparse.Namespace) -> int:
    """``run``, with ``--seeds`` and the ``--out`` folder checked before anything is loaded, and ``--out`` locked
    while the sweep runs."""
    for seed in args.seeds:
        check_seed(seed, "--seeds")
    if args.out:
        run_folder.check_output_folder(args.out, "--out")
    with run_folder.locked([("--out", args.out)] if args.out else []):
        return run(args)


COMMAND = Command("sweep", "train many hyper-parameter settings at once with jax.vmap", add_arguments, run_guarded)
