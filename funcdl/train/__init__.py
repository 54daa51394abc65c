"""Training: the pure step, whole epochs as one XLA call, the shared epoch loop, and ``fit``.

The building blocks are public, for a loop of your own (as in flax's MNIST
example); with the same seed they visit the same batches as ``fit``::

    init_key, train_key = split_seed(seed)
    state = TrainState.create(model.init(init_key, x[:1]), optimizer)
    epoch = jax.jit(make_train_epoch(make_train_step(model, loss_fn, optimizer), batch_size=64))
    for e in range(epochs):
        state, metrics = epoch(state, x, y, epoch_key(train_key, e))   # metrics: StepMetrics per step

``make_train_step`` is one optimizer update on one masked batch;
``make_train_epoch`` scans it over a shuffled epoch (``epoch_indices`` pads
and masks the last batch); ``make_eval`` / ``make_predict`` are the batched
inference passes. ``run_epochs`` is the loop ``fit`` and ``sweep`` share
(timing, logs, callbacks).
"""
from funcdl.train import callbacks, checkpoint, monitor, parallel, precision, sweep
from funcdl.train.callbacks import Callback, EarlyStopping, ModelCheckpoint, Stop
from funcdl.train.epoch import (
                                SteppedEpoch,
                                TrainEpoch,
                                epoch_indices,
                                epoch_key,
                                epoch_plan,
                                make_eval,
                                make_predict,
                                make_train_epoch,
                                split_seed,
)
from funcdl.train.fit import evaluate, fit, predict
from funcdl.train.history import History
from funcdl.train.loop import Epochs, run_epochs
from funcdl.train.step import (
                                StepMetrics,
                                TrainState,
                                TrainStep,
                                all_finite,
                                apply_model,
                                count_correct,
                                make_train_step,
                                masked_mean,
)

__all__ = [
    "Callback", "EarlyStopping", "Epochs", "History", "ModelCheckpoint", "StepMetrics", "SteppedEpoch", "Stop",
    "TrainEpoch", "TrainState", "TrainStep", "all_finite", "apply_model", "callbacks", "checkpoint",
    "count_correct", "epoch_indices", "epoch_key", "epoch_plan", "evaluate", "fit", "make_eval", "make_predict",
    "make_train_epoch", "make_train_step", "masked_mean", "monitor", "parallel", "precision", "predict",
    "run_epochs", "split_seed", "sweep",
]
