"""What every runner shares: the measurement record, the epoch timer and the row it becomes.

Definitions (the same for every runner):
  epoch_seconds_median  median wall time of the timed epochs (after ``warmup``
                        epochs), each ended by a device sync, for a full epoch of
                        the dataset: when fewer batches are timed (--quick, or an
                        eager runner timing a few steps) it is scaled up linearly.
  samples_per_second    examples trained per second in the timed epochs (median).
  compile_seconds       the one-off cost of starting: (separate compile step, if
                        the runner has one, + first epoch) - median epoch, >= 0,
                        both epochs as run (not extrapolated).
  peak_host_bytes       the worker process's RSS high-water mark
                        (``getrusage(RUSAGE_SELF).ru_maxrss``), nothing subtracted:
                        it includes the interpreter, the frameworks and the data.
                        The same figure for every runner: each cell runs in its own
                        worker process (unless --shared-processes).
  baseline_host_bytes   the same high-water mark when the worker had imported
                        the interpreter's modules and the runner's framework (every
                        worker imports jax and funcdl to read the shared initial
                        state), before the cell's data or model: what the cell
                        itself added is peak_host_bytes - baseline_host_bytes.
  peak_device_bytes     GPU only: jax ``memory_stats()['peak_bytes_in_use']``,
                        ``torch.cuda.max_memory_allocated()`` or TF's peak; null on CPU.
  test_accuracy         on the MNIST test set after all the cell's epochs, where run.
  cpu_per_wall          process CPU time / wall time while the runner ran (compile
                        included): the cores it kept busy, at most ``--threads``.
  ratio_to_funcdl       samples_per_second / the funcdl row's, same model, same run.
"""
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

ROW_KEYS = ("model", "runner", "epoch_seconds_median", "samples_per_second", "compile_seconds",
            "peak_host_bytes", "peak_device_bytes", "test_accuracy", "ratio_to_funcdl")


class Unavailable(Exception):
    """A runner that cannot run here (no GPU, framework missing); its message becomes the row's note."""


@dataclass
class Measured:
    """What a runner reports for one cell.

    Attributes:
      epoch_seconds: wall time of every epoch run, warm-up epochs first.
      compile_seconds: a separate compile step before the first epoch (0 if none).
      scale: batches per real epoch / batches per timed epoch (1 unless extrapolated).
      test_accuracy: after all epochs, or None.
      peak_device_bytes: GPU peak, or None.
      init_max_abs_diff: |framework - funcdl| logits before training (same weights check).
      notes: short remarks that end up in the row's ``note``.
    """
    epoch_seconds: list
    compile_seconds: float = 0.0
    scale: float = 1.0
    test_accuracy: float | None = None
    peak_device_bytes: int | None = None
    init_max_abs_diff: float | None = None
    notes: list = field(default_factory=list)


def time_epochs(run_epoch, epochs, sync=lambda: None, prepare=None):
    """Wall time of ``run_epoch(e)`` (or ``run_epoch(e, prepare(e))``) for e in range(epochs).

    Args:
      run_epoch: trains one epoch; may return before the device is done.
      sync: waits for the device (e.g. ``torch.cuda.synchronize``); inside the timing.
      prepare: untimed per-epoch set-up (e.g. gathering the epoch's batches on the host).
    Returns:
      seconds of every epoch, in order.
    """
    seconds = []
    for epoch in range(epochs):
        extra = () if prepare is None else (prepare(epoch),)
        start = time.perf_counter()
        run_epoch(epoch, *extra)
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def peak_host_bytes():
    """This process's RSS high-water mark in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def empty_row(model, runner, note):
    """A row with every figure null and ``note`` saying why."""
    row = {key: None for key in ROW_KEYS}
    row.update(model=model, runner=runner, note=note)
    return row


def summarize(job, measured):
    """The result row of ``job`` from a runner's ``Measured``."""
    warmup = job.cell["warmup"]
    timed = measured.epoch_seconds[warmup:] or measured.epoch_seconds
    run_median = statistics.median(timed)  # an epoch as it ran (an eager runner's is a few steps)
    median = run_median * measured.scale   # for job.batches batches
    first = measured.compile_seconds + measured.epoch_seconds[0]
    row = empty_row(job.spec.name, job.cell["runner"], "; ".join(job.notes + measured.notes))
    row.update(
        epoch_seconds_median=median * job.full_batches / job.batches,
        samples_per_second=job.batches * job.batch_size / median,
        compile_seconds=max(first - run_median, 0.0),
        peak_host_bytes=peak_host_bytes(),
        peak_device_bytes=measured.peak_device_bytes,
        test_accuracy=measured.test_accuracy,
        init_max_abs_diff=measured.init_max_abs_diff,
        timed_batches=job.batches,
        batch_size=job.batch_size,
        timed_epochs=len(timed),
    )
    return row
