"""A run killed with SIGKILL mid-training resumes to the same parameters, bit for bit."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import funcdl as fd
from funcdl.io import run_folder

ARGS = ["train", "--model", "cnn", "--dataset", "digits", "--epochs", "6", "--batch-size", "32", "--seed", "3",
        "--quiet"]


def _train(extra, **popen):
    command = [sys.executable, "-m", "funcdl.cli", *ARGS, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _params(folder):
    _, variables, _ = fd.load_model(folder / "model.funcdl")
    return fd.io.model_file.flatten_variables(variables)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    whole = _train(["--out", str(tmp_path / "whole")])
    checkpoints = tmp_path / "ckpt"
    victim = _train(["--resume", str(checkpoints), "--out", str(tmp_path / "resumed")])
    deadline = time.time() + 240
    while not (checkpoints / "checkpoint.msgpack").exists():
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)  # well inside a later epoch
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "resumed" / "model.funcdl").exists()
    # no temporary files left; the lock file stays (a killed run cannot remove it), but the kernel released its lock
    assert {p.name for p in checkpoints.iterdir()} <= {"checkpoint.msgpack", run_folder.LOCK}
    resumed = _train(["--resume", str(checkpoints), "--out", str(tmp_path / "resumed")])
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint.msgpack"]  # the run that ended removed it
    assert whole.wait(timeout=300) == 0, whole.stderr.read().decode()
    expected, actual = _params(tmp_path / "whole"), _params(tmp_path / "resumed")
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
