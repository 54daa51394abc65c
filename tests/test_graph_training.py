"""Graphs through the training stack: the zoo ResNet, fit/evaluate/predict, own loops, precision, the loop
choice, sweeps, data parallelism, model files (old and new) and the CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn, precision
from funcdl import sweep as sweep_lib
from funcdl.cli import main
from funcdl.errors import ConfigError
from funcdl.io import read_header
from funcdl.train import TrainState, make_train_step

OLD_FILE = Path(__file__).parent / "data" / "model_files" / "sequential_v1.funcdl"


def small_resnet():
    return fd.models.resnet(depth=8, width=4)


def branchy():
    """Flatten, then a Dense+Dropout branch and a Dense+BatchNorm branch, added, then Dense(10)."""
    x = nn.Input((8, 8, 1), name="image")
    flat = nn.Flatten(name="flat")(x)
    left = nn.Dropout(0.2, name="drop")(nn.Dense(8, name="left")(flat))
    right = nn.BatchNorm(name="bn")(nn.Dense(8, name="right")(flat))
    return nn.Graph(inputs=x, outputs=nn.Dense(10, name="logits")(nn.Add(name="add")([left, right])))


def two_heads():
    """One input, two outputs: class scores and a scalar regression head."""
    x = nn.Input((8, 8, 1), name="image")
    flat = nn.Flatten(name="flat")(x)
    return nn.Graph(inputs=x, outputs=(nn.Dense(10, name="classes")(flat), nn.Dense(1, name="value")(flat)))


def same_tensors(a, b):
    flat_a, flat_b = fd.io.flatten_variables(a), fd.io.flatten_variables(b)
    return flat_a.keys() == flat_b.keys() and all(
        flat_a[k].dtype == flat_b[k].dtype and np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


# -- the zoo ResNet -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, params, statistics", [(8, 78_042, 672), (20, 272_474, 1_568), (56, 855_770, 4_256)])
def test_resnet_parameter_counts(depth, params, statistics):
    variables = nn.init_shapes(fd.models.resnet(depth), (32, 32, 3))
    assert nn.count_params(variables["params"]) == params
    assert nn.count_params(variables["batch_stats"]) == statistics
    if depth == 20:  # He et al.: 0.27M (zero-padding shortcuts, 269,722; projections add 2,752)
        assert abs(params - 270_000) / 270_000 < 0.01 and params - 2_752 == 269_722


def test_resnet_structure():
    model = fd.models.resnet(8, num_classes=100, input_shape=(32, 32, 3))
    params = nn.init_shapes(model)["params"]
    assert "stage1_block1_proj_conv" not in params  # 16 -> 16 channels, stride 1: identity shortcut
    assert params["stage2_block1_proj_conv"]["kernel"].shape == (1, 1, 16, 32)
    assert model.node("stage3_block1_add").inputs == ("stage3_block1_bn2", "stage3_block1_proj_bn")
    assert nn.node_shapes(model)["stage3_block1_out"] == (8, 8, 64)
    assert nn.output_shape(model) == (100,)
    assert nn.output_shape(fd.models.resnet(20), (28, 28, 1)) == (10,)  # no declared shape: any image
    assert fd.models.get("resnet") == fd.models.resnet(20)


@pytest.mark.parametrize("depth", [9, 2, "20"])
def test_resnet_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ConfigError, match=r"resnet depth must be 6n\+2 with n >= 1"):
        fd.models.resnet(depth)


def test_resnet_trains_and_its_loss_goes_down(tiny_images):
    model = small_resnet()
    history = fd.fit(model, tiny_images, optimizer=fd.optim.adam(1e-2), epochs=4, batch_size=20, verbose=False)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert history.compiles_after_first_epoch == 0 and history.loop == "scan"
    result = fd.evaluate(model, history.variables, tiny_images)
    assert result["accuracy"] > 0.3 and result["confusion_matrix"].shape == (10, 10)
    assert fd.predict(model, history.variables, tiny_images[0][:3]).shape == (3, 10)


def test_resnet_checkpoint_resume_is_bit_identical(tiny_images, tmp_path):
    """BatchNorm statistics and every node's params survive a checkpoint: 1 + 1 epochs == 2 epochs."""
    kwargs = dict(epochs=2, batch_size=25, seed=1, verbose=False)
    whole = fd.fit(small_resnet(), tiny_images, **kwargs)
    stopped = fd.fit(small_resnet(), tiny_images, callbacks=[fd.callbacks.ModelCheckpoint(tmp_path)],
                     **{**kwargs, "epochs": 1})
    assert stopped.epochs_done == 1 and (tmp_path / "checkpoint.msgpack").is_file()
    resumed = fd.fit(small_resnet(), tiny_images, resume=tmp_path, **kwargs)
    assert resumed.epochs_done == 2 and resumed.history["loss"] == whole.history["loss"]
    assert same_tensors(jax.device_get(whole.variables), jax.device_get(resumed.variables))
    assert "stage3_block1_proj_bn" in resumed.variables["batch_stats"]


