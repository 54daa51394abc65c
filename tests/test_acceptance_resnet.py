"""The zoo CIFAR ResNet trained with ``fd.fit``, exported to PyTorch, Keras and ``.pt2``, and imported back from
each."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import funcdl as fd  # noqa: E402
from interop import keras as keras_bridge  # noqa: E402
from interop import parity, pytorch  # noqa: E402

SHAPE = (32, 32, 3)
TOL = 1e-5


@pytest.fixture(scope="module")
def trained():
    """ResNet-8 after a few Adam steps on random CIFAR-shaped data (fixed seed), and a test batch."""
    rng = np.random.default_rng(0)
    x = rng.random((64,) + SHAPE, dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int32)
    model = fd.models.resnet(8, width=8, input_shape=SHAPE)
    history = fd.fit(model, x, y, batch_size=16, epochs=1, optimizer=fd.optim.adam(1e-2), seed=0, verbose=False)
    variables = jax.device_get(history.variables)
    assert np.isfinite(history.history["loss"][-1])
    stats = fd.io.flatten_variables(variables)["batch_stats/stem_bn/var"]
    assert not np.allclose(stats, 1.0)  # training moved the BatchNorm statistics: inference checks them
    test = rng.normal(size=(6,) + SHAPE).astype(np.float32)
    with parity.full_precision():
        expected = np.asarray(model.apply(variables, jnp.asarray(test)))
    return model, variables, test, expected


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def same_tensors(a, b):
    flat_a, flat_b = fd.io.flatten_variables(a), fd.io.flatten_variables(b)
    return flat_a.keys() == flat_b.keys() and all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_torch_module_and_pt_file(trained, tmp_path):
    model, variables, x, expected = trained
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with parity.full_precision():
        module = pytorch.to_torch(model, variables, SHAPE)
        assert max_abs(module(x_nchw).detach().numpy(), expected) <= TOL
        imported, imported_variables = pytorch.from_torch(module, x_nchw)  # the module itself, traced
        assert max_abs(imported.apply(imported_variables, jnp.asarray(x)), expected) <= TOL
    pytorch.save_torch_file(tmp_path / "resnet.pt", model, variables, SHAPE)
    _, back, _ = pytorch.load_torch_model(tmp_path / "resnet.pt", model, SHAPE)
    assert same_tensors(variables, back)
    with parity.full_precision():
        assert max_abs(model.apply(back, jnp.asarray(x)), expected) <= TOL


def test_keras_file(trained, tmp_path):
    model, variables, x, expected = trained
    keras_bridge.save_keras_file(tmp_path / "resnet.keras", model, variables, SHAPE)
    with parity.full_precision():
        loaded = keras.saving.load_model(str(tmp_path / "resnet.keras"), compile=False)
        assert max_abs(loaded(x, training=False), expected) <= TOL
        back_model, back, shape = keras_bridge.load_keras_file(tmp_path / "resnet.keras")
        assert tuple(shape) == SHAPE and same_tensors(variables, back)
        assert max_abs(back_model.apply(back, jnp.asarray(x)), expected) <= TOL


def test_pt2_file(trained, tmp_path):
    model, variables, x, expected = trained
    pytorch.save_torch_file(tmp_path / "resnet.pt2", model, variables, SHAPE)
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with parity.full_precision():
        program = torch.export.load(str(tmp_path / "resnet.pt2"))
        assert max_abs(program.module()(x_nchw).detach().numpy(), expected) <= TOL
        back_model, back, shape = pytorch.load_torch_model(tmp_path / "resnet.pt2")  # its recorded architecture
        assert back_model == model and same_tensors(variables, back)
        assert max_abs(back_model.apply(back, jnp.asarray(x)), expected) <= TOL
        # the same program as torch.export alone writes it (no funcdl metadata): read from its ATen graph
        torch.export.save(program, str(tmp_path / "plain.pt2"))
        graph_model, graph_variables, shape = pytorch.from_exported(tmp_path / "plain.pt2")
        assert tuple(shape) == SHAPE
        assert max_abs(graph_model.apply(graph_variables, jnp.asarray(x)), expected) <= TOL
