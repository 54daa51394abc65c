"""JAX runners: ``funcdl`` (fd.fit), ``funcdl-eager`` (fd.fit eager=True) and ``jax-handwritten``.

Each takes a ``bench._models.Job`` and returns a ``bench._common.Measured``.
All three use Adam(1e-3) (funcdl's torch-flavoured rule, optax's for the
hand-written loop) and softmax cross-entropy on integer labels.
"""
import time

import jax
import jax.numpy as jnp
import optax

import funcdl as fd
from bench._common import Measured, Unavailable, time_epochs


def check_device(job):
    """Raise Unavailable when the GPU suite finds no GPU for jax."""
    if job.on_gpu and jax.default_backend() != "gpu":
        raise Unavailable(f"jax sees no GPU (backend {jax.default_backend()!r})")


def peak_device_bytes(job):
    """jax's peak device memory in bytes on GPU, None on CPU (no such figure there)."""
    if not job.on_gpu:
        return None
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _test_accuracy(job, variables):
    if not job.cell["accuracy"] or job.x_test is None:
        return None
    return fd.evaluate(job.model, variables, (job.x_test, job.y_test))["accuracy"]


def run_funcdl(job):
    """``fd.fit``: every epoch is one XLA call (lax.scan over batches), AOT-compiled before epoch 1."""
    check_device(job)
    history = fd.fit(job.model, (job.x_train, job.y_train), loss="cross_entropy",
                     optimizer=fd.optim.adam(1e-3), epochs=job.total_epochs, batch_size=job.batch_size,
                     seed=job.cell["seed"], variables=job.variables, verbose=False)
    notes = [] if history.compiles_after_first_epoch == 0 else [
        f"{history.compiles_after_first_epoch} recompiles after epoch 1"]
    return Measured(history.epoch_seconds, history.compile_seconds,
                    test_accuracy=_test_accuracy(job, history.variables),
                    peak_device_bytes=peak_device_bytes(job), init_max_abs_diff=0.0, notes=notes)


def run_funcdl_eager(job):
    """``fd.fit(eager=True)``: the same step op by op; a few steps timed, the epoch extrapolated."""
    check_device(job)
    steps = min(job.cell["eager_steps"], job.batches)
    count = steps * job.batch_size
    history = fd.fit(job.model, (job.x_train[:count], job.y_train[:count]), loss="cross_entropy",
                     optimizer=fd.optim.adam(1e-3), epochs=job.total_epochs, batch_size=job.batch_size,
                     seed=job.cell["seed"], variables=job.variables, eager=True, verbose=False)
    note = f"eager: {steps} of {job.batches} batches an epoch timed, extrapolated; no accuracy (same math as funcdl)"
    return Measured(history.epoch_seconds, 0.0, scale=job.batches / steps,
                    peak_device_bytes=peak_device_bytes(job), init_max_abs_diff=0.0, notes=[note])


def handwritten_epoch(model, optimizer):
    """``epoch(params, state, opt_state, x, y, order, key) -> (params, state, opt_state)``.

    A plain ``lax.scan`` of an optax step over the (batches, batch_size) ``order``:
    no masking, no metrics, no finite checks -- the floor for a jitted epoch.
    """
    def loss_fn(params, state, x, y, key):
        logits, new_state = model.apply({**state, "params": params}, x, train=True, rngs={"dropout": key},
                                        mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_state

    def epoch(params, state, opt_state, x, y, order, key):
        def step(carry, batch):
            params, state, opt_state = carry
            index, i = batch
            (_, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, state, x[index], y[index], jax.random.fold_in(key, i))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), dict(state), opt_state), None
        carry, _ = jax.lax.scan(step, (params, state, opt_state), (order, jnp.arange(order.shape[0])))
        return carry
    return epoch


def run_jax_handwritten(job):
    """A hand-written jitted epoch (``handwritten_epoch``), data and batch order resident on the device."""
    check_device(job)
    optimizer = optax.adam(1e-3)
    variables = jax.tree.map(jnp.asarray, job.variables)
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    carry = (params, state, optimizer.init(params))
    x, y, order = jnp.asarray(job.x_train), jnp.asarray(job.y_train), jnp.asarray(job.order)
    key = jax.random.key(job.cell["seed"])
    start = time.perf_counter()
    epoch = jax.jit(handwritten_epoch(job.model, optimizer), donate_argnums=(0, 1, 2)).lower(
        *carry, x, y, order[0], key).compile()
    compile_seconds = time.perf_counter() - start

    def run_epoch(e):
        nonlocal carry
        carry = epoch(*carry, x, y, order[e], jax.random.fold_in(key, e))

    seconds = time_epochs(run_epoch, job.total_epochs, lambda: jax.block_until_ready(carry))
    variables = {**carry[1], "params": carry[0]}
    return Measured(seconds, compile_seconds, test_accuracy=_test_accuracy(job, variables),
                    peak_device_bytes=peak_device_bytes(job), init_max_abs_diff=0.0)
