"""What fit accepts: arrays, pairs, datasets, tf.data, generators and DataLoaders; Keras's validation_split."""
import jax
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.train import epoch_key, epoch_plan, split_seed
from funcdl.train import inputs as inputs_lib


def mlp():
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.tanh, nn.Dropout(0.2), nn.Dense(10)])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.random((100, 6, 6, 1), dtype=np.float32)
    return x, (x[:, 0, 0, 0] * 10).astype(np.int32)


def assert_close(a, b, tolerance=2e-5):
    for left, right in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(left), np.asarray(right), atol=tolerance, rtol=tolerance)


def fit_order(x, y, batch_size, epochs, seed):
    """A generator of the batches fit(seed=seed) visits, epoch after epoch (the last one short, unpadded)."""
    _, train_key = split_seed(seed)
    for e in range(epochs):
        indices, masks, _ = epoch_plan(epoch_key(train_key, e), len(x), batch_size)
        for index, mask in zip(np.asarray(indices), np.asarray(masks)):
            real = index[mask > 0]
            yield x[real], y[real]


def test_streamed_batches_train_as_fit_does_on_arrays(data):
    x, y = data
    kwargs = dict(epochs=3, seed=5, verbose=False, batch_size=32)
    arrays = fd.fit(mlp(), x, y, **kwargs)
    streamed = fd.fit(mlp(), fit_order(x, y, 32, 3, 5), steps_per_epoch=4, **kwargs)
    assert streamed.loop == "stream" and streamed.compiles_after_first_epoch == 0  # the short last batch is padded
    assert_close(arrays.variables, streamed.variables)
    np.testing.assert_allclose(arrays.history["loss"], streamed.history["loss"], rtol=1e-5)
    assert arrays.history["accuracy"] == streamed.history["accuracy"]


def test_a_list_of_batches_is_read_again_every_epoch_and_validates(data):
    x, y = data
    batches = [(x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25)]
    history = fd.fit(mlp(), batches, epochs=2, verbose=False, validation_data=batches)
    result = fd.evaluate(mlp(), history.variables, (x, y))
    assert history.history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-5)
    assert history.history["val_accuracy"][-1] == pytest.approx(result["accuracy"])


def test_pairs_and_datasets_are_arrays(data):
    x, y = data
    reference = fd.fit(mlp(), x, y, epochs=2, verbose=False)
    for given in [(x, y), [x, y], fd.data.ArrayDataset(x, y)]:
        assert fd.fit(mlp(), given, epochs=2, verbose=False).history == reference.history


def test_tf_data_and_tfds_style_elements_are_converted(data):
    tf = pytest.importorskip("tensorflow")
    x, y = data
    reference = fd.fit(mlp(), x, y, epochs=2, batch_size=20, verbose=False)
    examples = tf.data.Dataset.from_tensor_slices((x, y))  # a TFDS split with as_supervised=True looks like this
    images = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})  # ... and as_supervised=False
    for dataset in (examples, examples.batch(7), images, images.batch(20, drop_remainder=True)):
        history = fd.fit(mlp(), dataset, epochs=2, batch_size=20, verbose=False)
        assert history.loop != "stream"
        if dataset is not images.batch(20, drop_remainder=True):
            assert history.history == reference.history


def test_tf_data_that_does_not_fit_is_streamed(data, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    x, y = data
    monkeypatch.setattr(inputs_lib, "IN_MEMORY_BYTES", 1000)
    history = fd.fit(mlp(), tf.data.Dataset.from_tensor_slices((x, y)), batch_size=32, epochs=2, verbose=False)
    assert history.loop == "stream" and history.step == 8 and history.compiles_after_first_epoch == 0
    endless = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(10)  # infinite: streamed, never converted
    history = fd.fit(mlp(), endless, steps_per_epoch=3, epochs=2, verbose=False)
    assert history.loop == "stream" and history.step == 6


def test_a_torch_dataloader_is_streamed(data):
    torch = pytest.importorskip("torch")
    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=30)
    history = fd.fit(mlp(), loader, epochs=2, verbose=False, log_every=2)
    assert history.loop == "stream" and history.step == 8 and [s for s, _ in history.step_losses] == [2, 4, 6, 8]


def test_validation_split_is_keras_last_fraction(data):
    x, y = data
    split = fd.fit(mlp(), x, y, epochs=2, validation_split=0.15, verbose=False)
    by_hand = fd.fit(mlp(), x[:85], y[:85], epochs=2, validation_data=(x[85:], y[85:]), verbose=False)
    assert split.history == by_hand.history
    assert split.validation == "validation_split 0.15 (the last 15 examples)"
    assert fd.fit(mlp(), x, y, epochs=1, verbose=False).validation == ""
    assert "val_loss" not in fd.fit(mlp(), x, y, epochs=1, verbose=False).history  # Keras: no validation by default
