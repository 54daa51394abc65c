"""``bench/gpu.sh --dry-run``: the GPU plan on the CPU with tiny sizes writes every file, and the goals read them."""
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_goals

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "tests" / "data"  # the first 2,000 / 1,000 real MNIST images
GOALS = 8


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """Run ``bash bench/gpu.sh --dry-run --out DIR`` once on the committed MNIST sample; (DIR, the process)."""
    out = tmp_path_factory.mktemp("gpu-dry-run")
    env = {**os.environ, "PYTHON": sys.executable, "FUNCDL_DATA_DIR": str(SAMPLE_DIR)}
    done = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1500)
    return out, done


@pytest.mark.slow
@pytest.mark.subprocess
def test_dry_run_succeeds_and_prints_every_goal(dry_run):
    _, done = dry_run
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.split(" ")[0] in ("PASS", "FAIL", "not")]
    assert len(lines) == GOALS, done.stdout
    assert any("MLP epoch (funcdl, full MNIST epoch)" in line for line in lines)
    assert "dry run on the CPU" in done.stdout


@pytest.mark.slow
@pytest.mark.subprocess
def test_dry_run_writes_every_file(dry_run):
    out, _ = dry_run
    stem = out / f"dryrun-{datetime.datetime.now(datetime.UTC).date().isoformat()}"
    for name in ("mlp", "models"):
        record = json.loads(Path(f"{stem}-{name}.json").read_text())
        assert Path(f"{stem}-{name}.md").is_file() and Path(f"{stem}-{name}.png").is_file()
        assert record["settings"]["threads"] == 1 and "before" in record["load"]
        funcdl = next(row for row in record["rows"] if row["runner"] == "funcdl")
        assert funcdl["samples_per_second"] > 0 and funcdl["flops_per_sample"] > 0 and funcdl["peak_fraction"] > 0
        for row in record["rows"]:  # pinned to one CPU: no runner keeps more than one core busy
            assert row["samples_per_second"] is None or row["cpu_per_wall"] <= 1.1, row
        graph = next(row for row in record["rows"] if row["runner"] == "torch-cudagraph")
        assert graph["samples_per_second"] is None and "GPU only" in graph["note"]
    speedrun = json.loads(Path(f"{stem}-speedrun.json").read_text())
    assert 0 <= speedrun["min_accuracy"] <= 1 and speedrun["median_seconds"] > 0
    for precision in ("fp32", "bf16"):
        trained = json.loads(Path(f"{stem}-{precision}.json").read_text())
        assert trained["precision"] == precision and trained["model"] == "cnn" and trained["epoch_seconds"]
    for count in (1, 16):
        sweep = json.loads(Path(f"{stem}-sweep-{count}/sweep.json").read_text())
        assert sweep["models"] == count and len(sweep["epoch_seconds"]) == 2
    goals = json.loads(Path(f"{stem}-goals.json").read_text())
    assert goals["dry_run"] and goals["failed_stages"] == [] and len(goals["goals"]) == GOALS
    status = {goal["goal"]: goal["status"] for goal in goals["goals"]}
    assert status["funcdl MLP vs whole-step CUDA-graph PyTorch"] == "not measured"  # no CUDA graph on the CPU
    assert all(value in ("PASS", "FAIL") for name, value in status.items() if "CUDA-graph" not in name), status
    assert "| status | goal | value | target |" in Path(f"{stem}-goals.md").read_text()
    peaks = {(row["model"], row["runner"]): row for row in goals["memory"]}  # every measured suite row
    assert ("mlp", "funcdl") in peaks and ("lstm", "funcdl") in peaks and ("mlp", "torch-cudagraph") not in peaks
    assert all(row["peak_device_bytes"] is None and row["peak_host_bytes"] > 2**20 for row in peaks.values())
    assert "| model | runner | peak device MiB | peak host MiB |" in Path(f"{stem}-goals.md").read_text()


def _write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_goals_pass_and_fail_on_the_measured_values(tmp_path):
    stem = tmp_path / "gpu-x"
    rows = [{"model": "mlp", "runner": "funcdl", "epoch_seconds_median": 0.025, "samples_per_second": 2.4e6},
            {"model": "mlp", "runner": "torch-cudagraph", "epoch_seconds_median": 0.1, "samples_per_second": 6e5}]
    _write(Path(f"{stem}-mlp.json"), {"rows": rows})
    _write(Path(f"{stem}-speedrun.json"), {"min_accuracy": 0.991, "median_seconds": 0.7})
    _write(Path(f"{stem}-fp32.json"), {"test_accuracy": 0.988, "epoch_seconds": [9.0, 2.0]})
    _write(Path(f"{stem}-bf16.json"), {"test_accuracy": 0.986, "epoch_seconds": [9.0, 1.0]})
    _write(Path(f"{stem}-sweep-1/sweep.json"), {"epoch_seconds": [5.0, 1.0, 1.0]})
    _write(Path(f"{stem}-sweep-16/sweep.json"), {"epoch_seconds": [5.0, 2.5, 2.5]})
    found = {goal["goal"]: goal for goal in gpu_goals.goals(str(stem), seconds=400)}
    assert found["MLP epoch (funcdl, full MNIST epoch)"]["status"] == "PASS"
    assert found["funcdl MLP vs whole-step CUDA-graph PyTorch"]["status"] == "FAIL"  # 4x < 5x
    assert found["funcdl MLP vs whole-step CUDA-graph PyTorch"]["value"] == pytest.approx(4.0)
    assert found["MNIST speedrun: lowest test accuracy over seeds"]["status"] == "PASS"
    assert found["MNIST speedrun: median training time"]["status"] == "FAIL"
    assert found["16 vmapped MLPs: epoch time over one model's"]["value"] == pytest.approx(2.5)
    assert found["16 vmapped MLPs: epoch time over one model's"]["status"] == "FAIL"
    assert found["CNN bf16 vs fp32: test accuracy gap"]["status"] == "PASS"
    assert found["CNN bf16 speed-up over fp32 (epoch time)"]["value"] == pytest.approx(2.0)
    assert found["whole script"]["status"] == "PASS"
    rows[0].update(peak_device_bytes=3 * 2**20, peak_host_bytes=2**30)
    _write(Path(f"{stem}-mlp.json"), {"rows": rows})
    record = gpu_goals.write(str(stem), list(found.values()), dry_run=False, failed=[])
    assert record["memory"][0] == {"model": "mlp", "runner": "funcdl", "peak_device_bytes": 3 * 2**20,
                                   "peak_host_bytes": 2**30}
    assert "| mlp | funcdl | 3 | 1,024 |" in Path(f"{stem}-goals.md").read_text()


def test_missing_files_make_goals_not_measured(tmp_path):
    found = gpu_goals.goals(str(tmp_path / "nothing"))
    assert len(found) == GOALS and {goal["status"] for goal in found} == {"not measured"}
