"""XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 1 python -m bench.resnet_profile [--steps 4] [--markdown F]

Where one funcdl training step of the benchmark's ResNet-8 goes, op by op, and
how fast each of its convolutions runs against the matmul peak and against
PyTorch. The step is ``bench.conv_step``'s (``fd.models.resnet(depth=8)``,
32x32x3 random images, batch 128, Adam 1e-3, a ``lax.scan`` of ``--steps``
steps); one epoch of it runs under ``jax.profiler`` and every XLA:CPU thunk
is attributed, by the HLO instruction's ``op_name`` (the layer's name, forward
``jvp`` or backward ``transpose``, and named scopes put around the
convolutions' input- and kernel-gradient and the optimizer's update while
tracing), to one group: each convolution's forward, input-gradient and
weight-gradient matmuls, its im2col/col2im data movement (pads, slices,
concatenates, the chunk loops' loads and stores), BatchNorm forward and
backward, other elementwise fusions, copies/transposes, the Adam update and
the rest (data gather, loop counters).

Per convolution: its FLOPs per role, funcdl's time (matmul alone and with its
data movement) from the profile, PyTorch's time for the same shape on the same
threads (``F.conv2d`` forward and ``aten.convolution_backward`` for the input
and the weight gradient, NCHW as the bench's torch runners, oneDNN), each as
GFLOP/s and as a fraction of the 2048^2 matmul peak of its framework measured
in this process. Also the step's wall time without the profiler, and PyTorch
eager's whole step (``conv_step.torch_runner``) for scale.

Run it on one core with one XLA thread (the command above), as the bench's
1-thread suite does. Prints one JSON line; ``--markdown`` also writes the tables.
"""
import argparse
import collections
import contextlib
import dataclasses
import functools
import json
import os
import re
import statistics

import jax
import numpy as np
import optax
import torch

from bench import conv_step
from bench._models import MODELS, initial_variables
from bench.rnn_profile import _best
from funcdl.nn import _conv, _conv_matmul
from funcdl.train import memory

ROLES = ("forward", "input_grad", "weight_grad")
SCOPES = {"input_grad": "_input_gradient", "weight_grad": "_kernel_gradient"}  # role -> _conv_matmul function


@contextlib.contextmanager
def scoped_gradients():
    """Trace the convolutions' input and kernel gradients under named scopes (module attributes swapped)."""
    saved = {name: getattr(_conv_matmul, name) for name in SCOPES.values()}

    def wrap(role, function):
        @functools.wraps(function)
        def scoped(*args):
            with jax.named_scope(role):
                return function(*args)
        return scoped
    for role, name in SCOPES.items():
        setattr(_conv_matmul, name, wrap(role, saved[name]))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(_conv_matmul, name, function)


def scoped_optimizer(optimizer, scope="optimizer"):
    """``optimizer`` with its update traced under the named scope ``scope``."""
    def update(updates, state, params=None):
        with jax.named_scope(scope):
            return optimizer.update(updates, state, params)
    return optax.GradientTransformation(optimizer.init, update)


def conv_shapes(model, variables, batch, input_shape):
    """One dict per convolution of ``model``, in graph order: layer, shapes, strides, pads, FLOPs of one pass.

    The shapes are recorded from ``conv_matmul``'s calls while tracing ``model.apply`` (``jax.eval_shape``).
    """
    calls, saved = [], _conv.conv_matmul

    def record(x, kernel, strides, pads, dilation):
        calls.append((tuple(x.shape), tuple(kernel.shape), strides, pads))
        return saved(x, kernel, strides, pads, dilation)
    _conv.conv_matmul = record
    try:
        jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((batch,) + tuple(input_shape), np.float32))
    finally:
        _conv.conv_matmul = saved
    inputs = {graph_input.name for graph_input in model.inputs}
    nodes = [node for node in model.nodes if type(node.layer).__name__ == "Conv2D"]
    shapes = []
    for node, (x_shape, kernel, strides, pads) in zip(nodes, calls, strict=True):
        assert kernel == tuple(variables["params"][node.name]["kernel"].shape), (node.name, kernel)
        out_h, out_w = _conv_matmul.output_hw(x_shape[1:3], kernel[:2], strides, pads, (1, 1))
        rows, depth = batch * out_h * out_w, kernel[0] * kernel[1] * kernel[2]
        shapes.append({"layer": node.name, "x": list(x_shape), "kernel": list(kernel), "strides": list(strides),
                       "pads": [list(p) for p in pads], "matmul_mkn": [rows, depth, kernel[3]],
                       "input_grad_needed": node.inputs[0] not in inputs,
                       "gflop_per_pass": 2 * rows * depth * kernel[3] / 1e9})
    return shapes


