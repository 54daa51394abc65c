"""How ``fit`` compiles and runs one epoch: scanned or stepped, on one device or a mesh, checked for non-finites.

The steps of an epoch carry no per-step finiteness checks (on the CPU every
extra operation in the loop body is paid at every step). :class:`CheckedEpoch`
runs that unguarded epoch, and only when its losses or its final state are not
finite runs it again from its start with guarded steps, which stop at the
first bad one (compiled on first need). ``skip_nonfinite`` needs the per-step
guard throughout, so it runs the guarded epoch alone.
"""
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from funcdl.errors import ConfigError
from funcdl.train import parallel
from funcdl.train.epoch import SteppedEpoch, TrainEpoch, make_train_epoch
from funcdl.train.memory import compile_lowered
from funcdl.train.step import StepMetrics, TrainState, all_finite, apply_model, make_train_step

LOOPS = ("auto", "scan", "steps")


def uses_convolution(model: Any, variables: Any, x: Any) -> bool:
    """Whether the model's forward pass contains a convolution (looked up in its jaxpr)."""
    jaxpr = jax.make_jaxpr(lambda v, x: apply_model(model, v, x))(variables, jnp.asarray(x[:1]))
    return "conv_general_dilated" in str(jaxpr)


def choose_loop(loop: str, model: Any, variables: Any, x: Any, eager: bool, data_parallel: bool) -> str:
    """``'scan'`` or ``'steps'`` for ``fit(loop=loop)``: 'auto' picks steps only on the CPU for XLA convolutions."""
    if loop not in LOOPS:
        raise ConfigError(f"unknown loop {loop!r}; choose one of {', '.join(LOOPS)}")
    if loop == "steps" and (eager or data_parallel):
        raise ConfigError("loop='steps' runs one compiled call per step; it cannot be combined with eager "
                          "or data_parallel (use loop='scan')")
    if loop != "auto":
        return loop
    if eager or data_parallel or jax.default_backend() != "cpu":
        return "scan"
    return "steps" if uses_convolution(model, variables, x) else "scan"


@dataclass(frozen=True)
class BuiltEpoch:
    """An epoch ready to run: ``run(state, x, y, key) -> (state, StepMetrics)``.

    Attributes:
      finite: the ShapeDtypeStruct (with its placement) of the per-step finite flags it returns.
      seconds: what building it cost (tracing and compiling).
    """
    run: TrainEpoch
    finite: jax.ShapeDtypeStruct
    seconds: float


@dataclass(frozen=True)
class EpochBuilder:
    """Everything that makes ``fit``'s epoch program, for either guard setting.

    Attributes:
      loop: ``'scan'`` (one XLA program) or ``'steps'`` (one compiled call per step).
      eager: run the plain function op by op (nothing compiled).
      mesh: a ``'data'`` mesh for data parallelism, or None.
      wrap: ``wrap(step) -> step``: what the run adds to every step (augmentation, step reports), or None.
    """
    model: Any
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    batch_size: int
    shuffle: bool
    loop: str
    eager: bool
    mesh: Any = None
    wrap: Callable | None = None

    def build(self, guard: bool, stop_on_nonfinite: bool, state: TrainState, x: Any, y: Any,
              key: jax.Array) -> BuiltEpoch:
        """The epoch with guarded (or unguarded) steps, compiled for these arguments' shapes and placements."""
        step = make_train_step(self.model, self.loss_fn, self.optimizer, guard)
        step = step if self.wrap is None else self.wrap(step)
        step = step if self.mesh is None else parallel.shard_batches(step, self.mesh)
        start = time.perf_counter()
        flags = jax.ShapeDtypeStruct((math.ceil(x.shape[0] / self.batch_size),), jnp.bool_)
        if self.loop == "steps":
            stepped = SteppedEpoch(step, self.batch_size, self.shuffle, stop_on_nonfinite).compile(state, x, y, key)
            return BuiltEpoch(stepped, flags, time.perf_counter() - start)
        epoch = make_train_epoch(step, self.batch_size, self.shuffle, stop_on_nonfinite)
        epoch = epoch if self.mesh is None else parallel.replicated_outputs(self.mesh, epoch)
        if self.eager:
            return BuiltEpoch(epoch, flags, 0.0)
        compiled = compile_lowered(jax.jit(epoch).lower(state, x, y, key))
        return BuiltEpoch(compiled, compiled.out_info[1].finite, time.perf_counter() - start)


def epoch_is_finite(state: TrainState, finite: jax.Array) -> jax.Array:
    """Whether an epoch's every loss (``finite``, per step) and its final state are finite."""
    return all_finite(state) & jnp.all(finite)


class CheckedEpoch:
    """The unguarded epoch, re-run from its start with guarded steps when it goes non-finite.

    Build it with :meth:`build`; call it like an epoch: ``(state, x, y, key) -> (state, metrics)``.
    """

    def __init__(self, builder: EpochBuilder, fast: BuiltEpoch, healthy: Callable, arguments: tuple):
        self.builder, self.fast, self.healthy = builder, fast, healthy
        self._arguments = arguments  # what the guarded epoch is compiled for, when it is first needed
        self._guarded: BuiltEpoch | None = None
        self.compile_seconds = fast.seconds

    @classmethod
    def build(cls, builder: EpochBuilder, state: TrainState, x: Any, y: Any, key: jax.Array) -> "CheckedEpoch":
        """Compile the unguarded epoch and the finiteness check for these arguments."""
        fast = builder.build(False, False, state, x, y, key)
        healthy, seconds = epoch_is_finite, 0.0
        if not builder.eager:
            start = time.perf_counter()
            healthy = compile_lowered(jax.jit(epoch_is_finite).lower(state, fast.finite))
            seconds = time.perf_counter() - start
        checked = cls(builder, fast, healthy, (state, x, y, key))
        checked.compile_seconds += seconds
        return checked

    def __call__(self, state: TrainState, x: Any, y: Any, key: jax.Array) -> tuple[TrainState, StepMetrics]:
        new_state, metrics = self.fast.run(state, x, y, key)
        if bool(self.healthy(new_state, metrics.finite)):
            return new_state, metrics
        if self._guarded is None:
            self._guarded = self.builder.build(True, True, *self._arguments)
        return self._guarded.run(state, x, y, key)


def build_epoch(builder: EpochBuilder, skip_nonfinite: bool, state: TrainState, x: Any, y: Any,
                key: jax.Array) -> tuple[TrainEpoch, float]:
    """(``fit``'s epoch, seconds spent compiling): guarded steps that skip bad batches, or a CheckedEpoch."""
    if skip_nonfinite:
        built = builder.build(True, False, state, x, y, key)
        return built.run, built.seconds
    checked = CheckedEpoch.build(builder, state, x, y, key)
    return checked, checked.compile_seconds


def eager_context(eager: bool) -> contextlib.AbstractContextManager:
    """``jax.disable_jit()`` for an eager run, else nothing."""
    return jax.disable_jit() if eager else contextlib.nullcontext()
