"""Losses matched to what the model outputs: from_logits from the last layer, refusals, binary accuracy."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.errors import ConfigError
from funcdl.train.objective import output_kind, resolve


def logits_model(classes=10):
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.tanh, nn.Dense(classes)])


def softmax_model():
    return nn.Sequential([nn.Flatten(), nn.Dense(16), nn.tanh, nn.Dense(10), nn.softmax])


def test_output_kind_reads_the_last_layer():
    assert output_kind(logits_model()) == ("logits", "Dense")
    assert output_kind(softmax_model()) == ("probabilities", "Softmax")
    assert output_kind(nn.Sequential([nn.Dense(1, activation="sigmoid")]))[0] == "probabilities"
    assert output_kind(nn.Sequential([nn.Dense(4), nn.log_softmax, nn.Dropout(0.1)]))[0] == "log_probabilities"
    assert output_kind(nn.Sequential([nn.Dense(4), nn.Sequential([nn.Dense(4), nn.softmax])]))[0] == "probabilities"
    assert output_kind(fd.precision.apply_policy(softmax_model(), "bf16"))[0] == "probabilities"
    assert output_kind(fd.models.cnn()) == ("logits", "Dense")


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy",
                                  "CategoricalCrossentropy", "kl_divergence", "kld"])
def test_probability_losses_on_logits_train_like_cross_entropy(tiny_images, name):
    x, y = tiny_images
    y = (x[:, 0, 0, 0] * 10).astype(np.int32)  # a learnable rule
    targets = fd.data.one_hot(y, 10) if fd.losses.label_kind(name) == "one_hot" else y
    kwargs = dict(epochs=15, batch_size=20, optimizer=fd.optim.adam(1e-2), verbose=False)
    reference = fd.fit(logits_model(), (x, y), loss="cross_entropy", **kwargs)
    history = fd.fit(logits_model(), (x, targets), loss=name, **kwargs)
    assert "from_logits=True" in history.loss or "softmax of the outputs" in history.loss
    np.testing.assert_allclose(history.history["loss"], reference.history["loss"], rtol=1e-4, atol=1e-5)
    assert history.history["accuracy"] == reference.history["accuracy"]


def test_softmax_model_gets_probabilities(tiny_images):
    x, y = tiny_images
    objective = resolve("sparse_categorical_crossentropy", softmax_model())
    assert objective.loss_fn.keywords["from_logits"] is False and "outputs probabilities" in objective.description
    history = fd.fit(softmax_model(), (x, y), loss="sparse_categorical_crossentropy", epochs=2, batch_size=50,
                     verbose=False)
    assert np.isfinite(history.history["loss"]).all()


def test_the_same_functions_given_as_objects_are_matched_too():
    objective = resolve(fd.losses.categorical_crossentropy, logits_model())
    assert objective.loss_fn.keywords == {"from_logits": True}
    own = resolve(lambda outputs, targets: jnp.zeros(outputs.shape[0]), logits_model())
    assert own.description == "<lambda>"  # a function of your own is used as it is


@pytest.mark.parametrize("loss, model, message", [
    ("cross_entropy", softmax_model(), "loss cross_entropy takes logits but the model ends in Softmax, which "
     "outputs probabilities; remove the final Softmax or use loss='sparse_categorical_crossentropy'"),
    ("bce_with_logits", nn.Sequential([nn.Dense(1), nn.sigmoid]), "use loss='binary_crossentropy'"),
    (functools.partial(fd.losses.categorical_crossentropy, from_logits=False), logits_model(),
     "with from_logits=False but the model ends in Dense, which outputs logits; use from_logits=True"),
    ("kl_div", softmax_model(), "takes log-probabilities"),
])
def test_losses_that_cannot_take_the_output_say_what_to_change(loss, model, message):
    with pytest.raises(ConfigError) as info:
        resolve(loss, model)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_kl_divergence_conventions_get_what_they_expect():
    logits = jnp.array([[2.0, -1.0, 0.5]])
    targets = jnp.array([[0.2, 0.3, 0.5]])
    keras = resolve("kl_divergence", logits_model(3)).loss_fn(logits, targets)
    torch = resolve("kl_div", logits_model(3)).loss_fn(logits, targets)
    expected = jnp.sum(targets * (jnp.log(targets) - jax.nn.log_softmax(logits)))
    np.testing.assert_allclose([keras[0], torch[0]], [expected, expected], rtol=1e-5)


def test_binary_tasks_log_binary_accuracy(tiny_images):
    x, _ = tiny_images
    y = (x[:, 0, 0, 0] > 0.5).astype(np.float32)[:, None]  # (N, 1) targets
    for model, loss in [(nn.Sequential([nn.Flatten(), nn.Dense(1)]), "binary_crossentropy"),
                        (nn.Sequential([nn.Flatten(), nn.Dense(1)]), "binary_crossentropy_with_logits"),
                        (nn.Sequential([nn.Flatten(), nn.Dense(1, activation="sigmoid")]), "binary_crossentropy")]:
        history = fd.fit(model, (x, y), loss=loss, epochs=40, batch_size=20, optimizer=fd.optim.adam(3e-2),
                         validation_data=(x, y), verbose=False)
        assert history.history["accuracy"][0] > 0.0 and history.history["val_accuracy"][-1] >= 0.9, loss
        result = fd.evaluate(model, history.variables, (x, y), loss=loss)
        assert result["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])
        matrix = result["confusion_matrix"]
        assert matrix.shape == (2, 2) and matrix.sum() == len(x)
        assert np.trace(matrix) / len(x) == pytest.approx(result["accuracy"])


def test_binary_accuracy_by_hand():
    outputs = jnp.array([[0.9], [0.2], [0.6], [0.4]])
    targets = jnp.array([[1.0], [0.0], [0.0], [1.0]])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])
    assert float(fd.train.count_correct(outputs, targets, mask, 0.5)) == 2.0
    assert float(fd.train.count_correct(outputs - 0.5, targets, mask, 0.0)) == 2.0
    assert fd.losses.binary_threshold("binary_crossentropy") == 0.5
    assert fd.losses.binary_threshold("BCEWithLogitsLoss") == 0.0
    assert fd.losses.binary_threshold("mse") is None
