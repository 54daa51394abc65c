"""The benchmark suite: the runner registry, the plan of cells, and the worker processes that run them.

    funcdl bench --suite cpu --quick

A cell is one (model, runner) pair. Every cell runs in its own worker process
(``python -m bench._worker``) so that its peak RSS is its own and each
framework gets the process settings it needs (``KERAS_BACKEND=jax`` for
keras-jax; jax kept off the GPU in torch/TF workers, which use jax only to
build the shared initial weights). ``shared_processes=True`` instead runs all
cells that need the same settings in one process: faster to start, but then
peak host memory is the high-water of everything that process ran so far.

This module imports no framework; ``runner_functions`` names the functions
the worker imports.
"""
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _fair, report
from bench._common import empty_row
from bench._flops import MATMUL_SIZE
from bench._worker import FLOPS, MARK, PEAK, PREPARED
from funcdl.errors import ConfigError, FuncdlError

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("funcdl.bench")


@dataclass(frozen=True)
class Runner:
    """One way of training a model: where its function lives and what it needs."""
    module: str
    function: str
    requires: tuple     # top-level modules that must be installed
    family: str         # process settings: "jax", "torch", "tf" or "keras-jax"
    gpu_only: bool = False
    summary: str = ""


RUNNERS = {
    "funcdl": Runner("bench.runners_jax", "run_funcdl", ("jax",), "jax", summary="fd.fit: one XLA call an epoch"),
    "funcdl-eager": Runner("bench.runners_jax", "run_funcdl_eager", ("jax",), "jax",
                           summary="fd.fit(eager=True): op by op, a few steps timed and extrapolated"),
    "jax-handwritten": Runner("bench.runners_jax", "run_jax_handwritten", ("jax", "optax"), "jax",
                              summary="hand-written jax.jit + lax.scan + optax epoch (the floor)"),
    "torch-eager": Runner("bench.runners_torch", "run_torch_eager", ("torch",), "torch", summary="PyTorch eager"),
    "torch-compile": Runner("bench.runners_torch", "run_torch_compile", ("torch",), "torch",
                            summary="torch.compile(model) + compiled optimizer.step"),
    "torch-cudagraph": Runner("bench.runners_torch", "run_torch_cudagraph", ("torch",), "torch", gpu_only=True,
                              summary="whole train step as one CUDA graph, capturable Adam"),
    "keras-tf": Runner("bench.runners_tf", "run_keras_tf", ("tensorflow", "keras"), "tf",
                       summary="Keras 3 model.fit on TensorFlow"),
    "keras-tf-xla": Runner("bench.runners_tf", "run_keras_tf_xla", ("tensorflow", "keras"), "tf",
                           summary="Keras 3 model.fit on TensorFlow, jit_compile=True"),
    "tf-function": Runner("bench.runners_tf", "run_tf_function", ("tensorflow", "keras"), "tf",
                          summary="custom GradientTape loop in tf.function"),
    "keras-jax": Runner("bench.runners_tf", "run_keras_jax", ("keras", "jax"), "keras-jax",
                        summary="Keras 3 model.fit on JAX (own process)"),
}
RUNNER_NAMES = tuple(RUNNERS)
MODEL_NAMES = ("mlp", "cnn", "lstm", "gru", "resnet")
SUITES = ("cpu", "gpu")

# --quick: a fixed number of batches per timed epoch (epoch time extrapolated), accuracy for the MLP only.
# Conv models get fewer: on the CPU their steps cost far more than an MLP step in most frameworks.
QUICK: dict[str, Any] = {"batches": {"cnn": 8, "resnet": 4}, "default_batches": 16, "epochs": 3, "warmup": 1,
                         "eager_steps": 1, "accuracy_models": ("mlp",), "timeout": 300}
FULL: dict[str, Any] = {"batches": {}, "default_batches": None, "epochs": 3, "warmup": 1, "eager_steps": 10,
        "accuracy_models": ("mlp", "cnn", "lstm", "gru"), "timeout": 3600}


def settings(quick, epochs=None, batches=None, timeout=None):
    """The run settings: QUICK or FULL with the given overrides applied."""
    chosen = dict(QUICK if quick else FULL)
    if epochs is not None:
        chosen["epochs"] = epochs
    if batches is not None:
        chosen["batches"], chosen["default_batches"] = {}, batches
    if timeout is not None:
        chosen["timeout"] = timeout
    return chosen


def plan(models, runners, suite, chosen, data_dir=None, seed=0):
    """The cells to run, model by model (so one model's runners see the same machine state).

    ``chosen`` may hold ``threads`` (every framework's thread count) and ``matmul_size``
    (the side of the matmul whose speed is the peak); defaults from ``bench._fair`` / ``bench._flops``.
    """
    cells = []
    for model in models:
        for runner in runners:
            cells.append({
                "model": model, "runner": runner, "function": f"{RUNNERS[runner].module}:{RUNNERS[runner].function}",
                "suite": suite, "seed": seed, "family": RUNNERS[runner].family,
                "threads": chosen.get("threads", _fair.DEFAULT_THREADS),
                "matmul_size": chosen.get("matmul_size", MATMUL_SIZE),
                "batches": chosen["batches"].get(model, chosen["default_batches"]),
                "epochs": chosen["epochs"], "warmup": chosen["warmup"], "eager_steps": chosen["eager_steps"],
                "accuracy": model in chosen["accuracy_models"],
                "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
            })
    return cells


