"""Initialisers by Keras's names, with Keras's default arguments."""
import jax
import numpy as np
import pytest

from funcdl import nn
from funcdl.errors import ConfigError, ShapeError
from funcdl.nn._init import canonical, initializer

SHAPE = (3, 3, 64, 128)  # a Conv2D kernel: fan_in 576, fan_out 1152
FAN_IN, FAN_OUT = 3 * 3 * 64, 3 * 3 * 128

# name -> (expected std, expected bound of |w|); Keras: truncated normals are cut at 2 standard deviations
# of the untruncated normal (whose std is then 0.87962566 of it), uniforms U(-b, b) have std b / sqrt(3)
EXPECTED = {
    "random_normal": (0.05, None),
    "random_uniform": (0.05 / np.sqrt(3), 0.05),
    "truncated_normal": (0.05 * 0.87962566, 0.1),
    "glorot_uniform": (np.sqrt(2 / (FAN_IN + FAN_OUT)), np.sqrt(6 / (FAN_IN + FAN_OUT))),
    "glorot_normal": (np.sqrt(2 / (FAN_IN + FAN_OUT)), 2 * np.sqrt(2 / (FAN_IN + FAN_OUT)) / 0.87962566),
    "he_uniform": (np.sqrt(2 / FAN_IN), np.sqrt(6 / FAN_IN)),
    "he_normal": (np.sqrt(2 / FAN_IN), 2 * np.sqrt(2 / FAN_IN) / 0.87962566),
    "lecun_uniform": (np.sqrt(1 / FAN_IN), np.sqrt(3 / FAN_IN)),
    "lecun_normal": (np.sqrt(1 / FAN_IN), 2 * np.sqrt(1 / FAN_IN) / 0.87962566),
    "variance_scaling": (np.sqrt(1 / FAN_IN), 2 * np.sqrt(1 / FAN_IN) / 0.87962566),
    "torch": (1 / np.sqrt(FAN_IN) / np.sqrt(3), 1 / np.sqrt(FAN_IN)),
}


@pytest.mark.parametrize("name", EXPECTED)
def test_keras_names_have_keras_default_spread(name):
    w = np.asarray(initializer(name, FAN_IN)(jax.random.key(0), SHAPE))
    std, bound = EXPECTED[name]
    assert abs(w.mean()) < 0.02 * std and w.std() == pytest.approx(std, rel=0.02)
    if bound is not None:
        assert np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(w).max() > 0.95 * bound


@pytest.mark.parametrize("name", ["random_normal", "random_uniform", "truncated_normal", "he_normal", "he_uniform",
                                  "lecun_normal", "lecun_uniform", "glorot_normal", "glorot_uniform",
                                  "variance_scaling", "orthogonal"])
def test_same_spread_as_keras_itself(name):
    keras = pytest.importorskip("keras")
    ours = np.asarray(initializer(name, FAN_IN)(jax.random.key(1), (576, 128)))
    theirs = np.asarray(type(keras.initializers.get(name))(seed=1)((576, 128)))
    assert ours.std() == pytest.approx(theirs.std(), rel=0.03)
    assert np.abs(ours).max() == pytest.approx(np.abs(theirs).max(), rel=0.15)


def test_orthogonal_columns_are_orthonormal():
    w = np.asarray(initializer("orthogonal", 64)(jax.random.key(0), (256, 64)))
    np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-5)


def test_constants_identity_and_class_names():
    key = jax.random.key(0)
    assert (np.asarray(initializer("ones", 3)(key, (3, 2))) == 1).all()
    for name in ("zeros", "zero", "constant", "Zeros", "Constant"):
        assert (np.asarray(initializer(name, 3)(key, (3, 2))) == 0).all()
    np.testing.assert_array_equal(initializer("identity", 3)(key, (3, 3)), np.eye(3))
    assert canonical("HeNormal") == canonical("he_normal") == "he_normal"
    assert canonical("RandomUniform") == canonical("uniform") == "random_uniform"
    with pytest.raises(ShapeError, match="2-D kernels only"):
        initializer("identity", 3)(key, (3, 3, 2, 2))
    with pytest.raises(ConfigError, match="unknown initializer 'kaiming'"):
        initializer("kaiming", 3)


def test_layers_take_the_names():
    x = np.ones((1, 6, 6, 2), np.float32)
    model = nn.Sequential([nn.Conv2D(4, 3, kernel_init="he_normal", bias_init="ones"), nn.Flatten(),
                           nn.Dense(3, kernel_init="RandomNormal", bias_init="constant")])
    params = model.init(jax.random.key(0), x)["params"]
    assert (np.asarray(params["layers_0"]["bias"]) == 1).all() and (np.asarray(params["layers_2"]["bias"]) == 0).all()
    restored = nn.from_config(nn.to_config(model))
    assert restored.layers[2].kernel_init == "RandomNormal"
