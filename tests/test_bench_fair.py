"""A fair bench: thread pinning, the busy-machine check, FLOPs per sample and the peak fraction, the report."""
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import _fair, _flops, _models, report, suite
from funcdl import cli

ROOT = Path(__file__).resolve().parents[1]

PINNED = """
import json, os, resource, sys, time
from bench import _fair
family = sys.argv[1]
cpus = _fair.pin(1, family)
found = {"affinity": len(os.sched_getaffinity(0)), "cpus": cpus}
if family == "torch":
    import torch
    found.update(torch=torch.get_num_threads(), torch_interop=torch.get_num_interop_threads())
if family == "tf":
    import tensorflow as tf
    found.update(tf_intra=tf.config.threading.get_intra_op_parallelism_threads(),
                 tf_inter=tf.config.threading.get_inter_op_parallelism_threads())
import jax, jax.numpy as jnp
a = jnp.ones((1024, 1024))
f = jax.jit(lambda a: a @ a)
f(a).block_until_ready()
usage, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(20):
    f(a).block_until_ready()
after = resource.getrusage(resource.RUSAGE_SELF)
found["cpu_over_wall"] = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / (
    time.perf_counter() - start)
print(json.dumps(found))
"""


def _pinned(family):
    env = {**os.environ, **_fair.thread_env(1, family), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", PINNED, family], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
@pytest.mark.parametrize("family", ["jax", "torch"])
def test_one_thread_bounds_every_framework_in_the_worker(family):
    pytest.importorskip(family)
    found = _pinned(family)
    assert found["affinity"] == 1 and len(found["cpus"]) == 1
    if family == "torch":
        assert found["torch"] == 1 and found["torch_interop"] == 1
    # XLA's matmuls on one CPU: the process can use at most one core's time, whatever its thread pool.
    assert found["cpu_over_wall"] < 1.15, found


@pytest.mark.subprocess
def test_one_thread_sets_tensorflow_threads():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    found = _pinned("tf")
    assert found["tf_intra"] == 1 and found["tf_inter"] == 1 and found["affinity"] == 1


def test_thread_env_names_the_count_for_every_library():
    env = _fair.thread_env(3, "torch")
    assert all(env[key] == "3" for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                           "TF_NUM_INTEROP_THREADS"))
    assert "xla_cpu_multi_thread_eigen" not in env.get("XLA_FLAGS", "")
    assert "--xla_cpu_multi_thread_eigen=false" in _fair.thread_env(1, "jax")["XLA_FLAGS"]


@pytest.mark.subprocess
def test_a_cpu_hungry_process_is_seen_as_busy():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        state = _fair.snapshot(seconds=1.0, threshold=0.05)
    finally:
        hog.kill()
        hog.wait()
    assert hog.pid in {item["pid"] for item in state["busy_processes"]}, state
    assert len(state["load_average"]) == 3 and state["usable_cores"] >= 1


def test_busy_reasons():
    quiet = {"load_average": [0.1, 0.2, 0.3], "busy_processes": [], "usable_cores": 4}
    assert _fair.busy_reasons(quiet, threads=1) == []
    loaded = {**quiet, "load_average": [3.9, 1.0, 1.0]}
    assert "load average 3.90 with 4 cores" in _fair.busy_reasons(loaded, threads=1)[0]
    other = {**quiet, "busy_processes": [{"pid": 42, "name": "python", "cpu_fraction": 0.9}]}
    assert "python (pid 42, 90%)" in _fair.busy_reasons(other, threads=1)[0]


def _busy(monkeypatch):
    busy = {"load_average": [9.0, 8.0, 7.0], "busy_processes": [], "usable_cores": 2}
    monkeypatch.setattr(_fair, "snapshot", lambda *args, **kwargs: dict(busy))


def test_strict_refuses_a_busy_machine(monkeypatch):
    _busy(monkeypatch)
    with pytest.raises(suite.MachineBusy, match="machine busy before the run: load average 9.00"):
        suite.check_load(threads=1, strict=True)


