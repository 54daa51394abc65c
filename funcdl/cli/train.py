"""``funcdl train``: train a zoo model, print a summary table (or one JSON line), save the result."""
import argparse
import json
import sys
from pathlib import Path

import jax

from funcdl import data, nn, optim
from funcdl.cli import options
from funcdl.cli.registry import Command
from funcdl.errors import ConfigError, NonFiniteError
from funcdl.io import atomic_path, run_folder, save_model
from funcdl.train import callbacks, checkpoint, monitor, parallel, precision
from funcdl.train.epoch import check_seed
from funcdl.train.fit import evaluate, fit
from funcdl.train.program import LOOPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``funcdl train``."""
    options.add_data_arguments(parser, dataset="auto")
    options.add_training_arguments(parser, epochs=10)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds initialisation, shuffling, dropout, augmentation and the validation split")
    parser.add_argument("--augment", action="store_true",
                        help="random crops (padding 4) and horizontal flips of the training images, inside the "
                        "compiled epoch (the CIFAR standard; never at evaluation)")
    parser.add_argument("--log-every", type=int, default=None, metavar="N",
                        help="report the loss every N steps from inside the compiled epoch (default: per epoch)")
    parser.add_argument("--eager", action="store_true", help="run the same step op by op (jax.disable_jit)")
    parser.add_argument("--loop", default="auto", choices=LOOPS,
                        help="scan: each epoch one XLA program; steps: one compiled call per step; auto "
                        "(default): scan, but steps on the CPU for a model holding XLA convolutions (which "
                        "XLA:CPU runs slower inside loops; funcdl's Conv2D avoids them there)")
    parser.add_argument("--skip-nonfinite", action="store_true", help="skip batches with non-finite loss")
    parser.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                        help="stop when val_loss (on the validation split) has not improved for PATIENCE epochs "
                        "and keep the best epoch's weights (default: off)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="checkpoint folder: resume the run saved there, and checkpoint into it")
    parser.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                        help="with --resume, write a checkpoint every N epochs (default 1)")
    parser.add_argument("--out", default=None, metavar="DIR", help="save model.funcdl and history.json here")
    options.add_output_arguments(parser, "the result")
    _add_scale_arguments(parser)


def _add_scale_arguments(parser):
    """Options for data parallelism, multi-host runs, mixed precision and training reports."""
    parser.add_argument("--data-parallel", action="store_true",
                        help="split every batch over all devices (batch size must divide by their count)")
    parser.add_argument("--precision", default="fp32", choices=precision.POLICIES,
                        help="bf16: compute in bfloat16 with float32 parameters (default fp32)")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help="multi-host: process 0's address; implies --data-parallel")
    parser.add_argument("--num-processes", type=int, default=1, metavar="N", help="multi-host: process count")
    parser.add_argument("--process-id", type=int, default=0, metavar="I", help="multi-host: this process, 0..N-1")
    parser.add_argument("--tensorboard", default=None, metavar="DIR", help="write TensorBoard event files here")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="write DIR/report.png: loss and accuracy curves, per-layer weight norms and "
                        "update/weight ratios")


def _check_args(args):
    options.check_training_arguments(args)
    if args.early_stopping is not None and not args.validation_split:
        raise ConfigError("--early-stopping watches val_loss on the validation split; it needs --validation-split "
                          "above 0 (the test set is never used to choose)")
    if args.early_stopping is not None and args.early_stopping < 0:
        raise ConfigError(f"--early-stopping PATIENCE must be >= 0, got {args.early_stopping}")
    if args.log_every is not None and args.log_every < 1:
        raise ConfigError(f"--log-every must be a positive number of steps, got {args.log_every}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a folder; give a folder path")


def _join_processes(args):
    """Multi-host: join the run (before any jax work) and keep only process 0's output."""
    if args.coordinator is None:
        if args.num_processes != 1:
            raise ConfigError("--num-processes needs --coordinator HOST:PORT")
        return
    parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    args.data_parallel = True
    if args.process_id != 0:  # one report, one set of files: process 0's
        args.quiet, args.json, args.out, args.tensorboard, args.report = True, False, None, None, None