def test_graph_model_file_round_trip_is_bit_exact(tiny_images, tmp_path):
    model = small_resnet()
    variables = fd.fit(model, tiny_images, epochs=1, batch_size=50, verbose=False).variables
    fd.save_model(tmp_path / "resnet.funcdl", model, variables, input_shape=(8, 8, 1))
    loaded, loaded_variables, input_shape = fd.load_model(tmp_path / "resnet.funcdl")
    assert loaded == model and input_shape == (8, 8, 1)
    assert same_tensors(jax.device_get(variables), loaded_variables)
    assert "params/stage2_block1_proj_conv/kernel" in fd.io.flatten_variables(loaded_variables)
    x = tiny_images[0][:4]
    np.testing.assert_array_equal(loaded.apply(loaded_variables, x), model.apply(variables, x))


def test_model_file_of_a_two_input_graph_records_every_input_shape(tmp_path):
    a, b = nn.Input((4,), name="a"), nn.Input((3,), name="b")
    model = nn.Graph(inputs=[a, b], outputs=nn.Concatenate()([nn.Dense(2)(a), b]))
    variables = model.init(jax.random.key(0), (jnp.ones((1, 4)), jnp.ones((1, 3))))
    for shape in (((4,), (3,)), {"a": (4,), "b": (3,)}):
        fd.save_model(tmp_path / "two.funcdl", model, variables, input_shape=shape)
        loaded, loaded_variables, input_shape = fd.load_model(tmp_path / "two.funcdl")
        assert loaded == model and input_shape == shape and same_tensors(variables, loaded_variables)


def test_model_file_saved_by_the_first_format_loads_unchanged():
    """A Sequential (params ``layers_N``) written by funcdl before graphs existed (tests/data/model_files)."""
    model, variables, input_shape = fd.load_model(OLD_FILE)
    metadata, _ = read_header(OLD_FILE)
    assert isinstance(model, nn.Sequential) and input_shape == (8, 8, 1)
    assert sorted(variables["params"]) == ["layers_0", "layers_1", "layers_5", "layers_8"]
    assert sorted(variables["batch_stats"]) == ["layers_1"]
    x = np.array(json.loads(metadata["probe_input"]), np.float32)
    np.testing.assert_array_equal(np.asarray(model.apply(variables, x)),
                                  np.array(json.loads(metadata["probe_output"]), np.float32))
    assert json.loads(metadata["funcdl.architecture"]) == nn.to_config(model)


# -- fit, evaluate, predict and own loops -----------------------------------------------------------------------
def test_fit_evaluate_predict_refuse_several_inputs_with_one_line():
    a, b = nn.Input((4,), name="a"), nn.Input((4,), name="b")
    model = nn.Graph(inputs=[a, b], outputs=nn.Add()([nn.Dense(3)(a), nn.Dense(3)(b)]))
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int32)
    message = r"feed models with one input; this graph takes 2 \(a, b\): train it with funcdl.train.make_train_step"
    with pytest.raises(ConfigError, match=message):
        fd.fit(model, (x, y), batch_size=4, verbose=False)
    with pytest.raises(ConfigError, match=message):
        fd.fit(model, (x, y), batch_size=4, verbose=False, precision="bf16")
    with pytest.raises(ConfigError, match=message):
        fd.predict(model, {}, x)


def test_fit_refuses_several_outputs_and_predict_gives_each(tiny_images):
    model = two_heads()
    with pytest.raises(ConfigError, match=r"score models with one output; this one returns \(\(10,\), \(1,\)\) per"):
        fd.fit(model, tiny_images, batch_size=20, verbose=False)
    variables = model.init(jax.random.key(0), tiny_images[0][:1])
    classes, value = fd.predict(model, variables, tiny_images[0], batch_size=32)
    assert classes.shape == (100, 10) and value.shape == (100, 1)
    np.testing.assert_allclose(value, model.apply(variables, tiny_images[0])[1], rtol=1e-5, atol=1e-6)


def test_own_loop_trains_a_two_output_graph(tiny_images):
    """The public step builder with a loss of one's own over the two heads (weights 1 and 0.5)."""
    model, (x, y) = two_heads(), tiny_images
    target = x.reshape(len(x), -1).mean(1, keepdims=True)

    def loss(outputs, targets):
        classes, value = outputs
        labels, wanted = targets
        return fd.losses.cross_entropy(classes, labels) + 0.5 * fd.losses.mse(value, wanted)
    optimizer = fd.optim.adam(1e-2)
    step = jax.jit(make_train_step(model, loss, optimizer))
    state = TrainState.create(model.init(jax.random.key(0), x[:1]), optimizer)
    losses = []
    for i in range(60):
        batch = slice(20 * (i % 5), 20 * (i % 5) + 20)
        state, metrics = step(state, x[batch], (y[batch], target[batch]), jnp.ones(20), jax.random.key(i))
        losses.append(float(metrics.loss))
    assert losses[-1] < 0.6 * losses[0] and float(metrics.correct) == 0.0  # no accuracy for several outputs