def test_a_busy_machine_is_warned_about_in_one_line(monkeypatch, caplog):
    _busy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="funcdl.bench"):
        state = suite.check_load(threads=1)
    assert state["busy"] and len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_cli_strict_exits_non_zero_on_a_busy_machine(monkeypatch, tmp_path, capsys):
    _busy(monkeypatch)
    code = cli.main(["bench", "--strict", "--models", "mlp", "--runners", "funcdl", "--out", str(tmp_path)])
    assert code != 0 and "machine busy" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("flags, message", [(["--threads", "0"], "--threads must be a positive integer"),
                                            (["--threads", "100000"], "more than the"),
                                            (["--stem", "../x"], "--stem must be a plain file name")])
def test_cli_rejects_bad_fairness_options(flags, message, tmp_path, capsys):
    assert cli.main(["bench", *flags, "--out", str(tmp_path)]) != 0
    assert message in capsys.readouterr().err


def test_peak_fraction_is_achieved_flops_over_the_workers_peak():
    rows = [{"model": "mlp", "runner": "funcdl", "samples_per_second": 1000.0,
             "matmul_peak": {"framework": "jax", "size": 64, "flops_per_second": 4e9}},
            {"model": "mlp", "runner": "torch-eager", "samples_per_second": None, "matmul_peak": None}]
    suite.add_efficiency(rows, {"mlp": 2e6})
    assert rows[0]["flops_per_sample"] == 2e6 and rows[0]["peak_fraction"] == pytest.approx(0.5)
    assert rows[1]["flops_per_sample"] == 2e6 and rows[1]["peak_fraction"] is None


def _job(name, data_dir):
    cell = suite.plan([name], ["funcdl"], "cpu", suite.settings(quick=True), data_dir)[0]
    return _models.make_job({**cell, "prepared": None, "accuracy": False})


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_step_flops_counts_forward_backward_and_every_time_step(name, data_dir):
    job = _job(name, data_dir)
    flops = _flops.step_flops(job) / job.batch_size
    if name == "mlp":  # 784-128-10: no input gradient for the first layer, so about 2x the forward pass
        forward, low, high = 2 * (784 * 128 + 128 * 10), 2.0, 2.3
    else:  # 28 steps of LSTM(128) on 28 inputs (4 gates of (28 + 128) x 128 products a step), then Dense(10)
        forward, low, high = 28 * 2 * 4 * 128 * (28 + 128) + 2 * 128 * 10, 2.6, 3.2
    assert low * forward < flops < high * forward, (flops / forward)


def test_matmul_peak_is_a_plausible_speed():
    peak = _flops.matmul_peak("jax", size=128, repeats=2)
    assert peak["framework"] == "jax" and peak["size"] == 128
    assert 1e6 < peak["flops_per_second"] < 1e14


def test_markdown_puts_memory_and_efficiency_beside_time_and_accuracy():
    chosen = {**suite.settings(quick=True), "threads": 1, "matmul_size": 2048}
    row = {key: None for key in ("epoch_seconds_median", "compile_seconds", "peak_device_bytes", "ratio_to_funcdl")}
    row.update(model="mlp", runner="funcdl", samples_per_second=1e5, test_accuracy=0.97, peak_host_bytes=2**30,
               flops_per_sample=6.1e5, peak_fraction=0.25,
               matmul_peak={"framework": "jax", "size": 2048, "flops_per_second": 5e10})
    record = report.result("cpu", True, chosen, [row])
    busy = {"load_average": [5.0, 4.0, 3.0], "busy_processes": [], "usable_cores": 2, "busy": ["load average 5.00"]}
    record["load"] = {"before": busy, "after": {**busy, "busy": []}, "busy": True}
    text = report.markdown(record)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    assert titles[:10] == ["model", "runner", "epoch s", "samples/s", "vs funcdl", "test acc", "host MiB",
                           "device MiB", "MFLOP/sample", "% of peak"]
    assert "| 97.00% | 1,024 | - | 0.6 | 25.0% |" in text
    assert "Threads: 1 per framework; matmul peak jax 50 GFLOP/s." in text
    assert "**Warning: the machine was busy** (load average 5.00)" in text
    assert record["settings"]["threads"] == 1