def _train_data(args, datasets):
    """The training set, or this process's shard of it in a multi-host run."""
    if args.coordinator is None:
        return datasets.train
    x, y, dropped = parallel.process_shard(datasets.train.x, datasets.train.y)
    if dropped and args.process_id == 0:
        print(f"note: {dropped} training examples left out so every device holds as many", file=sys.stderr)
    return data.ArrayDataset(x, y)


def _monitors(args, datasets):
    """TensorBoard and report callbacks asked for on the command line."""
    board = monitor.TensorBoard(args.tensorboard, learning_rate=args.lr) if args.tensorboard else None
    title = f"{args.model} on {datasets.name}: {args.optimizer} lr={args.lr}, batch {args.batch_size}"
    report = monitor.Report(Path(args.report) / "report.png", title=title) if args.report else None
    return [m for m in (board, report) if m is not None]


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test set, report, save; returns the exit code."""
    _check_args(args)
    _join_processes(args)
    optimizer = optim.get(args.optimizer, args.lr, flavor=args.flavor)
    datasets = options.load_data(args, seed=args.seed)
    model = options.model_for(args.model, datasets)
    if not args.quiet:
        nn.summary(model, datasets.input_shape)  # also fails early, in one line, when the data does not fit
    validation = datasets.validation  # never the test set: that is evaluated once, after training
    watchers = _monitors(args, datasets)
    cbs = list(watchers)
    if args.early_stopping:
        cbs.append(callbacks.EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True))
    if args.resume:
        cbs.append(callbacks.ModelCheckpoint(args.resume, every=args.checkpoint_every, settings=_settings(args)))
    resume = args.resume if args.resume and checkpoint.exists(args.resume) else None
    try:
        history = fit(model, _train_data(args, datasets), loss=args.loss, optimizer=optimizer,
                      epochs=args.epochs, batch_size=args.batch_size, validation_data=validation,
                      seed=args.seed, callbacks=cbs, eager=args.eager, skip_nonfinite=args.skip_nonfinite,
                      verbose=not args.quiet, resume=resume, data_parallel=args.data_parallel,
                      precision=args.precision, loop=args.loop, augment=args.augment, log_every=args.log_every)
    except NonFiniteError as err:
        if args.out and err.variables is not None:
            _save(args.out, model, err.variables, datasets, None)
            print(f"note: the last good parameters were saved to {args.out}", file=sys.stderr)
        raise
    variables = jax.device_get(history.variables)  # host copies: data-parallel arrays span devices
    _finish_monitors(watchers, args)
    test = evaluate(model, variables, datasets.test, loss=args.loss, eager=args.eager)
    result = _result(args, datasets, model, history, test)
    if args.out:
        _save(args.out, model, variables, datasets, result)
    if jax.process_index() == 0:
        _report(result, args.json)
    return 0


def _finish_monitors(watchers, args):
    for watcher in watchers:
        if isinstance(watcher, monitor.TensorBoard):
            watcher.close()
        else:
            path = watcher.save()
            if not args.quiet:
                print(f"report written to {path}", file=sys.stderr)


def _result(args, datasets, model, history, test):
    trained = len(history.epoch_seconds)
    seconds = sum(history.epoch_seconds)
    validation = {"validation_split": args.validation_split, "validation_seed": args.seed,
                  "validation_examples": len(datasets.validation) if datasets.validation is not None else 0,
                  "train_examples": len(datasets.train), "test_examples": len(datasets.test)}
    last = {key: values[-1] for key, values in history.history.items() if key.startswith("val_") and values}
    return {
        "model": args.model, "dataset": datasets.name, "source": datasets.source, "optimizer": args.optimizer,
        "loss": history.loss, **validation, **last, "augment": args.augment,
        "flavor": args.flavor, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
        "eager": args.eager, "loop": history.loop, "data_parallel": args.data_parallel,
        "precision": args.precision,
        "processes": jax.process_count(), "devices": jax.device_count(),
        "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
        "params": nn.count_params(history.variables["params"]),
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "epochs": history.epochs_done,
        "epoch_seconds": history.epoch_seconds, "compile_seconds": history.compile_seconds,
        "samples_per_second": len(datasets.train) * trained / seconds if seconds else None,
        "final_train_loss": history.history["loss"][-1] if history.history.get("loss") else None,
        "compiles_after_first_epoch": history.compiles_after_first_epoch,
        "skipped_steps": history.skipped_steps, "history": history.history,
    }


def _save(out, model, variables, datasets, result):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(out / "model.funcdl", model, variables, input_shape=datasets.input_shape,
                     metadata={"dataset": datasets.name, "mean": datasets.mean, "std": datasets.std,
                               "num_classes": datasets.num_classes})
    if result is not None:
        with atomic_path(out / "history.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))


def _data_row(result):
    """Which examples trained, validated and tested: the numbers' provenance, in one line."""
    held = (f"{result['validation_examples']:,} validation ({100 * result['validation_split']:g} % of train, seed "
            f"{result['validation_seed']})" if result["validation_examples"] else "no validation")
    return f"{result['train_examples']:,} train, {held}, {result['test_examples']:,} test (evaluated once, at the end)"


