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
    x = nn.Input((3,), name="x")
    norm = nn.LayerNorm(use_scale=False, name="norm")(x)  # torch's LayerNorm scales
    model = nn.Graph(inputs=x, outputs=nn.GELU(approximate=True, name="gelu")(norm))  # Keras' is exact only
    variables = model.init(jax.random.key(0), jnp.zeros((1, 3)))
    source = tmp_path / "odd.funcdl"
    fd.save_model(source, model, variables, input_shape=(3,))
    for suffix, node in ((".pt", "norm"), (".keras", "gelu")):
        assert main(["convert", str(source), str(tmp_path / f"odd{suffix}")]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and (f"graph node '{node}' (" in err or f"layer {node} (" in err), err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["odd.funcdl"]
    with pytest.raises(ConversionError, match="graph node 'norm'"):
        pytorch.to_torch(model, variables, (3,))


def test_convert_list_supported(capsys):
    assert main(["convert", "--list-supported"]) == 0
    out = capsys.readouterr().out
    for title in ("PyTorch, from_torch modules", "PyTorch, ATen ops of a torch.export .pt2",
                  "PyTorch, funcdl layers to_torch writes", "Keras, from_keras layers", "Keras, funcdl layers to_keras",
                  "TensorFlow, funcdl models to_saved_model"):
        assert title in out
    assert "_native_batch_norm_legit_no_training" in out  # the .pt2 reader's own list
    assert "Conv1d" in out and "upsample_bilinear2d" in out
    assert "Concatenate" in out and "GlobalAveragePooling2D" in out
    assert main(["convert"]) == 2
    assert "needs SOURCE and DESTINATION files (or --list-supported)" in capsys.readouterr().err


def test_readme_tables_are_the_listed_ones():
    """README's supported-layer tables are generated from the lists ``--list-supported`` prints (`make
    readme-tables` rewrites them), so they cannot drift apart."""
    from pathlib import Path

    from interop import cli
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(cli.README_BEGIN), readme.index(cli.README_END) + len(cli.README_END)
    assert readme[start:end] == cli.supported_markdown(), "run `make readme-tables`"
    for _, _, items in cli.supported_rows():
        assert items.split(",")[0].replace("|", "/") in readme[start:end]


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
    with pytest.raises(ConversionError, match="funcdl layer bn \\(BatchNorm\\) updates its running variance"):
        keras_bridge.to_keras(model, variables, (4,), strict=True)


def _torch_batchnorm_pt2(path):
    """A torch.export program of a conv + BatchNorm2d net with non-trivial running statistics."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    net.train()
    for _ in range(3):  # moves running_mean / running_var away from 0 / 1
        net(torch.randn(8, 3, 8, 8))
    net.eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 3, 8, 8),)), str(path))
    return net


def test_torch_batchnorm_converts_to_keras_with_one_note(tmp_path, capsys):
    net = _torch_batchnorm_pt2(tmp_path / "bn.pt2")
    target = tmp_path / "bn.keras"
    assert main(["convert", str(tmp_path / "bn.pt2"), str(target)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("note: torch's BatchNorm updates its running variance with the unbiased estimate")
    assert len(err.splitlines()) == 1
    x = batch(7)
    with parity.full_precision(), torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
        loaded = keras.saving.load_model(str(target), compile=False)
        assert max_abs(loaded(x, training=False), expected) <= 1e-5


def test_strict_batchnorm_flag_refuses_and_writes_nothing(tmp_path, capsys):
    _torch_batchnorm_pt2(tmp_path / "bn.pt2")
    assert main(["convert", str(tmp_path / "bn.pt2"), str(tmp_path / "bn.keras"), "--strict-batchnorm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "layers_1 is a torch BatchNorm" in err and "--strict-batchnorm" in err
    assert "=" not in err  # names CLI options, never Python keyword arguments
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bn.pt2"]
    # other destinations are not concerned: torch keeps its own rule
    assert main(["convert", str(tmp_path / "bn.pt2"), str(tmp_path / "bn.funcdl"), "--strict-batchnorm"]) == 0


def nested_multi_output():
    """A Sequential node, a Graph node with two outputs (one feeds a residual add), dict outputs."""
    x = nn.Input(SHAPE, name="image")
    stem = nn.Sequential([nn.Conv2D(4, 3, padding="same"), nn.BatchNorm(), nn.ReLU()], name="stem")(x)
    feat = nn.Input((8, 8, 4), name="feat")
    heads = nn.Graph(inputs=feat, outputs=(nn.GlobalAveragePooling2D(name="gap")(feat),
                                           nn.Conv2D(4, 1, name="proj")(feat)), name="heads")
    pooled, projected = heads(stem)
    logits = nn.Dense(3, name="fc")(nn.Flatten(name="flat")(nn.Add(name="res")([projected, stem])))
    model = nn.Graph(inputs=x, outputs={"logits": logits, "pooled": pooled})
    return model, trained_like(model, SHAPE, seed=5)


def assert_same_tensors(variables, back):
    flat, flat_back = fd.io.flatten_variables(variables), fd.io.flatten_variables(back)
    assert flat.keys() == flat_back.keys() and all(np.array_equal(flat[k], flat_back[k]) for k in flat)


def test_nested_models_and_multi_output_nodes_to_torch():
    model, variables = nested_multi_output()
    x = batch(8)
    expected = model.apply(variables, jnp.asarray(x))
    x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2))
    with parity.full_precision():
        module = pytorch.to_torch(model, variables, SHAPE)
        got = module(x_nchw)
        program = torch.export.export(module, (x_nchw,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        exported = program.module()(x_nchw[:3])
    assert set(got) == {"logits", "pooled"}
    for key in expected:
        assert max_abs(got[key].detach().numpy(), expected[key]) <= 1e-5
        assert max_abs(exported[key].detach().numpy(), got[key].detach().numpy()[:3]) == 0.0
    state = pytorch.to_state_dict(model, variables, SHAPE)
    assert {"stem.0.weight", "stem.1.running_var", "heads.proj.weight", "fc.weight"} <= set(state)
    assert_same_tensors(variables, pytorch.from_state_dict(state, model, SHAPE))


def test_nested_models_and_multi_output_nodes_to_keras_and_back(tmp_path):
    model, variables = nested_multi_output()
    x = batch(9)
    expected = model.apply(variables, jnp.asarray(x))
    with parity.full_precision():
        keras_model = keras_bridge.to_keras(model, variables, SHAPE)
        got = keras_model(x, training=False)
        assert {"stem", "heads"} <= {layer.name for layer in keras_model.layers}
        for key in expected:
            assert max_abs(got[key], expected[key]) <= 1e-5
        keras_bridge.save_keras_file(tmp_path / "nested.keras", model, variables, SHAPE)
        back_model, back, shape = keras_bridge.load_keras_file(tmp_path / "nested.keras")
        assert_same_tensors(variables, back)  # the nested models come back as nested nodes of the same names
        again = back_model.apply(back, jnp.asarray(x))
    assert max_abs(again[0], expected["logits"]) <= 1e-5 and max_abs(again[1], expected["pooled"]) <= 1e-5


@pytest.mark.parametrize("destination", ["multi.pt2", "multi.keras", "multi_savedmodel"])
def test_several_inputs_and_outputs_through_files(tmp_path, destination, capsys):
    model = two_inputs_two_outputs()
    variables = model.init(jax.random.key(2), (jnp.zeros((1,) + SHAPE), jnp.zeros((1, 5))))
    shapes = {"image": SHAPE, "extra": (5,)}
    fd.save_model(tmp_path / "multi.funcdl", model, variables, input_shape=shapes)
    target = tmp_path / destination
    assert main(["convert", str(tmp_path / "multi.funcdl"), str(target)]) == 0, capsys.readouterr().err
    image, extra = batch(10), batch(11, (5,))
    expected = model.apply(variables, (jnp.asarray(image), jnp.asarray(extra)))
    with parity.full_precision():
        if destination.endswith(".pt2"):
            got = torch.export.load(str(target)).module()(torch.from_numpy(image.transpose(0, 3, 1, 2)),
                                                          torch.from_numpy(extra))
            got = [value.detach().numpy() for value in got]
        elif destination.endswith(".keras"):
            got = keras.saving.load_model(str(target), compile=False)([image, extra], training=False)
        else:
            from interop import tensorflow as itf
            got = itf.load_saved_model_outputs(target, (image, extra))
            by_name = itf.load_saved_model_outputs(target, {"extra": extra, "image": image})
            assert all(max_abs(a, b) == 0.0 for a, b in zip(got, by_name))
            import tensorflow as tf
            stored = {v.name.split(":")[0]: v.numpy() for v in tf.saved_model.load(str(target)).funcdl_variables}
            assert_same_tensors(variables, fd.io.unflatten_variables(stored))
    assert len(got) == 2 and all(max_abs(g, e) <= 1e-5 for g, e in zip(got, expected))
    if destination.endswith("savedmodel"):
        return  # a SavedModel is written, not read
    assert main(["convert", str(target), str(tmp_path / "back.funcdl")]) == 0, capsys.readouterr().err
    back_model, back, back_shapes = fd.load_model(tmp_path / "back.funcdl")
    assert_same_tensors(variables, back)
    if not isinstance(back_shapes, dict):  # Keras records the shapes in input order
        back_shapes = dict(zip(back_model.input_names, back_shapes))
    assert {name: tuple(shape) for name, shape in back_shapes.items()} == shapes


def test_graph_to_saved_model_matches():
    model, variables = small_resnet()
    import tempfile

    from interop import tensorflow as itf
    x = batch(12)
    with tempfile.TemporaryDirectory() as folder:
        itf.to_saved_model(model, variables, f"{folder}/resnet", SHAPE)
        got = itf.load_saved_model_outputs(f"{folder}/resnet", x)
    with parity.full_precision():
        expected = np.asarray(model.apply(variables, jnp.asarray(x)))
    assert max_abs(got, expected) <= 1e-5
