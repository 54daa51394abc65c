"""The benchmark's outputs: the result record, and its markdown table, JSON file and PNG chart.

Files are named by device and date, ``{device}-{YYYY-MM-DD}[-quick].{json,md,png}``,
in ``bench/results/`` unless another folder is given.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from funcdl.io import atomic_path, save_png

RESULTS = Path(__file__).resolve().parent / "results"
DISTRIBUTIONS = {"funcdl": ("funcdl",), "jax": ("jax",), "jaxlib": ("jaxlib",), "flax": ("flax",),
                 "optax": ("optax",), "numpy": ("numpy",), "torch": ("torch",),
                 "tensorflow": ("tensorflow", "tensorflow-cpu"), "keras": ("keras",)}


def versions():
    """{library: installed version or None}, read from package metadata (nothing imported)."""
    found = {}
    for name, dists in DISTRIBUTIONS.items():
        found[name] = None
        for dist in dists:
            try:
                found[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names():
    """The GPUs nvidia-smi lists (no framework is initialised), or []."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def machine():
    """The machine: CPU model, cores (all / usable by this process), memory, GPUs, OS, Python."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = None
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "usable_cores": usable, "memory_bytes": memory,
            "gpus": gpu_names(), "platform": platform.platform(), "python": platform.python_version()}


def result(suite, quick, chosen, rows, shared_processes=False, runners=None):
    """The whole benchmark record (what the JSON file holds).

    Args:
      suite: "cpu" or "gpu"; quick: whether --quick settings were used.
      chosen: the settings dict (``bench.suite.settings``); rows: the result rows.
      shared_processes: whether cells shared worker processes.
      runners: {runner name: what it does}, listed under the table.
    """
    info = machine()
    device = "cpu" if suite == "cpu" else (info["gpus"][0] if info["gpus"] else "gpu")
    return {
        "device": device, "suite": suite, "date": datetime.date.today().isoformat(), "quick": quick,
        "versions": versions(), "machine": info,
        "settings": {
            "timed_epochs": chosen["epochs"], "warmup_epochs": chosen["warmup"],
            "batches_per_timed_epoch": {"default": chosen["default_batches"] or "all", **chosen["batches"]},
            "eager_steps_per_epoch": chosen["eager_steps"], "accuracy_models": list(chosen["accuracy_models"]),
            "processes": "shared per framework" if shared_processes else "one per cell",
            "optimizer": "Adam(1e-3) in every framework", "seed": 0,
            "threads": chosen.get("threads"), "matmul_size": chosen.get("matmul_size"),
        },
        "notes": notes(quick, chosen, suite),
        "runners": dict(runners or {}),
        "rows": rows,
    }


def notes(quick, chosen, suite="cpu"):
    """The lines that explain the figures (go under the table and into the JSON)."""
    lines = [
        "Same initial weights (funcdl's init, converted) and the same batch order (fd.fit's) in every runner; "
        "init_max_abs_diff is each framework's initial-logit distance from funcdl's.",
        "epoch_seconds_median: median of the timed epochs after the warm-up epoch(s), for a full epoch "
        "(scaled linearly when fewer batches are timed); compile_seconds: (separate compile + first epoch) "
        "- median epoch.",
        "peak_host_bytes: the worker process's RSS high-water (ru_maxrss), nothing subtracted (interpreter, "
        "frameworks and data included); baseline_host_bytes (imports MiB): the same high-water when the worker "
        "had imported its framework, before any data or model; peak_device_bytes: GPU allocator peak, null on CPU.",
        "resnet trains on synthetic data (random 32x32x3 images and labels): no test accuracy.",
        f"Every worker is pinned to {chosen.get('threads')} CPU(s) and torch, TensorFlow and XLA are set to as many "
        "threads; MFLOP/sample: XLA's cost analysis of funcdl's train step (forward, backward, Adam) per example, "
        "one figure per model; % of peak: samples/s x FLOPs/sample over the best speed of a "
        f"{chosen.get('matmul_size')}x{chosen.get('matmul_size')} float32 matmul timed in the same worker "
        "(its framework, its threads).",
        "funcdl-eager times a few steps an epoch and extrapolates; ratio_to_funcdl = samples/s / funcdl's.",
    ]
    if suite == "cpu":
        lines.append("On the CPU funcdl's Conv2D (used by funcdl, funcdl-eager and jax-handwritten) is computed as a "
                     "matrix product over shifted input windows: XLA:CPU's own convolutions are several times "
                     "slower, and slower still inside the lax.scan of an epoch (jax-ml/jax#12868).")
    if quick:
        special = ", ".join(f"{count} for {model}" for model, count in chosen["batches"].items())
        lines.append(f"--quick: {chosen['default_batches']} batches per timed epoch{f' ({special})' if special else ''}"
                     f", epoch time extrapolated to a full epoch; test accuracy only for "
                     f"{', '.join(chosen['accuracy_models'])}, after {chosen['warmup'] + chosen['epochs']} short "
                     "epochs (not comparable with a full run).")
    else:
        lines.append(f"test accuracy on the MNIST test set after {chosen['warmup'] + chosen['epochs']} epochs.")
    return lines


def _fmt(value, kind):
    if value is None:
        return "-"
    if kind == "bytes":
        return f"{value / 2**20:,.0f}"
    if kind == "ratio":
        return f"{value:.3g}x"
    if kind == "acc":
        return f"{100 * value:.2f}%"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "mflop":
        return f"{value / 1e6:,.1f}"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.3g}"


COLUMNS = (("model", "model", None), ("runner", "runner", None), ("epoch s", "epoch_seconds_median", "num"),
           ("samples/s", "samples_per_second", "int"), ("vs funcdl", "ratio_to_funcdl", "ratio"),
           ("test acc", "test_accuracy", "acc"), ("host MiB", "peak_host_bytes", "bytes"),
           ("device MiB", "peak_device_bytes", "bytes"), ("MFLOP/sample", "flops_per_sample", "mflop"),
           ("% of peak", "peak_fraction", "pct"), ("imports MiB", "baseline_host_bytes", "bytes"),
           ("compile s", "compile_seconds", "num"), ("note", "note", None))


def markdown(record):
    """The markdown report: header (device, machine, versions), the table, and the notes."""
    m, v = record["machine"], record["versions"]
    lines = [f"# funcdl bench: {record['device']}, {record['date']}{' (quick)' if record['quick'] else ''}", "",
             f"Machine: {m['cpu']}, {m['cpu_count']} cores ({m['usable_cores']} usable)"
             + (f", GPU: {', '.join(m['gpus'])}" if m["gpus"] else "") + f"; Python {m['python']}.",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
             *load_lines(record), "",
             "| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
             "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    for row in record["rows"]:
        cells = []
        for _, key, kind in COLUMNS:
            value = row.get(key)
            if key == "model" and value == "resnet":
                value = "resnet (synthetic data)"
            cells.append(str(value or "").replace("|", "/") if kind is None else _fmt(value, kind))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"- {note}" for note in record["notes"]]
    lines += [""] + [f"- `{name}`: {summary}" for name, summary in record.get("runners", {}).items()]
    return "\n".join(lines) + "\n"


def load_lines(record):
    """The threads, the load before and after the run, and a warning line when the machine was busy."""
    settings, load = record.get("settings", {}), record.get("load")
    peaks = {row["matmul_peak"]["framework"]: row["matmul_peak"]["flops_per_second"]
             for row in record["rows"] if row.get("matmul_peak")}
    lines = [f"Threads: {settings.get('threads')} per framework; matmul peak "
             + (", ".join(f"{name} {value / 1e9:,.0f} GFLOP/s" for name, value in sorted(peaks.items())) or "-")
             + "."]
    if load:
        lines.append("Load average before / after: " + " / ".join(
            ", ".join(f"{value:.2f}" for value in load[when]["load_average"]) for when in ("before", "after")) + ".")
        reasons = load["before"]["busy"] + load["after"]["busy"]
        if reasons:
            lines.append(f"**Warning: the machine was busy** ({'; '.join(reasons)}): compare ratios, not times.")
    return lines


def _panel(axis, model, rows):
    """One model's bars: samples/s per runner on a log axis, each labelled with its ratio to funcdl."""
    speeds = [row["samples_per_second"] or 0 for row in rows]
    colors = ["tab:orange" if row["runner"].startswith("funcdl") else "tab:blue" for row in rows]
    axis.barh([row["runner"] for row in rows], speeds, color=colors)
    left = min([speed for speed in speeds if speed] or [1.0]) / 3  # the slowest bar stays visible
    if any(speeds):
        axis.set_xscale("log")
        axis.set_xlim(left, max(speeds) * 3)  # room for the labels
    for position, (row, speed) in enumerate(zip(rows, speeds)):
        label = _fmt(row["ratio_to_funcdl"], "ratio") if speed else "n/a"
        text = axis.text(max(speed, left), position, f" {label}", va="center", fontsize=7)
        text.set_in_layout(False)
    axis.invert_yaxis()
    axis.set_title(model + (" (synthetic data)" if model == "resnet" else ""), fontsize=9)
    axis.tick_params(labelsize=7)


