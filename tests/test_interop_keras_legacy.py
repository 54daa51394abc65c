"""Keras 2 full-model .h5 files, written here with h5py in Keras 2's layout, read by funcdl without keras."""
import json

import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
h5py = pytest.importorskip("h5py")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError, FileFormatError  # noqa: E402
from interop import keras as ik  # noqa: E402

L = keras.layers
TOL = 1e-5
tf.config.experimental.enable_tensor_float_32_execution(False)


def _cnn():
    return keras.Sequential([keras.Input((8, 8, 2)), L.Conv2D(4, 3, activation="relu", name="conv"),
                             L.BatchNormalization(name="bn"), L.MaxPooling2D(2, name="pool"),
                             L.Dropout(0.2, name="drop"), L.Flatten(name="flat"), L.Dense(5, name="hidden"),
                             L.LeakyReLU(0.3, name="leaky"), L.Dense(3, activation="softmax", name="out")],
                            name="cnn")


def _residual():
    x = keras.Input((6, 6, 3), name="image")
    y = L.Conv2D(3, 3, name="conv")(L.ZeroPadding2D(1, name="pad")(x))
    y = L.BatchNormalization(name="bn")(y)
    y = L.Add(name="add")([y, x])
    y = L.Concatenate(name="cat")([L.GlobalAveragePooling2D(name="gap")(y), L.GlobalMaxPooling2D(name="gmp")(y)])
    return keras.Model(x, L.Dense(2, name="head")(y), name="residual")


def _recurrent():
    tokens = keras.Input((5, 3), name="seq")
    side = keras.Input((4,), name="side")
    a = L.LSTM(4, name="lstm")(tokens)
    b = L.GRU(4, name="gru")(tokens)
    c = L.SimpleRNN(4, name="rnn")(tokens)
    y = L.Add(name="add")([a, b, c, L.Dense(4, name="proj")(side)])
    return keras.Model([tokens, side], [L.Dense(2, name="out1")(y), L.Dense(1, name="out2")(a)], name="recurrent")


def _sequence():
    return keras.Sequential([keras.Input((10, 2)), L.Conv1D(3, 3, activation="relu", name="conv"),
                             L.MaxPooling1D(2, padding="same", name="pool"), L.AveragePooling1D(2, name="avg"),
                             L.Flatten(name="flat"), L.Dense(2, name="out")], name="sequence")


def _nested():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", name="in1"), L.Dense(4, name="in2")],
                             name="inner")
    x = keras.Input((6,), name="x")
    two = keras.Model(x, [L.Dense(3, name="p")(x), L.Dense(2, name="q")(x)], name="two")
    z = keras.Input((6,), name="z")
    p, q = two(z)
    y = L.BatchNormalization(name="bn")(L.Concatenate(name="cat")([inner(z), p, q]))  # axis [1] after a nested model
    return keras.Model(z, L.Dense(2, name="head")(y), name="outer")


def _preprocessing():
    rng = np.random.default_rng(2)
    image = keras.Input((6, 6, 3), name="image")
    adapted = L.Normalization(name="norm")
    adapted.adapt(rng.uniform(0, 255, (16, 6, 6, 3)).astype(np.float32))
    y = L.Conv2D(2, 3, name="conv")(adapted(L.Rescaling(1 / 255, offset=-0.5, name="scale")(image)))
    return keras.Model(image, L.Dense(2, name="head")(L.GlobalMaxPooling2D(name="pool")(y)), name="preprocessing")


def _new_layers():
    """Bidirectional (each recurrent kind, several merge modes), standalone ZeroPadding2D, UpSampling2D, Permute,
    RepeatVector, ReLU(max_value=6) and Keras 2 activation names."""
    seq = keras.Input((5, 3), name="seq")
    a = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi_lstm")(seq)
    b = L.Bidirectional(L.GRU(4, reset_after=True), merge_mode="sum", name="bi_gru")(seq)
    c = L.Bidirectional(L.SimpleRNN(4), merge_mode=None, name="bi_rnn")(L.Activation("elu", name="elu")(seq))
    y = L.Concatenate(name="cat")([L.Flatten(name="flat")(L.Permute((2, 1), name="perm")(a)), b, c[0], c[1]])
    y = L.Dense(16, activation="swish", name="dense")(y)
    image = L.Reshape((2, 2, 4), name="grid")(y)
    image = L.ZeroPadding2D(((1, 0), (0, 1)), name="pad")(L.UpSampling2D(2, interpolation="bilinear", name="up")(image))
    image = L.ReLU(max_value=6.0, name="relu6")(L.UpSampling2D(2, name="near")(image))
    y = L.RepeatVector(2, name="repeat")(L.Dense(3, activation="selu", name="head")(L.Flatten(name="f2")(image)))
    return keras.Model(seq, L.Activation("softsign", name="out")(y), name="new_layers")


