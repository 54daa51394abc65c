"""Data parallelism over every device with ``jax.sharding``; multi-host runs with ``jax.distributed``.

One 1-D mesh axis ``'data'`` spans every device of every process. Parameters
and optimizer state are replicated; each batch gathered inside the compiled
epoch is constrained to be split along ``'data'``, so XLA's sharding
propagation partitions the forward and backward pass by examples and inserts
the all-reduce of the gradients itself (no ``pmap``). The loss is the masked
mean over the *global* batch, so a run on N devices gives the one-device
result up to the order of floating-point sums.

    fd.fit(model, (x, y), batch_size=64, data_parallel=True)   # every local device

Multi-host: every process calls :func:`initialize` first, then ``fit`` with
``data_parallel=True`` and its own equal, contiguous shard of the training
data (process 0 the first rows); the global dataset is those shards in
process order, so the run matches one process given the whole dataset.
"""
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from funcdl.errors import ConfigError

AXIS = "data"


def initialize(coordinator: str, num_processes: int, process_id: int) -> None:
    """Join a multi-process run through ``jax.distributed`` (call before any other jax work).

    Args:
      coordinator: ``'HOST:PORT'`` of process 0's coordination service.
      num_processes: total number of processes N.
      process_id: this process's index in ``[0, N)``.
    """
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"coordinator must be HOST:PORT, got {coordinator!r}")
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ConfigError(f"num_processes must be a positive integer, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ConfigError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    # CPU processes reduce gradients over gloo (GPUs/TPUs ignore this); a jax without the option has its own.
    if hasattr(jax.config, "jax_cpu_collectives_implementation"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def data_mesh(batch_size: int, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh named ``'data'`` over ``devices`` (default: every device of every process).

    Raises:
      ConfigError: ``batch_size`` does not divide evenly over the devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    if batch_size % len(devices):
        raise ConfigError(f"batch_size {batch_size} does not split evenly over {len(devices)} devices; "
                          f"use a multiple of {len(devices)}")
    return Mesh(np.asarray(devices), (AXIS,))


def shard_batches(step: Callable, mesh: Mesh) -> Callable:
    """Wrap a train step so that its batch ``(x, y, mask)`` is split over the mesh by examples."""
    by_example = NamedSharding(mesh, PartitionSpec(AXIS))

    def sharded_step(state, x, y, mask, key, active=True):
        x, y, mask = jax.lax.with_sharding_constraint((x, y, mask), by_example)
        return step(state, x, y, mask, key, active)
    return sharded_step


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Host-identical arrays (the same on every process) as global arrays replicated on every device."""
    everywhere = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, everywhere)
    return jax.tree.map(lambda a: _replicate_leaf(a, everywhere), tree)


def _replicate_leaf(array, everywhere):
    if jax.dtypes.issubdtype(array.dtype, jax.dtypes.prng_key):
        data = _replicate_leaf(jax.random.key_data(array), everywhere)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(array))
    return jax.make_array_from_process_local_data(everywhere, np.asarray(jax.device_get(array)))


def place_data(mesh: Mesh, *arrays: Any) -> tuple:
    """Training arrays as global arrays on the mesh.

    One process: replicated, so each device gathers its batch rows locally.
    Several: each process passes its own equal shard (N / processes examples);
    the global array, split along ``'data'``, holds the shards in process order.
    """
    if jax.process_count() == 1:
        return replicate(arrays, mesh)
    local_devices = len(mesh.local_devices)
    if len(arrays[0]) % local_devices:
        raise ConfigError(f"each process's shard of the training data must split evenly over its "
                          f"{local_devices} devices; it has {len(arrays[0])} examples")
    by_example = NamedSharding(mesh, PartitionSpec(AXIS))
    return tuple(jax.make_array_from_process_local_data(by_example, np.asarray(a)) for a in arrays)


def distribute(mesh: Mesh, epoch: Callable, state: Any, x: Any, y: Any, key: jax.Array) -> tuple:
    """Place an epoch program, its state, data and key on ``mesh``.

    Args:
      epoch: ``epoch(state, x, y, key) -> (state, metrics)`` built on a step
        wrapped by :func:`shard_batches`.
      state: the TrainState (host-identical on every process).
      x, y: the training data (this process's shard when there are several).
      key: the training key (the same on every process).
    Returns:
      ``(epoch, state, (x, y), key)``: the epoch with replicated outputs (so
      the state comes back as it went in), then the placed state, data and key.
    """
    return (replicated_outputs(mesh, epoch), *place(mesh, state, x, y, key))


def place(mesh: Mesh, state: Any, x: Any, y: Any, key: jax.Array) -> tuple:
    """``(state, (x, y), key)`` placed on ``mesh`` as :func:`distribute` places them."""
    return replicate(state, mesh), place_data(mesh, x, y), replicate(key, mesh)


def replicated_outputs(mesh: Mesh, epoch: Callable) -> Callable:
    """``epoch`` with its outputs replicated on every device of ``mesh``."""
    everywhere = NamedSharding(mesh, PartitionSpec())

    def placed_epoch(state, x, y, key):
        return jax.lax.with_sharding_constraint(epoch(state, x, y, key), everywhere)
    return placed_epoch


def on_host(evaluate: Callable) -> Callable:
    """Wrap an evaluator compiled for one local device so it takes (replicated) global variables."""
    return lambda variables: evaluate(jax.device_get(variables))


def process_shard(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """This process's contiguous share of ``(x, y)`` for a multi-process run.

    The examples are first cut to a multiple of the global device count (so
    every device holds as many), then split into equal shards in process order.

    Returns:
      ``(x_shard, y_shard, dropped)``: the shard and how many examples were cut.
    """
    count = jax.process_count()
    usable = len(x) - len(x) % jax.device_count()
    if usable == 0:
        raise ConfigError(f"{len(x)} training examples cannot be split over {jax.device_count()} devices")
    size = usable // count
    start = jax.process_index() * size
    return x[start:start + size], y[start:start + size], len(x) - usable
