"""Random crops and flips inside the compiled step: seeded, on the device, no recompiles, never at evaluation."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

import funcdl as fd
from funcdl.train.augment import crop_flip, random_crop_flip


def images(count=16, size=8, channels=3):
    return np.random.default_rng(0).random((count, size, size, channels), dtype=np.float32)


def test_every_output_is_a_padded_crop_maybe_mirrored():
    x = images()
    out = np.asarray(random_crop_flip(jax.random.key(3), jnp.asarray(x), padding=2))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    kinds = set()
    for image, result in zip(padded, out):
        matches = [(top, left, mirrored) for top, left, mirrored in itertools.product(range(5), range(5), (0, 1))
                   if np.array_equal(result, (image[:, ::-1] if mirrored else image)[top:top + 8, left:left + 8])
                   ]
        assert matches, "an output that is no crop of the padded image"
        kinds.add(matches[0][2])
    assert kinds == {0, 1}  # both mirrored and plain images among 16


def test_seeded_and_identity_without_padding_or_flip():
    x = jnp.asarray(images())
    key = jax.random.key(1)
    np.testing.assert_array_equal(random_crop_flip(key, x), random_crop_flip(key, x))
    assert not np.array_equal(random_crop_flip(key, x), random_crop_flip(jax.random.key(2), x))
    np.testing.assert_array_equal(random_crop_flip(key, x, padding=0, flip=False), x)
    flips = np.mean([np.array_equal(random_crop_flip(jax.random.key(k), x[:1], 0)[0], x[0, :, ::-1])
                     for k in range(200)])
    assert 0.4 < flips < 0.6


def test_fit_augments_in_the_compiled_epoch_without_recompiles():
    x = images(40)
    y = np.arange(40) % 10
    kwargs = dict(epochs=3, batch_size=16, verbose=False, validation_data=(x, y))
    plain = fd.fit(fd.models.cnn(), (x, y), **kwargs)
    augmented = fd.fit(fd.models.cnn(), (x, y), augment=True, **kwargs)
    again = fd.fit(fd.models.cnn(), (x, y), augment=crop_flip(4), **kwargs)
    assert augmented.compiles_after_first_epoch == 0 and augmented.loop == plain.loop
    assert augmented.history == again.history  # seeded from the run's keys
    assert augmented.history["loss"] != plain.history["loss"]
    stepped = fd.fit(fd.models.cnn(), (x, y), augment=True, loop="steps", **kwargs)
    assert stepped.compiles_after_first_epoch == 0
    np.testing.assert_allclose(stepped.history["loss"], augmented.history["loss"], rtol=1e-4)


def test_evaluation_never_augments():
    x = images(40)
    y = np.arange(40) % 10
    blank = fd.fit(fd.models.mlp(), (x, y), augment=lambda key, batch: jnp.zeros_like(batch), epochs=2,
                   batch_size=16, verbose=False, validation_data=(x, y))
    on_zeros = fd.fit(fd.models.mlp(), (np.zeros_like(x), y), epochs=2, batch_size=16, verbose=False)
    assert blank.history["loss"] == on_zeros.history["loss"]  # training saw the augmented (blank) batches
    result = fd.evaluate(fd.models.mlp(), blank.variables, (x, y))
    assert blank.history["val_loss"][-1] == result["loss"]  # validation saw the real images
