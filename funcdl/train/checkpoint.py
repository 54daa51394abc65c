"""Resumable training checkpoints, written atomically.

A checkpoint folder holds ``checkpoint.msgpack``: model variables, optimizer
state, global step, epochs done (the data position: shuffles are derived from
the seed and the epoch number, so the next epoch's order is reproducible), the
seed, the run's settings (``History.settings``: batch size, loss, data, ...,
and what the caller adds, e.g. the command line's model and optimizer), and the
history so far. It is written to a temporary file and renamed, so a run killed
at any moment leaves either the old or the new checkpoint; a SHA-256 of the
content comes first, so a file changed or cut short afterwards is called
damaged, and so is one holding NaN or infinite values (training never saves
those). A resume that changes a recorded setting is refused, naming it.
"""
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from funcdl.errors import FileFormatError
from funcdl.io import atomic_path
from funcdl.train.history import History
from funcdl.train.step import TrainState

FILENAME = "checkpoint.msgpack"
_MAGIC = b"funcdl-checkpoint-sha256\n"  # then the 32-byte SHA-256 of the msgpack body, then the body


def save(directory: str | Path, state: TrainState, history: History,
         settings: Mapping[str, Any] | None = None) -> None:
    """Write ``state`` and ``history`` (logs so far, epochs done, seed, settings) as the checkpoint in ``directory``.

    Args:
      settings: JSON-able settings of the run recorded beside ``history.settings`` (a resume must repeat them).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "variables": jax.device_get(state.variables),
        "opt_state": serialization.to_state_dict(jax.device_get(state.opt_state)),
        "step": int(state.step), "epochs_done": history.epochs_done, "seed": history.seed,
        "history": json.dumps({"history": history.history, "epoch_seconds": history.epoch_seconds}),
        "settings": json.dumps({**history.settings, **(settings or {})}),
    }
    body = serialization.msgpack_serialize(payload)
    with atomic_path(directory / FILENAME) as tmp:
        tmp.write_bytes(_MAGIC + hashlib.sha256(body).digest() + body)


def run_settings(x: np.ndarray, y: np.ndarray, *, batch_size: int, loss: Any, seed: int, precision: str,
                 shuffle: bool, skip_nonfinite: bool) -> dict[str, Any]:
    """The settings of a ``fit`` run that a resume must repeat (``History.settings``), JSON-able.

    ``data`` is a fingerprint of the training arrays (their shapes and dtypes, every label and about 1,024 evenly
    spaced examples): other data, another ``limit`` or another normalisation give another one. In a multi-process
    run each process holds its own shard, so it is left out there.
    """
    settings = {"batch_size": int(batch_size), "seed": int(seed), "precision": precision, "shuffle": bool(shuffle),
                "skip_nonfinite": bool(skip_nonfinite),
                "loss": loss if isinstance(loss, str) else f"{getattr(loss, '__module__', '')}."
                                                           f"{getattr(loss, '__qualname__', type(loss).__name__)}"}
    if jax.process_count() == 1:
        settings["data"] = data_fingerprint(x, y)
    return settings


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """``'N examples, <hash>'`` of a training set: shapes, dtypes, every label and ~1,024 evenly spaced examples."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((x.shape, str(x.dtype), y.shape, str(y.dtype))).encode())
    digest.update(np.ascontiguousarray(x[::max(1, len(x) // 1024)]).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return f"{len(x)} examples, {digest.hexdigest()}"


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


def _damaged(path: Path, why: str) -> FileFormatError:
    return FileFormatError(f"checkpoint {path} is damaged ({why}); delete it to train from the start, or resume "
                           "from a copy of an intact checkpoint")


def _payload(path: Path) -> dict[str, Any]:
    """The checkpoint's content, its checksum verified (files of earlier versions carry none)."""
    raw = path.read_bytes()
    body = raw
    if raw.startswith(_MAGIC):
        digest, body = raw[len(_MAGIC):len(_MAGIC) + 32], raw[len(_MAGIC) + 32:]
        if hashlib.sha256(body).digest() != digest:
            raise _damaged(path, "its checksum does not match: it was changed or cut short after it was written")
    try:
        payload = serialization.msgpack_restore(body)
        if not isinstance(payload, dict) or not {"variables", "opt_state", "step", "seed", "history"} <= set(payload):
            raise ValueError("it is not a funcdl checkpoint")
        json.loads(payload["history"])
    except Exception as err:
        raise _damaged(path, f"unreadable: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    return payload


def recorded_settings(directory: str | Path) -> dict[str, Any]:
    """The settings the checkpoint in ``directory`` was written with (``{}`` for files of earlier versions)."""
    path = Path(directory) / FILENAME
    return _settings(path, _payload(path))


def _settings(path, payload):
    text = payload.get("settings", "{}")
    try:
        settings = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        settings = None
    if not isinstance(settings, dict):
        raise _damaged(path, "its settings are not a JSON object")
    return settings


def check_settings(directory: str | Path, settings: Mapping[str, Any]) -> None:
    """FileFormatError naming the first of ``settings`` that differs from what the checkpoint recorded.

    Settings the checkpoint did not record (files of earlier versions, or keys a caller did not pass) pass.
    """
    _compare(Path(directory) / FILENAME, recorded_settings(directory), settings)


def _compare(path, recorded, settings):
    for key, value in settings.items():
        if key in recorded and _json(recorded[key]) != _json(value):
            what = ("for other training data" if key == "data" else
                    f"with {key} {_shown(recorded[key])}, this run has {key} {_shown(value)}")
            raise FileFormatError(f"checkpoint {path} was written {what}; resume with the same settings, or train "
                                  "into a new folder")


def _json(value):
    return json.loads(json.dumps(value))  # tuples and lists, ints and floats compare as they were recorded


def _shown(value):
    if isinstance(value, bool) or value is None:
        return {True: "on", False: "off", None: "unset"}[value]
    return json.dumps(value) if not isinstance(value, str) else value


def _check_finite(path, tree, what):
    for key, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        if np.issubdtype(array.dtype, np.inexact) and not np.isfinite(array).all():
            raise _damaged(path, f"{what}{jax.tree_util.keystr(key)} holds NaN or infinite values, which training "
                                 "never saves")


def restore(directory: str | Path, state: TrainState, seed: int,
            settings: Mapping[str, Any] | None = None) -> tuple[TrainState, History]:
    """The state and history saved in ``directory``, for a run shaped like ``state`` and seeded with ``seed``.

    Args:
      settings: this run's settings (``History.settings``); each one the checkpoint recorded must be the same.
    Raises:
      FileFormatError: no checkpoint there, a damaged one (checksum, NaN), or one written for another model,
        optimizer, seed or settings.
    """
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise FileFormatError(f"no checkpoint to resume in {directory}: {FILENAME} is missing")
    payload = _payload(path)
    if int(payload["seed"]) != seed:
        raise FileFormatError(f"checkpoint {path} was written with seed {payload['seed']}, not {seed}; "
                              "resume with the same seed")
    _compare(path, _settings(path, payload), settings or {})
    try:
        variables = serialization.from_state_dict(state.variables, payload["variables"])
        opt_state = serialization.from_state_dict(state.opt_state, payload["opt_state"])
    except Exception as err:
        raise FileFormatError(f"checkpoint {path} was written for another model or optimizer: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    _check_shapes(path, state.variables, variables)
    _check_finite(path, variables, "variables")
    _check_finite(path, opt_state, "optimizer state")
    logged = json.loads(payload["history"])
    restored = TrainState(jax.tree.map(np.asarray, variables), opt_state, jnp.asarray(int(payload["step"]), jnp.int32))
    history = History(history=logged["history"], epoch_seconds=logged["epoch_seconds"],
                      epochs_done=int(payload["epochs_done"]), seed=seed, settings=dict(settings or {}))
    return restored, history
