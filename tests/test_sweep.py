"""Sweeps: K vmapped models == K separate fits; ranking, divergence, the CLI's table and plot."""
import json

import jax
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn
from funcdl import sweep as sweep_lib
from funcdl.cli import main
from funcdl.errors import ConfigError


def dropout_mlp():
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.relu, nn.Dropout(0.2), nn.Dense(10)])


@pytest.fixture(scope="module")
def digits():
    return fd.data.load("digits", limit=200)


def test_each_vmapped_model_equals_a_separate_fit(digits):
    # Dropout and shuffling: equal only if every model uses its own seed's keys and batch order, as fit does.
    result = sweep_lib.sweep(dropout_mlp(), digits.train, lrs=[1e-3, 1e-2], seeds=[0, 1], epochs=2, batch_size=32,
                             verbose=False)
    assert result.lrs.tolist() == [1e-3, 1e-3, 1e-2, 1e-2] and result.seeds.tolist() == [0, 1, 0, 1]
    assert result.history["loss"].shape == (4, 2)
    for index in range(4):
        alone = fd.fit(dropout_mlp(), digits.train, optimizer=fd.optim.adam(float(result.lrs[index])),
                       seed=int(result.seeds[index]), epochs=2, batch_size=32, verbose=False)
        for a, b in zip(jax.tree.leaves(alone.variables), jax.tree.leaves(result.model_variables(index))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
        np.testing.assert_allclose(result.history["loss"][index], alone.history["loss"], rtol=1e-5)
        np.testing.assert_allclose(result.history["accuracy"][index], alone.history["accuracy"], rtol=1e-6)


def test_ranking_puts_diverged_models_last(digits):
    result = sweep_lib.sweep(fd.models.mlp(10, hidden=16), digits.train, lrs=[1e30, 0.05], seeds=[0],
                             optimizer="sgd", epochs=2, batch_size=50, verbose=False)
    assert result.diverged.tolist() == [True, False]
    ranking = result.ranking()
    assert [row["lr"] for row in ranking] == [0.05, 1e30] and ranking[-1]["diverged"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(lrs=[], seeds=[0]), "at least one learning rate and one seed"),
    (dict(lrs=[-1.0], seeds=[0]), "learning rates must be positive numbers, got -1.0"),
    (dict(lrs=[1e-3], seeds=[0.5]), "seeds must be integers, got 0.5"),
    (dict(lrs=[1e-3], seeds=[0], optimizer="adamx"), "unknown optimizer 'adamx'"),
])
def test_bad_sweep_settings(digits, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sweep_lib.sweep(dropout_mlp(), digits.train, verbose=False, **kwargs)


def test_cli_prints_ranked_table_and_writes_plot(capsys, tmp_path):
    code = main(["sweep", "--model", "mlp", "--dataset", "digits", "--limit", "200", "--lr", "1e-3,1e-2",
                 "--seeds", "0,1", "--epochs", "2", "--batch-size", "32", "--out", str(tmp_path), "--json",
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["rank", "lr", "seed", "batch", "val_acc", "val_loss", "loss"]
    assert len(lines) == 2 + 4 + 2  # header, rule, 4 models, the best model's test figures, JSON
    assert lines[-2].startswith("ranked on validation accuracy: 20 examples held out of the training data")
    ranking = json.loads(lines[-1])["ranking"]
    accuracies = [row["val_accuracy"] for row in ranking]
    assert accuracies == sorted(accuracies, reverse=True)
    png = (tmp_path / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert np.asarray(saved["history"]["val_accuracy"]).shape == (4, 2)
    assert main(["sweep", "--lr", "1e-3,x"]) == 2


def test_cli_default_output_is_a_new_runs_folder(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", "--dataset", "digits", "--limit", "100", "--lr", "1e-3", "--seeds", "0", "--epochs", "1",
                 "--batch-size", "32", "--quiet"])
    assert code == 0, capsys.readouterr().err
    [folder] = list((tmp_path / "runs").iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and folder.name.startswith("sweep-")
    assert sorted(p.name for p in folder.iterdir()) == ["sweep.json", "sweep.png"]


def test_batch_size_lists_train_each_size_as_fit_would(digits):
    result = sweep_lib.sweep(fd.models.mlp(10, hidden=16), digits.train, lrs=[1e-2], seeds=[0, 1], epochs=2,
                             batch_size=[16, 50], validation_data=digits.test, verbose=False)
    assert result.batch_sizes.tolist() == [16, 16, 50, 50] and result.seeds.tolist() == [0, 1, 0, 1]
    for index in (1, 2):
        alone = fd.fit(fd.models.mlp(10, hidden=16), digits.train, optimizer=fd.optim.adam(1e-2),
                       seed=int(result.seeds[index]), epochs=2, batch_size=int(result.batch_sizes[index]),
                       validation_data=digits.test, verbose=False)
        np.testing.assert_allclose(result.history["val_loss"][index], alone.history["val_loss"], rtol=1e-5)
    ranked = [row["val_accuracy"] for row in result.ranking()]
    assert ranked == sorted(ranked, reverse=True)