def unavailable_reason(runner_name, suite):
    """Why ``runner_name`` cannot run in ``suite`` here (a note), or None."""
    runner = RUNNERS[runner_name]
    if runner.gpu_only and suite != "gpu":
        return f"GPU only ({runner.summary})"
    missing = [module for module in runner.requires if importlib.util.find_spec(module) is None]
    if missing:
        return f"{', '.join(missing)} not installed here"
    return None


def worker_env(family, suite, threads=_fair.DEFAULT_THREADS):
    """Environment of a worker process for a runner ``family`` in ``suite`` with ``threads`` threads."""
    env = dict(os.environ)
    env.update(_fair.thread_env(threads, family))
    env.update(TF_CPP_MIN_LOG_LEVEL="3", TF_FORCE_GPU_ALLOW_GROWTH="true",
               KERAS_BACKEND="jax" if family == "keras-jax" else "tensorflow")
    if suite == "cpu":
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    elif family in ("torch", "tf"):
        env["JAX_PLATFORMS"] = "cpu"  # jax only builds the initial weights there; keep it off the GPU
    return env


def _groups(cells, shared):
    """Lists of cells that share one worker process."""
    if not shared:
        return [[cell] for cell in cells]
    groups = {}
    for cell in cells:
        groups.setdefault(RUNNERS[cell["runner"]].family, []).append(cell)
    return list(groups.values())


def _run_worker(arguments, env, timeout, log_path, label):
    """Run ``python -m bench._worker ARGUMENTS``; (stdout, failure message, last stderr line)."""
    with tempfile.TemporaryFile("w+") as err:
        try:
            done = subprocess.run([sys.executable, "-m", "bench._worker", *arguments], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout)
            stdout, failure = done.stdout, f"worker exited with code {done.returncode}"
        except subprocess.TimeoutExpired as expired:  # subprocess.run has killed the worker
            stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
            failure = f"timed out after {timeout} s"
        err.seek(0)
        text = err.read()
    if log_path is not None:
        with open(log_path, "a") as handle:
            handle.write(f"==== {label}\n{text}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return stdout, failure, (lines[-1][:240] if lines else "")


def _lines(stdout, mark):
    return [json.loads(line[len(mark):]) for line in stdout.splitlines() if line.startswith(mark)]


def prepare(cells, folder, timeout, log_path=None):
    """({model: .npz path} of the shared initial state, {model: FLOPs per sample}), from one CPU-only worker."""
    if not cells:
        return {}, {}
    spec = Path(folder, "prepare.json")
    spec.write_text(json.dumps(cells))
    env = worker_env("torch", "cpu", cells[0]["threads"])  # jax on the CPU: the parent must not take GPU memory
    stdout, _, _ = _run_worker(["--prepare", str(folder), str(spec)], env, timeout, log_path, "prepare")
    paths = {model: path for found in _lines(stdout, PREPARED) for model, path in found.items()}
    return paths, {model: flops for found in _lines(stdout, FLOPS) for model, flops in found.items()}


def run_group(cells, timeout, log_path=None):
    """Run ``cells`` in one worker process; one row per cell (a note for any that gave none), the matmul peak."""
    family = RUNNERS[cells[0]["runner"]].family
    label = ", ".join(f"{cell['model']}/{cell['runner']}" for cell in cells)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="funcdl-bench-") as spec:
        json.dump(cells, spec)
        spec.flush()
        stdout, failure, tail = _run_worker([spec.name], worker_env(family, cells[0]["suite"], cells[0]["threads"]),
                                            timeout * len(cells), log_path, label)
    rows = _lines(stdout, MARK)
    for cell in cells[len(rows):]:
        rows.append(empty_row(cell["model"], cell["runner"], f"{failure}: {tail}" if tail else failure))
    peaks = _lines(stdout, PEAK)
    for row in rows:
        row["matmul_peak"] = peaks[0] if peaks else None
    return rows


def add_efficiency(rows, flops):
    """Set each row's ``flops_per_sample`` (its model's) and ``peak_fraction``: achieved FLOP/s / its matmul peak."""
    for row in rows:
        row["flops_per_sample"] = flops.get(row["model"])
        peak = (row.get("matmul_peak") or {}).get("flops_per_second")
        speed = row["samples_per_second"]
        row["peak_fraction"] = (row["flops_per_sample"] * speed / peak
                                if row["flops_per_sample"] and speed and peak else None)
    return rows


