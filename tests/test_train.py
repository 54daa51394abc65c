"""Training: compiled epochs, masking, determinism, jit == eager, non-finite stops, resume, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.errors import ConfigError, DataError, NonFiniteError, ShapeError
from funcdl.train import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    Stop,
    TrainState,
    epoch_key,
    make_train_epoch,
    make_train_step,
    split_seed,
)


def small_mlp():
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.tanh, nn.Dense(10)])


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_fit_learns_and_reports(tiny_images):
    x, y = tiny_images
    y = (x[:, 0, 0, 0] > 0.5).astype(np.int32)  # a learnable rule
    history = fd.fit(small_mlp(), (x, y), optimizer=fd.optim.adam(1e-2), epochs=30, batch_size=16,
                     validation_data=(x, y), verbose=False)
    assert len(history.epoch_seconds) == 30 and history.compile_seconds > 0
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["val_accuracy"][-1] >= 0.9


@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_no_recompiles_after_first_epoch(tiny_images, loop):
    # 100 examples in batches of 32: the last batch holds 4 real examples and 28 masked ones.
    history = fd.fit(fd.models.cnn(), tiny_images, epochs=3, batch_size=32, validation_data=tiny_images,
                     verbose=False, loop=loop)
    assert history.epochs_done == 3 and history.loop == loop
    assert history.compiles_after_first_epoch == 0


def test_stepped_epochs_train_like_scanned_epochs(tiny_images):
    # Same batches, padding masks, dropout keys and BatchNorm updates; only the loop differs.
    # (No conv bias: in front of BatchNorm its gradient is rounding noise, which Adam would amplify.)
    model = nn.Sequential([nn.Conv2D(4, 3, use_bias=False), nn.BatchNorm(), nn.relu, nn.MaxPool2D(2), nn.Dropout(0.3),
                           nn.Flatten(), nn.Dense(10)])
    kwargs = dict(epochs=3, batch_size=16, seed=3, verbose=False)
    scanned = fd.fit(model, tiny_images, loop="scan", **kwargs)
    stepped = fd.fit(model, tiny_images, loop="steps", **kwargs)
    assert (scanned.loop, stepped.loop, stepped.step) == ("scan", "steps", 21)
    np.testing.assert_allclose(stepped.history["loss"], scanned.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(stepped.history["accuracy"], scanned.history["accuracy"], atol=1e-6)
    for a, b in zip(jax.tree.leaves(stepped.variables), jax.tree.leaves(scanned.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    other_seed = fd.fit(model, tiny_images, loop="steps", **{**kwargs, "seed": 4})
    assert other_seed.history["loss"] != stepped.history["loss"]


def test_auto_loop_steps_only_for_xla_convolutions_on_cpu(tiny_images):
    assert jax.default_backend() == "cpu"
    kwargs = dict(epochs=1, batch_size=50, verbose=False)
    xla_conv = nn.Sequential([nn.Conv2D(4, 3, implementation="xla"), nn.relu, nn.Flatten(), nn.Dense(10)])
    assert fd.fit(xla_conv, tiny_images, **kwargs).loop == "steps"
    assert fd.fit(xla_conv, tiny_images, eager=True, **kwargs).loop == "scan"
    assert fd.fit(small_mlp(), tiny_images, **kwargs).loop == "scan"
    # funcdl's own Conv2D computes convolutions as matrix products on the CPU: one scan an epoch.
    assert fd.fit(fd.models.cnn(), tiny_images, **kwargs).loop == "scan"


def _state(model, optimizer, x):
    variables = model.init(jax.random.key(0), x[:1])
    return TrainState(variables, optimizer.init(variables["params"]), jnp.asarray(0))


def test_jit_and_eager_agree_over_20_steps():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((160, 8, 8, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, 160).astype(np.int32))
    model = nn.Sequential([nn.Conv2D(4, 3), nn.relu, nn.Flatten(), nn.Dropout(0.2), nn.Dense(10)])
    optimizer = fd.optim.adam(1e-2)
    epoch = make_train_epoch(make_train_step(model, fd.losses.cross_entropy, optimizer), batch_size=8)
    state = _state(model, optimizer, x)
    key = jax.random.key(3)
    jitted_state, jitted = jax.jit(epoch)(state, x, y, key)
    with jax.disable_jit():
        eager_state, eager = epoch(state, x, y, key)
    assert jitted.loss.shape == (20,)
    np.testing.assert_allclose(np.asarray(jitted.loss), np.asarray(eager.loss), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(jitted_state.variables), jax.tree.leaves(eager_state.variables)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_fit_eager_switch_matches_jit(tiny_images):
    kwargs = dict(optimizer=fd.optim.sgd(0.1), epochs=1, batch_size=25, verbose=False)
    jitted = fd.fit(small_mlp(), tiny_images, **kwargs)
    eager = fd.fit(small_mlp(), tiny_images, eager=True, **kwargs)
    np.testing.assert_allclose(jitted.history["loss"], eager.history["loss"], rtol=1e-5)


def test_last_partial_batch_is_the_mean_over_real_examples():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(40, 5)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 3, 40).astype(np.int32))
    model = nn.Sequential([nn.Dense(3)])
    optimizer = optax.sgd(0.5)
    step = make_train_step(model, fd.losses.cross_entropy, optimizer)
    state = _state(model, optimizer, x)
    _, metrics = jax.jit(make_train_epoch(step, batch_size=32, shuffle=False))(state, x, y, jax.random.key(0))
    after_first, _ = step(state, x[:32], y[:32], jnp.ones(32), jax.random.key(0))
    expected = fd.losses.cross_entropy(model.apply(after_first.variables, x[32:]), y[32:]).mean()
    np.testing.assert_allclose(float(metrics.loss[1]), float(expected), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(metrics.count), [32, 8])


def test_same_seed_same_result_other_seed_differs(tiny_images):
    kwargs = dict(epochs=2, batch_size=16, verbose=False)
    a = fd.fit(fd.models.cnn(), tiny_images, seed=5, **kwargs)
    b = fd.fit(fd.models.cnn(), tiny_images, seed=5, **kwargs)
    c = fd.fit(fd.models.cnn(), tiny_images, seed=6, **kwargs)
    assert_trees_equal(a.variables, b.variables)
    assert not np.array_equal(a.variables["params"]["layers_0"]["kernel"],
                              c.variables["params"]["layers_0"]["kernel"])


def _poisoned_regression(poison="loss", row=20):
    """32 examples, one poisoned in batch 2 (0-based, batches of 8).

    ``poison='loss'``: that example's loss is NaN (its gradients stay finite).
    ``poison='gradient'``: its loss is a finite 0 whose gradient is NaN (sqrt at 0), so
    only the gradients, and from then on the parameters, show it.
    """
    rng = np.random.default_rng(2)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = rng.normal(size=(32, 1)).astype(np.float32)
    y[row, 0] = 1000.0

    def loss(outputs, targets):
        per_example = jnp.mean((outputs - targets) ** 2, axis=-1)
        poisoned = jnp.any(targets > 100, axis=-1)
        # sqrt(0 * output): value 0, gradient inf * 0 = NaN, on the poisoned example only
        bad = jnp.nan if poison == "loss" else jnp.sqrt(jnp.where(poisoned, outputs[:, 0] * 0.0, 1.0))
        return jnp.where(poisoned, bad, per_example)
    return x, y, loss


@pytest.mark.parametrize("poison", ["loss", "gradient"])
@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_nonfinite_loss_stops_with_step_and_last_good_params(loop, poison):
    x, y, loss = _poisoned_regression(poison)
    model = nn.Sequential([nn.Dense(1)])
    kwargs = dict(loss=loss, optimizer=fd.optim.sgd(0.1), batch_size=8, shuffle=False, verbose=False, loop=loop)
    with pytest.raises(NonFiniteError, match=r"at step 2 \(epoch 1, batch 3\)") as info:
        fd.fit(model, (x, y), epochs=2, **kwargs)
    assert info.value.step == 2
    good = fd.fit(model, (x[:16], y[:16]), epochs=1, **kwargs)
    assert_trees_equal(info.value.variables, good.variables)


@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_nonfinite_gradient_in_the_last_step_of_training_is_caught(loop):
    # No later loss shows it: only the final parameters do.
    x, y, loss = _poisoned_regression("gradient", row=30)
    kwargs = dict(loss=loss, optimizer=fd.optim.sgd(0.1), batch_size=8, shuffle=False, verbose=False, loop=loop)
    with pytest.raises(NonFiniteError, match=r"at step 3 \(epoch 1, batch 4\)") as info:
        fd.fit(nn.Sequential([nn.Dense(1)]), (x, y), epochs=1, **kwargs)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(info.value.variables))


def test_gradient_poison_is_finite_loss_with_nonfinite_gradient():
    """The 'gradient' poison above must really be invisible in the loss."""
    x, y, loss = _poisoned_regression("gradient")
    model = nn.Sequential([nn.Dense(1)])
    variables = model.init(jax.random.key(0), x[:1])
    value, grads = jax.value_and_grad(lambda v: loss(model.apply(v, x[16:24]), y[16:24]).mean())(variables)
    assert np.isfinite(float(value))
    assert not np.isfinite(np.asarray(grads["params"]["layers_0"]["kernel"])).all()


@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_skip_nonfinite_skips_only_the_bad_batch(loop):
    x, y, loss = _poisoned_regression()
    history = fd.fit(nn.Sequential([nn.Dense(1)]), (x, y), loss=loss, optimizer=fd.optim.sgd(0.1),
                     batch_size=8, shuffle=False, epochs=2, skip_nonfinite=True, verbose=False, loop=loop)
    assert history.skipped_steps == 2 and history.step == 8
    assert np.isfinite(history.history["loss"]).all()


def test_checkpoint_resume_is_bit_identical(tiny_images, tmp_path):
    kwargs = dict(epochs=4, batch_size=16, seed=1, verbose=False)
    whole = fd.fit(fd.models.cnn(), tiny_images, **kwargs)
    stopped = fd.fit(fd.models.cnn(), tiny_images, callbacks=[ModelCheckpoint(tmp_path)],
                     **{**kwargs, "epochs": 2})
    assert stopped.epochs_done == 2 and (tmp_path / "checkpoint.msgpack").is_file()
    resumed = fd.fit(fd.models.cnn(), tiny_images, resume=tmp_path, **kwargs)
    assert resumed.epochs_done == 4 and len(resumed.history["loss"]) == 4
    assert resumed.compiles_after_first_epoch == 0  # counted from the first epoch this call ran
    assert_trees_equal(whole.variables, resumed.variables)
    assert_trees_equal(whole.opt_state, resumed.opt_state)


def test_early_stopping_stops_and_restores_the_best_epoch_at_the_end():
    state = TrainState({"w": jnp.array(0.0)}, (), jnp.asarray(0))
    stopper = EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    results = []
    for epoch, value in enumerate([1.0, 0.8, 0.9, 0.85, 0.7]):
        state = state._replace(variables={"w": jnp.array(float(epoch))}, step=jnp.asarray(epoch))
        results.append(stopper.on_epoch_end(epoch, {"val_loss": value}, state, fd.History()))
        if results[-1] is not None:
            break
    assert results == [None, None, None, Stop()]
    restored = stopper.on_train_end(state, fd.History())
    assert float(restored.variables["w"]) == 1.0 and int(restored.step) == 3  # best weights only
    with pytest.raises(ConfigError, match="only have loss"):
        EarlyStopping("val_loss").on_epoch_end(0, {"loss": 1.0}, state, fd.History())


class _Halve(Callback):
    """Halves the weights after epoch 0 and stops after epoch 2, recording what it saw."""

    def __init__(self):
        self.seen = []

    def on_train_begin(self, state, history):
        self.seen.append(("begin", history.epochs_done))

    def on_epoch_end(self, epoch, logs, state, history):
        self.seen.append((epoch, history.epochs_done, int(state.step)))
        if epoch == 0:
            return state._replace(variables=jax.tree.map(lambda a: a / 2, state.variables))
        return Stop() if epoch == 2 else None


def test_callbacks_return_the_state_they_change_or_a_stop(tiny_images):
    halve = _Halve()
    history = fd.fit(small_mlp(), tiny_images, epochs=5, batch_size=50, verbose=False, callbacks=[halve])
    assert halve.seen == [("begin", 0), (0, 1, 2), (1, 2, 4), (2, 3, 6)]
    assert history.epochs_done == 3 and history.stopped_epoch == 2 and history.step == 6
    # the same run by hand: halving after epoch 0 is what the next epochs started from
    plain = fd.fit(small_mlp(), tiny_images, epochs=1, batch_size=50, verbose=False)
    halved = jax.tree.map(lambda a: a / 2, plain.variables)
    resumed = TrainState(halved, plain.opt_state, jnp.asarray(2, jnp.int32))
    step = make_train_step(small_mlp(), fd.losses.cross_entropy, fd.optim.get("adam", 1e-3))
    epoch = jax.jit(make_train_epoch(step, 50))
    _, train_key = split_seed(0)
    x, y = (jnp.asarray(a) for a in tiny_images)
    for e in (1, 2):
        resumed, _ = epoch(resumed, x, y, epoch_key(train_key, e))
    assert_trees_equal(resumed.variables, history.variables)


def test_callbacks_must_be_callbacks_and_return_what_they_change(tiny_images):
    class Legacy:
        def on_epoch_end(self, epoch, logs, run):
            return True
    with pytest.raises(ConfigError, match=r"Callback instances \(subclass it and override on_epoch_end\), got Legacy"):
        fd.fit(small_mlp(), tiny_images, epochs=1, verbose=False, callbacks=[Legacy()])

    class Truthy(Callback):
        def on_epoch_end(self, epoch, logs, state, history):
            return True
    with pytest.raises(ConfigError, match="returned a bool; return None, a TrainState or"):
        fd.fit(small_mlp(), tiny_images, epochs=1, verbose=False, callbacks=[Truthy()])


def test_own_loop_with_the_building_blocks_is_fit(tiny_images):
    """The loop of ``funcdl.train``'s docstring: the same seed visits the same batches as fit."""
    x, y = tiny_images
    optimizer = fd.optim.adam(1e-3)
    init_key, train_key = split_seed(7)
    state = TrainState.create(small_mlp().init(init_key, jnp.asarray(x[:1])), optimizer)
    epoch = jax.jit(make_train_epoch(make_train_step(small_mlp(), fd.losses.cross_entropy, optimizer), batch_size=32))
    for e in range(3):
        state, metrics = epoch(state, jnp.asarray(x), jnp.asarray(y), epoch_key(train_key, e))
    history = fd.fit(small_mlp(), x, y, batch_size=32, epochs=3, optimizer=optimizer, seed=7, verbose=False)
    assert_trees_equal(state.variables, history.variables)
    assert_trees_equal(state.opt_state, history.opt_state)
    loss, count = np.asarray(metrics.loss), np.asarray(metrics.count)  # per step: 4 batches, the last masked
    assert loss.shape == (4,) and count.tolist() == [32, 32, 32, 4]
    assert history.history["loss"][-1] == pytest.approx(float((loss * count).sum() / count.sum()))


