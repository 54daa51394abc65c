"""A fair bench: the same thread count for every framework, and a look at how busy the machine is.

Threads. Every worker process is pinned (``os.sched_setaffinity``) to ``threads``
CPUs before any framework loads, and each framework is told the same number:
``torch.set_num_threads`` / ``set_num_interop_threads``, TensorFlow's
``tf.config.threading`` intra- and inter-op counts, and OpenMP/MKL through the
environment. XLA:CPU has no thread-count option; its thread pool is sized from
the CPUs the process may run on (``sched_getaffinity``), so the pinning is what
bounds it -- with one thread, Eigen's multi-threading is also switched off
(``--xla_cpu_multi_thread_eigen=false``).

Load. ``snapshot()`` reads the load average and samples every other process's
CPU use over a short interval (from ``/proc``); ``busy_reasons`` says why a
snapshot counts as busy: on a shared CPU a two-thread PyTorch loop was measured
40x slower than a one-thread one, so such figures must not pass unmarked.

This module imports no framework at import time.
"""
import os
import time
from pathlib import Path

DEFAULT_THREADS = 1        # fixed, so runs on different machines (and the one-step figures) compare
BUSY_CPU_FRACTION = 0.25   # another process using more than this share of one core counts as busy
SAMPLE_SECONDS = 0.5


def usable_cpus() -> list[int]:
    """The CPUs this process may run on, sorted."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def thread_env(threads: int, family: str) -> dict[str, str]:
    """Environment variables that give a worker of ``family`` ``threads`` threads."""
    count = str(threads)
    env = {"OMP_NUM_THREADS": count, "MKL_NUM_THREADS": count, "OPENBLAS_NUM_THREADS": count,
           "TF_NUM_INTRAOP_THREADS": count, "TF_NUM_INTEROP_THREADS": count}
    flags = os.environ.get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def pin(threads: int, family: str) -> list[int]:
    """Pin this process to ``threads`` CPUs and set each framework's thread counts; returns the CPUs used.

    Call it first thing in a worker, before any framework has started its thread pools.
    Args:
      threads: thread count for every framework (>= 1).
      family: "jax", "torch", "tf" or "keras-jax" (which framework the worker runs).
    """
    cpus = usable_cpus()[:threads]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    if family == "torch":
        import torch  # noqa: PLC0415  (only in torch workers)
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    if family == "tf":
        import tensorflow as tf  # noqa: PLC0415  (only in TensorFlow workers)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    return cpus


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """{pid: (command name, user + system clock ticks)} of every process readable in /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1:text.rfind(")")]
        fields = text[text.rfind(")") + 2:].split()
        found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))  # utime, stime
    return found


def snapshot(seconds: float = SAMPLE_SECONDS, exclude: tuple = (), threshold: float = BUSY_CPU_FRACTION) -> dict:
    """The load average and the other processes that used CPU over ``seconds``.

    Args:
      seconds: length of the sampling interval.
      exclude: pids not to count (this process is always excluded).
      threshold: share of one core above which a process counts as busy.
    Returns:
      {"load_average": [1, 5, 15 min], "busy_processes": [{"pid", "name", "cpu_fraction"}, ...],
       "usable_cores": n}; busy processes sorted by CPU use, at most 8.
    """
    if not Path("/proc").is_dir():
        return {"load_average": list(os.getloadavg()), "busy_processes": [], "usable_cores": len(usable_cpus())}
    skip = {os.getpid(), *exclude}
    before, start = _cpu_ticks(), time.monotonic()
    time.sleep(seconds)
    after, elapsed = _cpu_ticks(), time.monotonic() - start
    tick = os.sysconf("SC_CLK_TCK")
    busy: list[dict] = []
    for pid, (name, ticks) in after.items():
        if pid in skip or pid not in before:
            continue
        fraction = (ticks - before[pid][1]) / tick / elapsed
        if fraction > threshold:
            busy.append({"pid": pid, "name": name, "cpu_fraction": round(fraction, 2)})
    busy.sort(key=lambda item: item["cpu_fraction"], reverse=True)
    return {"load_average": [round(value, 2) for value in os.getloadavg()], "busy_processes": busy[:8],
            "usable_cores": len(usable_cpus())}


def busy_reasons(state: dict, threads: int) -> list[str]:
    """Why the machine in ``state`` (a ``snapshot``) is too busy for ``threads`` benchmark threads; [] if not."""
    reasons = []
    load = state["load_average"][0]
    if load + threads > state["usable_cores"] + 0.5:
        reasons.append(f"load average {load:.2f} with {state['usable_cores']} cores")
    others = state["busy_processes"]
    if others:
        reasons.append("other processes using CPU: " + ", ".join(
            f"{item['name']} (pid {item['pid']}, {100 * item['cpu_fraction']:.0f}%)" for item in others[:4]))
    return reasons
