"""python -m bench.conv_step [--models cnn resnet] [--runners ...] [--rounds 7] [--steps 8] [--profile]

One training step of the benchmark CNN (MNIST shapes, batch 64) and ResNet-8
(32x32x3, batch 128), Adam 1e-3, for each way funcdl can compute its
convolutions and, for reference, TensorFlow (a ``tf.function`` GradientTape
step, no XLA: oneDNN kernels) and PyTorch eager, all in one process, with the
same weights, the same thread count (this process's CPUs: run under
``taskset`` for fewer) and random data of the models' shapes. The runners take
turns, one timed call of ``--steps`` steps each per round; ratios are taken
within a round, so a machine shared with other work shifts them less than the
times.

funcdl runners (``bench.runners_jax.handwritten_epoch``: a ``lax.scan`` of
the step over ``--steps`` batches gathered from device-resident data):
  funcdl           Conv2D as it is (on the CPU: ``conv_matmul``, chunked, hand-written
                   gradient; disjoint pools as reshapes)
  funcdl-autodiff  the previous formulation: JAX's autodiff of ``im2col(x) @ kernel``
                   over the whole batch, pools by ``lax.reduce_window``
  funcdl-xla       ``Conv2D(implementation='xla')``: XLA's convolutions

Prints one JSON line: per model the training FLOPs per example (3x the
forward pass's, from XLA's cost analysis), and per runner the median step
time, samples/s, the spread over rounds, the time relative to ``funcdl``
(median and range over rounds) and the fraction of the fp32 matmul peak (a
2048^2 product, in jax, or in torch for the torch row, timed in every round
beside the steps).

``--profile [RUNNER]`` prints instead Markdown tables of one funcdl step, op
by op and by kind of op (XLA:CPU thunks from a ``jax.profiler`` trace). Run it
on one core with one XLA thread so that the ops do not overlap:
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
taskset -c 0 python -m bench.conv_step --profile``.
"""
import argparse
import collections
import contextlib
import functools
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.profiler import ProfileData

from bench import _keras_models, _torch_models
from bench._models import MODELS, initial_variables
from bench.runners_jax import handwritten_epoch
from funcdl.nn import _conv, _pool
from funcdl.nn._conv_matmul import im2col

try:  # the reference frameworks are optional: their rows are left out without them
    import torch
except ImportError:
    torch = None  # type: ignore[assignment]


RUNNERS = ("funcdl", "funcdl-autodiff", "funcdl-xla", "tf-function", "torch-eager")


@functools.cache
def tensorflow():
    """(keras, tensorflow), imported on first use, or (None, None) where they are not installed.

    Lazily: the scripts that reuse this module's helpers (``bench.resnet_profile``) skip TensorFlow's
    seconds-long import.
    """
    try:
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
    except ImportError:
        return None, None
    return keras, tf


def _autodiff_conv(x, kernel, strides, pads, dilation):
    """The previous CPU formulation: one product over the whole batch, differentiated by JAX."""
    patches = im2col(x, kernel.shape[:2], strides, pads, dilation)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


@contextlib.contextmanager
def variant(name):
    """Trace funcdl's layers as runner ``name`` computes them (module attributes swapped meanwhile)."""
    saved = (_conv.conv_matmul, _conv.conv_implementation, _pool._disjoint)
    if name == "funcdl-autodiff":
        _conv.conv_matmul, _pool._disjoint = _autodiff_conv, lambda *args: False
    elif name == "funcdl-xla":
        _conv.conv_implementation = lambda implementation: "xla"
    try:
        yield
    finally:
        _conv.conv_matmul, _conv.conv_implementation, _pool._disjoint = saved


def data(spec, steps, seed=0):
    """(x, y, order): random examples of the model's shape and ``steps`` batches of indices into them."""
    rng = np.random.default_rng(seed)
    count = steps * spec.batch_size
    x = rng.random((count,) + spec.input_shape, dtype=np.float32)
    y = rng.integers(0, 10, count).astype(np.int32)
    return x, y, rng.permutation(count).reshape(steps, spec.batch_size).astype(np.int32)


def funcdl_runner(name, spec, variables, x, y, order, optimizer=None, compiler_options=None):
    """A no-argument call running ``len(order)`` compiled steps of funcdl runner ``name`` (Adam 1e-3 by default).

    ``compiler_options`` go to XLA's compile (``funcdl.train.memory.compiler_options()``: as ``fd.fit``).
    """
    model, optimizer = spec.build(), optimizer or optax.adam(1e-3)
    params = variables["params"]
    state = {key: value for key, value in variables.items() if key != "params"}
    args = (params, state, optimizer.init(params), jnp.asarray(x), jnp.asarray(y), jnp.asarray(order),
            jax.random.key(0))
    with variant(name):
        epoch = jax.jit(handwritten_epoch(model, optimizer)).lower(*args).compile(compiler_options=compiler_options)
    return lambda: jax.block_until_ready(epoch(*args)), epoch, args


