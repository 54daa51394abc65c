"""``History``: what a training run logged, epoch by epoch, and the state it ended in."""
from dataclasses import dataclass, field
from typing import Any

from funcdl.train.step import TrainState


@dataclass
class History:
    """Per-epoch logs and timings of a run (what ``fit`` returns), and the state it ended in.

    The loop appends to it after every epoch; callbacks read it and never
    change it. The training state itself lives in a :class:`TrainState`,
    passed from epoch to epoch; ``state`` is the last one, set when ``fit``
    returns (``variables``, ``opt_state`` and ``step`` read it).

    Attributes:
      history: ``{'loss': [...], 'accuracy': [...], 'val_loss': [...], 'val_accuracy': [...]}``, one
        entry per epoch (per-model arrays in a sweep).
      epoch_seconds: wall time of each training epoch (validation excluded).
      compile_seconds: time to trace and compile the epoch program.
      compiles_after_first_epoch: XLA compilations seen after the first epoch of the call (0 in steady state).
      skipped_steps: steps skipped for a non-finite loss or gradient (``skip_nonfinite``).
      stopped_epoch: the epoch a callback stopped the run after, or None.
      epochs_done: epochs trained so far (including those of a resumed run).
      seed: the run's seed.
      settings: what the run was started with (batch size, loss, data, ...), recorded in its checkpoints so that
        a resume that changes one is refused (``funcdl.train.checkpoint``).
      loop: ``'scan'`` (each epoch one XLA program) or ``'steps'`` (one compiled call per step).
      loss: the loss trained on and how it was matched to the model (``funcdl.train.objective``).
      step_losses: ``(global step, loss)`` of every ``log_every``-th step (``fit(log_every=N)``).
      validation: where ``val_*`` came from (``'validation_data'``, ``'validation_split 0.1 (last 100 examples)'``,
        or ``''`` for none).
      state: the final TrainState.
    """
    history: dict[str, list] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    compile_seconds: float = 0.0
    compiles_after_first_epoch: int = 0
    skipped_steps: int = 0
    stopped_epoch: int | None = None
    epochs_done: int = 0
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    loop: str = "scan"
    loss: str = ""
    step_losses: list[tuple[int, float]] = field(default_factory=list)
    validation: str = ""
    state: TrainState | None = None

    def log(self, logs: dict[str, Any]) -> None:
        """Append one epoch's logs."""
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    @property
    def variables(self) -> Any:
        """The final model variables."""
        return None if self.state is None else self.state.variables

    @property
    def opt_state(self) -> Any:
        """The final optimizer state."""
        return None if self.state is None else self.state.opt_state

    @property
    def step(self) -> int:
        """The number of steps taken (the global step)."""
        return 0 if self.state is None else int(self.state.step)