def write_chart(record, path):
    """A PNG: one panel per model, samples/s of each runner (log scale), labelled with the ratio to funcdl."""
    # matplotlib only when a chart is written (no pyplot: no global state)
    from matplotlib.figure import Figure  # noqa: PLC0415
    models = list(dict.fromkeys(row["model"] for row in record["rows"]))
    height = max(3.0, 1.0 + 0.28 * len(record["rows"]) + 0.8 * len(models))
    figure = Figure(figsize=(9, height), layout="constrained")
    axes = figure.subplots(len(models), 1, squeeze=False)
    for axis, model in zip(axes[:, 0], models):
        _panel(axis, model, [row for row in record["rows"] if row["model"] == model])
    axes[-1, 0].set_xlabel("training samples / second (log scale)")
    figure.suptitle(f"funcdl bench: {record['device']}, {record['date']}{' (quick)' if record['quick'] else ''}",
                    fontsize=10)
    save_png(figure, path, dpi=110)


def stem(record):
    """``{device}-{date}[-quick]`` with the device name made file-safe."""
    device = re.sub(r"[^a-z0-9]+", "-", record["device"].lower()).strip("-") or "device"
    return f"{device}-{record['date']}" + ("-quick" if record["quick"] else "")


def write(record, out_dir=None, name=None):
    """Write the JSON, markdown and PNG files (named ``name`` or ``stem(record)``); returns {kind: path}."""
    folder = Path(out_dir) if out_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / f"{name or stem(record)}.{kind}" for kind in ("json", "md", "png")}
    for kind, text in (("json", json.dumps(record, indent=1) + "\n"), ("md", markdown(record))):
        with atomic_path(paths[kind]) as tmp:
            tmp.write_text(text)
    write_chart(record, paths["png"])
    return paths