def add_ratios(rows):
    """Set each row's ``ratio_to_funcdl``: its samples/s over the funcdl row's, same model."""
    base = {row["model"]: row["samples_per_second"] for row in rows if row["runner"] == "funcdl"}
    for row in rows:
        reference = base.get(row["model"])
        speed = row["samples_per_second"]
        row["ratio_to_funcdl"] = speed / reference if speed and reference else None
    return rows


def _describe(row):
    if row["samples_per_second"] is None:
        return f"{row['model']} / {row['runner']}: -- ({row.get('note')})"
    return (f"{row['model']} / {row['runner']}: {row['samples_per_second']:.0f} samples/s, "
            f"epoch {row['epoch_seconds_median']:.3g} s, compile {row['compile_seconds']:.3g} s, "
            f"peak host {row['peak_host_bytes'] / 2**20:,.0f} MiB")


def run_cells(cells, timeout, shared_processes=False, log_path=None):
    """Rows for every cell (skipped ones with a note), in the cells' order, ratios filled in."""
    rows, runnable = {}, []
    for cell in cells:
        reason = unavailable_reason(cell["runner"], cell["suite"])
        if reason:
            rows[(cell["model"], cell["runner"])] = empty_row(cell["model"], cell["runner"], reason)
        else:
            runnable.append(cell)
    with tempfile.TemporaryDirectory(prefix="funcdl-bench-") as folder:
        log.info("preparing the shared initial weights and batch order")
        prepared, flops = prepare(runnable, folder, timeout, log_path)
        groups = _groups([{**cell, "prepared": prepared.get(cell["model"])} for cell in runnable],
                         shared_processes)
        for number, group in enumerate(groups, 1):
            log.info("[%d/%d] %s", number, len(groups), ", ".join(f"{c['model']}/{c['runner']}" for c in group))
            start = time.perf_counter()
            for row in run_group(group, timeout, log_path):
                rows[(row["model"], row["runner"])] = row
                log.info("  %s", _describe(row))
            log.info("  (%.1f s wall)", time.perf_counter() - start)
    return add_efficiency(add_ratios([rows[(cell["model"], cell["runner"])] for cell in cells]), flops)


class MachineBusy(FuncdlError):
    """The machine is too busy for fair figures and ``strict`` was asked for."""


def check_load(threads, strict=False, when="before the run"):
    """A ``_fair.snapshot`` of the machine with its ``busy`` reasons; warns in one line (or, strict, raises).

    Raises:
      MachineBusy: with ``strict``, when the machine is busy.
    """
    state = _fair.snapshot()
    state["busy"] = _fair.busy_reasons(state, threads)
    if state["busy"]:
        message = f"machine busy {when}: {'; '.join(state['busy'])}"
        if strict:
            raise MachineBusy(message + " -- wait until it is quiet, or run without --strict (figures marked busy)")
        log.warning("warning: %s; timings are not comparable with a quiet machine's", message)
    return state


def run_suite(suite="cpu", quick=False, models=MODEL_NAMES, runners=RUNNER_NAMES, data_dir=None, epochs=None,
              batches=None, timeout=None, shared_processes=False, log_path=None, threads=_fair.DEFAULT_THREADS,
              strict=False, matmul_size=MATMUL_SIZE):
    """Run the benchmark and return the result: device, date, versions, machine, settings, load and rows.

    Args:
      suite: "cpu" (every framework forced onto the CPU) or "gpu" (CUDA devices).
      quick: few batches per timed epoch (extrapolated to a full epoch), accuracy for the MLP only.
      models, runners: subsets of MODEL_NAMES / RUNNER_NAMES.
      data_dir: folder holding mnist/ (default $FUNCDL_DATA_DIR).
      epochs, batches, timeout: override the timed epochs, batches per epoch, seconds per cell.
      shared_processes: one worker per process setting instead of one per cell (see module doc).
      log_path: append the workers' stderr here.
      threads: CPU threads of every framework in every worker (see ``bench._fair``).
      strict: refuse to run (MachineBusy) when the machine is busy before the run.
      matmul_size: side of the float32 matmul timed in every worker as its peak.
    Returns:
      the result dict that ``bench.report`` writes (rows as documented in ``bench._common``).
    """
    if threads > len(_fair.usable_cpus()):
        raise ConfigError(f"--threads {threads} is more than the {len(_fair.usable_cpus())} CPUs usable here")
    before = check_load(threads, strict)
    chosen = {**settings(quick, epochs, batches, timeout), "threads": threads, "matmul_size": matmul_size}
    cells = plan(models, runners, suite, chosen, data_dir)
    rows = run_cells(cells, chosen["timeout"], shared_processes, log_path)
    after = check_load(threads, when="after the run")
    summaries = {name: RUNNERS[name].summary for name in runners}
    record = report.result(suite, quick, chosen, rows, shared_processes, summaries)
    record["load"] = {"before": before, "after": after, "busy": bool(before["busy"] or after["busy"])}
    return record
