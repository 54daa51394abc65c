"""python examples/linear_regression.py

A user-defined layer: `LinearLayer` owns a weight and a bias, written like a
torch.nn.Module subclass or a keras Layer, but as a pure function of its
params. It is fitted to y = 3x - 2 + noise with MSE and Adam, and it can be
saved and loaded like any built-in layer because it subclasses `fd.nn.Layer`.
"""
import argparse

import flax.linen as linen
import numpy as np

import funcdl as fd


class LinearLayer(fd.nn.Layer):
    """y = x @ weight + bias, params {'weight': (in, features), 'bias': (features,)}."""
    features: int = 1

    @linen.compact
    def __call__(self, x):
        weight = self.param("weight", linen.initializers.normal(0.1), (x.shape[-1], self.features))
        bias = self.param("bias", linen.initializers.zeros, (self.features,))
        return x @ weight + bias


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    y = (3 * x - 2 + 0.05 * rng.normal(size=(n, 1))).astype(np.float32)
    return x, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)

    x, y = make_data(args.examples)
    model = LinearLayer(features=1)
    history = fd.fit(model, (x, y), loss="mse", optimizer=fd.optim.adam(0.05), epochs=args.epochs,
                     batch_size=32, verbose=False)
    params = history.variables["params"]
    weight, bias = float(params["weight"][0, 0]), float(params["bias"][0])
    print(f"learned y = {weight:.3f} x + {bias:.3f} (true: 3x - 2); final MSE {history.history['loss'][-1]:.5f}")
    return {"weight": weight, "bias": bias, "loss": history.history["loss"][-1]}


if __name__ == "__main__":
    main()
