"""Keras functional models -> funcdl graphs: branches, merges, several inputs/outputs, nested models, refusals."""
import jax
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import keras as ik  # noqa: E402

L = keras.layers
TOL = 1e-5
tf.config.experimental.enable_tensor_float_32_execution(False)


def _resnet_block():
    x = keras.Input((8, 8, 3), name="image")
    y = L.Conv2D(6, 3, padding="same", name="conv1")(x)
    y = L.BatchNormalization(name="bn1")(y)
    y = L.Activation("relu", name="relu1")(y)
    y = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(y)
    y = L.BatchNormalization(name="bn2")(y)
    shortcut = L.Conv2D(6, 1, name="project")(x)
    y = L.Add(name="add")([y, shortcut])
    y = L.ReLU(name="relu2")(y)
    y = L.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, L.Dense(4, activation="softmax", name="head")(y), name="resnet_block")


def _inception():
    x = keras.Input((7, 7, 4), name="image")
    a = L.Conv2D(3, 1, activation="relu", name="a")(x)
    b = L.Conv2D(2, 3, padding="same", name="b")(x)
    c = L.Conv2D(2, 3, name="c")(L.ZeroPadding2D(1, name="c_pad")(x))
    d = L.MaxPooling2D(3, strides=1, padding="same", name="d")(x)
    y = L.Concatenate(name="concat")([a, b, c, d])
    y = L.SpatialDropout2D(0.3, name="drop")(y)
    y = L.GlobalMaxPooling2D(name="pool")(y)
    return keras.Model(x, L.Dense(3, name="head")(y), name="inception")


def _two_in_two_out():
    seq = keras.Input((5, 3), name="seq")
    vec = keras.Input((4,), name="vec")
    s = L.LSTM(4, return_sequences=True, name="lstm")(seq)
    s_mean = L.GlobalAveragePooling1D(name="mean")(s)
    s_max = L.GlobalMaxPooling1D(name="max")(s)
    v = L.Dense(4, activation="leaky_relu", name="dense")(vec)
    merged = [L.Subtract(name="sub")([s_mean, v]), L.Multiply(name="mul")([s_max, v]),
              L.Average(name="avg")([s_mean, s_max, v]), L.Maximum(name="maxi")([s_mean, v]),
              L.Minimum(name="mini")([s_max, v])]
    y = L.Concatenate(name="concat")(merged)
    first = L.Dense(3, activation="tanh", name="out_a")(y)
    second = L.Dense(2, activation="sigmoid", name="out_b")(L.Activation("linear", name="same")(v))
    return keras.Model([seq, vec], [first, second], name="two_heads")


def _nested():
    inner = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(4)], name="inner")
    chain = keras.Sequential([keras.Input((6,)), inner, L.Dense(4, activation="tanh")],
                             name="chain")
    x = keras.Input((6,), name="x")
    two = keras.Model(x, [L.Dense(3, name="p")(x), L.Dense(2, name="q")(x)], name="two")
    z = keras.Input((6,), name="z")
    p, q = two(z)
    y = L.Concatenate(name="cat")([chain(z), p, q])
    return keras.Model(z, L.Dense(2, name="head")(y), name="outer")


def _sequence_cnn():
    x = keras.Input((12, 3), name="seq")
    y = L.Conv1D(4, 3, padding="same", activation="relu", name="c1")(x)
    y = L.MaxPooling1D(2, name="p1")(y)
    y = L.Conv1D(5, 3, strides=2, name="c2")(y)
    z = L.Conv1D(5, 2, dilation_rate=2, padding="same", use_bias=False, name="c3")(L.AveragePooling1D(
        3, strides=1, padding="same", name="p2")(x))
    z = L.MaxPooling1D(3, strides=2, padding="same", name="p3")(L.SpatialDropout1D(0.2, name="drop")(z))
    y = L.Concatenate(axis=1, name="cat")([y, z])
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling1D(name="pool")(y)), name="sequence")


def _swish_steps():
    x = keras.Input((5, 3), name="seq")
    y = L.TimeDistributed(L.Dense(4, activation="tanh"), name="td")(x)
    y = L.Activation("silu", name="act")(y)
    y = L.Dense(3, activation="swish", name="d")(y)
    steps = keras.Model(x, L.GlobalMaxPooling1D(name="pool")(y), name="steps")
    return keras.Sequential([keras.Input((5, 3)), steps, L.Dense(2, activation="silu", name="head")],
                            name="swish_steps")


def _preprocessing():
    rng = np.random.default_rng(2)
    image, vec = keras.Input((6, 6, 3), name="image"), keras.Input((2,), name="vec")
    adapted = L.Normalization(name="norm")
    adapted.adapt(rng.uniform(0, 255, (16, 6, 6, 3)).astype(np.float32))
    y = L.Conv2D(2, 3, name="conv")(adapted(L.Rescaling(1 / 255, offset=-0.5, name="scale")(image)))
    v = L.Normalization(mean=[1.0, -2.0], variance=[4.0, 0.25], invert=True, name="denorm")(vec)
    y = L.Concatenate(name="cat")([L.GlobalAveragePooling2D(name="pool")(y), v])
    return keras.Model([image, vec], L.Dense(2, name="head")(y), name="preprocessing")


