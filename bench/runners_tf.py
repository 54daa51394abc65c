"""Keras 3 and TensorFlow runners: ``keras-tf``, ``keras-tf-xla``, ``keras-jax`` and ``tf-function``.

All train the keras twin of the funcdl model, holding funcdl's initial weights
(``interop.keras.to_keras``, else ``bench._keras_models``), with
``keras.optimizers.Adam(1e-3)`` (keras' epsilon 1e-7) and sparse categorical
cross-entropy from logits on the batches of ``Job.order``.

Keras picks its backend once per process from ``KERAS_BACKEND``: the suite
starts ``keras-jax`` in its own worker process with ``KERAS_BACKEND=jax`` and
the others with ``tensorflow``; each runner checks it got the backend it needs.
"""
import time

from bench import _keras_models
from bench._common import Measured, Unavailable, time_epochs
from bench._models import accuracy, max_abs_diff
from interop import keras as keras_bridge


def import_keras(backend):
    """keras, after checking the process runs it on ``backend``."""
    # keras reads KERAS_BACKEND once, at import: imported in the worker that runs it
    import keras  # noqa: PLC0415
    if keras.backend.backend() != backend:
        raise Unavailable(f"keras runs on {keras.backend.backend()!r} in this process, this runner needs "
                          f"{backend!r} (KERAS_BACKEND is read once, at import)")
    return keras


def _check_device(job, backend):
    if not job.on_gpu:
        return
    if backend == "jax":
        # the framework of the backend this worker runs
        import jax  # noqa: PLC0415
        found = jax.default_backend() == "gpu"
    else:
        import tensorflow as tf  # noqa: PLC0415
        found = bool(tf.config.list_physical_devices("GPU"))
    if not found:
        raise Unavailable(f"keras on {backend} sees no GPU")


def build_model(keras, job, notes):
    """A keras model holding ``job.variables``: ``interop.keras.to_keras``, else the native twin."""
    if job.spec.name != "resnet":
        try:
            return keras_bridge.to_keras(job.model, job.variables, job.spec.input_shape, strict=True)
        except Exception as err:  # interop is optional here: fall back to the explicit mapping
            notes.append(f"interop.keras failed ({type(err).__name__}: {err}); native keras model used")
    model = _keras_models.build(keras, job.spec.name, job.spec.input_shape)
    return _keras_models.copy_weights(model, job.variables)


def _prepared(keras, job, notes):
    """(model, init_diff): the keras model and how far its initial logits are from funcdl's."""
    model = build_model(keras, job, notes)
    logits = keras.ops.convert_to_numpy(model(job.probe, training=False))
    return model, max_abs_diff(logits, job)


def _loss(keras):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _peak_device_bytes(job, backend):
    if not job.on_gpu:
        return None
    if backend == "jax":
        # the framework of the backend this worker runs
        import jax  # noqa: PLC0415
        return (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    import tensorflow as tf  # noqa: PLC0415
    return tf.config.experimental.get_memory_info("GPU:0").get("peak")


def _measured(keras, job, model, backend, seconds, init_diff, notes):
    test_accuracy = None
    if job.cell["accuracy"] and job.x_test is not None:
        predict = lambda x: keras.ops.convert_to_numpy(model(x, training=False))  # noqa: E731
        test_accuracy = accuracy(predict, job.x_test, job.y_test)
    return Measured(seconds, test_accuracy=test_accuracy, peak_device_bytes=_peak_device_bytes(job, backend),
                    init_max_abs_diff=init_diff, notes=notes)


def _epoch_timer(keras):
    """A callback that records the wall time from ``on_epoch_begin`` to ``on_epoch_end``."""
    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # logs are on the host here: the device is done
            self.seconds.append(time.perf_counter() - self.start)
    return EpochTimer()


def run_keras_fit(job, backend, jit_compile):
    """``model.fit`` one epoch per call, on that epoch's batches pre-gathered in order (shuffle=False).

    The batches come from host numpy arrays through keras' own data adapter
    (the usual ``fit`` path). An epoch is timed from keras' ``on_epoch_begin``
    to ``on_epoch_end``, as in one ``fit(epochs=N)`` call: the per-call set-up
    of calling ``fit`` once an epoch (to keep the shared batch order) is not counted.
    """
    keras = import_keras(backend)
    _check_device(job, backend)
    notes = ["model.fit on host numpy arrays"]
    model, init_diff = _prepared(keras, job, notes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss(keras), jit_compile=jit_compile)
    timer = _epoch_timer(keras)
    for epoch in range(job.total_epochs):
        index = job.order[epoch].reshape(-1)
        model.fit(job.x_train[index], job.y_train[index], batch_size=job.batch_size, epochs=1, shuffle=False,
                  verbose=0, callbacks=[timer])
    return _measured(keras, job, model, backend, timer.seconds, init_diff, notes)


def run_keras_tf(job):
    """Keras 3 on TensorFlow, ``compile(jit_compile=False)``: a tf.function graph per step."""
    return run_keras_fit(job, "tensorflow", jit_compile=False)


def run_keras_tf_xla(job):
    """Keras 3 on TensorFlow, ``compile(jit_compile=True)``: the train step compiled by XLA."""
    return run_keras_fit(job, "tensorflow", jit_compile=True)


def run_keras_jax(job):
    """Keras 3 on JAX (its own process, ``KERAS_BACKEND=jax``): the train step is a jax.jit function."""
    return run_keras_fit(job, "jax", jit_compile=True)


def run_tf_function(job):
    """A custom loop: ``tf.GradientTape`` step in one ``tf.function`` (graph, no XLA), data on the device.

    Each step gathers its batch from the device-resident training set by the
    step's index tensor, prepared per epoch outside the timing.
    """
    keras = import_keras("tensorflow")
    _check_device(job, "tensorflow")
    # TensorFlow only in the worker that runs it
    import tensorflow as tf  # noqa: PLC0415
    notes = []
    model, init_diff = _prepared(keras, job, notes)
    optimizer, loss_fn = keras.optimizers.Adam(1e-3), _loss(keras)
    optimizer.build(model.trainable_variables)
    with tf.device("/GPU:0" if job.on_gpu else "/CPU:0"):
        x, y, order = tf.constant(job.x_train), tf.constant(job.y_train), tf.constant(job.order)

    @tf.function
    def step(index):
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.gather(y, index), model(tf.gather(x, index), training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    last = []

    def run_epoch(epoch, indices):
        for index in indices:
            loss = step(index)
        last[:] = [loss]
    seconds = time_epochs(run_epoch, job.total_epochs, lambda: float(last[0]), prepare=lambda e: tf.unstack(order[e]))
    return _measured(keras, job, model, "tensorflow", seconds, init_diff, notes)
