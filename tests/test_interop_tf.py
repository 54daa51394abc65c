"""funcdl -> TensorFlow SavedModel (jax2tf): plain-TF reload matches, weights are tf.Variables, writes are atomic."""
import jax
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from funcdl import nn  # noqa: E402
from funcdl.errors import ShapeError  # noqa: E402
from funcdl.io.model_file import flatten_variables  # noqa: E402
from interop import tensorflow as itf  # noqa: E402

TOL = 1e-5
tf.config.experimental.enable_tensor_float_32_execution(False)

MODELS = {
    "mlp": (nn.Sequential([nn.Flatten(), nn.Dense(16, activation="relu"), nn.Dense(10)]), (6, 6, 1)),
    "cnn": (nn.Sequential([nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.relu, nn.MaxPool2D(2),
                           nn.Conv2D(6, 3, activation="relu"), nn.Flatten(), nn.Dense(10)]), (8, 8, 1)),
}


def _variables(model, input_shape, seed=0):
    """Variables drawn with numpy from a fixed seed; BatchNorm variances kept positive."""
    rng = np.random.default_rng(seed)
    shapes = nn.init_shapes(model, input_shape)
    return jax.tree_util.tree_map_with_path(
        lambda path, s: (rng.uniform(0.5, 1.5, s.shape) if path[-1].key == "var"
                         else 0.3 * rng.normal(size=s.shape)).astype(np.float32), shapes)


def _funcdl(model, variables, x):
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(model.apply)(variables, x))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saved_model_matches_funcdl_in_plain_tf(tmp_path, name):
    model, input_shape = MODELS[name]
    variables = _variables(model, input_shape)
    path = tmp_path / "exported"
    itf.to_saved_model(model, variables, path, input_shape)
    rng = np.random.default_rng(1)
    for batch in (1, 5):  # the batch axis is symbolic: one export serves every batch size
        x = rng.normal(size=(batch,) + input_shape).astype(np.float32)
        assert np.abs(itf.load_saved_model_outputs(path, x) - _funcdl(model, variables, x)).max() <= TOL

    loaded = tf.saved_model.load(str(path))
    stored = {v.name.split(":")[0]: v for v in loaded.funcdl_variables}
    expected = flatten_variables(variables)
    assert set(stored) == set(expected)
    for key, value in expected.items():
        assert isinstance(stored[key], tf.Variable) and stored[key].trainable == key.startswith("params/")
        np.testing.assert_array_equal(stored[key].numpy(), value)
    # the serving graph reads these variables rather than constants baked into it
    assert len(loaded.signatures["serving_default"].variables) == len(expected)


def test_fixed_batch_size(tmp_path):
    model, input_shape = MODELS["mlp"]
    variables = _variables(model, input_shape)
    itf.to_saved_model(model, variables, tmp_path / "fixed", input_shape, batch_size=2)
    x = np.random.default_rng(2).normal(size=(2,) + input_shape).astype(np.float32)
    assert np.abs(itf.load_saved_model_outputs(tmp_path / "fixed", x) - _funcdl(model, variables, x)).max() <= TOL


def test_failed_export_leaves_no_folder(tmp_path, monkeypatch):
    model, input_shape = MODELS["mlp"]
    variables = _variables(model, input_shape)
    with pytest.raises(ShapeError):
        itf.to_saved_model(model, variables, tmp_path / "bad_shape", (5, 5, 1))
    assert list(tmp_path.iterdir()) == []

    real_save = tf.saved_model.save

    def save_then_fail(module, export_dir, **kwargs):
        real_save(module, export_dir, **kwargs)  # a complete folder exists when the failure comes
        raise RuntimeError("disk full")
    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        itf.to_saved_model(model, variables, tmp_path / "exported", input_shape)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(tf.saved_model, "save", real_save)
    itf.to_saved_model(model, variables, tmp_path / "exported", input_shape)
    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):  # a failed re-export keeps the previous folder whole
        itf.to_saved_model(model, _variables(model, input_shape, seed=3), tmp_path / "exported", input_shape)
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]
    x = np.ones((1,) + input_shape, np.float32)
    assert np.abs(itf.load_saved_model_outputs(tmp_path / "exported", x) - _funcdl(model, variables, x)).max() <= TOL
