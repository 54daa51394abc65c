"""python examples/mnist_lstm.py --data-dir ../shared/data --epochs 3

An LSTM that reads each 28x28 image as 28 time steps of 28 pixels (row by row)
and classifies from its last hidden state. `ImageRows` turns NHWC images into
(batch, time, features); the LSTM's input projection for all 28 steps is one
matmul, and only the recurrence runs inside `lax.scan`.
"""
import argparse

import funcdl as fd
from funcdl import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--limit", type=int, default=None, help="first N examples only (quick runs)")
    args = parser.parse_args(argv)

    data = fd.data.load("mnist", args.data_dir, limit=args.limit, validation_split=0.1, seed=0)  # 10 % held out
    cell = nn.LSTM(128) if args.cell == "lstm" else nn.GRU(128)
    model = nn.Sequential([nn.ImageRows(), cell, nn.Dense(data.num_classes)])
    history = fd.fit(model, data.train, loss="cross_entropy", optimizer=fd.optim.adam(1e-3),
                     epochs=args.epochs, batch_size=64, validation_data=data.validation)
    result = fd.evaluate(model, history.variables, data.test)
    print(f"test accuracy {result['accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
