"""Worker process: run benchmark cells and print one result row per cell.

    python -m bench._worker CELLS.json      (from the repository root)

``CELLS.json`` holds a list of cells (see ``bench.suite.plan``). Each result
is printed as one stdout line ``BENCH_ROW {json}`` as soon as its cell ends,
so the suite can tell rows from whatever the frameworks print. A cell that
cannot run (framework missing, no GPU, compile failure) gives a row of nulls
with a ``note``; the traceback goes to stderr.
"""
import importlib
import json
import os
import sys
import time
import traceback

from bench import _fair, _flops
from bench._common import Unavailable, empty_row, peak_host_bytes, summarize
from bench._models import make_job, save_initial

MARK = "BENCH_ROW "
PREPARED = "BENCH_PREPARED "
FLOPS = "BENCH_FLOPS "
PEAK = "BENCH_PEAK "


def _first_line(err):
    text = str(err).strip()
    return text.splitlines()[0][:240] if text else type(err).__name__


def run_cell(cell):
    """The result row of one cell (its runner named by ``cell['function']``, ``module:function``); never raises."""
    try:
        module_name, function_name = cell["function"].split(":")
        runner = getattr(importlib.import_module(module_name), function_name)
        baseline = peak_host_bytes()  # the interpreter and the frameworks imported, no data or model yet
        job = make_job(cell)
        start, wall = os.times(), time.perf_counter()
        row = summarize(job, runner(job))
        row["baseline_host_bytes"] = baseline
        used = os.times()
        # cores busy on average while the runner ran (compile included): at most the threads it was given
        row["cpu_per_wall"] = (used.user + used.system - start.user - start.system) / (time.perf_counter() - wall)
        return row
    except Unavailable as err:
        return empty_row(cell["model"], cell["runner"], str(err))
    except ModuleNotFoundError as err:
        if str(err.name).startswith("bench"):
            raise
        return empty_row(cell["model"], cell["runner"], f"{err.name} is not installed")
    except Exception as err:  # a failing cell must not take the other cells down
        traceback.print_exc()
        return empty_row(cell["model"], cell["runner"], f"failed: {type(err).__name__}: {_first_line(err)}")


def prepare(cells, folder):
    """Save each model's data, initial variables, batch order and probe logits once, for all its cells.

    Prints ``BENCH_PREPARED {"model": path}`` per model that worked (a model that fails
    is left for its cells to compute themselves), then ``BENCH_FLOPS {"model": flops}``,
    the FLOPs per training sample of funcdl's step (XLA's cost analysis).
    """
    for cell in {cell["model"]: cell for cell in cells}.values():
        try:
            path = f"{folder}/{cell['model']}.npz"
            with_test = any(other["accuracy"] for other in cells if other["model"] == cell["model"])
            job = make_job({**cell, "prepared": None})
            save_initial(job, path, with_test)
            print(PREPARED + json.dumps({cell["model"]: path}), flush=True)
            flops = _flops.step_flops(job)
            print(FLOPS + json.dumps({cell["model"]: flops and flops / job.batch_size}), flush=True)
        except Exception:  # the cells will compute (and report) it themselves
            traceback.print_exc()


def print_peak(cell):
    """Print ``BENCH_PEAK {...}``: the matmul peak of the cell's framework in this process (see ``_flops``)."""
    try:
        peak = _flops.matmul_peak(cell["family"], cell["matmul_size"], on_gpu=cell["suite"] == "gpu")
        print(PEAK + json.dumps({**peak, "threads": cell["threads"]}), flush=True)
    except Exception:  # no peak: the rows' peak_fraction stays null
        traceback.print_exc()


def main(argv=None):
    """Run the cells listed in the JSON file ``argv[0]``; print a BENCH_ROW line for each.

    With ``--prepare FOLDER`` first, save the cells' shared initial state there instead.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] == "--prepare":
        with open(argv[2]) as handle:
            cells = json.load(handle)
        _fair.pin(cells[0]["threads"], "jax")
        prepare(cells, argv[1])
        return 0
    with open(argv[0]) as handle:
        cells = json.load(handle)
    _fair.pin(cells[0]["threads"], cells[0]["family"])
    for position, cell in enumerate(cells):
        row = run_cell(cell)
        if position > 0 and row.get("peak_host_bytes") is not None:
            row["note"] = "; ".join(filter(None, [row.get("note"), "peak host memory shared with earlier cells"]))
        print(MARK + json.dumps(row), flush=True)
    print_peak(cells[0])  # after the cells, so its memory is not in their peak RSS
    return 0


if __name__ == "__main__":
    sys.exit(main())
