"""Keras 2 weights-only .h5 files (``save_weights``' layout, written here with h5py) read into an architecture."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
h5py = pytest.importorskip("h5py")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import keras as ik  # noqa: E402
from interop import parity  # noqa: E402

L = keras.layers
TOL = 1e-5


def _keras_cnn():
    model = keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu"), L.BatchNormalization(),
                              L.MaxPooling2D(2), L.Flatten(), L.Dense(3)])
    bn = model.layers[1]  # statistics away from 0 / 1, so inference checks them
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.normal(size=4).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, 4).astype(np.float32))
    return model


def _funcdl_cnn():
    return nn.Sequential([nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm(momentum=0.99, epsilon=1e-3),
                          nn.MaxPool2D(2), nn.Flatten(), nn.Dense(3)])


def _keras_lstm():
    return keras.Sequential([keras.Input((5,), dtype="int32"), L.Embedding(20, 6), L.LSTM(7), L.Dense(2)])


def write_keras2_weights(path, keras_model, order=None, chunks=1):
    """What Keras 2's ``save_weights_to_hdf5_group`` wrote for ``keras_model`` (weight names ``layer/kernel:0``).

    ``order``: the layer names in ``layer_names`` (default the model's); ``chunks``: split ``layer_names``
    into ``layer_names0``, ... as Keras 2 did for long lists.
    """
    layers = keras_model.layers
    names = [layer.name.encode("utf8") for layer in layers] if order is None else [n.encode() for n in order]
    with h5py.File(path, "w") as handle:
        if chunks == 1:
            handle.attrs["layer_names"] = names
        else:
            for i, chunk in enumerate(np.array_split(np.asarray(names), chunks)):
                handle.attrs[f"layer_names{i}"] = chunk
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.4.0"
        for layer in sorted(layers, key=lambda item: item.name):  # Keras 2 sorted the groups by name
            group = handle.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            # Keras 2 named a variable by layer scope (keras 3's path also starts with the model's name)
            weight_names = [f"{w.path.removeprefix(keras_model.name + '/')}:0".encode() for w in weights]
            group.attrs["weight_names"] = weight_names
            for name, weight in zip(weight_names, weights):
                group.create_dataset(name.decode(), data=np.asarray(weight.numpy()))


def _batch(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(4,) + shape).astype(np.float32)


def test_weights_into_a_funcdl_architecture_by_order(tmp_path):
    keras_model = _keras_cnn()
    write_keras2_weights(tmp_path / "cnn.h5", keras_model)
    model, variables = ik.load_keras_weights(tmp_path / "cnn.h5", _funcdl_cnn(), (8, 8, 2))
    flat = fd.io.flatten_variables(variables)
    conv, bn = keras_model.layers[0], keras_model.layers[1]
    assert np.array_equal(flat["params/layers_0/kernel"], conv.kernel.numpy())  # bit-exact
    assert np.array_equal(flat["batch_stats/layers_1/var"], bn.moving_variance.numpy())
    x = _batch((8, 8, 2))
    with parity.full_precision():
        expected = np.asarray(keras_model(x, training=False))
        assert np.abs(np.asarray(model.apply(variables, jnp.asarray(x))) - expected).max() <= TOL


def test_weights_into_a_keras_model_the_user_builds(tmp_path):
    keras_model = _keras_lstm()
    write_keras2_weights(tmp_path / "lstm.h5", keras_model)
    fresh = keras.models.clone_model(keras_model)  # same names, other weights: the file's must win
    model, variables = ik.load_keras_weights(tmp_path / "lstm.h5", fresh)
    x = np.random.default_rng(1).integers(0, 20, (4, 5)).astype(np.int32)
    with parity.full_precision():
        expected = np.asarray(keras_model(x, training=False))
        assert np.abs(np.asarray(model.apply(variables, jnp.asarray(x))) - expected).max() <= TOL


def test_layers_matched_by_name_before_order(tmp_path):
    keras_model = _keras_cnn()
    names = [layer.name for layer in keras_model.layers]
    write_keras2_weights(tmp_path / "cnn.h5", keras_model, order=names[::-1], chunks=3)
    x = nn.Input((8, 8, 2), name="image")
    conv = nn.Conv2D(4, 3, activation="relu", name=names[0])(x)
    bn = nn.BatchNorm(momentum=0.99, epsilon=1e-3, name=names[1])(conv)
    dense = nn.Dense(3, name=names[4])(nn.Flatten(name="flat")(nn.MaxPool2D(2, name="pool")(bn)))
    model = nn.Graph(inputs=x, outputs=dense)
    _, variables = ik.load_keras_weights(tmp_path / "cnn.h5", model, (8, 8, 2))
    x_batch = _batch((8, 8, 2), 2)
    with parity.full_precision():
        expected = np.asarray(keras_model(x_batch, training=False))
        assert np.abs(np.asarray(model.apply(variables, jnp.asarray(x_batch))) - expected).max() <= TOL


def test_mismatches_are_one_line_errors_naming_layer_and_shapes(tmp_path):
    write_keras2_weights(tmp_path / "cnn.h5", _keras_cnn())
    wider = nn.Sequential([nn.Conv2D(5, 3), nn.BatchNorm(), nn.MaxPool2D(2), nn.Flatten(), nn.Dense(3)])
    with pytest.raises(ConversionError) as info:
        ik.load_keras_weights(tmp_path / "cnn.h5", wider, (8, 8, 2))
    message = str(info.value)
    assert "\n" not in message and "kernel has shape (3, 3, 2, 4), layers_0 (Conv2D) needs (3, 3, 2, 5)" in message
    shorter = nn.Sequential([nn.Conv2D(4, 3), nn.Flatten(), nn.Dense(3)])
    with pytest.raises(ConversionError, match=r"3 layers with weights \(conv2d.*\) but the architecture has 2 "
                                              r"\(layers_0, layers_2\)"):
        ik.load_keras_weights(tmp_path / "cnn.h5", shorter, (8, 8, 2))


def test_cli_converts_keras2_weights_with_an_architecture(tmp_path, capsys):
    keras_model = _keras_cnn()
    write_keras2_weights(tmp_path / "cnn.h5", keras_model)
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(nn.to_config(_funcdl_cnn())))
    out = tmp_path / "cnn.funcdl"
    assert main(["convert", str(tmp_path / "cnn.h5"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds Keras weights only; pass --arch" in err
    assert main(["convert", str(tmp_path / "cnn.h5"), str(out), "--arch", str(arch), "--input-shape", "8,8,2"]) == 0
    model, variables, shape = fd.load_model(out)
    assert shape == (8, 8, 2)
    x = _batch((8, 8, 2), 3)
    with parity.full_precision():
        expected = np.asarray(keras_model(x, training=False))
        assert np.abs(np.asarray(model.apply(variables, jnp.asarray(x))) - expected).max() <= TOL
    assert jax.tree.structure(variables) == jax.tree.structure(
        jax.tree.map(np.asarray, _funcdl_cnn().init(jax.random.key(0), jnp.zeros((1, 8, 8, 2)))))