def test_early_stopping_in_fit(tiny_images):
    x, y = tiny_images
    history = fd.fit(small_mlp(), (x, y), optimizer=fd.optim.adam(0.05), epochs=50, batch_size=10,
                     validation_data=(x[::-1], np.roll(y, 1)), callbacks=[EarlyStopping(patience=2)],
                     verbose=False)
    assert history.epochs_done < 50 and history.stopped_epoch == history.epochs_done - 1


def test_evaluate_and_predict(tiny_images):
    x, y = tiny_images
    history = fd.fit(small_mlp(), (x, y), epochs=5, batch_size=20, verbose=False)
    result = fd.evaluate(small_mlp(), history.variables, (x, y), batch_size=30)
    matrix = result["confusion_matrix"]
    assert matrix.shape == (10, 10) and matrix.sum() == 100
    assert np.trace(matrix) / 100 == pytest.approx(result["accuracy"])
    outputs = fd.predict(small_mlp(), history.variables, x, batch_size=30)
    np.testing.assert_allclose(outputs, small_mlp().apply(history.variables, jnp.asarray(x)), rtol=1e-5, atol=1e-6)
    assert np.mean(outputs.argmax(1) == y) == pytest.approx(result["accuracy"])


def test_one_hot_loss_and_batchnorm_state(tiny_images):
    x, y = tiny_images
    model = nn.Sequential([nn.Flatten(), nn.Dense(8), nn.BatchNorm(), nn.relu, nn.Dense(10), nn.softmax])
    history = fd.fit(model, (x, fd.data.one_hot(y, 10)), loss="categorical_crossentropy", epochs=2,
                     batch_size=25, verbose=False)
    stats = history.variables["batch_stats"]["layers_2"]
    assert not np.allclose(stats["mean"], 0.0) and np.isfinite(history.history["accuracy"]).all()


