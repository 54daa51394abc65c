"""Graph models exported to PyTorch (a module whose forward follows the graph) and to Keras (a functional model)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

import funcdl as fd  # noqa: E402
from funcdl import nn  # noqa: E402
from funcdl.cli import main  # noqa: E402
from funcdl.errors import ConversionError  # noqa: E402
from interop import keras as keras_bridge  # noqa: E402
from interop import parity, pytorch  # noqa: E402

SHAPE = (8, 8, 3)


def trained_like(model, input_shape, seed=0):
    """Variables with non-trivial BatchNorm statistics (as after training), so inference checks them."""
    variables = model.init(jax.random.key(seed), jnp.zeros((1,) + input_shape))
    stats = variables.get("batch_stats")
    if stats:
        leaves, tree = jax.tree.flatten(stats)
        keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
        leaves = [jax.random.uniform(k, v.shape, minval=0.5, maxval=1.5) for k, v in zip(keys, leaves)]
        variables = {**variables, "batch_stats": jax.tree.unflatten(tree, leaves)}
    return variables


def small_resnet():
    model = fd.models.resnet(8, width=4, input_shape=SHAPE)
    return model, trained_like(model, SHAPE)


def two_branch_concat():
    """Conv branches of 3 and 5 channels joined on channels, global max pool, a multiplied gate, softmax."""
    x = nn.Input(SHAPE, name="image")
    left = nn.Conv2D(3, 3, padding="same", activation="relu", name="left")(x)
    right = nn.AvgPool2D(2, strides=1, padding="same", name="pool")(nn.Conv2D(5, 1, name="right")(x))
    joined = nn.Concatenate(axis=-1, name="join")([left, right])
    pooled = nn.GlobalMaxPooling2D(name="gmax")(joined)
    gate = nn.Sigmoid(name="gate")(nn.Dense(8, name="gate_dense")(pooled))
    scaled = nn.Multiply(name="scale")([gate, nn.Dense(8, name="value")(pooled)])
    flat = nn.Flatten(name="flat")(nn.MaxPool2D(2, name="mp")(joined))
    mixed = nn.Average(name="mix")([scaled, nn.Dense(8, name="from_map")(flat)])
    model = nn.Graph(inputs=x, outputs=nn.Softmax(name="probs")(nn.Dense(4, name="logits")(mixed)))
    return model, trained_like(model, SHAPE, seed=3)


def two_inputs_two_outputs():
    image, extra = nn.Input(SHAPE, name="image"), nn.Input((5,), name="extra")
    features = nn.GlobalAveragePooling2D(name="gap")(nn.Conv2D(6, 3, name="conv")(image))
    both = nn.Concatenate(name="both")([features, nn.Dense(6, name="embed")(extra)])
    return nn.Graph(inputs=[image, extra], outputs=(nn.Dense(3, name="a")(both),
                                                    nn.Subtract(name="b")([features, features])))


def batch(seed=1, shape=SHAPE, n=5):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("build", [small_resnet, two_branch_concat])
def test_graph_to_torch_matches_and_state_dict_round_trips(build):
    model, variables = build()
    x = batch()
    expected = np.asarray(model.apply(variables, jnp.asarray(x)))
    with parity.full_precision():
        module = pytorch.to_torch(model, variables, SHAPE)
        assert isinstance(module, torch.nn.Module) and module.training is False
        actual = module(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
    assert max_abs(actual, expected) <= 1e-5
    names = {node.name.replace(".", "_") for node in model.nodes}
    assert {name.split(".")[0] for name in module.state_dict()} <= names  # submodules named after nodes
    state = pytorch.to_state_dict(model, variables, SHAPE)
    back = pytorch.from_state_dict(state, model, SHAPE)
    flat, flat_back = fd.io.flatten_variables(variables), fd.io.flatten_variables(back)
    assert flat.keys() == flat_back.keys() and all(np.array_equal(flat[k], flat_back[k]) for k in flat)


def test_resnet_state_dict_names_follow_the_nodes():
    model, variables = small_resnet()
    state = pytorch.to_state_dict(model, variables, SHAPE)
    assert state["stem_conv.weight"].shape == (4, 3, 3, 3)
    assert {"stem_bn.weight", "stem_bn.bias", "stem_bn.running_mean", "stem_bn.running_var",
            "logits.weight", "logits.bias"} <= set(state)


@pytest.mark.parametrize("build", [small_resnet, two_branch_concat])
def test_graph_to_keras_is_a_functional_model_that_matches(build):
    model, variables = build()
    x = batch(2)
    expected = np.asarray(model.apply(variables, jnp.asarray(x)))
    with parity.full_precision():
        keras_model = keras_bridge.to_keras(model, variables, SHAPE)
        actual = np.asarray(keras_model(x, training=False))
    assert max_abs(actual, expected) <= 1e-5
    assert not isinstance(keras_model, keras.Sequential)
    layer_names = {layer.name for layer in keras_model.layers}
    assert {node.name for node in model.nodes} <= layer_names


def test_several_inputs_and_outputs_to_torch_and_keras():
    model = two_inputs_two_outputs()
    shapes = {"image": SHAPE, "extra": (5,)}
    variables = model.init(jax.random.key(0), (jnp.zeros((1,) + SHAPE), jnp.zeros((1, 5))))
    image, extra = batch(4), batch(5, (5,))
    expected = model.apply(variables, (jnp.asarray(image), jnp.asarray(extra)))
    with parity.full_precision():
        module = pytorch.to_torch(model, variables, shapes)
        got = module(torch.from_numpy(image.transpose(0, 3, 1, 2)), torch.from_numpy(extra))
        keras_model = keras_bridge.to_keras(model, variables, shapes)
        got_keras = keras_model([image, extra], training=False)
    for ours, theirs, keras_out in zip(expected, got, got_keras):
        assert max_abs(theirs.detach().numpy(), ours) <= 1e-5 and max_abs(keras_out, ours) <= 1e-5


def test_graph_module_exports_with_torch_export():
    model, variables = small_resnet()
    module = pytorch.to_torch(model, variables, SHAPE)
    x = torch.from_numpy(batch(3).transpose(0, 3, 1, 2))
    program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    with parity.full_precision():
        assert max_abs(program.module()(x).detach().numpy(), module(x).detach().numpy()) == 0.0


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".safetensors", ".keras"])
def test_convert_resnet_file(tmp_path, suffix, capsys):
    model, variables = small_resnet()
    source = tmp_path / "resnet.funcdl"
    fd.save_model(source, model, variables, input_shape=SHAPE)
    target = tmp_path / f"resnet{suffix}"
    assert main(["convert", str(source), str(target)]) == 0, capsys.readouterr().err
    x = batch(6)
    expected = np.asarray(model.apply(variables, jnp.asarray(x)))
    with parity.full_precision():
        if suffix == ".keras":
            loaded = keras.saving.load_model(str(target), compile=False)
            assert max_abs(loaded(x, training=False), expected) <= 1e-5
            return
        if suffix == ".pt2":
            program = torch.export.load(str(target))
            got = program.module()(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
            assert max_abs(got, expected) <= 1e-5
        # .pt needs the architecture; .pt2 and .safetensors carry it: back to funcdl, tensors bit-exact
        args = ["--arch", str(source)] if suffix == ".pt" else []
        back = tmp_path / "back.funcdl"
        assert main(["convert", str(target), str(back), *args]) == 0, capsys.readouterr().err
    model_back, variables_back, _ = fd.load_model(back)
    flat, flat_back = fd.io.flatten_variables(variables), fd.io.flatten_variables(variables_back)
    assert flat.keys() == flat_back.keys() and all(np.array_equal(flat[k], flat_back[k]) for k in flat)
    assert nn.to_config(model_back) == nn.to_config(model)


def test_unsupported_graph_node_names_itself_and_nothing_is_written(tmp_path, capsys):
    inner = nn.Sequential([nn.Dense(3)])
    x = nn.Input((3,), name="x")
    model = nn.Graph(inputs=x, outputs=nn.Add(name="add")([inner(x), x]))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    source = tmp_path / "nested.funcdl"
    fd.save_model(source, model, variables, input_shape=(3,))
    for suffix in (".pt", ".keras"):
        assert main(["convert", str(source), str(tmp_path / f"nested{suffix}")]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "graph node 'sequential' (Sequential)" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["nested.funcdl"]
    with pytest.raises(ConversionError, match="graph node 'sequential'"):
        pytorch.to_torch(model, variables, (3,))


def test_convert_list_supported(capsys):
    assert main(["convert", "--list-supported"]) == 0
    out = capsys.readouterr().out
    for title in ("PyTorch -> funcdl", "PyTorch .pt2 -> funcdl", "funcdl -> PyTorch", "Keras -> funcdl",
                  "funcdl -> Keras"):
        assert title in out
    assert "Conv1d" in out and "upsample_bilinear2d" in out
    assert "Concatenate" in out and "GlobalAveragePooling2D" in out
    assert main(["convert"]) == 2
    assert "needs SOURCE and DESTINATION files (or --list-supported)" in capsys.readouterr().err


def test_listed_torch_export_layers_are_the_planners():
    from interop import cli
    from interop.pytorch import _plan
    assert cli._TO_TORCH == _plan.SUPPORTED


def test_refusals_name_the_node_in_one_line():
    x = nn.Input((4,), name="x")
    model = nn.Graph(inputs=x, outputs=nn.LayerNorm(use_scale=False, name="norm")(x))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(ConversionError, match="^graph node 'norm' \\(LayerNorm\\): torch has no LayerNorm") as info:
        pytorch.to_torch(model, variables, (4,))
    assert "\n" not in str(info.value) and "layers_0" not in str(info.value)
    model = nn.Graph(inputs=x, outputs=nn.BatchNorm(unbiased_running_var=True, name="bn")(x))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(ConversionError, match="funcdl layer bn \\(BatchNorm\\): unbiased_running_var=True"):
        keras_bridge.to_keras(model, variables, (4,))
