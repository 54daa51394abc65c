"""``funcdl sweep``: train every (learning rate, seed, batch size) model, print a ranked table, plot them.

    funcdl sweep --model mlp --dataset digits --lr 1e-4,3e-4,1e-3,3e-3 --seeds 0,1,2,3 --batch-size 32,64

The models of one batch size train at once in one program. They are ranked
on the validation data held out of the training set (``--validation-split``,
10 % by default); the best one is then evaluated on the test set, once. It
writes ``DIR/sweep.png`` (validation accuracy per epoch, one line per model)
and ``DIR/sweep.json`` (every model's history, the ranking and the best
model's test figures); ``--out DIR`` defaults to a new ``runs/sweep-DATE-TIME``.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import jax

from funcdl.cli import options
from funcdl.cli.registry import Command
from funcdl.io import atomic_path, run_folder
from funcdl.train import sweep as sweep_lib
from funcdl.train.epoch import check_seed
from funcdl.train.fit import evaluate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl sweep``."""
    options.add_data_arguments(parser, dataset="digits")
    options.add_training_arguments(parser, epochs=5, batch_sizes=True)
    parser.add_argument("--lr", type=options.numbers("--lr", float), default=[1e-4, 3e-4, 1e-3, 3e-3],
                        help="learning rates, comma-separated (default 1e-4,3e-4,1e-3,3e-3)")
    parser.add_argument("--seeds", type=options.numbers("--seeds", int), default=[0, 1],
                        help="seeds, comma-separated (default 0,1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for sweep.png and sweep.json (default runs/sweep-DATE-TIME)")
    options.add_output_arguments(parser, "the ranking")


def run(args: argparse.Namespace) -> int:
    """Run the sweep, print the ranked table, write the plot and the JSON; returns the exit code."""
    options.check_training_arguments(args)
    datasets = options.load_data(args, seed=0)  # the validation split's seed; the model seeds are --seeds
    model = options.model_for(args.model, datasets)
    result = sweep_lib.sweep(model, datasets.train, lrs=args.lr, seeds=args.seeds, loss=args.loss,
                             optimizer=args.optimizer, flavor=args.flavor, epochs=args.epochs,
                             batch_size=args.batch_size, validation_data=datasets.validation,
                             verbose=not args.quiet)
    ranking = result.ranking()
    out = Path(args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    plot_path = sweep_lib.plot(result, out / "sweep.png", "val_accuracy" if datasets.validation else "accuracy")
    best = ranking[0]
    test = evaluate(model, result.model_variables(best["index"]), datasets.test, loss=args.loss)
    summary = _summary(args, datasets, result, ranking)
    summary["best"] = {**best, "test_accuracy": test["accuracy"], "test_loss": test["loss"]}
    with atomic_path(out / "sweep.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2))
    print(_table(ranking, datasets.validation is not None))
    print(f"ranked on {summary['ranked_on']}; the best model ({_setting(best)}) on the test set, measured once: "
          f"accuracy {100 * test['accuracy']:.2f} %, loss {test['loss']:.4f}")
    programs = len(args.batch_size)
    print(f"{len(ranking)} models in {programs} program{'s' if programs > 1 else ''}: compile "
          f"{result.compile_seconds:.2f} s, {sum(result.epoch_seconds):.2f} s for {args.epochs} epochs; plot: "
          f"{plot_path}", file=sys.stderr)
    if args.json:
        print(json.dumps(_json_safe({k: summary[k] for k in ("model", "dataset", "models", "ranked_on", "ranking",
                                                             "best")})))
    return 0


def _summary(args, datasets, result, ranking):
    return {"model": args.model, "dataset": datasets.name, "optimizer": args.optimizer, "flavor": args.flavor,
            "batch_size": args.batch_size, "epochs": args.epochs, "models": len(ranking),
            "device": str(jax.devices()[0].device_kind), "compile_seconds": result.compile_seconds,
            "epoch_seconds": result.epoch_seconds, "ranking": ranking, "ranked_on": _ranked_on(args, datasets),
            "history": {key: values.tolist() for key, values in result.history.items()},
            "lrs": result.lrs.tolist(), "seeds": result.seeds.tolist(), "batch_sizes": result.batch_sizes.tolist()}


def _ranked_on(args, datasets):
    if datasets.validation is None:
        return "the training data's last epoch (no validation split: --validation-split 0)"
    return (f"validation accuracy: {len(datasets.validation):,} examples held out of the training data "
            f"(--validation-split {args.validation_split}, seed 0)")


def _setting(row):
    return f"lr {row['lr']:.3g}, seed {row['seed']}, batch {row['batch_size']}"


def _json_safe(value):
    """``value`` with NaN/inf (a diverged model's loss) as null, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _table(ranking, validated=True):
    accuracy, loss = ("val_acc", "val_loss") if validated else ("acc", "loss")
    header = f"{'rank':>4}  {'lr':>9}  {'seed':>4}  {'batch':>5}  {accuracy:>7}  {loss:>8}  {'loss':>8}"
    lines = [header, "-" * len(header)]
    for rank, row in enumerate(ranking, 1):
        shown = (row.get("val_accuracy", 0), row.get("val_loss", float("nan"))) if validated else (
            row["accuracy"], row["loss"])
        lines.append(f"{rank:>4}  {row['lr']:>9.3g}  {row['seed']:>4}  {row['batch_size']:>5}  "
                     f"{100 * shown[0]:>6.2f}%  {shown[1]:>8.4f}  {row['loss']:>8.4f}"
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