def _history(node):
    """[name, node index, tensor index, {}] of every tensor a Keras 3 inbound node reads, as Keras 2 wrote them."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            return [list(node["config"]["keras_history"]) + [{}]]
        return _history(node.get("args", []))
    if isinstance(node, (list, tuple)):
        return [ref for item in node for ref in _history(item)]
    return []


def _triples(spec):
    return [list(spec)] if isinstance(spec[0], str) else [list(item) for item in spec]


def _keras2_layers(config):
    """A Keras 3 model config (dict) in place as Keras 2 wrote it: option names, inbound nodes, shapes."""
    for entry in config["layers"]:
        c = entry["config"]
        built = (entry.get("build_config") or {}).get("input_shape")
        for key in ("module", "registered_name", "build_config"):
            entry.pop(key, None)
        c["dtype"] = "float32"
        if entry["class_name"] in ("Sequential", "Functional"):
            _keras2_layers(c)
        if entry["class_name"] == "InputLayer":
            c["batch_input_shape"] = c.pop("batch_shape")
        if entry["class_name"] == "LeakyReLU":
            c["alpha"] = c.pop("negative_slope")
        if entry["class_name"] == "Conv2D":
            c.pop("groups")  # before TF 2.3
        if entry["class_name"] == "BatchNormalization":
            c["axis"] = [len(built) - 1]  # Keras 2 wrote the built axes, as positive numbers
        if entry["class_name"] == "Bidirectional":  # Keras 2: the wrapped layer's own config, no backward_layer
            c.pop("backward_layer")
            c["layer"] = {"class_name": c["layer"]["class_name"], "config": c["layer"]["config"]}
            c["layer"]["config"]["name"] = c["layer"]["config"]["name"].removeprefix("forward_")
        if "inbound_nodes" in entry:
            entry["inbound_nodes"] = [_history(node) for node in entry["inbound_nodes"]]
    if "input_layers" in config:
        config["input_layers"], config["output_layers"] = (_triples(config["input_layers"]),
                                                           _triples(config["output_layers"]))
    return config


def _keras2_config(keras_model, old_sequential=False):
    """The model_config Keras 2 wrote for ``keras_model``."""
    config = _keras2_layers(json.loads(json.dumps(keras_model.get_config())))
    if old_sequential:  # Keras 2.0-2.2: no InputLayer, the first layer holds the shape; layers as a list
        first = config["layers"].pop(0)
        config["layers"][0]["config"]["batch_input_shape"] = first["config"]["batch_input_shape"]
        config = config["layers"]
    kind = "Sequential" if isinstance(keras_model, keras.Sequential) else "Functional"
    return {"class_name": kind, "config": config}


def _write_keras2(path, keras_model, old_sequential=False):
    """A Keras 2 full-model .h5 of ``keras_model`` (its weights under model_weights/<layer>/<layer>/<w>:0)."""
    with h5py.File(path, "w") as handle:
        handle.attrs["keras_version"] = "2.4.0"
        handle.attrs["backend"] = "tensorflow"
        handle.attrs["model_config"] = json.dumps(_keras2_config(keras_model, old_sequential))
        group = handle.create_group("model_weights")
        group.attrs["layer_names"] = [layer.name.encode() for layer in keras_model.layers]
        for layer in keras_model.layers:
            layer_group = group.create_group(layer.name)
            cell = {"LSTM": "lstm_cell/", "GRU": "gru_cell/", "SimpleRNN": "simple_rnn_cell/"}.get(
                type(layer).__name__, "")
            names = [f"{layer.name}/{cell}{w.name}:0" for w in layer.weights]
            if isinstance(layer, L.Bidirectional):  # bi/forward_lstm/lstm_cell/kernel:0, then the backward copy
                cell = {"LSTM": "lstm_cell/", "GRU": "gru_cell/", "SimpleRNN": "simple_rnn_cell/"}[
                    type(layer.forward_layer).__name__]
                names = [f"{layer.name}/{half.name}/{cell}{w.name}:0" for half in (layer.forward_layer,
                                                                                     layer.backward_layer)
                         for w in half.weights]
            if isinstance(layer, keras.Model):  # a nested model: its inner layers' weights, in its own group
                names = [f"{inner.name}/{w.name}:0" for inner in layer.layers for w in inner.weights]
            layer_group.attrs["weight_names"] = [name.encode() for name in names]
            for name, weight in zip(names, layer.weights):
                layer_group.create_dataset(name, data=np.asarray(weight.numpy()))


def _randomised(keras_model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in keras_model.weights:
        if weight.name in ("mean", "variance", "count"):  # a Normalization's adapted statistics stay as they are
            continue
        scale = rng.uniform(0.5, 1.5, weight.shape) if weight.name == "moving_variance" else (
            0.4 * rng.normal(size=weight.shape))
        weight.assign(scale.astype(np.float32))
    return keras_model


def _max_diff(model, variables, keras_model, seed=1):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(3,) + tuple(x.shape[1:])).astype(np.float32) for x in keras_model.inputs]
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(model.apply)(variables, xs[0] if len(xs) == 1 else tuple(xs))
    theirs = keras_model(xs if len(xs) > 1 else xs[0], training=False)
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, (list, tuple)) else (theirs,)
    assert len(ours) == len(theirs)
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("build, old", [(_cnn, False), (_cnn, True), (_residual, False), (_recurrent, False),
                                        (_sequence, False), (_nested, False),
                                        (_preprocessing, False), (_new_layers, False)])
def test_keras2_h5_reads_without_keras(tmp_path, monkeypatch, build, old):
    keras_model = _randomised(build())
    path = tmp_path / "model.h5"
    _write_keras2(path, keras_model, old)
    monkeypatch.setattr(keras.saving, "load_model", lambda *a, **k: pytest.fail("keras loaded the file"))
    model, variables, input_shape = ik.load_keras_file(path)
    assert isinstance(model, nn.Graph)
    shapes = [tuple(x.shape[1:]) for x in keras_model.inputs]
    assert input_shape == (shapes[0] if len(shapes) == 1 else tuple(shapes))
    assert _max_diff(model, variables, keras_model) <= TOL


def test_keras2_hard_sigmoid_is_refused_not_misread(tmp_path):
    keras_model = _randomised(keras.Sequential([keras.Input((4,)), L.Dense(3, activation="hard_sigmoid")]))
    path = tmp_path / "model.h5"
    _write_keras2(path, keras_model)
    with pytest.raises(ConversionError, match=r"Keras 2's clip\(0.2 x \+ 0.5, 0, 1\)"):
        ik.load_keras_file(path)


def test_keras2_names_funcdl_cannot_hold_are_made_valid(tmp_path):
    keras_model = _randomised(_cnn())
    path = tmp_path / "model.h5"
    _write_keras2(path, keras_model)
    with h5py.File(path, "a") as handle:  # Keras 2 allowed '/' in names (models converted from Caffe use it)
        config = json.loads(handle.attrs["model_config"])
        for entry in config["config"]["layers"]:
            if entry["config"].get("name") == "hidden":
                entry["config"]["name"] = "fc/1"
        handle.attrs["model_config"] = json.dumps(config)
        group = handle["model_weights"]
        group.create_group("fc")
        group.move("hidden", "fc/1")
        group.move("fc/1/hidden", "fc/1/fc")
        group.move("fc/1/fc/bias:0", "fc/1/fc/1/bias:0")
        group.move("fc/1/fc/kernel:0", "fc/1/fc/1/kernel:0")
        group["fc/1"].attrs["weight_names"] = [b"fc/1/kernel:0", b"fc/1/bias:0"]
    model, variables, _ = ik.load_keras_file(path)
    assert model.node("fc_1").inputs == ("flat",) and set(variables["params"]["fc_1"]) == {"kernel", "bias"}
    assert _max_diff(model, variables, keras_model) <= TOL


def test_cli_converts_a_keras2_h5(tmp_path, capsys):
    keras_model = _randomised(_residual())
    source, target = tmp_path / "old.h5", tmp_path / "new.funcdl"
    _write_keras2(source, keras_model)
    assert main(["convert", str(source), str(target)]) == 0, capsys.readouterr().err
    model, variables, _ = fd.load_model(target)
    assert _max_diff(model, variables, keras_model) <= TOL


def test_odd_keras2_files_are_refused_in_one_line(tmp_path):
    keras_model = _randomised(_cnn())
    path = tmp_path / "model.h5"
    _write_keras2(path, keras_model)
    with h5py.File(path, "a") as handle:
        del handle["model_weights/hidden/hidden/bias:0"]
    with pytest.raises(FileFormatError, match="weight hidden/hidden/bias:0 is missing"):
        ik.load_keras_file(path)
    _write_keras2(path, keras_model)
    with h5py.File(path, "a") as handle:
        del handle["model_weights"]
    with pytest.raises(FileFormatError, match="no model_weights group"):
        ik.load_keras_file(path)
    _write_keras2(path, keras_model)
    with h5py.File(path, "a") as handle:
        config = json.loads(handle.attrs["model_config"])
        config["config"]["layers"][1]["class_name"] = "Conv3D"
        config["config"]["layers"][3]["class_name"] = "Cropping2D"
        handle.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ConversionError, match=r"'conv' \(Conv3D\), 'pool' \(Cropping2D\)"):
        ik.load_keras_file(path)
    _write_keras2(path, keras_model)
    with h5py.File(path, "a") as handle:
        handle.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"layers": [7]}})
    with pytest.raises(FileFormatError, match="not a Keras model config"):
        ik.load_keras_file(path)