@pytest.mark.parametrize("data, kwargs, error, message", [
    ("labels_out_of_range", {}, DataError, r"labels must be integers in \[0, 10\).*max=12"),
    ("negative_labels", {}, DataError, "found min=-1"),
    ("float_labels", {}, DataError, "whole numbers"),
    ("nan_inputs", {}, DataError, "NaN/inf values.*example 3"),
    ("length_mismatch", {}, DataError, "x has 100 examples but y has 99"),
    ("empty", {}, DataError, "empty"),
    ("ok", {"batch_size": 0}, ConfigError, "batch_size must be a positive integer"),
    ("ok", {"batch_size": 101}, ConfigError, "larger than the 100 training examples"),
    ("ok", {"loss": "hinge"}, ConfigError, "unknown loss 'hinge'"),
    ("ok", {"optimizer": "lbfgs"}, ConfigError, "unknown optimizer 'lbfgs'"),
    ("rank2_to_cnn", {}, ShapeError, "Conv2D.*NHWC"),
    ("ok", {"loop": "fast"}, ConfigError, "unknown loop 'fast'; choose one of auto, scan, steps"),
    ("ok", {"loop": "steps", "eager": True}, ConfigError, "cannot be combined with eager"),
])
def test_bad_input_errors(tiny_images, data, kwargs, error, message):
    x, y = tiny_images
    x, y = x.copy(), y.copy()
    model = small_mlp()
    if data == "labels_out_of_range":
        y[7] = 12
    elif data == "negative_labels":
        y[0] = -1
    elif data == "float_labels":
        y = y.astype(np.float32) + 0.5
    elif data == "nan_inputs":
        x[3, 0, 0, 0] = np.nan
    elif data == "length_mismatch":
        y = y[:99]
    elif data == "empty":
        x, y = x[:0], y[:0]
    elif data == "rank2_to_cnn":
        model, x = fd.models.cnn(), x.reshape(100, -1)
    with pytest.raises(error, match=message):
        fd.fit(model, (x, y), **{"epochs": 1, "batch_size": 10, "verbose": False, **kwargs})
