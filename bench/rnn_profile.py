"""XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true python -m bench.rnn_profile [--models lstm gru]

Where one training step of the benchmark's LSTM / GRU (see ``bench.rnn_step``)
spends its time, op by op, against its matmul floor. For funcdl's hand-written
backward pass and for the autodiff scan it replaced, an epoch of ``--steps``
steps runs under ``jax.profiler``; each XLA op (fusion, matmul, copy) counts
its median duration times its occurrences per step, and the ops are grouped by
where they run (forward loop, backward loop, the rest of the step) and what
they are (matmul by output shape, elementwise fusion, store, load, copy). The
floor is the same model's matmuls alone, hot in cache, timed in the same
process with jax and with torch. Run it pinned to one core (``taskset -c 0``) for per-op times that
threads do not blur. Prints one JSON line.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import funcdl as fd
from bench.rnn_step import BATCH, IMAGE, funcdl_epoch

STEPS, FEATURES, HIDDEN = 28, 28, 128  # the sequence the benchmark's image rows make, and LSTM/GRU(128)
GATES = {"lstm": 4, "gru": 3}


def op_durations(run, steps):
    """{op name: [durations in us]} of two ``run()`` epochs under the profiler (XLA's per-op TraceMe events)."""
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            run()
            run()
        path = glob.glob(f"{folder}/**/*.trace.json.gz", recursive=True)[0]
        with gzip.open(path) as file:
            events = json.load(file)["traceEvents"]
    durations = collections.defaultdict(list)
    for event in events:
        if event.get("ph") == "X" and not event["name"].startswith(("ThunkExecutor", "$", "end:", "Wait", "while")):
            durations[event["name"]].append(event["dur"])
    if not any("fusion" in name for name in durations):
        raise SystemExit("no XLA op events in the trace: run with XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true")
    return durations


def op_roles(hlo):
    """{op name: (where, what)} for the ops of every while body of the compiled epoch's ``hlo`` text."""
    bodies = {}
    for block in hlo.split("\n\n"):
        lines = block.strip().splitlines()
        match = re.match(r"%(\S+) ", lines[0]) if lines else None
        if match:
            bodies[match.group(1)] = lines
    roles = {}
    for body, op_name in re.findall(r"body=%([^,\s]+), metadata=\{op_name=\"([^\"]*)\"", hlo):
        where = "backward loop" if "transpose(" in op_name else "forward loop" if "jvp" in op_name else "step"
        for line in bodies[body]:
            match = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+) ([\w-]+)\(", line)
            if match:
                roles[match.group(1)] = (where, _what(*match.groups()))
    return roles


def _what(name, shape, opcode):
    """A short kind for one HLO instruction: matmul with its output shape, copy, store, load or elementwise."""
    if "ynn_fusion" in name or opcode == "dot":
        return f"matmul -> {shape.split('{')[0]}"
    for key, kind in (("copy", "copy"), ("dynamic-update-slice", "store"), ("dynamic-slice", "load"),
                      ("concatenate", "concatenate")):
        if key in name:
            return kind
    return "elementwise fusion"


def profile(run, hlo, steps):
    """Per (where, what): ms per step, share and ops per step, largest first; and the total."""
    roles, groups, counts = op_roles(hlo), collections.Counter(), collections.Counter()
    for name, durations in op_durations(run, steps).items():
        where, what = roles.get(name, ("step", "other"))
        if where == "step" and not what.startswith("matmul"):
            what = "loss, Adam, data, copies"
        groups[(where, what)] += statistics.median(durations) * len(durations) / (2 * steps) / 1e3
        counts[(where, what)] += len(durations) / (2 * steps)
    total = sum(groups.values())
    rows = [{"where": where, "what": what, "ms": round(ms, 3), "share": round(ms / total, 3),
             "ops_per_step": round(counts[(where, what)], 1)} for (where, what), ms in groups.most_common()]
    return {"ms_per_step": round(total, 3), "groups": rows}


def matmul_floor(gates, reps=20):
    """{matmul: ms per step} of one step's matmuls alone, hot in cache (best of 7), with jax and with torch.

    The 28 forward and 28 backward recurrent matmuls run as a chain
    ``h <- (h @ U) @ U_back`` (each needs the previous one's result, as in the
    loops); the two big ones repeat in a loop that XLA cannot hoist them out of.
    """
    recurrent = ((BATCH, HIDDEN), (HIDDEN, gates * HIDDEN), (gates * HIDDEN, HIDDEN))
    single = {"input projection": ((STEPS * BATCH, FEATURES), (FEATURES, gates * HIDDEN)),
              "weight gradients [h;x;1]": ((HIDDEN + FEATURES + 1, STEPS * BATCH), (STEPS * BATCH, gates * HIDDEN))}
    h, u, back = (jnp.full(shape, 0.01) for shape in recurrent)
    chain = jax.jit(lambda h, u, back: jax.lax.fori_loop(0, STEPS * reps, lambda _, h: (h @ u) @ back, h))
    times = {"recurrent x28 (forward + backward)": (
        _best(lambda: jax.block_until_ready(chain(h, u, back))) / reps,
        _best(lambda: _torch_chain(*(torch.full(shape, 0.01) for shape in recurrent), STEPS * reps)) / reps)}
    for label, (a_shape, b_shape) in single.items():
        a, b = jnp.ones(a_shape), jnp.ones(b_shape) / b_shape[0]
        # a changes with the loop index, so XLA cannot hoist the matmul out of the loop
        repeat = jax.jit(lambda a, b: jax.lax.fori_loop(
            0, reps, lambda k, total: total + (a * (1 + 1e-9 * k)) @ b, jnp.zeros((a.shape[0], b.shape[1]))))
        a_torch, b_torch = torch.ones(a_shape), torch.ones(b_shape)
        times[label] = (_best(lambda a=a, b=b, repeat=repeat: jax.block_until_ready(repeat(a, b))) / reps,
                        _best(lambda a=a_torch, b=b_torch: [a @ b for _ in range(reps)]) / reps)
    floor = {label: {"jax": round(jax_s * 1e3, 3), "torch": round(torch_s * 1e3, 3)}
             for label, (jax_s, torch_s) in times.items()}
    floor["total"] = {side: round(sum(row[side] for row in floor.values()), 3) for side in ("jax", "torch")}
    return floor


def _torch_chain(h, u, back, count):
    for _ in range(count):
        h = (h @ u) @ back
    return h


def _best(fn, tries=7):
    """The shortest of ``tries`` timings of ``fn()`` (after one call to warm up), in seconds."""
    fn()
    return min(_seconds(fn) for _ in range(tries))


def _seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lstm", "gru"], choices=sorted(GATES))
    parser.add_argument("--steps", type=int, default=20, help="steps of each profiled epoch")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))  # as bench.rnn_step: torch gets jax's thread count
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.random((args.steps * BATCH,) + IMAGE, dtype=np.float32)
    y = rng.integers(0, 10, args.steps * BATCH).astype(np.int32)
    results = {}
    for name in args.models:
        model = fd.models.get(name)
        variables = jax.jit(model.init)(jax.random.key(0), x[:1])
        results[name] = {"matmul_floor_ms": matmul_floor(GATES[name])}
        for runner, autodiff in (("funcdl", False), ("funcdl-autodiff", True)):
            run, compiled = funcdl_epoch(model, variables, x, y, autodiff)
            run()
            results[name][runner] = profile(run, compiled.as_text(), args.steps)
    print(json.dumps({"bench": "rnn_profile", "steps": args.steps, "threads": threads,
                      "load_average": [round(v, 2) for v in os.getloadavg()], "models": results}))


if __name__ == "__main__":
    main()
