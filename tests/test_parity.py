"""The parity harness: same weights and batches in funcdl, PyTorch and Keras, compared number for number."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("tensorflow")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConfigError  # noqa: E402
from interop import parity  # noqa: E402


def build(model, input_shape, seed=0):
    return model, model.init(jax.random.key(seed), jnp.zeros((1,) + input_shape)), input_shape


def small_cnn():
    return build(nn.Sequential([nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.relu, nn.MaxPool2D(2),
                                nn.Dropout(0.3), nn.Flatten(), nn.Dense(8), nn.tanh, nn.Dense(5)]), (8, 8, 1))


def test_cnn_parity_every_eager_and_xla_runner():
    report = parity.compare(*small_cnn(), runners=["funcdl", "funcdl-eager", "torch-eager", "tf-eager", "tf-xla"],
                            steps=2, batch_size=6, optimizer="adam", learning_rate=1e-2)
    assert report["ok"], parity.format_report(report)
    rows = {row["runner"]: row for row in report["runners"]}
    assert set(rows) == {"funcdl", "funcdl-eager", "torch-eager", "tf-eager", "tf-xla"}
    for row in rows.values():
        assert row["note"] is None and len(row["losses"]) == 2 and row["step_seconds_median"] > 0
        assert row["forward_max_abs"] <= 1e-5 and row["grad_max_rel"] <= 1e-5 and row["loss_max_rel"] <= 1e-4
    assert rows["tf-eager"]["flavor"] == "keras" and rows["torch-eager"]["flavor"] == "torch"
    layers = {(r["layer"], r["framework"]): r for r in report["layers"]}
    assert len(layers) == 9 * 2 and all(r["status"] == "OK" for r in layers.values())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_100_steps_track_torch_and_keras(optimizer):
    model, variables, shape = build(nn.Sequential([nn.Flatten(), nn.Dense(16), nn.relu, nn.Dense(4)]), (3, 3, 2))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-eager", "tf-eager"], steps=100,
                            batch_size=8, optimizer=optimizer, learning_rate=1e-2, layers=False)
    assert report["ok"], parity.format_report(report)
    for row in report["runners"]:
        assert len(row["losses"]) == 100 and row["loss_max_rel"] <= 1e-4
    losses = report["runners"][0]["losses"]
    assert all(0 < loss < 10 for loss in losses) and len(set(losses)) > 50  # fresh random batches each step


def test_recurrent_parity():
    model, variables, shape = build(nn.Sequential([nn.LSTM(6, return_sequences=True), nn.GRU(5), nn.Dense(3)]),
                                    (7, 4))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-eager", "tf-eager"], steps=3,
                            batch_size=5, optimizer="sgd", learning_rate=0.1)
    assert report["ok"], parity.format_report(report)


@pytest.mark.slow
def test_torch_compile_runner():
    model, variables, shape = build(nn.Sequential([nn.Flatten(), nn.Dense(8), nn.relu, nn.Dense(3)]), (4, 4, 1))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-compile"], steps=2, batch_size=4,
                            layers=False)
    row = report["runners"][1]
    assert row["runner"] == "torch-compile" and row["note"] is None and row["ok"], parity.format_report(report)


def test_harness_catches_a_wrong_conversion(monkeypatch):
    forward = parity.TorchRunner.forward
    monkeypatch.setattr(parity.TorchRunner, "forward", lambda self, x: forward(self, x) + 1e-3)
    report = parity.compare(*small_cnn(), runners=["funcdl", "torch-eager"], steps=1, batch_size=4)
    assert not report["ok"]
    assert report["runners"][1]["forward_max_abs"] == pytest.approx(1e-3, rel=1e-2)
    assert {r["status"] for r in report["layers"]} == {"INACCURATE"}
    assert "PARITY FAILED" in parity.format_report(report)


def test_without_dropout_keeps_params_and_zeroes_rates():
    model, variables, _ = small_cnn()
    stripped = parity.without_dropout(model)
    assert stripped.layers[4].rate == 0.0 and model.layers[4].rate == 0.3
    assert jax.tree.map(jnp.shape, stripped.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))) == \
        jax.tree.map(jnp.shape, variables)


def test_bad_settings():
    with pytest.raises(ConfigError, match="unknown framework 'mxnet'"):
        parity.compare(*small_cnn(), runners=["mxnet"])
    with pytest.raises(ConfigError, match="unknown optimizer 'lamb'"):
        parity.compare(*small_cnn(), optimizer="lamb")


def test_compare_cli_json(tmp_path, capsys):
    model, variables, shape = small_cnn()
    path = tmp_path / "cnn.funcdl"
    fd.save_model(path, model, variables, input_shape=shape)
    code = main(["compare", str(path), "--frameworks", "funcdl,torch-eager,tf-eager", "--steps", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["ok"] and [r["runner"] for r in report["runners"]] == ["funcdl", "torch-eager", "tf-eager"]
    assert "PARITY OK" in out and "layers_0" in out
    assert main(["compare", str(path), "--frameworks", "funcdl,caffe"]) == 2
    assert "unknown framework 'caffe'" in capsys.readouterr().err


def test_softmax_model_is_compared_on_probabilities():
    model, variables, shape = build(nn.Sequential([nn.Conv2D(3, 3), nn.relu, nn.Flatten(), nn.Dense(5),
                                                   nn.Softmax()]), (6, 6, 2))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-eager", "tf-eager"], steps=3,
                            batch_size=6, optimizer="adam", learning_rate=1e-2)
    assert report["ok"], parity.format_report(report)
    assert report["loss"] == "sparse_categorical_crossentropy"
    assert "from_logits=False" in report["loss_description"] and "Softmax" in report["loss_description"]
    assert "loss: sparse_categorical_crossentropy (from_logits=False" in parity.format_report(report)
    # the loss at the start is -log p(label) of the model's probabilities, not a softmax of them taken as logits
    xs, ys, _ = parity.make_batches(model, variables, shape, 3, 6, 0)
    probs = np.asarray(model.apply(variables, jnp.asarray(xs[0])), np.float64)
    picked = probs[np.arange(6), ys[0]]
    assert report["loss_at_init"] == pytest.approx(-np.mean(np.log(picked)), rel=1e-5)
    as_logits = np.mean(np.log(np.exp(probs).sum(-1)) - picked)
    assert abs(report["loss_at_init"] - as_logits) > 0.1
    assert all(row["loss_max_rel"] <= 1e-4 and row["grad_max_rel"] <= 1e-5 for row in report["runners"])


def test_loss_picked_from_output_or_named():
    logits = nn.Sequential([nn.Dense(4)])
    sigmoid = nn.Sequential([nn.Dense(1, activation="sigmoid")])
    assert parity.choose_loss(logits, (8, 4)).name == "cross_entropy"
    assert parity.choose_loss(nn.Sequential([nn.Dense(4), nn.log_softmax]), (8, 4)).from_logits
    assert parity.choose_loss(sigmoid, (8, 1)).name == "binary_crossentropy"
    assert parity.choose_loss(logits, (8, 4, 3)).name == "mse"
    assert parity.choose_loss(logits, (8, 4), "mean_squared_error").name == "mse"
    with pytest.raises(ConfigError, match="takes logits but the model ends in Softmax"):
        parity.choose_loss(nn.Sequential([nn.Dense(4), nn.Softmax()]), (8, 4), "cross_entropy")
    with pytest.raises(ConfigError, match="unknown parity loss 'hinge'"):
        parity.choose_loss(logits, (8, 4), "hinge")
    model, variables, shape = build(sigmoid, (3,))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-eager", "tf-eager"], steps=2,
                            batch_size=8, layers=False)
    assert report["ok"] and report["loss"] == "binary_crossentropy", parity.format_report(report)


def test_compare_cli_loss_option(tmp_path, capsys):
    model, variables, shape = build(nn.Sequential([nn.Flatten(), nn.Dense(3), nn.Softmax()]), (2, 2, 1))
    path = tmp_path / "softmax.funcdl"
    fd.save_model(path, model, variables, input_shape=shape)
    assert main(["compare", str(path), "--frameworks", "funcdl,torch-eager,tf-eager", "--steps", "2"]) == 0
    assert "loss: sparse_categorical_crossentropy (from_logits=False" in capsys.readouterr().out
    assert main(["compare", str(path), "--frameworks", "funcdl,torch-eager", "--steps", "2", "--loss", "mse"]) == 0
    assert "loss: mse (as asked)" in capsys.readouterr().out
    assert main(["compare", str(path), "--loss", "cross_entropy"]) == 2
    assert "takes logits but the model ends in Softmax" in capsys.readouterr().err


def test_graph_model_parity_in_torch_and_keras():
    model = fd.models.resnet(8, width=2, input_shape=(6, 6, 2))
    model, variables, shape = build(model, (6, 6, 2))
    report = parity.compare(model, variables, shape, runners=["funcdl", "torch-eager", "tf-eager"], steps=2,
                            batch_size=4)
    assert report["ok"], parity.format_report(report)
    assert [row["note"] for row in report["runners"]] == [None, None, None]
    assert all(row["forward_max_abs"] <= 1e-5 and row["grad_max_rel"] <= 1e-5 for row in report["runners"])
