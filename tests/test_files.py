"""funcdl's model file: round trips, recorded input shape and dtype, and mismatched tensors."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.errors import FileFormatError, ShapeError


@pytest.mark.parametrize("model, input_shape, dtype", [
    (fd.models.cnn(), (28, 28, 1), jnp.float32),
    (fd.nn.Sequential([fd.nn.Embedding(10, 4), fd.nn.LSTM(3), fd.nn.BatchNorm(), fd.nn.Dense(2)]), (5,), jnp.int32),
])
def test_round_trip_is_bit_identical(tmp_path, model, input_shape, dtype):
    variables = model.init(jax.random.key(0), jnp.zeros((1,) + input_shape, dtype))
    fd.save_model(tmp_path / "m.funcdl", model, variables, input_shape=input_shape)
    loaded, again, shape = fd.load_model(tmp_path / "m.funcdl")
    assert shape == input_shape and fd.nn.to_config(loaded) == fd.nn.to_config(model)
    assert fd.nn.input_dtype(loaded) == dtype
    for name, value in fd.io.model_file.flatten_variables(variables).items():
        np.testing.assert_array_equal(fd.io.model_file.flatten_variables(again)[name], value)
    assert [p.name for p in tmp_path.iterdir()] == ["m.funcdl"]  # no temporary file left


def test_tensors_must_match_the_architecture(tmp_path):
    """A file whose tensors are another model's (written by hand: save_model refuses to write one)."""
    from safetensors.numpy import save_file
    model = fd.models.mlp()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    header = {"funcdl.format": "1", "funcdl.input_shape": "[28, 28, 1]",
              "funcdl.architecture": json.dumps(fd.nn.to_config(fd.models.mlp(num_classes=3)))}
    save_file(fd.io.model_file.flatten_variables(variables), str(tmp_path / "m.funcdl"), metadata=header)
    with pytest.raises(FileFormatError, match=r"tensor params/layers_3/(bias|kernel) has shape \((128, )?10,?\), "
                                              r"the architecture needs \((128, )?3,?\)"):
        fd.load_model(tmp_path / "m.funcdl")


def test_save_model_refuses_another_models_variables_before_writing(tmp_path):
    variables = fd.models.mlp().init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    with pytest.raises(ShapeError, match=r"save_model: variables: tensor params/layers_3/(bias|kernel) has shape"):
        fd.save_model(tmp_path / "m.funcdl", fd.models.mlp(num_classes=3), variables, input_shape=(28, 28, 1))
    assert list(tmp_path.iterdir()) == []


def test_weights_without_architecture(tmp_path):
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(FileFormatError, match="no funcdl architecture"):
        fd.load_model(tmp_path / "w.safetensors")
