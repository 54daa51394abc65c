"""Seeing training: TensorBoard event files (read back without TF), the PNG report, the CLI flags."""
import json
import struct

import numpy as np
import optax
import pytest

import funcdl as fd
from funcdl import monitor
from funcdl.cli import main

pytest.importorskip("tensorboardX")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE and blob[12:16] == b"IHDR"
    return struct.unpack(">II", blob[16:24])


def test_update_ratio_and_layer_names():
    assert monitor.update_ratio(np.array([3.0, 4.0]), np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert np.isnan(monitor.update_ratio(np.zeros(2), np.ones(2)))
    params = {"layers_0": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}}
    assert sorted(monitor.layer_arrays(params)) == ["layers_0/bias", "layers_0/kernel"]


def test_learning_rate_is_read_from_injected_hyperparameters():
    optimizer = optax.inject_hyperparams(optax.sgd)(learning_rate=0.25)
    assert monitor.find_learning_rate(optimizer.init({"w": np.ones(2)})) == 0.25
    assert monitor.find_learning_rate(optax.sgd(0.1).init({"w": np.ones(2)})) is None


def test_tensorboard_and_report_callbacks(tmp_path):
    data = fd.data.load("digits", limit=200)
    board = monitor.TensorBoard(tmp_path / "tb", learning_rate=lambda step: 0.01 / (1 + step))
    report = monitor.Report(tmp_path / "report.png")
    history = fd.fit(fd.models.mlp(10, hidden=16), data.train, optimizer=fd.optim.adam(1e-2), epochs=3,
                     batch_size=32, validation_data=data.test, callbacks=[board, report], verbose=False)
    board.close()
    events = monitor.read_events(tmp_path / "tb")
    scalars, histograms = events["scalars"], events["histograms"]
    for tag in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3]
        np.testing.assert_allclose([value for _, value in scalars[tag]], history.history[tag], rtol=1e-6)
    steps_per_epoch = 7  # 200 training examples in batches of 32, the last one partial
    assert [value for _, value in scalars["learning_rate"]] == pytest.approx(
        [0.01 / (1 + steps_per_epoch * epoch) for epoch in (1, 2, 3)])
    for layer in ("layers_1/kernel", "layers_1/bias", "layers_3/kernel", "layers_3/bias"):
        assert len(histograms[f"weights/{layer}"]) == 3
        assert len(scalars[f"weight_norm/{layer}"]) == 3
    assert len(histograms["update_weight_ratio/layers_1/kernel"]) == 3
    # a zero-initialised bias has no ratio after the first epoch
    assert len(histograms["update_weight_ratio/layers_1/bias"]) == 2
    assert all(0 < value < 10 for _, value in scalars["update_ratio/layers_1/kernel"])
    assert report.save() == tmp_path / "report.png"
    assert png_size(tmp_path / "report.png") == (1300, 900)
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_cli_train_report_tensorboard_bf16_data_parallel(capsys, tmp_path):
    code = main(["train", "--dataset", "digits", "--limit", "200", "--epochs", "2", "--batch-size", "32",
                 "--quiet", "--json", "--report", str(tmp_path / "report"), "--tensorboard", str(tmp_path / "tb"),
                 "--precision", "bf16", "--data-parallel"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["precision"] == "bf16" and result["data_parallel"] and result["test_accuracy"] > 0.3
    assert png_size(tmp_path / "report" / "report.png") == (1300, 900)
    scalars = monitor.read_events(tmp_path / "tb")["scalars"]
    assert [value for _, value in scalars["learning_rate"]] == pytest.approx([1e-3, 1e-3])
    assert len(scalars["val_accuracy"]) == 2
