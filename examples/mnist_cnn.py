"""python examples/mnist_cnn.py --data-dir ../shared/data --epochs 2

The classic MNIST CNN (conv32-conv64-maxpool-dropout-dense128-dropout-dense).
Dropout needs randomness: `fd.fit` derives a fresh key for every step from
the seed, so the run is reproducible bit for bit.
"""
import argparse

import funcdl as fd
from funcdl import nn


def build_model(num_classes=10):
    # Same as fd.models.cnn(), spelled out: NHWC images, logits out.
    return nn.Sequential([
        nn.Conv2D(32, 3, activation="relu"),
        nn.Conv2D(64, 3, activation="relu"),
        nn.MaxPool2D(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Dense(128, activation="relu"), nn.Dropout(0.5),
        nn.Dense(num_classes),
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N examples only (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = fd.data.load("mnist", args.data_dir, limit=args.limit, validation_split=0.1, seed=0)  # 10 % held out
    model = build_model(data.num_classes)
    history = fd.fit(model, data.train, loss="cross_entropy", optimizer=fd.optim.adam(1e-3),
                     epochs=args.epochs, batch_size=64, validation_data=data.validation, seed=args.seed)
    result = fd.evaluate(model, history.variables, data.test)
    print(f"test accuracy {result['accuracy']:.4f}; confusion matrix:\n{result['confusion_matrix']}")
    return result


if __name__ == "__main__":
    main()
