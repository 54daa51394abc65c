"""Training: the pure train step, whole epochs as one XLA call, and ``fit`` / ``evaluate`` / ``predict``."""
from funcdl.train.step import (SteppedEpoch, StepMetrics, TrainState, all_finite, apply_model, count_correct,
                               epoch_indices, epoch_plan, make_eval, make_train_epoch, make_train_step,
                               masked_mean)

__all__ = ["SteppedEpoch", "StepMetrics", "TrainState", "all_finite", "apply_model", "count_correct",
           "epoch_indices", "epoch_plan", "make_eval", "make_train_epoch", "make_train_step", "masked_mean"]
