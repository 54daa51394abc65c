"""FLOPs per training sample (XLA's cost analysis of funcdl's step) and a measured matmul peak.

One FLOP figure per model: the same model trains in every framework, so the
work per sample is the same; what differs is how fast each framework does it.
``matmul_peak`` times an ``n x n`` float32 matrix product in the worker's own
framework, in the same process and with the same thread count as its cells, so
``achieved FLOP/s / peak`` is the share of the machine's matrix-product speed
each row reaches.
"""
import contextlib
import time
from typing import Any

MATMUL_SIZE = 2048
MATMUL_REPEATS = 3


@contextlib.contextmanager
def loop_free():
    """Trace funcdl's layers without loops, so that XLA's cost analysis counts every FLOP.

    XLA's cost analysis counts a while loop's body once, whatever its trip count:
    inside this context convolutions are XLA's (not the chunked matrix-product
    loop), recurrences are the plain ``lax.scan`` references (the same math as
    the custom-gradient layers) and every ``lax.scan`` is fully unrolled.
    """
    from jax import lax  # noqa: PLC0415  (the worker has jax; the suite's parent does not import it)

    from funcdl.nn import _conv, _recurrent, _recurrent_vjp  # noqa: PLC0415
    saved = (_conv.conv_implementation, _recurrent.lstm, _recurrent.gru, _recurrent.simple_rnn, lax.scan)
    scan = lax.scan
    _conv.conv_implementation = lambda implementation: "xla"
    _recurrent.lstm, _recurrent.gru = _recurrent_vjp.lstm_scan, _recurrent_vjp.gru_scan
    _recurrent.simple_rnn = _recurrent_vjp.simple_rnn_scan
    lax.scan = lambda *args, **kwargs: scan(*args, **{**kwargs, "unroll": True})
    try:
        yield
    finally:
        (_conv.conv_implementation, _recurrent.lstm, _recurrent.gru, _recurrent.simple_rnn, lax.scan) = saved


def step_flops(job: Any) -> float | None:
    """FLOPs of one funcdl train step (forward, backward, Adam update) on a batch of ``job``, or None.

    From ``jax.jit(step).lower(...).cost_analysis()`` of funcdl's own train step
    (``make_train_step``), traced ``loop_free`` so that no loop hides FLOPs.
    """
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    import funcdl as fd  # noqa: PLC0415
    from funcdl import losses  # noqa: PLC0415
    from funcdl.train.step import TrainState, make_train_step  # noqa: PLC0415

    optimizer = fd.optim.adam(1e-3)
    step = make_train_step(job.model, losses.get("cross_entropy"), optimizer, guard=False)
    variables = jax.tree.map(jnp.asarray, job.variables)
    state = TrainState(variables, optimizer.init(variables["params"]), jnp.zeros((), jnp.int32))
    batch = job.batch_size
    x, y = jnp.asarray(job.x_train[:batch]), jnp.asarray(job.y_train[:batch])
    with loop_free():
        cost = jax.jit(step).lower(state, x, y, jnp.ones(batch), jax.random.key(0)).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _jax_matmul(size):
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    product = jax.jit(jnp.matmul)
    return lambda: product(a, a).block_until_ready()


def _torch_matmul(size, on_gpu):
    import torch  # noqa: PLC0415
    device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    a = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return lambda: (a @ a, sync())


def _tf_matmul(size, on_gpu):
    import tensorflow as tf  # noqa: PLC0415
    with tf.device("/GPU:0" if on_gpu else "/CPU:0"):
        a = tf.random.normal((size, size))
    return lambda: (tf.linalg.matmul(a, a).numpy(), None)


def matmul_peak(family: str, size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS,
                on_gpu: bool = False) -> dict:
    """The best FLOP/s of an ``size``² float32 matmul in the framework of ``family``.

    Args:
      family: "jax" or "keras-jax" (jax), "torch" or "tf".
      size: the matrices' side; repeats: timed runs after one warm-up run (the fastest counts).
      on_gpu: time it on the GPU (the GPU suite).
    Returns:
      {"framework", "size", "flops_per_second"}.
    """
    framework = {"torch": "torch", "tf": "tensorflow"}.get(family, "jax")
    run = {"torch": lambda: _torch_matmul(size, on_gpu), "tensorflow": lambda: _tf_matmul(size, on_gpu)}.get(
        framework, lambda: _jax_matmul(size))()
    run()  # warm-up: compile, allocate
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return {"framework": framework, "size": size, "flops_per_second": 2 * size ** 3 / best}
