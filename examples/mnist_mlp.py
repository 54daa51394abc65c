"""python examples/mnist_mlp.py --data-dir ../shared/data --epochs 10

The classic MNIST MLP (784-128-10, Adam 1e-3, batch 64), the funcdl way.
Where PyTorch writes a training loop and Keras calls `model.fit`, funcdl
builds the same model as data and `fd.fit` runs each epoch as one XLA call.
"""
import argparse

import funcdl as fd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="first N examples only (quick runs)")
    args = parser.parse_args(argv)

    data = fd.data.load("mnist", args.data_dir, limit=args.limit, validation_split=0.1, seed=0)  # 10 % held out
    model = fd.nn.Sequential([fd.nn.Flatten(), fd.nn.Dense(128), fd.nn.relu, fd.nn.Dense(10)])
    history = fd.fit(model, data.train, loss="cross_entropy", optimizer=fd.optim.adam(1e-3),
                     epochs=args.epochs, batch_size=64, validation_data=data.validation)
    result = fd.evaluate(model, history.variables, data.test)
    print(f"test accuracy {result['accuracy']:.4f}, test loss {result['loss']:.4f}")
    return result


if __name__ == "__main__":
    main()
