"""python examples/mnist_speedrun.py --data-dir ../shared/data --seeds 0,1,2

MNIST to >= 99.0% test accuracy in as little training time as possible.

A small CNN of funcdl layers (three conv3x3-BatchNorm-relu-maxpool stages,
32/64/128 channels, then one Dense), batch 512, Adam on a one-cycle learning
rate schedule (optax), label smoothing 0.1. The data lives on the device and
the whole training run -- every epoch's shuffle and every step -- is one XLA
call (``--steps-per-call`` cuts it into more). The reported time is that call
alone: compilation (ahead of time) and evaluation are not counted.

On CPU it runs too, more slowly, with the same single call: there funcdl's
Conv2D computes convolutions as matrix products over shifted windows, which
XLA:CPU runs fast inside loops too. ``--quick`` (or ``--limit N``) trains on
a few examples to check the plumbing.
"""
import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import funcdl as fd
from funcdl import nn

MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics


class Cast(nn.Layer):
    """Casts activations to ``dtype`` (bfloat16 compute with float32 parameters)."""
    dtype: str = "bfloat16"

    def __call__(self, x):
        return x.astype(self.dtype)


def build_model(widths=(32, 64, 128), bf16=False):
    """conv-BN-relu-maxpool x3 (28 -> 14 -> 7 -> 3), flatten, Dense(10); logits out (float32)."""
    layers = []
    for width in widths:
        layers += [Cast()] if bf16 else []
        layers += [nn.Conv2D(width, 3, padding="same", use_bias=False), nn.BatchNorm(), nn.relu, nn.MaxPool2D(2)]
    return nn.Sequential(layers + [nn.Flatten(), Cast("float32"), nn.Dense(10)])


def make_train(model, optimizer, steps_per_call, label_smoothing):
    """``run(variables, opt_state, x, y, order) -> (variables, opt_state)`` over ``steps_per_call`` steps.

    ``order`` is (steps_per_call, batch_size) example indices into the device-resident ``x``, ``y``.
    """
    def loss_fn(params, variables, x, y):
        logits, state = model.apply({**variables, "params": params}, (x - MEAN) / STD, train=True,
                                    mutable=["batch_stats"])
        targets = optax.smooth_labels(jax.nn.one_hot(y, 10), label_smoothing)
        return optax.softmax_cross_entropy(logits, targets).mean(), state

    def step(carry, index):
        variables, opt_state, x, y = carry
        grads, state = jax.grad(loss_fn, has_aux=True)(variables["params"], variables, x[index], y[index])
        updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
        variables = {**variables, **state, "params": optax.apply_updates(variables["params"], updates)}
        return (variables, opt_state, x, y), None

    def run(variables, opt_state, x, y, order):
        carry, _ = jax.lax.scan(step, (variables, opt_state, x, y), order)
        return carry[0], carry[1]
    return run


def epoch_orders(key, num_examples, batch_size, epochs):
    """(epochs * steps, batch_size) shuffled indices, a fresh permutation each epoch (last partial batch dropped)."""
    steps = num_examples // batch_size
    keys = jax.random.split(key, epochs)
    orders = jax.vmap(lambda k: jax.random.permutation(k, num_examples)[:steps * batch_size])(keys)
    return orders.reshape(epochs * steps, batch_size)


def test_accuracy(model, variables, x, y, chunk=2000):
    """Accuracy on (x, y) in inference mode (BatchNorm running statistics)."""
    predict = jax.jit(lambda v, xb: jnp.argmax(model.apply(v, (xb - MEAN) / STD), -1))
    correct = sum(int((predict(variables, x[i:i + chunk]) == y[i:i + chunk]).sum()) for i in range(0, len(x), chunk))
    return correct / len(x)


def train_seed(args, data, seed):
    """Train once from ``seed``; returns {'seed', 'seconds', 'compile_seconds', 'accuracy'}."""
    model = build_model(bf16=args.bf16)
    x, y = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    init_key, order_key = jax.random.split(jax.random.key(seed))
    variables = jax.jit(model.init)(init_key, x[:1])
    order = epoch_orders(order_key, len(x), args.batch_size, args.epochs)
    chunk = len(order) if args.steps_per_call is None else args.steps_per_call
    schedule = optax.cosine_onecycle_schedule(len(order), args.lr, pct_start=0.25)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(variables["params"])
    run = make_train(model, optimizer, chunk, args.label_smoothing)
    start = time.perf_counter()
    compiled = jax.jit(run, donate_argnums=(0, 1)).lower(variables, opt_state, x, y, order[:chunk]).compile()
    compile_seconds = time.perf_counter() - start
    calls = [order[i:i + chunk] for i in range(0, len(order) - chunk + 1, chunk)]  # whole chunks only
    jax.block_until_ready((variables, opt_state, calls))
    start = time.perf_counter()
    for part in calls:
        variables, opt_state = compiled(variables, opt_state, x, y, part)
    jax.block_until_ready(variables)
    seconds = time.perf_counter() - start
    accuracy = test_accuracy(model, variables, jnp.asarray(data.test.x), jnp.asarray(data.test.y))
    return {"seed": seed, "seconds": seconds, "compile_seconds": compile_seconds, "accuracy": accuracy,
            "steps": len(calls) * chunk, "xla_calls": len(calls)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--data-dir", default=None, help="folder holding mnist/ (default $FUNCDL_DATA_DIR)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-2, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--bf16", action="store_true", help="convolutions in bfloat16 (parameters stay float32)")
    parser.add_argument("--steps-per-call", type=int, default=None,
                        help="steps per XLA call (default: all of them)")
    parser.add_argument("--limit", type=int, default=None, help="first N train and test examples only")
    parser.add_argument("--quick", action="store_true",
                        help="a plumbing check: --limit 2048 --epochs 1 --batch-size 256")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.epochs, args.batch_size = args.limit or 2048, 1, min(args.batch_size, 256)
    return args


def main(argv=None):
    """Run the speedrun for every seed; print a summary (or JSON) and return it as a dict."""
    args = parse_args(argv)
    data = fd.data.load("mnist", args.data_dir, limit=args.limit)
    runs = [train_seed(args, data, int(seed)) for seed in args.seeds.split(",")]
    result = {"device": jax.devices()[0].device_kind, "epochs": args.epochs, "batch_size": args.batch_size,
              "runs": runs, "median_seconds": statistics.median(r["seconds"] for r in runs),
              "min_accuracy": min(r["accuracy"] for r in runs),
              "mean_accuracy": statistics.fmean(r["accuracy"] for r in runs)}
    if args.json:
        print(json.dumps(result))
    else:
        for r in runs:
            print(f"seed {r['seed']}: {100 * r['accuracy']:.2f}% in {r['seconds']:.3f} s "
                  f"({r['steps']} steps in {r['xla_calls']} XLA calls; compile {r['compile_seconds']:.1f} s)")
        print(f"{result['device']}: median {result['median_seconds']:.3f} s, accuracy mean "
              f"{100 * result['mean_accuracy']:.2f}% (min {100 * result['min_accuracy']:.2f}%)")
    return result


if __name__ == "__main__":
    main()