def op_names(hlo_text):
    """{HLO instruction name: its metadata op_name} of every instruction of the compiled program's text."""
    pattern = re.compile(r'^\s*(?:ROOT )?%(\S+) = .*?metadata=\{op_name="([^"]*)"', re.MULTILINE)
    return dict(pattern.findall(hlo_text))


def classify(op_name, kind, layer_types):
    """(group, conv layer or None, role or None) of one thunk from its ``op_name`` and ``kind``.

    ``layer_types``: {graph node name: layer class name}.
    """
    backward = "transpose(" in op_name
    found = re.search(r"jvp\([^)/]*\)\)?/([^/]+)", op_name)
    layer = found.group(1) if found else None
    layer_type = layer_types.get(layer)
    is_matmul = kind.startswith(("matmul", "dot", "convolution"))
    if layer_type == "Conv2D":
        role = next((r for r in SCOPES if f"/{r}/" in op_name), None if backward else "forward")
        if role is None:  # the backward's own reshapes of dy outside both gradients
            return "conv backward: other", layer, None
        if is_matmul:
            return f"conv {role.replace('_', ' ')}: matmul", layer, role
        return "conv im2col/col2im: pads, slices, concatenates, chunk loads/stores", layer, role
    if layer_type == "BatchNorm":
        return f"BatchNorm {'backward' if backward else 'forward'}", None, None
    if "/optimizer/" in op_name or op_name.endswith("/optimizer"):
        return "optimizer update (Adam)", None, None
    if kind.startswith(("copy", "transpose")):
        return "copies, transposes", None, None
    if layer_type is not None or "jvp(" in op_name:
        return "other layers and loss: elementwise fusions, reductions, dense", None, None
    return "step: data gather, loop counters, parameter update", None, None


def profile_step(spec, variables, steps, compiler_options, traces=3):
    """Profile ``traces`` epochs of ``steps`` funcdl steps: (per-op records, the compiled epoch's call).

    Each op counts its shortest time over the traces (as ``_best`` for the torch side): other work on a
    shared machine only ever adds time.
    """
    x, y, order = conv_step.data(spec, steps)
    with scoped_gradients():
        run, epoch, args = conv_step.funcdl_runner("funcdl", spec, variables, x, y, order,
                                                   scoped_optimizer(optax.adam(1e-3)), compiler_options)
    run()
    hlo = epoch.as_text()
    names, kinds = op_names(hlo), conv_step.op_kinds(hlo)
    layer_types = {node.name: type(node.layer).__name__ for node in spec.build().nodes}
    traced = [conv_step.thunk_nanoseconds(epoch, args) for _ in range(traces)]
    records = []
    for op in traced[0]:
        nanoseconds = min(trace.get(op, 0) for trace in traced)
        kind = kinds.get(op, "other")
        group, layer, role = classify(names.get(op, ""), kind, layer_types)
        records.append({"op": op, "kind": kind, "group": group, "layer": layer, "role": role,
                        "ms": nanoseconds / 1e6 / steps})
    return records, run


def group_table(records):
    """[{group, ms, share}] per step, largest first, and the total ms of the ops."""
    totals = collections.Counter()
    for record in records:
        totals[record["group"]] += record["ms"]
    busy = sum(totals.values())
    return [{"group": group, "ms": round(ms, 3), "share": round(ms / busy, 4)}
            for group, ms in totals.most_common()], busy


def torch_conv_ms(shape, channels_last=False):
    """{role: ms} of PyTorch's oneDNN convolution of ``shape``; input_grad None where not needed.

    NCHW as eager PyTorch runs the bench's model, or ``channels_last`` as torch.compile lays out every
    convolution on the CPU (inductor's layout optimization where oneDNN is available).
    """
    batch, height, width, channels = shape["x"]
    kh, kw, _, features = shape["kernel"]
    (top, bottom), (left, right) = shape["pads"]
    assert top == bottom and left == right, "torch's conv2d pads symmetrically"
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, height, width, generator=generator)
    weight = torch.rand(features, channels, kh, kw, generator=generator)
    stride, padding = tuple(shape["strides"]), (top, left)
    dy = torch.rand(torch.nn.functional.conv2d(x, weight, None, stride, padding).shape, generator=generator)
    if channels_last:
        x, weight, dy = (t.contiguous(memory_format=torch.channels_last) for t in (x, weight, dy))

    def backward(mask):
        return torch.ops.aten.convolution_backward(dy, x, weight, None, stride, padding, (1, 1), False, (0, 0), 1,
                                                   mask)
    calls = {"forward": lambda: torch.nn.functional.conv2d(x, weight, None, stride, padding),
             "input_grad": lambda: backward([True, False, False]),
             "weight_grad": lambda: backward([False, True, False])}
    with torch.no_grad():
        return {role: None if role == "input_grad" and not shape["input_grad_needed"] else _best(call) * 1e3
                for role, call in calls.items()}


