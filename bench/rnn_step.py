"""python -m bench.rnn_step [--models lstm gru] [--steps 50] [--rounds 7]      (from the repository root)

One training step of the benchmark's recurrent models (image rows as a
28-step sequence, LSTM(128) or GRU(128), Dense(10), batch 64, Adam 1e-3,
cross-entropy) three ways, in one process, in alternating rounds:

  funcdl           ``fd.models.lstm/gru``: the recurrences' hand-written backward pass
  funcdl-autodiff  the same model with the plain ``lax.scan`` differentiated by autodiff
                   (``funcdl.nn._recurrent_vjp.*_scan``, the implementation it replaced)
  torch-eager      ``torch.nn.LSTM/GRU`` + ``Linear`` with ``torch.optim.Adam``, funcdl's
                   initial weights (``bench._torch_models``)

A round runs each one epoch of ``--steps`` steps: funcdl's as ``fd.fit`` runs
it (one compiled ``lax.scan`` of the unguarded step over the batches), torch's
as the benchmark's eager loop. The pixels are random (a step's time does not
depend on them). jax computes with one thread per schedulable CPU and torch is
given the same count: run under ``taskset -c 0`` for one thread each.

Prints one JSON line: per model and runner the median / min / max ms per step
over the rounds and the median samples/s, the ratios to funcdl, the thread
count and the load average before and after (figures are only comparable on
an idle machine; the spread shows how busy it was).
"""
import argparse
import contextlib
import json
import os
import statistics
import time
from unittest import mock

import jax
import numpy as np
import torch
import torch.nn.functional as F

import funcdl as fd
from bench import _torch_models
from funcdl.nn import _recurrent, _recurrent_vjp
from funcdl.train import TrainState, make_train_epoch, make_train_step

BATCH = 64
IMAGE = (28, 28, 1)
RUNNERS = ("funcdl", "funcdl-autodiff", "torch-eager")


def funcdl_epoch(model, variables, x, y, autodiff):
    """(``run() -> state``: one compiled epoch of ``model``'s unguarded train step over ``x, y``, the compiled epoch).

    Args:
      autodiff: trace the recurrences as plain scans differentiated by autodiff.
    """
    optimizer = fd.optim.adam(1e-3)
    step = make_train_step(model, fd.losses.cross_entropy, optimizer, guard=False)
    epoch = jax.jit(make_train_epoch(step, BATCH, stop_on_nonfinite=False))
    state = TrainState(variables, optimizer.init(variables["params"]), np.int32(0))
    x, y, key = jax.device_put(x), jax.device_put(y), jax.random.key(0)
    references = mock.patch.multiple(_recurrent, lstm=_recurrent_vjp.lstm_scan, gru=_recurrent_vjp.gru_scan,
                                     simple_rnn=_recurrent_vjp.simple_rnn_scan)
    with references if autodiff else contextlib.nullcontext():
        compiled = epoch.lower(state, x, y, key).compile()  # the layers are traced here

    def run():
        return jax.block_until_ready(compiled(state, x, y, key))[0]
    return run, compiled


def torch_epoch(name, variables, x, y):
    """(``run() -> None``: one eager PyTorch epoch of the same model and optimizer over ``x, y`` in order,
    the torch model's logits on ``x[:8]`` before training)."""
    module = _torch_models.copy_weights(_torch_models.build(name), variables).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # NCHW, as the bench feeds torch
    y = torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
        probe = module(x[:8]).numpy()

    def run():
        for start in range(0, len(x), BATCH):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(module(x[start:start + BATCH]), y[start:start + BATCH]).backward()
            optimizer.step()
    return run, probe


def time_rounds(runs, rounds, steps):
    """{runner: [ms per step of each round]}, the runners alternating within every round."""
    times = {runner: [] for runner in runs}
    for _ in range(rounds):
        for runner, run in runs.items():
            start = time.perf_counter()
            run()
            times[runner].append((time.perf_counter() - start) * 1e3 / steps)
    return times


def summarize(times):
    """Per runner: median / min / max ms per step and median samples/s; ratios of funcdl to the others."""
    rows = {runner: {"ms_per_step_median": round(statistics.median(ms), 3), "ms_per_step_min": round(min(ms), 3),
                     "ms_per_step_max": round(max(ms), 3),
                     "samples_per_second": round(BATCH * 1e3 / statistics.median(ms), 1)}
            for runner, ms in times.items()}
    new = statistics.median(times["funcdl"])
    for runner, ms in times.items():
        rows[runner]["funcdl_speedup"] = round(statistics.median(ms) / new, 3)  # > 1: funcdl is faster
    return rows


def measure(name, steps, rounds, seed=0):
    """The summary of ``time_rounds`` for benchmark model ``name`` ('lstm' or 'gru')."""
    rng = np.random.default_rng(seed)
    x = rng.random((steps * BATCH,) + IMAGE, dtype=np.float32)
    y = rng.integers(0, 10, steps * BATCH).astype(np.int32)
    model = fd.models.get(name)
    variables = jax.jit(model.init)(jax.random.key(seed), x[:1])
    torch_run, torch_probe = torch_epoch(name, jax.tree.map(np.asarray, variables), x, y)
    runs = {"funcdl": funcdl_epoch(model, variables, x, y, autodiff=False)[0],
            "funcdl-autodiff": funcdl_epoch(model, variables, x, y, autodiff=True)[0], "torch-eager": torch_run}
    # the same computation three ways: same initial logits, and the same weights after an epoch
    trained = [runs[runner]().variables["params"] for runner in ("funcdl", "funcdl-autodiff")]
    checks = {"torch_logits_max_abs_diff": float(np.abs(torch_probe - model.apply(variables, x[:8])).max()),
              "autodiff_params_max_abs_diff": max(float(np.abs(a - b).max()) for a, b in
                                                  zip(jax.tree.leaves(trained[0]), jax.tree.leaves(trained[1])))}
    return {**summarize(time_rounds(runs, rounds, steps)), **checks}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=7, help="timed epochs per runner")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))  # XLA's CPU thread pool has one thread per schedulable CPU
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    results = {name: measure(name, args.steps, args.rounds) for name in args.models}
    print(json.dumps({"bench": "rnn_step", "batch_size": BATCH, "steps": args.steps, "rounds": args.rounds,
                      "threads": threads, "jax": jax.__version__, "torch": torch.__version__,
                      "load_average_before": [round(v, 2) for v in load_before],
                      "load_average_after": [round(v, 2) for v in os.getloadavg()], "models": results}))


if __name__ == "__main__":
    main()
