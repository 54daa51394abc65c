"""Keras <-> funcdl: forward parity both ways, bit-identical round trips, gradients, files, refusals."""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from funcdl import nn  # noqa: E402
from funcdl.errors import ConversionError, FileFormatError, MissingDependencyError  # noqa: E402
from interop import keras as ik  # noqa: E402
from interop.keras._layers import layer_tensors  # noqa: E402
from interop.layouts import weights_to_keras  # noqa: E402

L = keras.layers
TOL = 1e-5
tf.config.experimental.enable_tensor_float_32_execution(False)


def _mlp():
    return keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(7, activation="tanh"),
                             L.Dense(5, activation="sigmoid"), L.Dense(4, activation="gelu"),
                             L.Dense(3, activation="softmax")])


def _mnist_cnn(head="softmax"):
    return keras.Sequential([keras.Input((12, 12, 1)), L.Conv2D(4, 3, activation="relu"),
                             L.Conv2D(6, 3, activation="relu"), L.MaxPooling2D(2), L.Dropout(0.25), L.Flatten(),
                             L.Dense(8, activation="relu"), L.Dropout(0.5), L.Dense(3, activation=head)])


def _strided_cnn():
    return keras.Sequential([
        keras.Input((9, 9, 4)), L.Conv2D(4, 3, strides=2, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.AveragePooling2D(2, strides=1, padding="same"), L.Conv2D(6, 2, padding="same", groups=2, use_bias=False),
        L.BatchNormalization(center=False), L.LeakyReLU(0.1), L.Conv2D(4, 2, dilation_rate=2, activation="leaky_relu"),
        L.ZeroPadding2D(((1, 0), (0, 1))), L.Conv2D(3, 2), L.MaxPooling2D(2, padding="same"),
        L.Flatten(), L.Dense(2)])


def _layer_norm_mlp():
    return keras.Sequential([keras.Input((5, 6)), L.Dense(8), L.LayerNormalization(), L.Activation("relu"),
                             L.LayerNormalization(axis=[1, 2], epsilon=1e-5), L.Reshape((-1,)), L.Dense(3),
                             L.Softmax()])


def _embedding_lstm():
    return keras.Sequential([keras.Input((7,), dtype="int32"), L.Embedding(11, 4), L.LSTM(5, return_sequences=True),
                             L.LSTM(3)])


def _gru(reset_after):
    def build():
        return keras.Sequential([keras.Input((6, 3)), L.GRU(5, reset_after=reset_after, return_sequences=True),
                                 L.GRU(4, reset_after=reset_after), L.Dense(2)])
    return build


def _simple_rnn():
    return keras.Sequential([keras.Input((6, 3)), L.SimpleRNN(5, return_sequences=True),
                             L.SimpleRNN(4, activation="relu"), L.Activation("log_softmax")])


def _functional():
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(3, 3, activation="relu")(inputs)
    x = L.AveragePooling2D(2)(x)
    x = L.Flatten()(x)
    x = L.Dense(4, activation="softplus")(x)
    x = L.Activation("tanh")(x)
    return keras.Model(inputs, L.Dense(2)(x))


BUILDERS = {"mlp": _mlp, "mnist_cnn": _mnist_cnn, "strided_cnn": _strided_cnn, "layer_norm_mlp": _layer_norm_mlp,
            "embedding_lstm": _embedding_lstm, "gru_reset_after": _gru(True), "gru_reset_before": _gru(False),
            "simple_rnn": _simple_rnn, "functional": _functional}


def _randomised(build, seed=0):
    """The keras model with every weight (BatchNorm statistics included) drawn from a fixed seed."""
    keras.utils.set_random_seed(seed)
    keras_model = build()
    rng = np.random.default_rng(seed)
    for weight in keras_model.weights:
        if weight.name == "moving_variance":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
        else:
            weight.assign((0.4 * rng.normal(size=weight.shape)).astype(np.float32))
    return keras_model


def _batch(input_shape, embedding, seed=1):
    rng = np.random.default_rng(seed)
    if embedding:
        return rng.integers(0, 11, (3,) + input_shape).astype(np.int32)
    return rng.normal(size=(3,) + input_shape).astype(np.float32)


def _funcdl(model, variables, x):
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(model.apply)(variables, x))  # one compilation, not one per primitive