def tf_runner(spec, variables, x, y, order):
    """``len(order)`` tf.function steps of the keras twin (same weights), data on the device."""
    keras, tf = tensorflow()
    model = _keras_models.copy_weights(_keras_models.build(keras, spec.name, spec.input_shape), variables)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y, batches = tf.constant(x), tf.constant(y), [tf.constant(index) for index in order]

    @tf.function(jit_compile=False)
    def step(index):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.gather(y, index), model(tf.gather(x, index), training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    def run():
        for index in batches:
            loss = step(index)
        return float(loss)
    return run


def torch_runner(spec, variables, x, y, order):
    """``len(order)`` eager PyTorch steps of the torch twin (same weights), NCHW."""
    module = _torch_models.copy_weights(_torch_models.build(spec.name), variables).train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    y, order = torch.from_numpy(y.astype(np.int64)), torch.from_numpy(order.astype(np.int64))

    def run():
        for index in order:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(module(x[index]), y[index]).backward()
            optimizer.step()
    return run


def flops_per_example(spec, variables):
    """Training FLOPs of one example: 3x the forward pass's (XLA's cost analysis of XLA's convolutions)."""
    model, x = spec.build(), jnp.zeros((1,) + spec.input_shape)
    with variant("funcdl-xla"):
        cost = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return 3 * float(cost["flops"])


def matmul_products(size=2048):
    """{'matmul-jax': call, 'matmul-torch': call}: one size^2 fp32 matrix product each (the peak's probes)."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    product, matrix = jax.jit(lambda m: m @ m), jnp.asarray(a)
    calls = {"matmul-jax": lambda: jax.block_until_ready(product(matrix))}
    if torch is not None:
        tensor = torch.from_numpy(a)
        calls["matmul-torch"] = lambda: torch.matmul(tensor, tensor)
    return calls


def runners(spec, steps, names):
    """{runner: no-argument call running ``steps`` training steps}."""
    variables = jax.tree.map(np.asarray, initial_variables(spec.build(), np.zeros((1,) + spec.input_shape,
                                                                                  np.float32)))
    x, y, order = data(spec, steps)
    built = {}
    for name in names:
        if name.startswith("funcdl"):
            built[name] = funcdl_runner(name, spec, variables, x, y, order)[0]
        elif name == "tf-function" and tensorflow()[1] is not None:
            built[name] = tf_runner(spec, variables, x, y, order)
        elif name == "torch-eager" and torch is not None:
            built[name] = torch_runner(spec, variables, x, y, order)
    built.update(matmul_products())
    return built, variables


def measure(built, rounds, steps):
    """{runner: [seconds a step, one per round]}, the runners taking turns; one untimed warm-up call each.

    The matmul probes (``matmul-*``) run one product a round, so each round has its own peak.
    """
    for run in built.values():
        run()
    seconds = {name: [] for name in built}
    for _ in range(rounds):
        for name, run in built.items():
            start = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - start) / (1 if name.startswith("matmul") else steps))
    return seconds


def summarize(seconds, batch_size, flops, size=2048):
    """Per runner: median step ms, samples/s, spread, ratio to funcdl, fraction of the round's matmul peak."""
    peaks = {name: [2 * size ** 3 / t for t in times] for name, times in seconds.items()
             if name.startswith("matmul")}
    rows = {"matmul_peak_gflops": {name: round(statistics.median(p) / 1e9, 1) for name, p in peaks.items()}}
    base = seconds["funcdl"]
    for name, times in seconds.items():
        if name.startswith("matmul"):
            continue
        ratios = [time_ / funcdl for time_, funcdl in zip(times, base)]
        peak = peaks["matmul-torch" if name == "torch-eager" and "matmul-torch" in peaks else "matmul-jax"]
        rows[name] = {
            "step_ms": round(1e3 * statistics.median(times), 2),
            "step_ms_range": [round(1e3 * min(times), 2), round(1e3 * max(times), 2)],
            "samples_per_second": round(batch_size / statistics.median(times), 1),
            "time_vs_funcdl": {"median": round(statistics.median(ratios), 3),
                               "min": round(min(ratios), 3), "max": round(max(ratios), 3)},
            "peak_fraction": round(statistics.median(
                [batch_size / t * flops / p for t, p in zip(times, peak)]), 3),
        }
    return rows


def op_kinds(hlo_text):
    """{instruction name: kind} for the per-op table: what an XLA:CPU thunk of this program computes."""
    bodies, kinds, name = {}, {}, None
    for line in hlo_text.splitlines():
        if line.endswith("{") and not line.startswith(" "):
            name = line.split(" ")[0].lstrip("%")
            bodies[name] = []
        elif name and " = " in line:
            bodies[name].append(line)
    for lines in bodies.values():
        for line in lines:
            op, rest = line.split(" = ", 1)
            op = op.strip().removeprefix("ROOT ").lstrip("%")
            found = re.search(r"\b([a-z][a-z_-]*)\((?:%|\))", rest)  # the opcode: the first "name(%" or "name()"
            opcode = found.group(1) if found else "?"
            called = rest.split("calls=%")[1].split(",")[0] if "calls=%" in rest else ""
            inside = " ".join(bodies.get(called, []))
            if "__ynn_fusion" in rest:
                opcode = "matmul (YNNPACK)" if " dot(" in inside or "convolution(" in inside else "reduce (YNNPACK)"
            elif opcode in ("dot", "convolution"):
                opcode = f"{opcode} (Eigen)"
            elif opcode == "fusion":
                opcode = "fusion: " + ("dynamic-update-slice" if "dynamic-update-slice(" in inside else
                                       "reduce(-window)" if " reduce(" in inside or "reduce-window(" in inside else
                                       "concatenate" if "concatenate(" in inside else
                                       "scatter" if "scatter(" in inside else "elementwise")
            kinds[op] = opcode
    return kinds


def thunk_nanoseconds(epoch, args):
    """{XLA:CPU thunk (HLO instruction name): nanoseconds} of one ``epoch(*args)`` call under ``jax.profiler``.

    Run ``epoch`` once before (compiled, warm). The executor's own spans and the while loops' wrappers are
    left out: what remains are the ops, each counted every time it ran.
    """
    with tempfile.TemporaryDirectory() as folder:
        jax.profiler.start_trace(folder)
        jax.block_until_ready(epoch(*args))
        jax.profiler.stop_trace()
        trace = ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    totals = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if not event.name.startswith(("ThunkExecutor", "Slinky", "Threadpool", "end: ", "$", "while")):
                    totals[event.name] += event.duration_ns
    return totals


def profile(spec, steps, name="funcdl", top=20):
    """Print per-op and per-kind tables (ms a step, share) of ``steps`` compiled steps of funcdl runner ``name``."""
    variables = initial_variables(spec.build(), np.zeros((1,) + spec.input_shape, np.float32))
    _, epoch, args = funcdl_runner(name, spec, variables, *data(spec, steps))
    jax.block_until_ready(epoch(*args))
    totals = thunk_nanoseconds(epoch, args)
    busy, kinds = sum(totals.values()), op_kinds(epoch.as_text())
    by_kind = collections.Counter()
    for op, nanoseconds in totals.items():
        by_kind[kinds.get(op, "other")] += nanoseconds
    print(f"{spec.name} {name}: {busy / 1e6 / steps:.2f} ms of ops a step")
    for label, table in (("op", totals.most_common(top)), ("kind", by_kind.most_common())):
        print(f"| {label} | ms a step | share |\n| --- | --- | --- |")
        for key, nanoseconds in table:
            shown = f"{key} ({kinds.get(key, '?')})" if label == "op" else key
            print(f"| {shown} | {nanoseconds / 1e6 / steps:.2f} | {100 * nanoseconds / busy:.1f}% |")


def main(argv=None):
    """Time (or ``--profile``) the steps; print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet"], choices=["cnn", "resnet"])
    parser.add_argument("--runners", nargs="+", choices=RUNNERS,
                        default=["funcdl", "funcdl-autodiff", "tf-function", "torch-eager"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--profile", metavar="RUNNER", nargs="?", const="funcdl")
    args = parser.parse_args(argv)
    if args.profile:
        for model in args.models:
            profile(MODELS[model], args.steps, args.profile)
        return 0
    threads = len(os.sched_getaffinity(0))
    _, tf = tensorflow()
    if torch is not None:
        torch.set_num_threads(threads)
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already started in this process (a test run): its pools stay as they are
            kept = tf.config.threading.get_intra_op_parallelism_threads()
            print(f"note: TensorFlow was already running; it keeps {kept} intra-op threads", file=sys.stderr)
    result = {"bench": "conv_step", "threads": threads, "rounds": args.rounds, "steps": args.steps,
              "versions": {"jax": jax.__version__, "tensorflow": getattr(tf, "__version__", None),
                           "torch": getattr(torch, "__version__", None)}, "models": {}}
    for model in args.models:
        spec = MODELS[model]
        built, variables = runners(spec, args.steps, ["funcdl"] + [r for r in args.runners if r != "funcdl"])
        flops = flops_per_example(spec, variables)
        seconds = measure(built, args.rounds, args.steps)
        result["models"][model] = {"batch_size": spec.batch_size, "train_flops_per_example": round(flops),
                                   "runners": summarize(seconds, spec.batch_size, flops),
                                   "not_installed": [name for name in args.runners if name not in built]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
