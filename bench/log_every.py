"""python bench/log_every.py --data-dir ../shared/data

The cost of ``fit(log_every=N)``: an epoch of the MNIST MLP (784-128-10,
Adam 1e-3, batch 64, 938 steps) with the loss reported every N steps from
inside the compiled epoch, against the same epoch without reports, in the same
process, alternating the two. Prints one JSON line: the median epoch times,
their ratios (reports / none) per N, and the spread of the ratio over rounds.
"""
import argparse
import json
import statistics

import jax

import funcdl as fd


def epoch_seconds(data: fd.data.Datasets, log_every: int | None, epochs: int, batch_size: int) -> list[float]:
    """Epoch times of one ``fit`` (its first epoch, which compiles, left out)."""
    history = fd.fit(fd.models.mlp(), data.train, optimizer=fd.optim.adam(1e-3), epochs=epochs + 1,
                     batch_size=batch_size, verbose=False, log_every=log_every)
    return history.epoch_seconds[1:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--every", default="100,10", help="report intervals N, comma-separated")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the runs this many times")
    args = parser.parse_args(argv)
    data = fd.data.load(args.dataset, args.data_dir)
    intervals = [int(n) for n in args.every.split(",")]
    times: dict[str, list[float]] = {"none": [], **{str(n): [] for n in intervals}}
    ratios: dict[str, list[float]] = {str(n): [] for n in intervals}
    settings: list[int | None] = [None, *intervals]
    for round_ in range(args.rounds):  # alternate, each round in another order, so noise hits every setting alike
        shift = round_ % len(settings)
        medians = {}
        for n in settings[shift:] + settings[:shift]:
            medians[n] = statistics.median(epoch_seconds(data, n, args.epochs, args.batch_size))
            times["none" if n is None else str(n)].append(medians[n])
        for n in intervals:
            ratios[str(n)].append(medians[n] / medians[None])
    print(json.dumps({"bench": "log_every", "dataset": args.dataset, "batch_size": args.batch_size,
                      "device": jax.devices()[0].device_kind,
                      "epoch_seconds": {key: statistics.median(values) for key, values in times.items()},
                      "ratio": {key: statistics.median(values) for key, values in ratios.items()},
                      "ratio_range": {key: [min(values), max(values)] for key, values in ratios.items()}}))


if __name__ == "__main__":
    main()
