"""On a GPU (opt-in: ``pytest -m gpu`` on a machine with one): the same training, compiled for the GPU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def gpu():
    if jax.default_backend() != "gpu":
        pytest.fail(f"-m gpu selects tests that need a GPU; jax's backend is {jax.default_backend()!r} "
                    "(install the CUDA build: pip install -e '.[cuda]')")


def test_conv2d_uses_xla_on_the_gpu_and_matches_the_matmul_form():
    assert nn.conv_implementation("auto") == "xla"
    x = jax.random.normal(jax.random.key(0), (4, 12, 12, 3))
    xla, matmul = (nn.Conv2D(8, 3, padding="same", implementation=name) for name in ("xla", "matmul"))
    variables = xla.init(jax.random.key(1), x)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(xla.apply(variables, x), matmul.apply(variables, x), atol=1e-5, rtol=1e-5)


def test_fit_trains_on_the_gpu_without_recompiles():
    data = fd.data.load("digits", validation_split=0.1, seed=0)
    history = fd.fit(fd.models.cnn(), data.train, validation_data=data.validation, epochs=3, batch_size=64,
                     augment=True, log_every=5, verbose=False)
    assert history.compiles_after_first_epoch == 0 and history.loop == "scan"
    assert history.history["val_accuracy"][-1] > 0.8
    assert {device.platform for device in jax.tree.leaves(history.variables)[0].devices()} == {"gpu"}


def test_bf16_and_fp32_reach_the_same_accuracy():
    data = fd.data.load("digits", validation_split=0.1, seed=0)
    runs = {precision: fd.fit(fd.models.mlp(), data.train, validation_data=data.validation, epochs=10,
                              precision=precision, verbose=False) for precision in ("fp32", "bf16")}
    accuracy = {name: run.history["val_accuracy"][-1] for name, run in runs.items()}
    assert abs(accuracy["fp32"] - accuracy["bf16"]) < 0.05, accuracy
    assert jnp.asarray(jax.tree.leaves(runs["bf16"].variables)[0]).dtype == jnp.float32
