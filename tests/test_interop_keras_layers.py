"""Keras <-> funcdl for Bidirectional, UpSampling2D, ZeroPadding2D, Permute, RepeatVector, PixelShuffle and
every Keras activation name funcdl has: import (chains, graphs, nested, files), export, bit-exact round trips."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from test_interop_keras_graph import _inputs  # noqa: E402
from test_interop_keras_graph import _max_diff as max_diff  # noqa: E402

from funcdl import nn  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import keras as ik  # noqa: E402

L = keras.layers
TOL = 1e-5
tf.config.experimental.enable_tensor_float_32_execution(False)
ACTIVATIONS = ["elu", "selu", "relu6", "hard_sigmoid", "softsign", "mish", "swish", "silu", "hard_swish",
               "hard_silu", "exponential", "linear", "gelu", "softplus", "tanh", "sigmoid", "relu"]
RECURRENT = {"LSTM": L.LSTM, "GRU": L.GRU, "SimpleRNN": L.SimpleRNN}


def _randomised(keras_model, seed=0, scale=0.4):
    rng = np.random.default_rng(seed)
    for weight in keras_model.weights:
        weight.assign((scale * rng.normal(size=weight.shape)).astype(np.float32))
    return keras_model


def _max_diff(model, variables, keras_model, xs=None):
    return max_diff(model, variables, keras_model, _inputs(keras_model) if xs is None else xs)


def _image_chain():
    return keras.Sequential([
        keras.Input((5, 6, 4)), L.ZeroPadding2D(((1, 2), (0, 1))), L.Conv2D(4, 3, padding="same"),
        L.UpSampling2D(2), L.Conv2D(3, 3), L.UpSampling2D((2, 3), interpolation="bilinear"), L.ZeroPadding2D(1),
        L.ReLU(max_value=6.0), L.ELU(alpha=0.5), L.Permute((3, 1, 2)), L.Flatten(), L.Dense(4, activation="selu"),
        L.RepeatVector(3), L.Activation("mish")], name="image_chain")


def _graph(kind, merge_mode, return_sequences):
    x = keras.Input((6, 4), name="seq")
    y = L.Bidirectional(RECURRENT[kind](5, return_sequences=return_sequences), merge_mode=merge_mode,
                        name="bi")(x)
    if merge_mode is None:
        y = L.Concatenate(name="cat")([y[1], y[0]])
    y = L.Dense(3, activation="hard_sigmoid", name="head")(y)
    return keras.Model(x, y, name=f"bi_{kind}")


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_imports(kind, merge_mode, return_sequences):
    keras_model = _randomised(_graph(kind, merge_mode, return_sequences))
    model, variables = ik.from_keras(keras_model)
    assert _max_diff(model, variables, keras_model) <= TOL
    layer = model.node("bi").layer if isinstance(model, nn.Graph) else model.layers[0]
    assert isinstance(layer, nn.Bidirectional) and layer.merge_mode == merge_mode
    assert type(layer.layer).__name__ == kind and layer.layer.return_sequences == return_sequences


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_bidirectional_chain_exports_and_round_trips_bit_exactly(kind):
    options = {"reset_after": False} if kind == "GRU" else {}
    keras_model = _randomised(keras.Sequential([
        keras.Input((6, 4)), L.Bidirectional(RECURRENT[kind](5, return_sequences=True, **options)),
        L.Bidirectional(RECURRENT[kind](3, **options), merge_mode="ave")]))
    model, variables = ik.from_keras(keras_model)
    assert isinstance(model, nn.Sequential) and _max_diff(model, variables, keras_model) <= TOL
    exported = ik.to_keras(model, variables, (6, 4))
    assert _max_diff(model, variables, exported) <= TOL
    again, back = ik.from_keras(exported)
    assert nn.to_config(again) == nn.to_config(model)
    jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_image_layers_import_export_and_round_trip():
    keras_model = _randomised(_image_chain(), scale=0.1)  # outputs of size ~1: float32 rounding well below TOL
    model, variables = ik.from_keras(keras_model)
    kinds = [type(layer).__name__ for layer in model.layers]
    # a ZeroPadding2D before a 'same' conv (or anything but a 'valid' one) is a layer of its own
    assert kinds[:7] == ["ZeroPadding2D", "Conv2D", "UpSampling2D", "Conv2D", "UpSampling2D", "ZeroPadding2D",
                         "ReLU6"], kinds
    assert _max_diff(model, variables, keras_model) <= TOL
    exported = ik.to_keras(model, variables, (5, 6, 4))
    assert _max_diff(model, variables, exported) <= TOL
    again, back = ik.from_keras(exported)
    assert nn.to_config(again) == nn.to_config(model)
    jax.tree.map(np.testing.assert_array_equal, back, variables)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_keras_activation_name_imports_in_layers_and_as_a_layer(name):
    keras_model = _randomised(keras.Sequential([keras.Input((7,)), L.Dense(6, activation=name),
                                                L.Activation(name), L.Dense(2)]))
    span = 0.5 if name == "exponential" else 4.0  # exp(exp(x)) overflows float32 beyond a few units
    x = [np.linspace(-span, span, 21, dtype=np.float32).reshape(3, 7)]
    model, variables = ik.from_keras(keras_model)
    assert _max_diff(model, variables, keras_model, x) <= TOL
    assert _max_diff(model, variables, ik.to_keras(model, variables, (7,)), x) <= TOL


def test_new_layers_in_graphs_and_nested_models_and_files(tmp_path):
    inner = keras.Sequential([keras.Input((4, 4, 8)), L.UpSampling2D(2, interpolation="bilinear"),
                              L.Activation("softsign")], name="inner")
    x = keras.Input((4, 4, 8), name="image")
    a = inner(x)
    b = L.ZeroPadding2D(((2, 2), (2, 2)), name="pad")(L.Conv2D(8, 1, name="squeeze")(x))
    b = L.Conv2D(8, 3, padding="same", name="conv")(b)  # a ZeroPadding2D before a 'same' conv stays a layer
    b = L.Cropping2D(((0, 0), (0, 0)), name="crop")(b) if False else b
    y = L.Add(name="add")([a, L.Permute((2, 1, 3), name="swap")(b)])
    keras_model = _randomised(keras.Model(x, y, name="graph"))
    model, variables = ik.from_keras(keras_model)
    assert isinstance(model.node("pad").layer, nn.ZeroPadding2D) and model.node("conv").inputs == ("pad",)
    assert _max_diff(model, variables, keras_model) <= TOL
    for suffix in (".keras", ".h5"):
        keras_model.save(tmp_path / f"m{suffix}")
        loaded, loaded_variables, shape = ik.load_keras_file(tmp_path / f"m{suffix}")
        assert shape == (4, 4, 8) and _max_diff(loaded, loaded_variables, keras_model) <= TOL


def test_graphs_with_new_layers_export():
    x = nn.Input((6, 4), name="seq")
    forward, backward = nn.Bidirectional(nn.GRU(5, return_sequences=True), merge_mode=None, name="bi")(x)
    y = nn.Concatenate(name="cat")([backward, forward])
    y = nn.HardSwish(name="act")(nn.Dense(8, name="dense")(y))
    image = nn.PixelShuffle(2, name="shuffle")(nn.Reshape((3, 4, 4), name="grid")(nn.Flatten(name="flat")(y)))
    model = nn.Graph(inputs=x, outputs=(nn.RepeatVector(2, name="repeat")(nn.Flatten(name="f2")(image)), forward))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 4)))
    exported = ik.to_keras(model, variables, (6, 4))
    assert _max_diff(model, variables, exported) <= TOL
    for order in ("torch", "tf"):
        chain = nn.Sequential([nn.PixelShuffle(2, order=order)])
        assert _max_diff(chain, {}, ik.to_keras(chain, {}, (3, 4, 8))) <= TOL


def test_unsupported_recurrent_settings_are_refused():
    backwards = keras.Sequential([keras.Input((4, 3)), L.LSTM(2, go_backwards=True, return_sequences=True)])
    with pytest.raises(ConversionError, match="go_backwards=True with return_sequences=True"):
        ik.from_keras(backwards)
    other = L.Bidirectional(L.LSTM(2), backward_layer=L.LSTM(3, go_backwards=True))
    with pytest.raises(ConversionError, match="backward_layer that is not the forward layer read backwards"):
        ik.from_keras(keras.Sequential([keras.Input((4, 3)), other]))
    with pytest.raises(ConversionError, match="reverse=True with return_sequences=True"):
        ik.to_keras(nn.Sequential([nn.LSTM(2, return_sequences=True, reverse=True)]),
                    nn.Sequential([nn.LSTM(2, return_sequences=True, reverse=True)]).init(
                        jax.random.key(0), jnp.zeros((1, 4, 3))), (4, 3))


def test_keras_go_backwards_without_sequences_is_reverse():
    keras_model = _randomised(keras.Sequential([keras.Input((5, 3)), L.GRU(4, go_backwards=True)]))
    model, variables = ik.from_keras(keras_model)
    assert model.layers[0].reverse and _max_diff(model, variables, keras_model) <= TOL
    assert _max_diff(model, variables, ik.to_keras(model, variables, (5, 3))) <= TOL
