"""funcdl -> PyTorch for Bidirectional, UpSampling2D, ZeroPadding2D, PixelShuffle, Permute, RepeatVector and the
added activations: chains and graphs match within 1e-5, state dicts round-trip bit-exactly, torch.export works."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import parity, pytorch  # noqa: E402

TOL = 1e-5


def _randomised(variables, seed=0):
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [0.4 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def _check(model, shape, image=None):
    """Max abs difference of to_torch(model) from model on a batch; the state dict round trip is bit-exact."""
    x = np.random.default_rng(1).normal(size=(3,) + shape).astype(np.float32)
    variables = _randomised(model.init(jax.random.key(0), jnp.zeros((1,) + shape)))
    with jax.default_matmul_precision("highest"):
        expected = model.apply(variables, jnp.asarray(x))
    image = len(shape) == 3 if image is None else image
    with parity.full_precision():
        module = pytorch.to_torch(model, variables, shape)
        got = module(torch.from_numpy(x.transpose(0, 3, 1, 2) if image else x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    diff = max(float(np.abs(np.asarray(e) - g.detach().numpy()).max()) for e, g in zip(expected, got))
    back = pytorch.from_state_dict(pytorch.to_state_dict(model, variables, shape), model, shape)
    flat, flat_back = fd.io.flatten_variables(variables), fd.io.flatten_variables(back)
    assert flat.keys() == flat_back.keys() and all(np.array_equal(flat[k], flat_back[k]) for k in flat)
    return diff, module


RECURRENT = {"LSTM": nn.LSTM, "GRU": nn.GRU, "SimpleRNN": nn.SimpleRNN}


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_bidirectional_is_a_bidirectional_torch_module(kind, merge_mode, return_sequences):
    layer = nn.Bidirectional(RECURRENT[kind](4, return_sequences=return_sequences), merge_mode=merge_mode)
    diff, module = _check(nn.Sequential([layer]), (6, 3))
    assert diff <= TOL
    recurrent = module[0]
    assert isinstance(recurrent, getattr(torch.nn, {"SimpleRNN": "RNN"}.get(kind, kind)))
    assert recurrent.bidirectional and recurrent.batch_first
    assert {"weight_ih_l0_reverse", "bias_hh_l0_reverse"} <= set(recurrent.state_dict())


def test_image_layers_chain():
    model = nn.Sequential([nn.ZeroPadding2D(((1, 0), (2, 1))), nn.Conv2D(8, 3), nn.UpSampling2D(2),
                           nn.PixelShuffle(2), nn.UpSampling2D((2, 3), interpolation="bilinear"), nn.HardSigmoid(),
                           nn.Permute((3, 1, 2)), nn.Flatten(), nn.Dense(4, activation="mish"), nn.RepeatVector(3),
                           nn.SELU(), nn.Softsign(), nn.ELU(alpha=0.7), nn.Exponential()])
    diff, module = _check(model, (5, 4, 3))
    assert diff <= TOL
    kinds = [type(m).__name__ for m in module]
    assert {"ZeroPad2d", "Upsample", "PixelShuffle", "Hardsigmoid", "Mish", "SELU", "Softsign", "ELU"} <= set(kinds)


@pytest.mark.parametrize("order", ["torch", "tf"])
def test_pixel_shuffle_orders(order):
    model = nn.Sequential([nn.PixelShuffle(2, order=order), nn.Flatten()])
    diff, module = _check(model, (3, 4, 12))
    assert diff == 0.0  # values only move
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in module)


@pytest.mark.parametrize("name", ["relu6", "silu", "hard_swish", "elu", "selu", "hard_sigmoid", "softsign", "mish",
                                  "exponential", "swish"])
def test_dense_activations(name):
    diff, _ = _check(nn.Sequential([nn.Dense(5, activation=name)]), (4,))
    assert diff <= TOL


def test_graph_with_two_output_bidirectional_exports_and_torch_exports():
    x = nn.Input((6, 3), name="seq")
    forward, backward = nn.Bidirectional(nn.GRU(4, return_sequences=True), merge_mode=None, name="bi")(x)
    y = nn.Add(name="add")([forward, backward])
    image = nn.Reshape((2, 3, 4), name="grid")(y)
    image = nn.UpSampling2D(2, interpolation="bilinear", name="up")(nn.ZeroPadding2D(1, name="pad")(image))
    model = nn.Graph(inputs=x, outputs=(nn.Flatten(name="flat")(image), backward))
    diff, module = _check(model, (6, 3))
    assert diff <= TOL
    sample = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 6, 3)).astype(np.float32))
    program = torch.export.export(module, (sample,))
    for ours, theirs in zip(program.module()(sample), module(sample)):
        assert float((ours - theirs).abs().max()) == 0.0


def test_reverse_alone_is_refused_clearly():
    model = nn.Sequential([nn.LSTM(3, reverse=True)])
    variables = model.init(jax.random.key(0), jnp.zeros((1, 5, 2)))
    with pytest.raises(ConversionError, match="reverse=True alone has no torch module"):
        pytorch.to_torch(model, variables, (5, 2))


def test_list_supported_names_the_new_layers_in_every_direction_they_have():
    from interop import cli
    sections = dict(part.split(":\n  ", 1) for part in cli.supported_text().split("\n\n"))
    new = ("Bidirectional", "UpSampling2D", "ZeroPadding2D", "Permute", "RepeatVector")
    for title, text in sections.items():
        if not title.startswith("PyTorch"):  # from_torch's list belongs to the torch importer
            assert all(name in text for name in new), title
    for title in ("funcdl -> PyTorch (to_torch)", "funcdl -> Keras (to_keras)"):
        assert all(name in sections[title] for name in ("PixelShuffle", "SELU", "Mish", "HardSigmoid")), title