def conv_rows(shapes, records, torch_ms, peaks):
    """Per convolution and role: funcdl's matmul and total ms, torch's ms, GFLOP/s, peak fractions, who is faster."""
    rows = []
    for shape in shapes:
        row = {key: shape[key] for key in ("layer", "x", "kernel", "strides", "matmul_mkn")}
        gflop = shape["gflop_per_pass"]
        for role in ROLES:
            mine = [r for r in records if r["layer"] == shape["layer"] and r["role"] == role]
            if role == "input_grad" and not shape["input_grad_needed"]:
                row[role] = None
                continue
            matmul = sum(r["ms"] for r in mine if r["group"].endswith("matmul"))
            total = sum(r["ms"] for r in mine)
            theirs, laid_out = (torch_ms[layout][shape["layer"]][role] for layout in ("nchw", "channels_last"))
            row[role] = {"gflop": round(gflop, 6),
                         "funcdl_matmul_ms": round(matmul, 3), "funcdl_ms": round(total, 3),
                         "torch_ms": round(theirs, 3), "torch_channels_last_ms": round(laid_out, 3),
                         "funcdl_gflops": round(gflop / total * 1e3, 1),
                         "funcdl_matmul_gflops": round(gflop / matmul * 1e3, 1) if matmul else None,
                         "torch_gflops": round(gflop / theirs * 1e3, 1),
                         "funcdl_peak_fraction": round(gflop / total * 1e3 / peaks["jax"], 3),
                         "torch_peak_fraction": round(gflop / theirs * 1e3 / peaks["torch"], 3),
                         "torch_channels_last_peak_fraction": round(gflop / laid_out * 1e3 / peaks["torch"], 3),
                         "torch_time_vs_funcdl": round(theirs / total, 3)}
        rows.append(row)
    return rows


def conv_totals(rows):
    """{figure: ms a step} summed over every convolution and role of ``conv_rows``' rows."""
    cells = [row[role] for row in rows for role in ROLES if row[role] is not None]
    return {key: round(sum(cell[key] for cell in cells), 2)
            for key in ("funcdl_matmul_ms", "funcdl_ms", "torch_ms", "torch_channels_last_ms")}


def measure_peaks(size, earlier=None):
    """{'jax': GFLOP/s, 'torch': GFLOP/s}: the best of a ``size``^2 float32 matmul in each framework.

    ``earlier``: peaks measured before in this process; the higher of each counts (other work on a shared
    machine only ever lowers them).
    """
    peaks = {name.removeprefix("matmul-"): round(2 * size ** 3 / _best(call) / 1e9, 1)
             for name, call in conv_step.matmul_products(size).items()}
    return {name: max(peak, (earlier or {}).get(name, 0)) for name, peak in peaks.items()}


def step_times(runs, steps, rounds=5):
    """{name: [ms a step, one per round]} of the ``runs`` (``steps`` steps a call) taking turns, after a warm-up."""
    seconds = conv_step.measure(runs, rounds, steps)
    return {name: [1e3 * t for t in times] for name, times in seconds.items()}


def step_summary(times, flops, peak):
    """Median and best ms, range, GFLOP/s and fraction of ``peak`` (GFLOP/s) of step ``times`` (ms)."""
    median = statistics.median(times)
    return {"ms": round(median, 2), "ms_best": round(min(times), 2),
            "ms_range": [round(min(times), 2), round(max(times), 2)],
            "gflops": round(flops / median / 1e6, 1), "peak_fraction": round(flops / median / 1e6 / peak, 3)}


