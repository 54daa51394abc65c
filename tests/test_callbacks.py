"""EarlyStopping and ModelCheckpoint: Keras's arguments, defaults and stopping rule; Keras callbacks refused."""
import inspect
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl.errors import ConfigError
from funcdl.train import EarlyStopping, ModelCheckpoint, Stop, TrainState


def keras_parameters(name):
    keras = pytest.importorskip("keras")
    signature = inspect.signature(getattr(keras.callbacks, name).__init__)
    return {key: p.default for key, p in signature.parameters.items() if key != "self"}


def ours(cls):
    return {key: p.default for key, p in inspect.signature(cls.__init__).parameters.items() if key != "self"}


def test_arguments_and_defaults_are_keras():
    assert ours(EarlyStopping) == keras_parameters("EarlyStopping")
    keras_checkpoint = keras_parameters("ModelCheckpoint")
    assert {key: ours(ModelCheckpoint)[key] for key in keras_checkpoint} == keras_checkpoint


class _Model:
    """Just enough of a Keras model for its callbacks: weights and the stop flag."""
    stop_training, metrics = False, []

    def __init__(self):
        self.weights = [np.zeros(1)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = weights


def keras_run(settings, values):
    """(stopped epoch or None, epoch whose weights it ends on) of keras.callbacks.EarlyStopping."""
    keras = pytest.importorskip("keras")
    callback, model = keras.callbacks.EarlyStopping(**settings), _Model()
    callback.set_model(model)
    callback.on_train_begin()
    stopped = None
    for epoch, value in enumerate(values):
        model.weights = [np.full(1, float(epoch))]
        callback.on_epoch_end(epoch, {"val_loss": value, "val_accuracy": -value})
        if model.stop_training:
            stopped = epoch
            break
    callback.on_train_end()
    return stopped, int(model.weights[0][0])


def funcdl_run(settings, values):
    stopper, state, stopped = EarlyStopping(**settings), TrainState({"w": jnp.zeros(())}, (), jnp.asarray(0)), None
    stopper.on_train_begin(state, fd.History())
    for epoch, value in enumerate(values):
        state = state._replace(variables={"w": jnp.asarray(float(epoch))})
        if stopper.on_epoch_end(epoch, {"val_loss": value, "val_accuracy": -value}, state, fd.History()) == Stop():
            stopped = epoch
            break
    state = stopper.on_train_end(state, fd.History()) or state
    return stopped, int(state.variables["w"])


SETTINGS = [dict(zip(("patience", "min_delta", "baseline", "start_from_epoch", "restore_best_weights"), combo))
            for combo in itertools.product((0, 1, 3), (0.0, 0.05), (None, 0.6), (0, 2), (False, True))]


@pytest.mark.parametrize("monitor, mode", [("val_loss", "auto"), ("val_accuracy", "max")])
def test_stops_and_restores_exactly_when_keras_does(monitor, mode):
    rng = np.random.default_rng(0)
    sequences = [rng.random(12) for _ in range(6)] + [np.linspace(1, 0.1, 12), np.r_[0.5, np.full(11, 0.53)]]
    for settings, values in itertools.product(SETTINGS, sequences):
        settings = {**settings, "monitor": monitor, "mode": mode}
        if settings["baseline"] is not None and monitor == "val_accuracy":
            settings["baseline"] = -settings["baseline"]
        assert funcdl_run(settings, values) == keras_run(settings, values), settings


def test_model_checkpoint_best_only_and_filled_paths(tiny_images, tmp_path):
    model = fd.nn.Sequential([fd.nn.Flatten(), fd.nn.Dense(10)])
    x, y = tiny_images
    best = ModelCheckpoint(tmp_path / "best", monitor="val_accuracy", save_best_only=True)
    every = ModelCheckpoint(str(tmp_path / "epoch{epoch:02d}-{loss:.2f}"), every=2)
    history = fd.fit(model, x, y, epochs=4, batch_size=50, validation_data=(x, y), callbacks=[best, every],
                     verbose=False, optimizer=fd.optim.adam(0.05))
    best_epoch = int(np.argmax(history.history["val_accuracy"]))  # the first of equal bests, as Keras keeps
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("epoch")) == [
        f"epoch02-{history.history['loss'][1]:.2f}", f"epoch04-{history.history['loss'][3]:.2f}"]
    resumed = fd.fit(model, x, y, epochs=best_epoch + 1, batch_size=50, resume=tmp_path / "best", verbose=False)
    assert resumed.epochs_done == best_epoch + 1  # the folder holds the best epoch's state
    assert resumed.history["val_accuracy"] == history.history["val_accuracy"][:best_epoch + 1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(save_freq=100), "save_freq must be 'epoch', got 100"),
    (dict(save_weights_only=True), "writes the whole training state"),
    (dict(mode="largest"), "mode must be 'auto', 'min' or 'max'"),
    (dict(every=0), "every must be >= 1"),
])
def test_model_checkpoint_refuses_what_it_cannot_do(kwargs, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        ModelCheckpoint(tmp_path, **kwargs)


def test_keras_callbacks_get_one_line_saying_what_to_use(tiny_images):
    keras = pytest.importorskip("keras")
    for callback, instead in [(keras.callbacks.EarlyStopping(), "use fd.callbacks.EarlyStopping"),
                              (keras.callbacks.ReduceLROnPlateau(), "optax.contrib.reduce_on_plateau"),
                              (keras.callbacks.LambdaCallback(), "fd.callbacks.Callback subclass")]:
        with pytest.raises(ConfigError) as info:
            fd.fit(fd.models.mlp(), tiny_images, callbacks=[callback], verbose=False)
        message = str(info.value)
        assert message.startswith(f"fit got keras.callbacks.{type(callback).__name__}, a Keras callback")
        assert instead in message and "\n" not in message