def _validation_rows(result):
    rows = []
    for key in ("val_loss", "val_accuracy"):
        if isinstance(result.get(key), float):
            value = result[key]
            rows.append((f"{key.replace('_', ' ')} (last epoch)", f"{100 * value:.2f} %" if "acc" in key
                         else f"{value:.4f}"))
    return rows


def _report(result, as_json):
    rows = [("model", result["model"]), ("dataset", f"{result['dataset']} ({result['source']})"),
            ("optimizer", f"{result['optimizer']} lr={result['lr']} flavor={result['flavor']}"),
            ("loss", result["loss"]), ("data", _data_row(result)),
            ("params", f"{result['params']:,}"), ("epochs", result["epochs"]),
            ("compile", f"{result['compile_seconds']:.2f} s"),
            ("epoch time (median)", f"{sorted(result['epoch_seconds'])[len(result['epoch_seconds']) // 2]:.3f} s"
             if result["epoch_seconds"] else "-"),
            ("samples/s", f"{result['samples_per_second']:,.0f}" if result["samples_per_second"] else "-"),
            ("final train loss", f"{result['final_train_loss']:.4f}" if result["final_train_loss"] else "-"),
            *_validation_rows(result),
            ("test loss", f"{result['test_loss']:.4f}"), ("test accuracy", f"{100 * result['test_accuracy']:.2f} %")]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    if as_json:
        print(json.dumps({k: v for k, v in result.items()}))


def run_guarded(args: argparse.Namespace) -> int:
    """``run``, with its output folders checked before anything is loaded, its run folders (``--out``,
    ``--resume``) locked while it runs, and a resume refused before training if it changes a recorded setting."""
    check_seed(args.seed, "--seed")
    outputs = [(flag, getattr(args, name)) for flag, name in _OUTPUTS if getattr(args, name)]
    for flag, folder in outputs:
        run_folder.check_output_folder(folder, flag)
    writer = args.coordinator is None or args.process_id == 0  # other processes of a multi-host run write nothing
    with run_folder.locked([(flag, folder) for flag, folder in outputs if flag in ("--out", "--resume")]
                           if writer else []):
        if args.resume and checkpoint.exists(args.resume):
            checkpoint.check_settings(args.resume, _settings(args))
        return run(args)


_OUTPUTS = (("--out", "out"), ("--resume", "resume"), ("--tensorboard", "tensorboard"), ("--report", "report"))


def _settings(args: argparse.Namespace) -> dict:
    """The command line's settings a ``--resume`` must repeat (``fit`` records its own: data, batch size, ...)."""
    return {"--model": args.model, "--dataset": args.dataset, "--limit": args.limit,
            "--validation-split": args.validation_split, "--normalize": args.normalize, "--optimizer": args.optimizer,
            "--lr": args.lr, "--flavor": args.flavor, "--loss": args.loss, "--batch-size": args.batch_size,
            "--seed": args.seed, "--precision": args.precision, "--skip-nonfinite": args.skip_nonfinite}


COMMAND = Command("train", "train a zoo model on a dataset with a jit-compiled epoch", add_arguments, run_guarded)