def _keras(keras_model, x):
    return keras_model(x, training=False).numpy()


def _variables(model, input_shape, seed=0):
    """Variables for ``model`` drawn with numpy from a fixed seed (no XLA compilation, unlike model.init)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (0.3 * rng.normal(size=s.shape)).astype(np.float32),
                        nn.init_shapes(model, input_shape))


def _same_tree(a, b):
    flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
    for (path, x), (_, y) in zip(flat_a, flat_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), path


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_forward_parity_both_ways_and_bit_identical_round_trip(name):
    keras_model = _randomised(BUILDERS[name])
    input_shape = ik.input_shape_of(keras_model)
    model, variables = ik.from_keras(keras_model)
    x = _batch(input_shape, name == "embedding_lstm")
    y = _funcdl(model, variables, x)
    assert np.abs(y - _keras(keras_model, x)).max() <= TOL

    back = ik.to_keras(model, variables, input_shape)
    assert np.abs(_keras(back, x) - y).max() <= TOL
    again, again_variables = ik.from_keras(back)
    assert nn.to_config(again) == nn.to_config(model)
    _same_tree(again_variables, variables)


def test_layers_map_one_to_one_with_pinned_names():
    model, variables = ik.from_keras(_randomised(_strided_cnn))
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "BatchNorm", "ReLU", "AvgPool2D", "Conv2D", "BatchNorm", "LeakyReLU", "Conv2D", "LeakyReLU",
        "Conv2D", "MaxPool2D", "Flatten", "Dense"]
    assert model.layers[3].count_include_pad is False and model.layers[9].padding == ((1, 0), (0, 1))
    assert model.layers[8].negative_slope == 0.2  # keras' leaky_relu activation default
    assert jax.tree.map(np.shape, variables["batch_stats"]) == {
        "layers_1": {"mean": (4,), "var": (4,)}, "layers_5": {"mean": (6,), "var": (6,)}}
    assert set(variables["params"]["layers_5"]) == {"scale"}
    assert "bias" not in variables["params"]["layers_4"]


def test_funcdl_native_model_to_keras():
    """torch-style settings (explicit padding, count_include_pad, two RNN biases) convert exactly."""
    model = nn.Sequential([
        nn.Conv2D(4, 3, padding=1), nn.GELU(), nn.AvgPool2D(3, strides=2, padding="same"),
        nn.Conv2D(4, 3, padding=((0, 1), (1, 0)), activation="leaky_relu"), nn.ImageRows(),
        nn.LSTM(5, return_sequences=True), nn.GRU(4, return_sequences=True), nn.GRU(3, reset_after=False),
        nn.Dense(3), nn.LogSoftmax()])
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype(np.float32)
    variables = _variables(model, (8, 8, 2))
    keras_model = ik.to_keras(model, variables, (8, 8, 2))
    assert [layer.name for layer in keras_model.layers][:5] == [
        "layers_0_pad", "layers_0", "layers_1", "layers_2_pad", "layers_2"]
    assert np.abs(_keras(keras_model, x) - _funcdl(model, variables, x)).max() <= TOL
    back, back_variables = ik.from_keras(keras_model)
    assert np.abs(_funcdl(back, back_variables, x) - _funcdl(model, variables, x)).max() <= TOL


def _tf_grads(keras_model, x, weights):
    """{id(keras weight): gradient} of sum(output * weights), by tf.GradientTape."""
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(keras_model(x, training=False) * weights)
    grads = tape.gradient(loss, keras_model.trainable_weights)
    return {id(w): np.asarray(tf.convert_to_tensor(g)) for w, g in zip(keras_model.trainable_weights, grads)}


def _mnist_cnn_logits():
    # The classic CNN ending in logits: a softmax output cancels most of its gradient (sum(dy) = 0),
    # which leaves float32 rounding, not the conversion, as the difference.
    return _mnist_cnn(head="linear")


def _lstm_model():
    return keras.Sequential([keras.Input((6, 3)), L.LSTM(5, return_sequences=True), L.LSTM(4), L.Dense(2)])


@pytest.mark.parametrize("build", [_mnist_cnn_logits, _lstm_model])
def test_gradients_match(build):
    source = _randomised(build)
    model, variables = ik.from_keras(source)
    input_shape = ik.input_shape_of(source)
    keras_model = ik.to_keras(model, variables, input_shape)  # keras layer layers_{i} holds funcdl's layers_{i}
    x = _batch(input_shape, False)
    weights = np.random.default_rng(2).normal(size=_funcdl(model, variables, x).shape).astype(np.float32)

    def loss(params):
        return jnp.sum(model.apply({**variables, "params": params}, x) * weights)
    with jax.default_matmul_precision("highest"):
        grads = jax.jit(jax.grad(loss))(variables["params"])
    expected = _tf_grads(keras_model, x, weights)
    compared = 0
    for index, layer in enumerate(model.layers):
        tensors = layer_tensors({"params": grads}, index)
        if not tensors:
            continue
        if "params/recurrent_bias" in tensors:  # keras has one bias: its gradient is funcdl's `bias` gradient
            tensors["params/recurrent_bias"] = np.zeros_like(tensors["params/recurrent_bias"])
        keras_weights = {w.name: w for w in keras_model.get_layer(f"layers_{index}").trainable_weights}
        for keras_name, grad in weights_to_keras(layer, tensors).items():
            tf_grad = expected[id(keras_weights[keras_name])]
            assert np.abs(grad - tf_grad).max() <= TOL * np.abs(tf_grad).max(), (index, keras_name)
            compared += 1
    assert compared == len(keras_model.trainable_weights)


def test_keras_file_round_trip(tmp_path):
    model, variables = ik.from_keras(_randomised(_strided_cnn))
    for name in ("model.keras", "model.h5"):
        ik.save_keras_file(tmp_path / name, model, variables, (9, 9, 4))
        loaded, loaded_variables, input_shape = ik.load_keras_file(tmp_path / name)
        assert input_shape == (9, 9, 4) and nn.to_config(loaded) == nn.to_config(model)
        _same_tree(loaded_variables, variables)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5", "model.keras"]  # no temporaries left


def test_weights_file_round_trip(tmp_path):
    model, variables = ik.from_keras(_randomised(_embedding_lstm))
    path = tmp_path / "model.weights.h5"
    ik.save_keras_weights(path, model, variables, (7,))
    same_model, loaded = ik.load_keras_weights(path, model, (7,))
    assert same_model is model
    _same_tree(loaded, variables)
    # a keras architecture works too
    converted, from_keras_arch = ik.load_keras_weights(path, ik.to_keras(model, jax.tree.map(jnp.zeros_like, variables),
                                                                       (7,)))
    assert nn.to_config(converted) == nn.to_config(model)
    _same_tree(from_keras_arch, variables)
    with pytest.raises(FileFormatError, match="weights only"):
        ik.load_keras_file(path)
    smaller = nn.Sequential(model.layers[:2])  # keras alone would load the layers it has and skip the rest
    with pytest.raises(ConversionError, match="holds 7 tensors, the model has 4 weights"):
        ik.load_keras_weights(path, smaller, (7,))


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    model, variables = ik.from_keras(_randomised(_mlp))

    def broken(self, filepath, *args, **kwargs):
        open(filepath, "wb").write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(keras.Model, "save", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ik.save_keras_file(tmp_path / "model.keras", model, variables, (6,))
    assert list(tmp_path.iterdir()) == []


def _marker_lambda(marker):
    # Creates the marker whenever keras runs it: once when the model is built at save time, never on a refused load.
    return L.Lambda(lambda x: (open(marker, "a").close(), x)[1], name="marker")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_file_is_refused_without_running_code(tmp_path, suffix):
    marker = tmp_path / "marker"
    keras_model = keras.Sequential([keras.Input((3,)), L.Dense(2), _marker_lambda(str(marker))])
    path = tmp_path / f"lambda{suffix}"
    keras_model.save(str(path))
    marker.unlink()
    with pytest.raises(FileFormatError, match="Lambda layer"):
        ik.load_keras_file(path)
    assert not marker.exists()
    if suffix == ".keras":  # unsafe lets keras run it (proving the marker works); funcdl still cannot convert it
        with pytest.raises(ConversionError, match="Lambda"):
            ik.load_keras_file(path, unsafe=True)
        assert marker.exists()


def test_unsupported_layers_are_named():
    conv3d = keras.Sequential([keras.Input((4, 4, 4, 1)), L.Conv3D(2, 3), L.Flatten(), L.Dense(2)])
    with pytest.raises(ConversionError, match=r"Conv3D.*supported layers: Activation, Add, Average"):
        ik.from_keras(conv3d)
    cases = [
        (keras.Sequential([keras.Input((3, 6, 6)), L.Conv2D(2, 3, data_format="channels_first")]), "data_format"),
        (keras.Sequential([keras.Input((5, 3)), L.LSTM(4, activation="relu")]), "activation='relu'"),
        (keras.Sequential([keras.Input((5, 3)), L.GRU(4, go_backwards=True, return_sequences=True)]),
         "go_backwards"),
        (keras.Sequential([keras.Input((5,)), L.Dense(4, activation="celu")]), "activation 'celu'"),
        (keras.Sequential([keras.Input((5,)), L.ReLU(max_value=5.0)]), "max_value"),
        (keras.Sequential([keras.Input((5,)), L.Embedding(4, 2, mask_zero=True)]), "mask_zero"),
        (keras.Sequential([keras.Input((4, 4, 1)), L.ZeroPadding2D(1, data_format="channels_first")]),
         "data_format"),
    ]
    for keras_model, message in cases:
        with pytest.raises(ConversionError, match=message):
            ik.from_keras(keras_model)


def test_shared_layers_and_missing_inputs_are_refused():
    inputs = keras.Input((4,))
    shared = L.Dense(4)
    twice = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ConversionError, match="called 2 times"):
        ik.from_keras(twice)
    with pytest.raises(ConversionError, match="keras.Input"):
        ik.from_keras(keras.Sequential([L.Dense(2)]))


def test_to_keras_refuses_what_keras_cannot_express():
    for layer, message in [(nn.GELU(approximate=True), "approximate"), (nn.MaxPool2D(2, padding=1), "padding"),
                           (nn.Dense(3, activation="gelu_tanh"), "gelu_tanh")]:
        model = nn.Sequential([nn.Conv2D(2, 1), layer])
        variables = _variables(model, (4, 4, 1))
        with pytest.raises(ConversionError, match=message):
            ik.to_keras(model, variables, (4, 4, 1))
    model = nn.Sequential([nn.Dense(3), nn.BatchNorm(unbiased_running_var=True)])
    variables = _variables(model, (4,))
    with pytest.raises(ConversionError, match="unbiased_running_var"):
        ik.to_keras(model, variables, (4,))
    assert len(ik.to_keras(model, variables, (4,), strict=False).weights) == 6
    with pytest.raises(ConversionError, match="shape"):
        ik.to_keras(model, variables, (5,))


def test_missing_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'funcdl\[tf\]'"):
        ik.to_keras(nn.Sequential([nn.Dense(2)]), {}, (3,))
