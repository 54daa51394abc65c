"""bench/conv_step.py: one JSON line with every runner's figures, and the per-op profile tables."""
import json

import pytest

from bench import conv_step
from funcdl.nn import _conv, _pool


def test_conv_step_prints_one_row_per_runner(capsys):
    saved = (_conv.conv_matmul, _conv.conv_implementation, _pool._disjoint)
    assert conv_step.main(["--models", "cnn", "--runners", "funcdl-autodiff", "torch-eager", "--rounds", "1",
                           "--steps", "1"]) == 0
    assert (_conv.conv_matmul, _conv.conv_implementation, _pool._disjoint) == saved  # variants undone
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cnn = result["models"]["cnn"]
    assert 7e7 < cnn["train_flops_per_example"] < 7.5e7  # 3 x 24.1 MFLOP: the two convs and the dense layers
    rows = cnn["runners"]
    assert set(rows) == {"matmul_peak_gflops", "funcdl", "funcdl-autodiff", "torch-eager"}
    assert rows["funcdl"]["time_vs_funcdl"]["median"] == 1.0
    for name in ("funcdl", "funcdl-autodiff", "torch-eager"):
        assert rows[name]["samples_per_second"] > 0 and 0 < rows[name]["peak_fraction"] < 2


def test_conv_step_profile_tables(capsys):
    assert conv_step.main(["--models", "cnn", "--steps", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "| op | ms a step | share |" in out and "| kind | ms a step | share |" in out
    assert "matmul (YNNPACK)" in out or "dot (Eigen)" in out


def test_conv_step_rejects_unknown_runner():
    with pytest.raises(SystemExit):
        conv_step.main(["--runners", "cudnn"])
