"""Resumable training checkpoints, written atomically.

A checkpoint folder holds ``checkpoint.msgpack``: model variables, optimizer
state, global step, epochs done (the data position: shuffles are derived from
the seed and the epoch number, so the next epoch's order is reproducible), the
seed, and the history so far. It is written to a temporary file and renamed,
so a run killed at any moment leaves either the old or the new checkpoint.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from funcdl.errors import FileFormatError
from funcdl.io import atomic_path
from funcdl.train.history import History
from funcdl.train.step import TrainState

FILENAME = "checkpoint.msgpack"


def save(directory: str | Path, state: TrainState, history: History) -> None:
    """Write ``state`` and ``history`` (logs so far, epochs done, seed) as the checkpoint in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "variables": jax.device_get(state.variables),
        "opt_state": serialization.to_state_dict(jax.device_get(state.opt_state)),
        "step": int(state.step), "epochs_done": history.epochs_done, "seed": history.seed,
        "history": json.dumps({"history": history.history, "epoch_seconds": history.epoch_seconds}),
    }
    with atomic_path(directory / FILENAME) as tmp:
        tmp.write_bytes(serialization.msgpack_serialize(payload))


def exists(directory: str | Path) -> bool:
    """Whether ``directory`` holds a checkpoint."""
    return (Path(directory) / FILENAME).is_file()


def _check_shapes(path, expected, restored):
    """FileFormatError naming the first tensor whose shape differs (same names, another model's sizes)."""
    restored_leaves = jax.tree.leaves(restored)
    for (key, want), got in zip(jax.tree_util.tree_flatten_with_path(expected)[0], restored_leaves):
        if np.shape(want) != np.shape(got):
            raise FileFormatError(f"checkpoint {path} was written for another model: "
                                  f"{jax.tree_util.keystr(key)} has shape {np.shape(got)}, this model's is "
                                  f"{np.shape(want)}; resume with the same model and data, or use a new folder")


def restore(directory: str | Path, state: TrainState, seed: int) -> tuple[TrainState, History]:
    """The state and history saved in ``directory``, for a run shaped like ``state`` and seeded with ``seed``.

    Raises:
      FileFormatError: no checkpoint there, or one written for another model, optimizer or seed.
    """
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise FileFormatError(f"no checkpoint to resume in {directory}: {FILENAME} is missing")
    try:
        payload = serialization.msgpack_restore(path.read_bytes())
        variables = serialization.from_state_dict(state.variables, payload["variables"])
        opt_state = serialization.from_state_dict(state.opt_state, payload["opt_state"])
        logged = json.loads(payload["history"])
    except Exception as err:
        raise FileFormatError(f"checkpoint {path} is unreadable or was written for another model or "
                              f"optimizer: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    _check_shapes(path, state.variables, variables)
    if int(payload["seed"]) != seed:
        raise FileFormatError(f"checkpoint {path} was written with seed {payload['seed']}, not {seed}; "
                              "resume with the same seed")
    restored = TrainState(jax.tree.map(np.asarray, variables), opt_state, jnp.asarray(int(payload["step"]), jnp.int32))
    history = History(history=logged["history"], epoch_seconds=logged["epoch_seconds"],
                      epochs_done=int(payload["epochs_done"]), seed=seed)
    return restored, history
