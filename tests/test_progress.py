"""The loss every N steps from inside the compiled epoch, and what a run shows on a terminal and in a pipe."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.train import TrainState, epoch_key, make_train_epoch, make_train_step, split_seed
from funcdl.train.progress import Progress


def mlp():
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.tanh, nn.Dense(10)])


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("loop", ["scan", "steps"])
def test_log_every_reports_the_steps_losses_without_recompiles(tiny_images, loop):
    x, y = tiny_images
    history = fd.fit(mlp(), x, y, epochs=3, batch_size=32, log_every=3, verbose=False, loop=loop)
    assert history.compiles_after_first_epoch == 0
    # the same steps by hand: 4 batches an epoch, global steps 1..12
    optimizer = fd.optim.get("adam", 1e-3)
    init_key, train_key = split_seed(0)
    state = TrainState.create(mlp().init(init_key, jnp.asarray(x[:1])), optimizer)
    epoch = jax.jit(make_train_epoch(make_train_step(mlp(), fd.losses.cross_entropy, optimizer), 32))
    losses = []
    for e in range(3):
        state, metrics = epoch(state, jnp.asarray(x), jnp.asarray(y), epoch_key(train_key, e))
        losses += np.asarray(metrics.loss).tolist()
    assert [step for step, _ in history.step_losses] == [3, 7, 11]  # step 3 of each epoch of 4
    np.testing.assert_allclose([loss for _, loss in history.step_losses], [losses[i - 1] for i in (3, 7, 11)],
                               rtol=1e-6)


def test_piped_output_is_one_plain_line_per_epoch(tiny_images, capsys):
    fd.fit(mlp(), tiny_images, epochs=3, batch_size=32, validation_data=tiny_images)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) == 3
    assert lines[1].startswith("fit epoch 2/3: loss ") and "val_accuracy" in lines[1] and lines[1].endswith(" s")
    fd.fit(mlp(), tiny_images, epochs=2, batch_size=32, log_every=2)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("fit epoch 1/2 step 2/4: loss ")
    assert lines[1].startswith("fit epoch 1/2 step 4/4: loss ") and lines[2].startswith("fit epoch 1/2: loss ")
    assert len(lines) == 6


def test_terminal_bars_count_epochs_and_move_within_one(tiny_images, tmp_path):
    terminal = Terminal()
    progress = Progress(True, 4, "fit", steps_per_epoch=4, log_every=1, stream=terminal)
    history = fd.History()
    progress.begin(history)
    state = TrainState({}, (), jnp.asarray(8, jnp.int32))  # a run resumed after 2 epochs of 4 steps
    progress.epoch_start(2, state)
    progress.report(9, 0.5)
    shown = terminal.getvalue()
    assert "fit epoch 3/4" in shown and "1/4" in shown and "loss=0.5000" in shown
    progress.report(9, 0.7)  # the same step again (an epoch re-run): ignored
    progress.epoch_end(2, {"loss": 0.4}, 0.1)
    progress.close()
    assert history.step_losses == [(9, 0.5)] and "4/4" in terminal.getvalue()


def test_resumed_runs_count_epochs_from_where_they_were(tiny_images, tmp_path, capsys):
    fd.fit(mlp(), tiny_images, epochs=2, batch_size=50, verbose=False,
           callbacks=[fd.callbacks.ModelCheckpoint(tmp_path)])
    fd.fit(mlp(), tiny_images, epochs=4, batch_size=50, resume=tmp_path, callbacks=[])
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["fit epoch 3/4", "fit epoch 4/4"]


def test_log_every_must_be_positive(tiny_images):
    with pytest.raises(fd.errors.ConfigError, match="log_every must be a positive number of steps"):
        fd.fit(mlp(), tiny_images, log_every=0, verbose=False)


def test_a_sweeps_lines_show_each_metric_over_its_models(capsys):
    progress = Progress(True, 2, "sweep (3 models)", stream=None)
    progress.begin(fd.History())
    progress.epoch_end(0, {"loss": np.array([0.5, np.nan, 0.25]), "val_accuracy": np.array([0.9, 0.1, 0.8])}, 0.5)
    assert capsys.readouterr().err == ("sweep (3 models) epoch 1/2: loss 0.2500..0.5000, "
                                       "val_accuracy 0.1000..0.9000, 0.50 s\n")
