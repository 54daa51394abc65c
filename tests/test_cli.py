"""The CLI through main(argv): results, saved files, and one-line errors with non-zero exits."""
import json

import numpy as np
import pytest

import funcdl as fd
from funcdl.cli import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_digits_json_and_out(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--dataset", "digits", "--epochs", "3", "--batch-size", "32",
                         "--seed", "1", "--json", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    for key in ("test_accuracy", "test_loss", "epochs", "epoch_seconds", "compile_seconds", "samples_per_second",
                "final_train_loss"):
        assert key in result
    assert result["epochs"] == 3 and len(result["epoch_seconds"]) == 3 and result["test_accuracy"] > 0.5
    assert "test accuracy" in out
    model, variables, input_shape = fd.load_model(tmp_path / "run" / "model.funcdl")
    assert input_shape == (8, 8, 1)
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["test_accuracy"] == result["test_accuracy"]
    data = fd.data.load("digits")
    again = fd.evaluate(model, variables, data.test)
    assert again["accuracy"] == pytest.approx(result["test_accuracy"])


def test_train_mnist_subset_eager(capsys, data_dir):
    code, out, err = run(capsys, "train", "--model", "mlp", "--dataset", "mnist", "--data-dir", str(data_dir),
                         "--limit", "256", "--epochs", "1", "--eager", "--json", "--quiet")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["eager"] is True and result["dataset"] == "mnist"


def test_train_resume_continues(capsys, tmp_path):
    base = ["train", "--dataset", "digits", "--batch-size", "64", "--json", "--quiet", "--resume", str(tmp_path)]
    assert run(capsys, *base, "--epochs", "2")[0] == 0
    code, out, _ = run(capsys, *base, "--epochs", "3")
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 3
    code, out, _ = run(capsys, "train", "--dataset", "digits", "--batch-size", "64", "--epochs", "3", "--json",
                       "--quiet")
    whole = json.loads(out.strip().splitlines()[-1])
    resumed = json.loads(run(capsys, *base, "--epochs", "3")[1].strip().splitlines()[-1])
    assert resumed["test_loss"] == whole["test_loss"]


def test_validation_is_held_out_of_train_and_the_test_set_measured_once(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--dataset", "digits", "--epochs", "2", "--json", "--quiet",
                         "--out", str(tmp_path))
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert (result["validation_split"], result["validation_seed"]) == (0.1, 0)
    assert (result["train_examples"], result["validation_examples"], result["test_examples"]) == (1293, 144, 360)
    assert "1,293 train, 144 validation (10 % of train, seed 0), 360 test (evaluated once, at the end)" in out
    model, variables, _ = fd.load_model(tmp_path / "model.funcdl")
    data = fd.data.load("digits", validation_split=0.1, seed=0)
    assert fd.evaluate(model, variables, data.validation)["loss"] == pytest.approx(result["val_loss"], rel=1e-5)
    assert fd.evaluate(model, variables, data.test)["loss"] == pytest.approx(result["test_loss"], rel=1e-5)
    code, out, _ = run(capsys, "train", "--dataset", "digits", "--epochs", "1", "--json", "--quiet",
                       "--validation-split", "0")
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and result["validation_examples"] == 0 and result["train_examples"] == 1437
    assert "val_loss" not in result["history"] and "no validation" in out


def test_help_shows_every_default(capsys):
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in formatter._get_help_string(action).lower(), (name, action.dest)
    assert main(["compare", "--help"]) == 0
    assert "any of: funcdl, funcdl-eager, torch-eager, torch-compile, tf-eager, tf-xla" in " ".join(
        capsys.readouterr().out.split())


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet999"], "unknown model 'resnet999'; choose one of: cnn, gru, lstm, mlp"),
    (["--dataset", "cifar"], "unknown dataset 'cifar'"),
    (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    (["--flavor", "jax"], "flavor"),
    (["--loss", "hinge"], "unknown loss 'hinge'"),
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer"),
    (["--batch-size", "5000"], "larger than the 1293 training examples"),  # 1437 less 10 % for validation
    (["--lr", "-1"], "learning"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
])
def test_train_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "train", "--dataset", "digits", "--quiet", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err


def test_missing_mnist_says_where_it_looked(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet")
    assert code == 2 and str(tmp_path / "mnist") in err and "--dataset digits" in err


def test_out_must_be_a_folder(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, _, err = run(capsys, "train", "--dataset", "digits", "--out", str(target), "--quiet")
    assert code == 2 and "is not a folder" in err


def test_nonfinite_run_exits_3_and_keeps_last_good(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "digits", "--optimizer", "sgd", "--lr", "1e30",
                       "--epochs", "2", "--quiet", "--out", str(tmp_path / "bad"))
    assert code == 3 and "non-finite loss or gradient at step" in err
    _, variables, _ = fd.load_model(tmp_path / "bad" / "model.funcdl")
    assert all(np.isfinite(v).all() for v in fd.io.model_file.flatten_variables(variables).values())


def test_help_exits_zero(capsys):
    assert run(capsys, "--help")[0] == 0
    assert run(capsys, "train", "--help")[0] == 0
