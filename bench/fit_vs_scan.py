"""python bench/fit_vs_scan.py --data-dir ../shared/data

The cost of funcdl's `fit` over the floor: an epoch of the MNIST MLP
(784-128-10, Adam 1e-3, batch 64) under `fd.fit`, against a hand-written
`jax.lax.scan` epoch of the same model and optimizer in the same process.
Prints one JSON line: both median epoch times and their ratio (fit / scan).
"""
import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import funcdl as fd


def handwritten_epoch(batch_size):
    """A minimal jitted epoch: shuffle, cut into batches, scan an Adam step over them (no masking)."""
    optimizer = optax.adam(1e-3)

    def forward(params, x):
        h = jax.nn.relu(x.reshape(x.shape[0], -1) @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    def loss(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()

    def step(carry, idx):
        params, opt_state, x, y = carry
        grads = jax.grad(loss)(params, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, x, y), None

    @jax.jit
    def epoch(params, opt_state, x, y, key):
        n = (x.shape[0] // batch_size) * batch_size
        order = jax.random.permutation(key, x.shape[0])[:n].reshape(-1, batch_size)
        (params, opt_state, _, _), _ = jax.lax.scan(step, (params, opt_state, x, y), order)
        return params, opt_state

    def init(key):
        k1, k2 = jax.random.split(key)
        glorot = jax.nn.initializers.glorot_uniform()
        params = {"w1": glorot(k1, (784, 128)), "b1": jnp.zeros(128), "w2": glorot(k2, (128, 10)),
                  "b2": jnp.zeros(10)}
        return params, optimizer.init(params)
    return init, epoch


def time_handwritten(x, y, epochs, batch_size):
    init, epoch = handwritten_epoch(batch_size)
    params, opt_state = init(jax.random.key(0))
    x, y = jnp.asarray(x), jnp.asarray(y)
    seconds = []
    for i in range(epochs + 1):  # the first call compiles
        start = time.perf_counter()
        params, opt_state = jax.block_until_ready(epoch(params, opt_state, x, y, jax.random.key(i)))
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two this many times")
    args = parser.parse_args(argv)
    data = fd.data.load("mnist", args.data_dir)
    fit_times, scan_times = [], []
    for _ in range(args.rounds):  # alternate so machine noise hits both alike
        history = fd.fit(fd.models.mlp(), data.train, optimizer=fd.optim.adam(1e-3), epochs=args.epochs + 1,
                         batch_size=args.batch_size, verbose=False)
        fit_times += history.epoch_seconds[1:]
        scan_times += time_handwritten(data.train.x, data.train.y, args.epochs, args.batch_size)
    fit_median, scan_median = statistics.median(fit_times), statistics.median(scan_times)
    print(json.dumps({"bench": "fit_vs_scan", "model": "mlp", "batch_size": args.batch_size,
                      "device": jax.devices()[0].device_kind, "fit_epoch_seconds": fit_median,
                      "scan_epoch_seconds": scan_median, "ratio": fit_median / scan_median}))


if __name__ == "__main__":
    main()
