"""The GPU goals of the benchmarks, each with its measured value and PASS/FAIL, from ``bench/gpu.sh``'s files.

    python -m bench.gpu_goals --stem bench/results/gpu-DATE --seconds 412

Reads ``STEM-mlp.json`` (``funcdl bench``), ``STEM-speedrun.json``
(``examples/mnist_speedrun.py --json``), ``STEM-fp32.json`` / ``STEM-bf16.json``
(``funcdl train --json``) and ``STEM-sweep-1/sweep.json`` /
``STEM-sweep-16/sweep.json`` (``funcdl sweep``); writes ``STEM-goals.json`` and
``STEM-goals.md`` (with every suite row's peak device and host memory) and prints
one line a goal. A figure that is missing (a stage
that failed, a runner not installed) makes its goal "not measured".
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

from funcdl.io import atomic_path

BUDGET_SECONDS = 8 * 60


def _load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _row(suite, runner):
    rows = (suite or {}).get("rows", [])
    return next((row for row in rows if row["model"] == "mlp" and row["runner"] == runner), {})


def _steady(sweep):
    """The median epoch time after the first epoch (which may still warm caches), or None."""
    seconds = (sweep or {}).get("epoch_seconds") or []
    return statistics.median(seconds[1:] or seconds) if seconds else None


def _goal(name, value, target, passed, unit=""):
    return {"goal": name, "value": value, "target": target, "unit": unit,
            "status": "not measured" if value is None else ("PASS" if passed else "FAIL")}


def goals(stem: str, seconds: float | None = None) -> list[dict]:
    """Every goal of the GPU run as {"goal", "value", "target", "unit", "status"}, from the files at ``stem``."""
    suite = _load(f"{stem}-mlp.json")
    funcdl, graph = _row(suite, "funcdl"), _row(suite, "torch-cudagraph")
    epoch = funcdl.get("epoch_seconds_median")
    speed, graph_speed = funcdl.get("samples_per_second"), graph.get("samples_per_second")
    over_graph = speed / graph_speed if speed and graph_speed else None
    run = _load(f"{stem}-speedrun.json") or {}
    accuracy, train_seconds = run.get("min_accuracy"), run.get("median_seconds")
    fp32, bf16 = _load(f"{stem}-fp32.json") or {}, _load(f"{stem}-bf16.json") or {}
    gap = (abs(fp32["test_accuracy"] - bf16["test_accuracy"])
           if "test_accuracy" in fp32 and "test_accuracy" in bf16 else None)
    fp32_epoch, bf16_epoch = _steady(fp32), _steady(bf16)
    bf16_speedup = fp32_epoch / bf16_epoch if fp32_epoch and bf16_epoch else None
    one, sixteen = _steady(_load(f"{stem}-sweep-1/sweep.json")), _steady(_load(f"{stem}-sweep-16/sweep.json"))
    sweep_ratio = sixteen / one if one and sixteen else None
    return [
        _goal("MLP epoch (funcdl, full MNIST epoch)", epoch, "<= 0.030", epoch is not None and epoch <= 0.030, "s"),
        _goal("funcdl MLP vs whole-step CUDA-graph PyTorch", over_graph, ">= 5", (over_graph or 0) >= 5, "x"),
        _goal("MNIST speedrun: lowest test accuracy over seeds", accuracy, ">= 0.990", (accuracy or 0) >= 0.99),
        _goal("MNIST speedrun: median training time", train_seconds, "<= 0.5",
              train_seconds is not None and train_seconds <= 0.5, "s"),
        _goal("16 vmapped MLPs: epoch time over one model's", sweep_ratio, "<= 2",
              sweep_ratio is not None and sweep_ratio <= 2, "x"),
        _goal("CNN bf16 vs fp32: test accuracy gap", gap, "<= 0.003", gap is not None and gap <= 0.003),
        _goal("CNN bf16 speed-up over fp32 (epoch time)", bf16_speedup, "> 1", (bf16_speedup or 0) > 1, "x"),
        _goal("whole script", seconds, f"<= {BUDGET_SECONDS}", seconds is not None and seconds <= BUDGET_SECONDS,
              "s"),
    ]


def memory(stem: str) -> list[dict]:
    """Peak memory of every suite row: {"model", "runner", "peak_device_bytes", "peak_host_bytes"}.

    ``peak_device_bytes`` is jax's ``memory_stats()["peak_bytes_in_use"]``, torch's
    ``max_memory_allocated`` (reset at the start of each cell) or TensorFlow's peak; the
    other models' suite runs one process per framework, so a jax row's figure is that
    process's high-water so far (jax has no reset).
    """
    found = []
    for name in ("mlp", "models"):
        for row in (_load(f"{stem}-{name}.json") or {}).get("rows", []):
            if row.get("samples_per_second") is not None:
                found.append({key: row.get(key) for key in ("model", "runner", "peak_device_bytes", "peak_host_bytes")})
    return found


def _mib(value):
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _line(goal):
    value = "-" if goal["value"] is None else f"{goal['value']:.4g}{goal['unit'] and ' ' + goal['unit']}"
    return f"{goal['status']:<12} {goal['goal']}: {value} (goal {goal['target']}{goal['unit'] and ' ' + goal['unit']})"


def write(stem: str, found: list[dict], dry_run: bool, failed: list[str], peaks: list[dict] | None = None) -> dict:
    """Write ``STEM-goals.json`` and ``STEM-goals.md`` (goals, then the peak memory table); returns the record."""
    peaks = memory(stem) if peaks is None else peaks
    record = {"dry_run": dry_run, "failed_stages": failed, "goals": found, "memory": peaks}
    title = "# funcdl GPU goals" + (" (dry run on the CPU: tiny sizes, the figures mean nothing)" if dry_run else "")
    lines = [title,
             "", "| status | goal | value | target |", "| --- | --- | --- | --- |"]
    for goal in found:
        unit = f" {goal['unit']}" if goal["unit"] else ""
        value = "-" if goal["value"] is None else f"{goal['value']:.4g}{unit}"
        lines.append(f"| {goal['status']} | {goal['goal']} | {value} | {goal['target']}{unit} |")
    if peaks:
        lines += ["", "| model | runner | peak device MiB | peak host MiB |", "| --- | --- | --- | --- |"]
        lines += [f"| {row['model']} | {row['runner']} | {_mib(row['peak_device_bytes'])} | "
                  f"{_mib(row['peak_host_bytes'])} |" for row in peaks]
    if failed:
        lines += ["", f"Stages that failed: {', '.join(failed)}."]
    for suffix, text in (("json", json.dumps(record, indent=1) + "\n"), ("md", "\n".join(lines) + "\n")):
        with atomic_path(Path(f"{stem}-goals.{suffix}")) as tmp:
            tmp.write_text(text)
    return record


def main(argv: list[str] | None = None) -> int:
    """Print and write the goals of the files at ``--stem``; exit 0 (a missed goal is a result, not an error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stem", required=True,
                        help="path prefix of bench/gpu.sh's files, e.g. bench/results/gpu-DATE")
    parser.add_argument("--seconds", type=float, default=None, help="wall time of the whole script")
    parser.add_argument("--failed", default="", help="stages that failed, comma-separated")
    parser.add_argument("--dry-run", action="store_true", help="the files come from a dry run on the CPU")
    args = parser.parse_args(argv)
    found = goals(args.stem, args.seconds)
    write(args.stem, found, args.dry_run, [name for name in args.failed.split(",") if name])
    if args.dry_run:
        print("dry run on the CPU with tiny sizes: PASS/FAIL below check the plumbing, not the GPU goals")
    print("\n".join(_line(goal) for goal in found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