BUILDERS = {"preprocessing": _preprocessing, "resnet_block": _resnet_block, "sequence_cnn": _sequence_cnn,
            "swish_steps": _swish_steps, "inception": _inception, "two_in_two_out": _two_in_two_out,
            "nested": _nested}


def _randomised(keras_model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in keras_model.weights:
        if weight.name in ("mean", "variance", "count"):  # a Normalization's adapted statistics stay as they are
            continue
        if weight.name == "moving_variance":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype(np.float32))
        else:
            weight.assign((0.4 * rng.normal(size=weight.shape)).astype(np.float32))
    return keras_model


def _inputs(keras_model, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3,) + tuple(x.shape[1:])).astype(np.float32) for x in keras_model.inputs]


def _max_diff(model, variables, keras_model, xs):
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(model.apply)(variables, xs[0] if len(xs) == 1 else tuple(xs))
    theirs = keras_model(xs if len(xs) > 1 else xs[0], training=False)
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, (list, tuple)) else (theirs,)
    assert len(ours) == len(theirs)
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_functional_models_convert_to_graphs_with_keras_names(name):
    keras_model = _randomised(BUILDERS[name]())
    model, variables = ik.from_keras(keras_model)
    assert isinstance(model, nn.Graph)
    assert _max_diff(model, variables, keras_model, _inputs(keras_model)) <= TOL
    weighted = {layer.name for layer in keras_model.layers if layer.weights}
    statistics = {layer.name for layer in keras_model.layers if isinstance(layer, L.Normalization)}
    assert weighted - statistics <= set(variables["params"])  # params are named by keras layer


def test_graph_layout():
    model, variables = ik.from_keras(_randomised(_two_in_two_out()))
    assert model.input_names == ("seq", "vec")
    assert model.outputs == ("out_a", "out_b")
    assert model.node("dense.1").inputs == ("dense",)  # leaky_relu follows its Dense as a node of its own
    assert model.node("out_b").inputs == ("dense.1",)  # the linear Activation is no node at all
    assert model.node("concat").inputs == ("sub", "mul", "avg", "maxi", "mini")
    nested, _ = ik.from_keras(_randomised(_nested()))
    chain = nested.node("chain").layer  # a Sequential holding a model is a graph; the inner chain a Sequential
    assert isinstance(chain, nn.Graph) and isinstance(chain.node("inner").layer, nn.Sequential)
    assert nested.node("cat").inputs == ("chain", "two:0", "two:1")
    swish, _ = ik.from_keras(_randomised(_swish_steps()))  # silu (keras 3 saves swish as silu): funcdl's own
    steps = swish.node("steps").layer
    assert isinstance(steps.node("act").layer, nn.SiLU) and steps.node("d").layer.activation == "silu"
    assert swish.node("head").layer.activation == "silu"


@pytest.mark.parametrize("name", ["resnet_block", "two_in_two_out", "nested"])
def test_cli_converts_keras_graph_files(tmp_path, capsys, name):
    keras_model = _randomised(BUILDERS[name]())
    source, target = tmp_path / "model.keras", tmp_path / "model.funcdl"
    keras_model.save(source)
    assert main(["convert", str(source), str(target)]) == 0, capsys.readouterr().err
    model, variables, _ = fd.load_model(target)
    assert _max_diff(model, variables, keras_model, _inputs(keras_model)) <= TOL


def test_every_unsupported_layer_is_named_at_once():
    inner = keras.Sequential([keras.Input((4, 4, 2)), L.Conv2DTranspose(2, 2, strides=2, name="up")], name="inner")
    x = keras.Input((4, 4, 2))
    y = L.Cropping2D(1, name="crop")(inner(x))
    y = L.Conv3D(2, 1, name="conv3d")(L.Reshape((6, 6, 2, 1))(y))
    y = L.TimeDistributed(L.Conv2D(1, 1), name="td")(y)
    seq = L.Bidirectional(L.ConvLSTM1D(2, 1), name="bi")(L.Reshape((6, 12, 1), name="rows")(y))
    with pytest.raises(ConversionError, match=r"'inner/up' \(Conv2DTranspose\).*'crop' \(Cropping2D\).*'conv3d' "
                                              r"\(Conv3D\), 'td' \(TimeDistributed\(Conv2D\)\), 'bi' "
                                              r"\(Bidirectional\(ConvLSTM1D\)\) are not supported; supported "
                                              r"layers: Activation, Add"):
        ik.from_keras(keras.Model(x, seq))


def test_shared_layers_are_refused_and_shared_paddings_are_layers():
    x = keras.Input((4,))
    shared = L.Dense(4, name="shared")
    with pytest.raises(ConversionError, match="'shared' .*called 2 times"):
        ik.from_keras(keras.Model(x, L.Add()([shared(x), shared(L.ReLU()(x))])))
    image = keras.Input((4, 4, 1))
    padded = L.ZeroPadding2D(1, name="pad")(image)
    two = _randomised(keras.Model(image, L.Add()([L.Conv2D(1, 3)(padded), L.Conv2D(1, 3)(padded)])))
    model, variables = ik.from_keras(two)
    assert isinstance(model.node("pad").layer, nn.ZeroPadding2D)  # feeds two convs: no single one to merge into
    assert _max_diff(model, variables, two, _inputs(two)) <= TOL
