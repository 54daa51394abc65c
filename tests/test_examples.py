"""Every example runs on tiny data and does what its docstring says."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("name, argv", [
    ("mnist_mlp", ["--epochs", "2", "--limit", "512"]),
    ("mnist_cnn", ["--epochs", "1", "--limit", "256"]),
    ("mnist_lstm", ["--epochs", "2", "--limit", "256"]),
    ("mnist_lstm", ["--epochs", "1", "--limit", "128", "--cell", "gru"]),
])
def test_mnist_examples_run(name, argv, data_dir):
    result = load(name).main(argv + ["--data-dir", str(data_dir)])
    assert 0.0 <= result["accuracy"] <= 1.0 and result["loss"] > 0
    if name == "mnist_mlp":
        assert result["accuracy"] > 0.6  # 512 images, 2 epochs: far above chance (0.1)


@pytest.mark.slow
def test_torch_to_keras_walkthrough(data_dir, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    result = load("torch_to_keras").main(["--data-dir", str(data_dir), "--out", str(tmp_path), "--limit", "256"])
    assert result["keras"] <= 1e-5 and result["savedmodel"] <= 1e-5 and result["torch"] <= 1e-5
    assert {p.name for p in tmp_path.iterdir()} == {"net.funcdl", "net.keras", "net_savedmodel", "net.pt"}


def test_linear_regression_recovers_the_line():
    result = load("linear_regression").main(["--examples", "256", "--epochs", "40"])
    assert abs(result["weight"] - 3) < 0.05 and abs(result["bias"] + 2) < 0.05 and result["loss"] < 0.01


def test_examples_start_with_their_command():
    for path in EXAMPLES.glob("*.py"):
        first = path.read_text().split('"""')[1].strip().splitlines()[0]
        assert first.startswith(f"python examples/{path.name}"), path
