"""funcdl: pure-functional deep learning on JAX, compiled whole by XLA.

    import funcdl as fd
    model = fd.nn.Sequential([fd.nn.Flatten(), fd.nn.Dense(128), fd.nn.relu, fd.nn.Dense(10)])
    history = fd.fit(model, x, y, batch_size=64, epochs=10, loss="cross_entropy",
                     optimizer=fd.optim.adam(1e-3), validation_split=0.1)   # the last 10 %, as Keras
    fd.evaluate(model, history.variables, (x_test, y_test))                # the test set, once
"""
from funcdl import data, errors, io, losses, models, nn, optim, train
from funcdl.errors import FuncdlError
from funcdl.io import load_model, save_model
from funcdl.nn import summary
from funcdl.train import History, callbacks, checkpoint, evaluate, fit, monitor, parallel, precision, predict, sweep

__version__ = "0.1.0"
__all__ = ["FuncdlError", "History", "callbacks", "checkpoint", "data", "errors", "evaluate", "fit", "io",
           "load_model", "losses", "models", "monitor", "nn", "optim", "parallel", "precision", "predict",
           "save_model", "summary", "sweep", "train"]