def profile(batch, steps, matmul_size, threads):
    """The whole record: peaks, step times, grouped profile, per-convolution comparison."""
    torch.set_num_threads(threads)
    spec = dataclasses.replace(MODELS["resnet"], batch_size=batch)
    model = spec.build()
    variables = jax.tree.map(np.asarray, initial_variables(model, np.zeros((1,) + spec.input_shape, np.float32)))
    shapes = conv_shapes(model, variables, batch, spec.input_shape)
    peaks = measure_peaks(matmul_size)
    options = memory.compiler_options()  # fd.fit compiles the ResNet's epoch (a large program) with these
    records, run = profile_step(spec, variables, steps, options)
    groups, busy = group_table(records)
    flops = conv_step.flops_per_example(spec, variables) * batch
    torch_run = conv_step.torch_runner(spec, variables, *conv_step.data(spec, steps))
    times = step_times({"funcdl": run, "torch-eager": torch_run}, steps)
    ratios = [t / f for t, f in zip(times["torch-eager"], times["funcdl"])]
    torch_ms = {layout: {shape["layer"]: torch_conv_ms(shape, layout == "channels_last") for shape in shapes}
                for layout in ("nchw", "channels_last")}
    peaks = measure_peaks(matmul_size, peaks)
    convs = conv_rows(shapes, records, torch_ms, peaks)
    top = sorted(records, key=lambda r: -r["ms"])[:15]
    return {"compiler_options": options, "matmul_peak_gflops": peaks, "train_gflop_per_step": round(flops / 1e9, 3),
            "funcdl_step": step_summary(times["funcdl"], flops, peaks["jax"]),
            "torch_eager_step": step_summary(times["torch-eager"], flops, peaks["torch"]),
            "torch_eager_time_vs_funcdl": {"median": round(statistics.median(ratios), 3),
                                           "range": [round(min(ratios), 3), round(max(ratios), 3)]},
            "profiled_ops_ms": round(busy, 3), "groups": groups,
            "conv_totals_ms": conv_totals(convs), "convs": convs,
            "top_ops": [{**r, "ms": round(r["ms"], 3)} for r in top]}


def markdown(result):
    """The record's tables in Markdown: groups, then per convolution and role."""
    lines = [f"funcdl step {result['funcdl_step']['ms']} ms (best {result['funcdl_step']['ms_best']}; ops in the "
             f"profile: {result['profiled_ops_ms']} ms), torch eager step {result['torch_eager_step']['ms']} ms "
             f"(torch / funcdl time {result['torch_eager_time_vs_funcdl']}); matmul peak "
             f"jax {result['matmul_peak_gflops']['jax']}, torch {result['matmul_peak_gflops']['torch']} GFLOP/s; "
             f"all convolutions (ms a step): {result['conv_totals_ms']}",
             "", "| group | ms a step | share |", "| --- | --- | --- |"]
    lines += [f"| {g['group']} | {g['ms']:.2f} | {100 * g['share']:.1f}% |" for g in result["groups"]]
    lines += ["", "| conv | M x K x N | role | GFLOP | funcdl ms (matmul) | torch ms NCHW / channels-last "
              "| funcdl / torch GFLOP/s | % of peak funcdl / torch / torch channels-last |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["convs"]:
        for role in ROLES:
            cell = row[role]
            if cell is None:
                continue
            lines.append(f"| {row['layer']} | {' x '.join(map(str, row['matmul_mkn']))} | {role} | {cell['gflop']:.3f} "
                         f"| {cell['funcdl_ms']:.2f} ({cell['funcdl_matmul_ms']:.2f}) "
                         f"| {cell['torch_ms']:.2f} / {cell['torch_channels_last_ms']:.2f} "
                         f"| {cell['funcdl_gflops']} / {cell['torch_gflops']} "
                         f"| {100 * cell['funcdl_peak_fraction']:.0f} / {100 * cell['torch_peak_fraction']:.0f} "
                         f"/ {100 * cell['torch_channels_last_peak_fraction']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Profile the step; print one JSON line (and write the Markdown tables with ``--markdown``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=MODELS["resnet"].batch_size)
    parser.add_argument("--steps", type=int, default=4, help="steps of the profiled epoch")
    parser.add_argument("--matmul-size", type=int, default=2048, help="side of the peak's square matmul")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables here")
    args = parser.parse_args(argv)
    threads = len(os.sched_getaffinity(0))  # jax's thread count; torch gets the same
    result = {"bench": "resnet_profile", "batch": args.batch, "steps": args.steps, "threads": threads,
              "xla_flags": os.environ.get("XLA_FLAGS", ""),
              "versions": {"jax": jax.__version__, "torch": torch.__version__},
              "load_average": [round(v, 2) for v in os.getloadavg()],
              **profile(args.batch, args.steps, args.matmul_size, threads)}
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(markdown(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
