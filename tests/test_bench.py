"""The benchmark suite (bench/, ``funcdl bench``) on tiny settings, and the MNIST speedrun example.

One combined suite run (module fixture, two batches an epoch, processes shared
per framework) covers every runner available here; the keras/TF runners start
slowly, so they share that one run.
"""
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import DATA_DIR as FULL_DATA_DIR
from conftest import SAMPLE_DIR, has_full_mnist

import funcdl as fd
from bench import _models, report, suite
from bench._worker import run_cell
from funcdl import cli

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = FULL_DATA_DIR if has_full_mnist() else SAMPLE_DIR  # the committed sample on a fresh clone
DOCUMENTED_RUNNERS = ("funcdl", "funcdl-eager", "jax-handwritten", "torch-eager", "torch-compile", "torch-cudagraph",
                      "keras-tf", "keras-tf-xla", "tf-function", "keras-jax")
ROW_KEYS = {"model", "runner", "epoch_seconds_median", "samples_per_second", "compile_seconds", "peak_host_bytes",
            "peak_device_bytes", "test_accuracy", "ratio_to_funcdl"}

# (model, runner) cells of the combined run; torch-compile is left out (inductor compiles for minutes cold).
CELLS = [("mlp", runner) for runner in DOCUMENTED_RUNNERS if runner != "torch-compile"] + [("resnet", "torch-eager")]


def _available(runner):
    return suite.unavailable_reason(runner, "cpu") is None


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """One tiny CPU run of CELLS (2 batches an epoch, 1 warm-up + 1 timed epoch) and its written files."""
    chosen = suite.settings(quick=True, epochs=1, batches=2, timeout=240)
    cells = [cell for cell in suite.plan(["mlp", "resnet"], DOCUMENTED_RUNNERS, "cpu", chosen, DATA_DIR)
             if (cell["model"], cell["runner"]) in CELLS]
    rows = suite.run_cells(cells, chosen["timeout"], shared_processes=True)
    record = report.result("cpu", True, chosen, rows, shared_processes=True)
    return record, report.write(record, tmp_path_factory.mktemp("bench"))


def test_runner_and_model_names_are_the_documented_ones():
    assert suite.RUNNER_NAMES == DOCUMENTED_RUNNERS
    assert suite.MODEL_NAMES == tuple(_models.MODELS)


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_available_runner_gives_a_row_with_sane_figures(combined):
    record, _ = combined
    rows = {(row["model"], row["runner"]): row for row in record["rows"]}
    assert set(rows) == set(CELLS)
    for (model, runner), row in rows.items():
        assert ROW_KEYS <= set(row), row
        if not _available(runner) or runner == "torch-cudagraph":
            assert row["samples_per_second"] is None and row["note"], row
            continue
        assert row["epoch_seconds_median"] > 0 and row["samples_per_second"] > 0, row
        assert row["compile_seconds"] >= 0 and row["peak_host_bytes"] > 2**20, row
        assert 2**20 < row["baseline_host_bytes"] <= row["peak_host_bytes"], row  # imports alone, then the cell
        assert row["peak_device_bytes"] is None  # CPU
        assert row["init_max_abs_diff"] < 1e-4, row  # every framework starts from funcdl's weights
        if model == "mlp" and runner != "funcdl-eager":
            assert 0.0 <= row["test_accuracy"] <= 1.0, row


@pytest.mark.slow
@pytest.mark.subprocess
def test_ratios_are_against_the_funcdl_row_of_the_same_run(combined):
    record, _ = combined
    base = next(row for row in record["rows"] if row["model"] == "mlp" and row["runner"] == "funcdl")
    assert base["ratio_to_funcdl"] == pytest.approx(1.0)
    for row in record["rows"]:
        if row["model"] == "mlp" and row["samples_per_second"]:
            assert row["ratio_to_funcdl"] == pytest.approx(row["samples_per_second"] / base["samples_per_second"])
        if row["model"] == "resnet":  # no funcdl row for resnet in this run
            assert row["ratio_to_funcdl"] is None


@pytest.mark.slow
@pytest.mark.subprocess
def test_same_weights_give_the_same_first_steps_in_every_framework(combined):
    record, _ = combined
    accuracy = {row["runner"]: row["test_accuracy"] for row in record["rows"]
                if row["model"] == "mlp" and row["test_accuracy"] is not None}
    # 2 epochs x 2 batches of Adam from the same weights in the same order: nearly the same model.
    assert max(accuracy.values()) - min(accuracy.values()) < 0.03, accuracy


