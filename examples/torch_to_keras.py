"""python examples/torch_to_keras.py --data-dir ../shared/data --out runs/walkthrough

A PyTorch CNN, written the usual way (functional calls in `forward`), is
imported into funcdl by tracing, trained with XLA on MNIST, and exported to
Keras (`.keras`), a TensorFlow SavedModel and back to PyTorch (`.pt`); each
export is reloaded in its own framework and checked against funcdl.
Then run `funcdl compare runs/walkthrough/net.funcdl` for the parity table.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn as tnn

import funcdl as fd
from interop import keras as keras_bridge
from interop import pytorch, tensorflow


class Net(tnn.Module):
    """A small MNIST CNN in plain PyTorch (NCHW)."""

    def __init__(self):
        super().__init__()
        self.conv1 = tnn.Conv2d(1, 8, 3)
        self.conv2 = tnn.Conv2d(8, 16, 3)
        self.fc1 = tnn.Linear(16 * 5 * 5, 64)
        self.fc2 = tnn.Linear(64, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.fc1(x)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="runs/walkthrough")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="first N examples only (quick runs)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    model, variables = pytorch.from_torch(Net().eval(), torch.zeros(1, 1, 28, 28))  # traced, weights permuted
    data = fd.data.load("mnist", args.data_dir, limit=args.limit)
    history = fd.fit(model, data.train, optimizer=fd.optim.adam(1e-3), epochs=args.epochs, batch_size=64,
                     variables=variables)
    variables = history.variables
    accuracy = fd.evaluate(model, variables, data.test)["accuracy"]
    print(f"trained with XLA: test accuracy {accuracy:.4f}")

    fd.save_model(out / "net.funcdl", model, variables, input_shape=(28, 28, 1))
    keras_bridge.save_keras_file(out / "net.keras", model, variables, (28, 28, 1))
    tensorflow.to_saved_model(model, variables, out / "net_savedmodel", (28, 28, 1))
    pytorch.save_torch_file(out / "net.pt", model, variables, (28, 28, 1))

    x = data.test.x[:64]
    expected = fd.predict(model, variables, x)
    _, keras_variables, _ = keras_bridge.load_keras_file(out / "net.keras")
    module, saved = Net(), torch.load(out / "net.pt", weights_only=True)  # names "0.weight", ... in layer order
    module.load_state_dict(dict(zip(module.state_dict(), saved.values())))  # the original class, trained weights
    with torch.no_grad():
        from_torch = module.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    differences = {
        "keras": np.abs(fd.predict(model, keras_variables, x) - expected).max(),
        "savedmodel": np.abs(tensorflow.load_saved_model_outputs(out / "net_savedmodel", x) - expected).max(),
        "torch": np.abs(from_torch - expected).max(),
    }
    for name, value in differences.items():
        print(f"{name:<11} max abs difference to funcdl: {value:.1e}")
    return {"accuracy": accuracy, **differences}


if __name__ == "__main__":
    main()