# -- precision, loop choice, sweeps, data parallel --------------------------------------------------------------
def test_bf16_policy_runs_a_graph_in_bfloat16(tiny_images):
    model = precision.apply_policy(small_resnet(), "bf16")
    x = jnp.asarray(tiny_images[0][:2])
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))
    assert "bf16[2,8,8,4]" in jaxpr
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).dtype == jnp.float32
    history = fd.fit(small_resnet(), tiny_images, precision="bf16", epochs=1, batch_size=50, verbose=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(history.variables)} == {jnp.dtype(jnp.float32)}
    assert np.isfinite(history.history["loss"][0])


def test_auto_loop_looks_inside_graphs(tiny_images):
    x = nn.Input((8, 8, 1), name="image")
    conv = nn.Conv2D(4, 3, implementation="xla", name="conv")(x)
    xla = nn.Graph(inputs=x, outputs=nn.Dense(10)(nn.GlobalAveragePooling2D()(nn.Add()([conv, conv]))))
    kwargs = dict(epochs=1, batch_size=50, verbose=False)
    assert fd.fit(xla, tiny_images, **kwargs).loop == "steps"
    assert fd.fit(nn.Sequential([xla]), tiny_images, **kwargs).loop == "steps"  # nested
    assert fd.fit(branchy(), tiny_images, **kwargs).loop == "scan"


def dropout_branches():
    """Two Dense+Dropout branches of the flattened image, added, then Dense(10): each model's own dropout keys."""
    x = nn.Input((8, 8, 1), name="image")
    flat = nn.Flatten(name="flat")(x)
    left = nn.Dropout(0.2, name="left_drop")(nn.Dense(8, name="left")(flat))
    right = nn.Dropout(0.5, name="right_drop")(nn.Dense(8, name="right")(flat))
    return nn.Graph(inputs=x, outputs=nn.Dense(10, name="logits")(nn.Add(name="add")([left, right])))


def test_sweep_of_a_graph_equals_separate_fits(tiny_images):
    result = sweep_lib.sweep(dropout_branches(), tiny_images, lrs=[1e-3, 1e-2], seeds=[0, 1], epochs=2, batch_size=25,
                             verbose=False)
    for index in (0, 3):
        alone = fd.fit(dropout_branches(), tiny_images, optimizer=fd.optim.adam(float(result.lrs[index])),
                       seed=int(result.seeds[index]), epochs=2, batch_size=25, verbose=False)
        for a, b in zip(jax.tree.leaves(alone.variables), jax.tree.leaves(result.model_variables(index))):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5)
        np.testing.assert_allclose(result.history["loss"][index], alone.history["loss"], rtol=1e-5)


FOUR_DEVICES = r"""
import json
import jax, numpy as np
import funcdl as fd
rng = np.random.default_rng(0)
x = rng.random((100, 8, 8, 1), dtype=np.float32)
y = rng.integers(0, 10, 100).astype(np.int32)
model = fd.models.resnet(depth=8, width=4)
kwargs = dict(optimizer=fd.optim.adam(1e-2), epochs=2, batch_size=32, verbose=False)
one, four = fd.fit(model, (x, y), **kwargs), fd.fit(model, (x, y), data_parallel=True, **kwargs)
difference = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                 for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(four.variables)))
kernel = four.variables["params"]["stage2_block1_conv1"]["kernel"]
print(json.dumps({"devices": jax.device_count(), "difference": difference,
                  "replicated": kernel.sharding.is_fully_replicated,
                  "one": one.history["loss"], "four": four.history["loss"]}))
"""


@pytest.mark.subprocess
def test_data_parallel_graph_on_four_devices_matches_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4 and result["replicated"]
    assert result["difference"] < 1e-5, result
    np.testing.assert_allclose(result["four"], result["one"], rtol=1e-5)


# -- the CLI ----------------------------------------------------------------------------------------------------
def test_cli_trains_the_resnet_and_inspect_shows_its_graph(capsys, tmp_path):
    code = main(["train", "--model", "resnet", "--dataset", "digits", "--limit", "64", "--epochs", "1",
                 "--batch-size", "32", "--json", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "stage1_block1_add (Add)" in out and "Connected to" in out and "Trainable params: 272,186" in out
    result = json.loads(out.strip().splitlines()[-1])
    model, variables, input_shape = fd.load_model(tmp_path / "run" / "model.funcdl")
    assert isinstance(model, nn.Graph) and input_shape == (8, 8, 1)
    assert result["params"] == nn.count_params(variables["params"]) == 272_186  # ResNet-20, 1 input channel
    assert main(["inspect", str(tmp_path / "run" / "model.funcdl")]) == 0
    out = capsys.readouterr().out
    assert "input shape (8, 8, 1)" in out and "stage3_block3_add (Add)" in out
    assert "stage3_block3_bn2, stage3_block2_out" in out and "Trainable params: 272,186" in out
    assert main(["inspect", str(tmp_path / "run" / "model.funcdl"), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert layers[0] == {"name": "image", "type": "Input", "output_shape": [8, 8, 1], "params": 0, "trainable": 0,
                         "connected_to": []}