@pytest.mark.slow
@pytest.mark.subprocess
def test_json_markdown_and_png_are_written(combined):
    record, paths = combined
    assert {path.suffix for path in paths.values()} == {".json", ".md", ".png"}
    assert all(path.name.startswith(f"cpu-{record['date']}-quick") for path in paths.values())
    stored = json.loads(paths["json"].read_text())
    assert stored["device"] == "cpu" and stored["versions"]["jax"] == jax.__version__
    assert stored["machine"]["cpu_count"] >= 1 and len(stored["rows"]) == len(CELLS)
    text = paths["md"].read_text()
    assert "| mlp | funcdl |" in text and "resnet (synthetic data)" in text and "--quick" in text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.subprocess
def test_a_missing_framework_gives_a_note_not_a_crash(monkeypatch):
    monkeypatch.setitem(suite.RUNNERS, "keras-tf", suite.Runner("bench.runners_tf", "run_keras_tf",
                                                                 ("no_such_framework",), "tf"))
    cells = suite.plan(["mlp"], ["keras-tf"], "cpu", suite.settings(quick=True))
    [row] = suite.run_cells(cells, timeout=10)
    assert "no_such_framework not installed" in row["note"] and row["samples_per_second"] is None


def test_a_framework_missing_inside_the_worker_gives_a_note():
    cell = suite.plan(["mlp"], ["torch-eager"], "cpu", suite.settings(quick=True))[0]
    row = run_cell({**cell, "function": "no_such_framework:run"})
    assert row["note"] == "no_such_framework is not installed" and ROW_KEYS <= set(row)


@pytest.mark.slow
@pytest.mark.subprocess
def test_cli_bench_json(tmp_path, capsys, data_dir):
    code = cli.main(["bench", "--quick", "--batches", "2", "--epochs", "1", "--models", "mlp", "--runners", "funcdl",
                     "torch-cudagraph", "--json", "--out", str(tmp_path), "--data-dir", str(data_dir)])
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [row["runner"] for row in record["rows"]] == ["funcdl", "torch-cudagraph"]
    assert record["rows"][0]["samples_per_second"] > 0 and "GPU only" in record["rows"][1]["note"]
    assert len(list(tmp_path.glob("cpu-*-quick.*"))) == 3


def test_cli_bench_rejects_unknown_runner(capsys):
    assert cli.main(["bench", "--runners", "torch-jit"]) == 2


def test_batch_order_is_the_order_fd_fit_visits(tiny_images):
    x, y = tiny_images[0][:64], tiny_images[1][:64]
    model = fd.models.mlp(hidden=8)
    variables = _models.initial_variables(model, x)
    history = fd.fit(model, (x, y), optimizer=fd.optim.sgd(0.1), epochs=2, batch_size=16, variables=variables,
                     verbose=False)

    def loss(params, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": params}, xb), yb).mean()
    params = variables["params"]
    for index in _models.batch_order(64, 16, 2).reshape(-1, 16):
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.grad(loss)(params, x[index], y[index]))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(history.variables["params"])):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", list(_models.MODELS))
def test_native_torch_models_hold_funcdl_weights(name):
    torch = pytest.importorskip("torch")
    from bench import _torch_models
    spec = _models.MODELS[name]
    x = np.random.default_rng(0).random((4,) + spec.input_shape, dtype=np.float32)
    model = spec.build()
    variables = _models.initial_variables(model, x)
    module = _torch_models.copy_weights(_torch_models.build(name), variables).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(out, model.apply(variables, jnp.asarray(x)), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet", "gru", "lstm"])
def test_native_keras_models_hold_funcdl_weights(name):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow not installed")
    keras = pytest.importorskip("keras")
    from bench import _keras_models
    spec = _models.MODELS[name]
    x = np.random.default_rng(0).random((4,) + spec.input_shape, dtype=np.float32)
    model = spec.build()
    variables = _models.initial_variables(model, x)
    keras_model = _keras_models.copy_weights(_keras_models.build(keras, name, spec.input_shape), variables)
    out = keras.ops.convert_to_numpy(keras_model(x, training=False))
    np.testing.assert_allclose(out, model.apply(variables, jnp.asarray(x)), atol=1e-5)


@pytest.mark.slow
def test_speedrun_quick_runs_on_cpu_and_reports_accuracy(data_dir):
    spec = importlib.util.spec_from_file_location("mnist_speedrun", ROOT / "examples" / "mnist_speedrun.py")
    speedrun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speedrun)
    result = speedrun.main(["--quick", "--limit", "512", "--data-dir", str(data_dir), "--seeds", "0,1"])
    assert [run["seed"] for run in result["runs"]] == [0, 1]
    assert all(run["seconds"] > 0 and 0.0 <= run["accuracy"] <= 1.0 for run in result["runs"])
    assert result["runs"][0]["steps"] == 2  # 512 examples, batch 256, 1 epoch
