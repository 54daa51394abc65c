"""A catalogue of bad inputs: one table, each row provoking one failure through the API or the CLI.

API rows expect a FuncdlError subclass with a one-line message. CLI rows expect an exit code and exactly
one line on stderr, ``error: ...``, with no traceback. Every row also checks that nothing was written (no
destination, no temporary file) and that no hostile payload ran: the malicious files below (a pickle whose
loading would create a marker file, Keras Lambda layers that create it when run) are proven live when built.
"""
import errno
import fcntl
import functools
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np
import pytest
from hostile_files import (
    Payload,
    deflated_zeros,
    gzip_idx_bomb,
    payload_pickle,
    rewrite,
    torch_save_bytes,
    weight_config,
    zip_bomb_like,
)

import funcdl as fd
from funcdl import checkpoint, nn
from funcdl.cli import main
from funcdl.errors import ConfigError, DataError, FileFormatError, FuncdlError, ShapeError
from funcdl.io import run_folder
from funcdl.train import History, TrainState
from interop import pytorch  # imports no torch until a function needs it

X = np.random.default_rng(0).random((20, 4, 4, 1), dtype=np.float32)
Y = (np.arange(20) % 10).astype(np.int32)


def small_model():
    return nn.Sequential((nn.Flatten(), nn.Dense(10)))


@functools.cache
def small_variables():
    return small_model().init(jax.random.key(0), X[:1])


def train(*extra):
    """argv of a small ``funcdl train`` run on the embedded digits."""
    epochs = [] if "--epochs" in extra else ["--epochs", "2"]
    return ["train", "--dataset", "digits", "--limit", "64", "--batch-size", "32", "--quiet", *epochs, *extra]


# -- input files, built once per module on first use ---------------------------------------------------------
def _evil_pt(path, marker):
    torch = pytest.importorskip("torch")
    torch.save({"weight": torch.zeros(2), "payload": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()


def _evil_pt2(path, marker, inputs):
    torch = pytest.importorskip("torch")
    payload = path.with_suffix(".payload")
    torch.save((Payload(marker),), payload)
    with zipfile.ZipFile(inputs.path("conv3d.pt2")) as source, zipfile.ZipFile(path, "w") as target:
        members = source.infolist()
        assert any("sample_inputs" in m.filename for m in members)
        for member in members:
            data = payload.read_bytes() if "sample_inputs" in member.filename else source.read(member.filename)
            target.writestr(member, data)


def _conv3d_pt2(path):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, 3, 3, 3),)), str(path))


def _clean_pt2(path):
    pytest.importorskip("torch")
    from interop import pytorch
    pytorch.save_torch_file(path, small_model(), small_variables(), X.shape[1:])


def _use_pickle(config):
    config["config"][next(iter(config["config"]))]["use_pickle"] = True
    return config


def _opaque_constant(config):
    config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                "tensor_meta": None}
    return config


def _hostile_pt2(path, inputs, **changes):
    """The clean funcdl .pt2 changed as ``hostile_files.rewrite`` says."""
    rewrite(inputs.path("clean.pt2"), path, **changes)


def _bomb_keras(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        deflated_zeros(archive, "model.weights.h5", 10 << 20)


def _bomb_pt(path):
    torch = pytest.importorskip("torch")
    plain = path.with_suffix(".plain")
    plain.write_bytes(torch_save_bytes(torch, {"weight": torch.zeros(3, 2)}))
    zip_bomb_like(plain, path, "/data/0", 10 << 20)


def limited(c, argv):
    """``argv`` run under a 1 MB unpacking limit (the bombs below inflate to 10 MB)."""
    c.monkeypatch.setenv("FUNCDL_MAX_BYTES", str(1 << 20))
    return argv


def _lambda_keras(path, marker):
    keras = pytest.importorskip("keras")
    where = str(marker)  # a str: keras stores the lambda's closure in the file
    run_marker = keras.layers.Lambda(lambda x: (open(where, "a").close(), x)[1], name="marker")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), run_marker]).save(str(path))
    assert marker.exists()  # keras ran the lambda while building the model: the payload is live
    marker.unlink()


def _conv3d_keras(path):
    keras = pytest.importorskip("keras")
    layers = keras.layers
    # An explicit name: keras numbers auto-names per process ('conv3d_1' after another test made one).
    keras.Sequential([keras.Input((4, 4, 4, 1)), layers.Conv3D(2, 3, name="conv3d"), layers.Flatten(),
                      layers.Dense(2)]).save(str(path))


def _funcdl(path, *layers):
    model = nn.Sequential((nn.Flatten(),) + layers)
    fd.save_model(path, model, model.init(jax.random.key(0), X[:1]), input_shape=X.shape[1:])


def _checkpoint(folder, model, x, optimizer="adam"):
    """A checkpoint of ``model`` (untrained) as ``funcdl train --resume`` would write it."""
    variables = model.init(jax.random.key(0), x[:1])
    opt_state = fd.optim.get(optimizer, 1e-3, flavor="torch").init(variables["params"])
    checkpoint.save(folder, TrainState(variables, opt_state, 0), History(seed=0))


def _checkpoint_with(folder, settings=None, nan=False):
    """A checkpoint of the mlp on digits, recording ``settings``, or holding NaN weights."""
    model = fd.models.mlp(10)
    variables = model.init(jax.random.key(0), DIGIT)
    if nan:
        variables = jax.tree.map(lambda leaf: leaf * np.nan, variables)
    opt_state = fd.optim.get("adam", 1e-3, flavor="torch").init(variables["params"])
    checkpoint.save(folder, TrainState(variables, opt_state, 0), History(seed=0), settings)


def _changed_after_writing(folder, inputs):
    shutil.copytree(inputs.path("ckpt_mlp"), folder)
    data = bytearray((folder / checkpoint.FILENAME).read_bytes())
    data[-1] ^= 0xFF  # one flipped byte at the end of the body
    (folder / checkpoint.FILENAME).write_bytes(bytes(data))


def _raw_funcdl(path, input_shape="[4, 4, 1]", architecture=None, dtype=np.float32):
    """A .funcdl written by hand (save_model refuses to write these): its header and tensors as given."""
    from safetensors.numpy import save_file
    flat = {k: v.astype(dtype) for k, v in fd.io.model_file.flatten_variables(small_variables()).items()}
    header = {"funcdl.format": "1", "funcdl.input_shape": input_shape,
              "funcdl.architecture": architecture or json.dumps(nn.to_config(small_model()))}
    save_file(flat, str(path), metadata=header)


def _safetensors_named_pt(path):
    from safetensors.numpy import save_file
    save_file({"weight": np.zeros((3, 2), np.float32)}, str(path))


DEEP = "[" * 100000  # deeper than Python's recursion limit


def _deep_keras(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("config.json", DEEP)


def _torch_file(path, obj):
    torch = pytest.importorskip("torch")
    torch.save(obj(torch), path)


DIGIT = np.zeros((1, 8, 8, 1), np.float32)
BUILDERS = {
    "small.funcdl": lambda p, i: fd.save_model(p, small_model(), small_variables(), input_shape=X.shape[1:]),
    "layernorm_bias.funcdl": lambda p, i: _funcdl(p, nn.Dense(4), nn.LayerNorm(use_scale=False)),
    "gelu_tanh.funcdl": lambda p, i: _funcdl(p, nn.Dense(4), nn.GELU(approximate=True)),
    "plain.pt": lambda p, i: _torch_file(p, lambda torch: {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}),
    "evil.pt": lambda p, i: _evil_pt(p, i.marker),
    "evil.pt2": lambda p, i: _evil_pt2(p, i.marker, i),
    "conv3d.pt2": lambda p, i: _conv3d_pt2(p),
    "clean.pt2": lambda p, i: _clean_pt2(p),
    "pickle_p0.pt2": lambda p, i: _hostile_pt2(p, i, add={"data/notes": payload_pickle(i.marker, 0)}),
    "pickle_p2.pt2": lambda p, i: _hostile_pt2(p, i, replace={"sample_inputs/model.pt": payload_pickle(i.marker, 2)}),
    "flag_lie_p5.pt2": lambda p, i: _hostile_pt2(p, i, replace={"weights/weight_0": payload_pickle(i.marker, 5)}),
    "use_pickle.pt2": lambda p, i: _hostile_pt2(p, i, replace={"weights/weight_0": payload_pickle(i.marker, 2)},
                                                edit_json=weight_config(_use_pickle)),
    "opaque.pt2": lambda p, i: _hostile_pt2(p, i, add={"data/constants/opaque_obj_0": payload_pickle(i.marker, 2)},
                                            edit_json={"_constants_config.json": _opaque_constant}),
    "traversal.pt2": lambda p, i: _hostile_pt2(p, i, extra_names=[("../../payload.py", b"print(1)")]),
    "bomb.pt2": lambda p, i: zip_bomb_like(i.path("clean.pt2"), p, "extra/funcdl.json", 10 << 20),
    "bomb.keras": lambda p, i: _bomb_keras(p),
    "bomb.pt": lambda p, i: _bomb_pt(p),
    "bomb-idx3-ubyte.gz": lambda p, i: gzip_idx_bomb(p, (10, 28, 28), 10 << 20),
    "huge-idx3-ubyte.gz": lambda p, i: gzip_idx_bomb(p, (2 ** 32 - 1,) * 3, 0),
    "notes.pt": lambda p, i: p.write_text("meeting notes, not a model\n"),
    "picture.keras": lambda p, i: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)),
    "lambda.keras": lambda p, i: _lambda_keras(p, i.marker),
    "lambda.h5": lambda p, i: _lambda_keras(p, i.marker),
    "conv3d.keras": lambda p, i: _conv3d_keras(p),
    "only.weights.h5": lambda p, i: p.write_bytes(b"\x89HDF\r\n\x1a\n"),
    "conv3d.json": lambda p, i: p.write_text(json.dumps(
        {"type": "Sequential", "layers": [{"type": "Flatten"}, {"type": "Conv3D", "features": 2}]})),
    "broken.json": lambda p, i: p.write_text('{"type": "Sequential", '),
    "ckpt_mlp": lambda p, i: _checkpoint(p, fd.models.mlp(10), DIGIT),
    "ckpt_other_sizes": lambda p, i: _checkpoint(p, fd.models.mlp(10), X),  # same names, 4x4 images
    "ckpt_other_layers": lambda p, i: _checkpoint(p, small_model(), DIGIT),
    "ckpt_garbage": lambda p, i: (p.mkdir(), (p / checkpoint.FILENAME).write_bytes(b"\x93not msgpack")),
    "ckpt_lr": lambda p, i: _checkpoint_with(p, {"--lr": 0.01}),
    "ckpt_nan": lambda p, i: _checkpoint_with(p, nan=True),
    "ckpt_changed": _changed_after_writing,
    "negative_shape.funcdl": lambda p, i: _raw_funcdl(p, input_shape="[-1, 4]"),
    "text_shape.funcdl": lambda p, i: _raw_funcdl(p, input_shape='"abc"'),
    "deep.funcdl": lambda p, i: _raw_funcdl(p, architecture=DEEP),
    "int_weights.funcdl": lambda p, i: _raw_funcdl(p, dtype=np.int32),
    "complex_weights.funcdl": lambda p, i: _raw_funcdl(p, dtype=np.complex64),
    "weights.pt": lambda p, i: _safetensors_named_pt(p),
    "picture.json": lambda p, i: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    "deep.json": lambda p, i: p.write_text(DEEP),
    "deep.keras": lambda p, i: _deep_keras(p),
}


class Inputs:
    """The input files of the rows, each built on first use in one module-wide folder."""

    def __init__(self, folder):
        self.folder = folder
        self.marker = folder / "payload-ran"

    def path(self, name):
        path = self.folder / name
        if not path.exists():
            BUILDERS[name](path, self)
        return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return Inputs(tmp_path_factory.mktemp("inputs"))


# -- ways to make writing fail ----------------------------------------------------------------------------------
def full_disk(monkeypatch, owner, attribute, target):
    """Make ``owner.attribute`` write a few bytes to its destination, then fail as a full disk does."""
    def write(*args, **kwargs):
        with open(target(*args), "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(owner, attribute, write)


def full_disk_for_funcdl(c):
    full_disk(c.monkeypatch, pathlib.Path, "write_bytes", lambda self, *_: self)


def full_disk_for_torch(c):
    torch = pytest.importorskip("torch")
    full_disk(c.monkeypatch, torch, "save", lambda obj, f, *_: f)


def full_disk_for_keras(c):
    keras = pytest.importorskip("keras")
    full_disk(c.monkeypatch, keras.Model, "save", lambda self, f, *_: f)


def read_only(c):
    """A folder nobody may write in; as root (where chmod does not stop writes) os.access says so instead."""
    folder = c.tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        c.monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (
            mode & os.W_OK and pathlib.Path(p).resolve() == folder.resolve()) else real(p, mode, **kw))
    return folder


# -- what a user already has ------------------------------------------------------------------------------------
def user_folder(c, *names):
    """The user's folder ``runs``: a model (a copy of small.funcdl), notes, and empty files named ``names``."""
    folder = c.tmp / "runs"
    folder.mkdir()
    shutil.copy(c.inputs.path("small.funcdl"), folder / "model.funcdl")
    (folder / "notes.txt").write_text("the user's notes\n")
    for name in names:
        (folder / name).write_bytes(b"the user's")
    return folder


def user_file(c, name="a-file"):
    (c.tmp / name).write_text("the user's file, not a folder\n")
    return c.tmp / name


def in_use(c, folder):
    """``folder``, locked as a running ``funcdl train`` holds it (released when the row ends)."""
    folder.mkdir()
    handle = os.open(folder / run_folder.LOCK, os.O_RDWR | os.O_CREAT)
    os.write(handle, b"pid 1234, started 2026-01-01T00:00:00: funcdl train --out runs\n")
    fcntl.flock(handle, fcntl.LOCK_EX)
    c.cleanup.append(lambda: os.close(handle))
    return folder


def full_disk_for_saved_model(c):
    """TensorFlow's own report of a full disk: an OpError after writing part of the folder."""
    tf = pytest.importorskip("tensorflow")

    def save(module, folder, **kwargs):
        (pathlib.Path(folder) / "saved_model.pb").write_bytes(b"partial")
        raise tf.errors.ResourceExhaustedError(None, None, f"{folder}/variables; No space left on device")
    c.monkeypatch.setattr(tf.saved_model, "save", save)


# -- the catalogue ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    name: str
    provoke: Callable  # (ctx) -> argv (CLI row), or does the failing API call (API row)
    expect: object  # exit code (CLI) or exception class (API)
    message: tuple  # substrings of the one-line message
    needs: tuple = ()  # modules the row needs (skipped without them)


def api(name, call, error, *message, needs=()):
    return Row(name, call, error, message, needs)


def cli(name, argv, code, *message, needs=()):
    return Row(name, argv, code, message, needs)


TORCH, KERAS, TF = ("torch",), ("keras",), ("tensorflow",)
STRINGS = np.array(["a"] * 20)

ROWS = [
    # -- API: shapes, dtypes, ranks, labels, empty data, batch sizes, epochs, NaN --------------------------------
    api("evaluate: input of the wrong shape", lambda c: fd.evaluate(
        small_model(), small_variables(), (np.zeros((3, 5, 5, 1), np.float32), Y[:3])), ShapeError,
        "expects input with 16 features"),
    api("predict: rank-3 input to a Conv2D", lambda c: fd.predict(
        nn.Sequential((nn.Conv2D(2, (3, 3)),)), nn.Sequential((nn.Conv2D(2, (3, 3)),)).init(
            jax.random.key(0), X[:1]), X[..., 0]), ShapeError, "Conv2D"),
    api("evaluate: string inputs", lambda c: fd.evaluate(small_model(), small_variables(), (STRINGS, Y)),
        DataError, "evaluation data: x has dtype <U1", "numeric"),
    api("fit: complex inputs", lambda c: fd.fit(small_model(), (X.astype(np.complex64), Y), epochs=1,
                                                  batch_size=10, verbose=False), DataError, "complex64"),
    api("evaluate: string labels", lambda c: fd.evaluate(small_model(), small_variables(), (X, STRINGS)),
        DataError, "class labels have dtype <U1"),
    api("fit: labels of rank 2 for an integer-label loss", lambda c: fd.fit(
        small_model(), (X, Y[:, None]), epochs=1, batch_size=10, verbose=False), DataError,
        "integer class labels of shape (N,), got shape (20, 1)"),
    api("fit: one-hot targets narrower than the model's output", lambda c: fd.fit(
        small_model(), (X, np.eye(3, dtype=np.float32)[Y % 3]), loss="categorical_crossentropy", epochs=1,
        batch_size=10, verbose=False), ShapeError, "outputs shape (10,)", "targets have shape (3,)"),
    api("evaluate: a label past the model's classes", lambda c: fd.evaluate(
        small_model(), small_variables(), (X, np.where(Y == 9, 10, Y))), DataError,
        "labels must be integers in [0, 10)", "max=10"),
    api("one_hot: a label past num_classes", lambda c: fd.data.one_hot(np.array([0, 12]), 10), DataError,
        "found min=0, max=12"),
    api("fit: empty validation data", lambda c: fd.fit(
        small_model(), (X, Y), validation_data=(X[:0], Y[:0]), epochs=1, batch_size=10, verbose=False),
        DataError, "validation data is empty"),
    api("fit: a string as data", lambda c: fd.fit(small_model(), "train.csv", verbose=False), DataError,
        "training data must be numpy arrays x and y, an (x, y) pair", "got str"),
    api("fit: x alone, no y", lambda c: fd.fit(small_model(), X, verbose=False), DataError,
        "got ndarray alone (y is missing)"),
    api("fit: batches of (x, y, sample_weight)", lambda c: fd.fit(
        small_model(), [(X, Y, Y)], verbose=False), DataError, "is an (x, y, sample_weight) triple"),
    api("fit: a generator for 2 epochs without steps_per_epoch", lambda c: fd.fit(
        small_model(), ((X, Y) for _ in range(3)), epochs=2, verbose=False), ConfigError,
        "used up after one pass; for 2 epochs pass steps_per_epoch=N"),
    api("fit: steps_per_epoch with arrays", lambda c: fd.fit(
        small_model(), (X, Y), steps_per_epoch=3, verbose=False), ConfigError, "steps_per_epoch is for streamed"),
    api("fit: validation_split and validation_data", lambda c: fd.fit(
        small_model(), (X, Y), validation_split=0.2, validation_data=(X, Y), verbose=False), ConfigError,
        "give validation_data or validation_split, not both"),
    api("fit: validation_split 1.0", lambda c: fd.fit(small_model(), (X, Y), validation_split=1.0, verbose=False),
        ConfigError, "validation_split must be a fraction in (0, 1), got 1.0"),
    api("fit: augment=True on inputs that are not images", lambda c: fd.fit(
        small_model(), (X.reshape(20, 16), Y), augment=True, batch_size=10, verbose=False), ConfigError,
        "augment crops and flips images (N, H, W, C); the inputs have shape (20, 16)"),
    api("fit: augment of the wrong type", lambda c: fd.fit(small_model(), (X, Y), augment="flip", verbose=False),
        ConfigError, "augment must be True, False or a function (key, x) -> x, got str"),
    api("fit: log_every 0", lambda c: fd.fit(small_model(), (X, Y), log_every=0, verbose=False), ConfigError,
        "log_every must be a positive number of steps or None, got 0"),
    api("fit: a callback that is no Callback", lambda c: fd.fit(
        small_model(), (X, Y), callbacks=[print], verbose=False), ConfigError,
        "callbacks must be fd.callbacks.Callback instances", "got builtin_function_or_method"),
    api("freeze: a layer the model does not have", lambda c: fd.fit(small_model(), (X, Y), optimizer=fd.optim.freeze(
        fd.optim.adam(1e-3), ["layers_7"]), batch_size=10, verbose=False), ConfigError,
        "no parameter is called 'layers_7' or lies below it; the model's layers are: layers_1"),
    api("predict: no examples", lambda c: fd.predict(small_model(), small_variables(), X[:0]), DataError,
        "at least one example"),
    api("data.load: limit 0 (an empty dataset)", lambda c: fd.data.load("digits", limit=0), ConfigError,
        "limit must be a positive integer"),
    api("validation split leaving an empty part", lambda c: fd.data.train_validation_split(
        fd.data.ArrayDataset(X, Y), 0.01, 0), DataError, "leaves an empty split"),
    api("evaluate: batch_size 0", lambda c: fd.evaluate(small_model(), small_variables(), (X, Y), batch_size=0),
        ConfigError, "batch_size must be a positive integer, got 0"),
    api("predict: batch_size 0", lambda c: fd.predict(small_model(), small_variables(), X, batch_size=0),
        ConfigError, "batch_size must be a positive integer, got 0"),
    api("fit: epochs -1", lambda c: fd.fit(small_model(), (X, Y), epochs=-1, batch_size=10, verbose=False),
        ConfigError, "epochs must be an integer >= 0, got -1"),
    api("evaluate: NaN in the inputs", lambda c: fd.evaluate(
        small_model(), small_variables(), (np.where(np.arange(20)[:, None, None, None] == 4, np.nan, X), Y)),
        DataError, "NaN/inf values (first in example 4)"),
    api("fit: NaN in regression targets", lambda c: fd.fit(
        small_model(), (X, np.where(np.eye(10, dtype=np.float32)[Y] > 0, np.nan, 0.0)), loss="mse", epochs=1,
        batch_size=10, verbose=False), DataError, "y contains NaN/inf"),
    api("fit: resume from a folder holding no checkpoint", lambda c: fd.fit(
        small_model(), (X, Y), resume=c.tmp, epochs=1, batch_size=10, verbose=False), FileFormatError,
        "no checkpoint to resume in", "checkpoint.msgpack is missing"),
    # -- API: unknown names ----------------------------------------------------------------------------------
    api("unknown model", lambda c: fd.models.get("resnet50", 10), ConfigError,
        "unknown model 'resnet50'; choose one of: cnn, gru, lstm, mlp"),
    api("unknown dataset", lambda c: fd.data.load("cifar1000"), ConfigError, "unknown dataset 'cifar1000'"),
    api("unknown optimizer flavor", lambda c: fd.optim.get("adam", 1e-3, flavor="jax"), ConfigError,
        "unknown optimizer flavor 'jax'; choose one of: keras, torch"),
    api("unknown loss", lambda c: fd.losses.get("hinge"), ConfigError, "unknown loss 'hinge'"),
    api("unknown layer in an architecture", lambda c: nn.from_config({"type": "Conv3D", "features": 2}),
        ConfigError, "unknown layer 'Conv3D'; choose one of:"),
    api("unknown setting of a known layer", lambda c: nn.from_config({"type": "Dense", "units": 2}),
        ConfigError, "layer Dense has no setting 'units'"),
    # -- CLI: train ------------------------------------------------------------------------------------------
    cli("train --epochs 0 (no --out folder made)", lambda c: train("--epochs", "0", "--out", c.tmp / "run"), 2,
        "--epochs must be a positive integer, got 0"),
    cli("train --batch-size 0", lambda c: train("--batch-size", "0"), 2, "--batch-size must be a positive integer"),
    cli("train --batch-size larger than --limit", lambda c: train("--limit", "20", "--batch-size", "64"), 2,
        "batch_size 64 is larger than the 18 training examples"),  # 2 of the 20 held out for validation
    cli("train --limit 0", lambda c: train("--limit", "0"), 2, "limit must be a positive integer"),
    cli("train --validation-split 1.5", lambda c: train("--validation-split", "1.5"), 2,
        "validation_split must be in [0, 1)"),
    cli("train --early-stopping without a validation split", lambda c: train(
        "--early-stopping", "2", "--validation-split", "0"), 2, "--early-stopping watches val_loss on the validation",
        "needs --validation-split above 0"),
    cli("train --log-every 0", lambda c: train("--log-every", "0"), 2,
        "--log-every must be a positive number of steps"),
    cli("train --dataset auto with a --data-dir holding no MNIST", lambda c: train(
        "--dataset", "auto", "--data-dir", c.tmp), 2, "--dataset auto: MNIST not found"),
    cli("sweep --batch-size 32,x", lambda c: ["sweep", "--batch-size", "32,x"], 2,
        "--batch-size must be a comma-separated list, got '32,x'"),
    cli("sweep --batch-size 0", lambda c: ["sweep", "--dataset", "digits", "--batch-size", "32,0", "--quiet"], 2,
        "--batch-size must be a positive integer, got 0"),
    cli("train --num-processes without --coordinator", lambda c: train("--num-processes", "2"), 2,
        "--num-processes needs --coordinator"),
    cli("train --resume: checkpoint of the same layers at other sizes", lambda c: train(
        "--resume", c.inputs.path("ckpt_other_sizes")), 2, "was written for another model", "has shape (16, 128)"),
    cli("train --resume: checkpoint of another architecture", lambda c: train(
        "--resume", c.inputs.path("ckpt_other_layers"), "--model", "mlp"), 2,
        "was written for another model or optimizer"),
    cli("train --resume: checkpoint of another optimizer", lambda c: train(
        "--resume", c.inputs.path("ckpt_mlp"), "--optimizer", "sgd"), 2, "another model or optimizer"),
    cli("train --resume: checkpoint of another seed", lambda c: train(
        "--resume", c.inputs.path("ckpt_mlp"), "--seed", "3"), 2, "with seed 0, not 3"),
    cli("train --resume: damaged checkpoint", lambda c: train("--resume", c.inputs.path("ckpt_garbage")), 2,
        "is damaged (unreadable", "delete it to train from the start"),
    cli("train --out on a full disk", lambda c: (full_disk_for_funcdl(c), train(
        "--epochs", "1", "--out", c.tmp / "run"))[1], 2, "model.funcdl: No space left on device; free space"),
    # -- CLI: hostile files ----------------------------------------------------------------------------------
    cli("convert a .pt whose pickle runs code", lambda c: [
        "convert", c.inputs.path("evil.pt"), c.tmp / "out.funcdl", "--arch", "mlp"], 2,
        "refused to load", "pickles objects other than tensors", "code that would run", ".safetensors",
        needs=TORCH),
    cli("inspect a .pt whose pickle runs code", lambda c: ["inspect", c.inputs.path("evil.pt"), "--arch", "mlp"], 2,
        "refused to load", ".safetensors", needs=TORCH),
    cli("convert a .pt2 with a pickled payload", lambda c: [
        "convert", c.inputs.path("evil.pt2"), c.tmp / "out.funcdl"], 2, "refused to load", needs=TORCH),
    cli("inspect a .pt2 with a protocol-0 pickle member", lambda c: ["inspect", c.inputs.path("pickle_p0.pt2")], 2,
        "refused to load", "is a pickle (protocol 0)", needs=TORCH),
    cli("convert a .pt2 whose sample inputs are a protocol-2 pickle", lambda c: [
        "convert", c.inputs.path("pickle_p2.pt2"), c.tmp / "out.funcdl"], 2, "is a pickle (protocol 2)", needs=TORCH),
    cli("convert a .pt2 whose weight record is a pickle its config calls raw", lambda c: [
        "convert", c.inputs.path("flag_lie_p5.pt2"), c.tmp / "out.funcdl"], 2, "weight_0 is a pickle (protocol 5)",
        needs=TORCH),
    cli("convert a .pt2 with a weight marked use_pickle", lambda c: [
        "convert", c.inputs.path("use_pickle.pt2"), c.tmp / "out.funcdl"], 2, "stored as a pickle (use_pickle: True)",
        needs=TORCH),
    cli("inspect a .pt2 with an opaque object constant", lambda c: ["inspect", c.inputs.path("opaque.pt2")], 2,
        "refused to load", "opaque_obj_0", needs=TORCH),
    cli("convert a .pt2 with a member outside the archive", lambda c: [
        "convert", c.inputs.path("traversal.pt2"), c.tmp / "out.funcdl"], 2, "points outside the archive",
        needs=TORCH),
    api("read_pt2: a protocol-0 pickle member", lambda c: pytorch.read_pt2(
        c.inputs.path("pickle_p0.pt2")), FileFormatError, "refused to load", needs=TORCH),
    # -- CLI and API: decompression bombs (a 1 MB limit; each bomb inflates to 10 MB) -------------------------------
    cli("inspect a .pt2 zip bomb", lambda c: limited(c, ["inspect", c.inputs.path("bomb.pt2")]), 2,
        "would unpack to 10,", "over the limit of 1,048,576", "FUNCDL_MAX_BYTES", needs=TORCH),
    cli("inspect a .keras zip bomb", lambda c: limited(c, ["inspect", c.inputs.path("bomb.keras")]), 2,
        "bomb.keras would unpack to", "over the limit", needs=KERAS),
    cli("convert a .pt zip bomb", lambda c: limited(c, [
        "convert", c.inputs.path("bomb.pt"), c.tmp / "out.funcdl", "--arch", "mlp"]), 2, "over the limit",
        needs=TORCH),
    api("read_idx: a gzip bomb behind a small header", lambda c: fd.data.read_idx(
        c.inputs.path("bomb-idx3-ubyte.gz")), DataError, "payload has extra bytes"),
    api("read_idx: a header declaring (2**32-1)**3 bytes", lambda c: fd.data.read_idx(
        c.inputs.path("huge-idx3-ubyte.gz")), DataError, "would unpack to 79,228,162,", "over the limit"),
    cli("convert a .keras with a Lambda layer", lambda c: [
        "convert", c.inputs.path("lambda.keras"), c.tmp / "out.funcdl"], 2,
        "Lambda layer ('marker')", "code would run", "refused", "unsafe", "only if you trust", needs=KERAS),
    cli("inspect a .keras with a Lambda layer", lambda c: ["inspect", c.inputs.path("lambda.keras")], 2,
        "Lambda layer", "refused", needs=KERAS),
    cli("convert an .h5 full model with a Lambda layer", lambda c: [
        "convert", c.inputs.path("lambda.h5"), c.tmp / "out.funcdl"], 2, "Lambda layer ('marker')", "refused",
        needs=KERAS),
    # -- CLI: wrong files, missing files, missing settings ---------------------------------------------------
    cli("convert a .pt without --arch", lambda c: ["convert", c.inputs.path("plain.pt"), c.tmp / "out.funcdl"], 2,
        "carries no architecture; pass --arch", needs=TORCH),
    cli("convert a state dict that does not fit --arch", lambda c: [
        "convert", c.inputs.path("plain.pt"), c.tmp / "out.funcdl", "--arch", "mlp"], 2, "parameter groups",
        needs=TORCH),
    cli("convert a text file named .pt", lambda c: [
        "convert", c.inputs.path("notes.pt"), c.tmp / "out.funcdl", "--arch", "mlp"], 2,
        "notes.pt is not a model file: it is a text file", needs=TORCH),
    cli("convert a PNG named .keras", lambda c: ["convert", c.inputs.path("picture.keras"), c.tmp / "out.funcdl"],
        2, "picture.keras is not a model file: it is a PNG image", needs=KERAS),
    cli("convert a .weights.h5 without --arch", lambda c: [
        "convert", c.inputs.path("only.weights.h5"), c.tmp / "out.funcdl"], 2, "holds Keras weights only; pass --arch",
        needs=KERAS),
    cli("convert to .onnx", lambda c: ["convert", c.inputs.path("small.funcdl"), c.tmp / "out.onnx"], 2,
        "out.onnx: unknown model file type; use one of .funcdl"),
    cli("convert a missing file", lambda c: ["convert", c.tmp / "absent.pt", c.tmp / "out.funcdl", "--arch", "mlp"],
        2, "absent.pt does not exist"),
    cli("inspect a missing file", lambda c: ["inspect", c.tmp / "absent.funcdl"], 2, "absent.funcdl does not exist"),
    cli("--input-shape garbage", lambda c: [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.funcdl", "--input-shape", "28;28"], 2,
        "--input-shape must be positive integers like 28,28,1; got '28;28'"),
    cli("--input-shape with a zero", lambda c: [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.funcdl", "--input-shape", "0,4"], 2,
        "--input-shape must be positive integers"),
    cli("--arch that is no model", lambda c: [
        "convert", c.inputs.path("plain.pt"), c.tmp / "out.funcdl", "--arch", "resnet50"], 2,
        "--arch must be a zoo model", "'resnet50' is none of these"),
    cli("--arch JSON naming an unknown layer", lambda c: [
        "convert", c.inputs.path("plain.pt"), c.tmp / "out.funcdl", "--arch", c.inputs.path("conv3d.json")], 2,
        "unknown layer 'Conv3D'"),
    cli("--arch JSON that is not JSON", lambda c: [
        "convert", c.inputs.path("plain.pt"), c.tmp / "out.funcdl", "--arch", c.inputs.path("broken.json")], 2,
        "broken.json is not valid JSON"),
    cli("compare --frameworks with an unknown runner", lambda c: [
        "compare", c.inputs.path("small.funcdl"), "--frameworks", "funcdl,mxnet", "--steps", "1"], 2,
        "unknown framework 'mxnet'; choose one of: funcdl"),
    # -- CLI: layers a framework cannot express --------------------------------------------------------------
    cli("convert a keras Conv3D model", lambda c: ["convert", c.inputs.path("conv3d.keras"), c.tmp / "out.funcdl"],
        2, "keras layer 'conv3d' (Conv3D) is not supported; `funcdl convert --list-supported` lists", needs=KERAS),
    cli("convert a torch.export Conv3d program", lambda c: [
        "convert", c.inputs.path("conv3d.pt2"), c.tmp / "out.funcdl"], 2,
        "unsupported ATen op torch.ops.aten.conv3d.default (node conv3d)", needs=TORCH),
    cli("convert to .pt a LayerNorm torch cannot express", lambda c: [
        "convert", c.inputs.path("layernorm_bias.funcdl"), c.tmp / "out.pt"], 2,
        "layers_2 (LayerNorm): torch has no LayerNorm with a bias but no scale", needs=TORCH),
    cli("convert to .keras a tanh-GELU keras cannot express", lambda c: [
        "convert", c.inputs.path("gelu_tanh.funcdl"), c.tmp / "out.keras"], 2, "approximate=True", needs=KERAS),
    # -- CLI: outputs that cannot be written -----------------------------------------------------------------
    cli("convert into a read-only folder", lambda c: [
        "convert", c.inputs.path("small.funcdl"), read_only(c) / "out.funcdl"], 2, "is not writable"),
    cli("convert into a missing folder", lambda c: [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "absent" / "out.funcdl"], 2,
        "folder", "does not exist; create it first"),
    cli("convert to .funcdl on a full disk", lambda c: (full_disk_for_funcdl(c), [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.funcdl"])[1], 2,
        "out.funcdl: No space left on device; free space or choose another output"),
    cli("convert to .pt on a full disk", lambda c: (full_disk_for_torch(c), [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.pt"])[1], 2,
        "out.pt: No space left on device; free space", needs=TORCH),
    cli("convert to .keras on a full disk", lambda c: (full_disk_for_keras(c), [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.keras"])[1], 2,
        "out.keras: No space left on device; free space", needs=KERAS),
    # -- never destroy a user's files: convert replaces only what it created ------------------------------------
    cli("convert into an existing folder that is not a SavedModel", lambda c: [
        "convert", c.inputs.path("small.funcdl"), f"{user_folder(c)}/"], 2,
        "runs: it exists and is not a SavedModel (it holds model.funcdl, notes.txt)", "give a new folder name"),
    cli("convert a file onto itself", lambda c: [
        "convert", user_folder(c) / "model.funcdl", c.tmp / "runs" / ".." / "runs" / "model.funcdl"], 2,
        "is the file being converted", "give another output name"),
    cli("convert onto a hard link of the source", lambda c: (
        user_folder(c), os.link(c.tmp / "runs" / "model.funcdl", c.tmp / "link.funcdl"),
        ["convert", c.tmp / "runs" / "model.funcdl", c.tmp / "link.funcdl"])[-1], 2, "is the file being converted"),
    cli("convert into . where the source is", lambda c: (
        user_folder(c), c.monkeypatch.chdir(c.tmp / "runs"), ["convert", "model.funcdl", "."])[-1], 2,
        "cannot write .: it holds the file being converted (model.funcdl)"),
    cli("convert into . (the current folder)", lambda c: (
        c.monkeypatch.chdir(user_folder(c, "saved_model.pb")), ["convert", c.inputs.path("small.funcdl"), "."])[-1],
        2, "it is the current folder or holds it"),
    cli("convert into a SavedModel folder that holds other files", lambda c: [
        "convert", c.inputs.path("small.funcdl"), user_folder(c, "saved_model.pb", "variables")], 2,
        "it also holds model.funcdl, notes.txt", "pass --force"),
    cli("convert --force into the SavedModel folder holding the source", lambda c: [
        "convert", user_folder(c, "saved_model.pb") / "model.funcdl", c.tmp / "runs", "--force"], 2,
        "it holds the file being converted", "give a new folder name"),
    cli("convert to a SavedModel on a full disk", lambda c: (full_disk_for_saved_model(c), [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "saved"])[1], 2,
        "saved: No space left on device; free space", needs=TF),
    # -- never destroy a user's files: run folders ----------------------------------------------------------
    cli("train --out naming a file", lambda c: train("--out", user_file(c)), 2,
        "--out", "a-file exists and is not a folder"),
    cli("train --report under a file (checked before training)", lambda c: train(
        "--out", c.tmp / "run", "--report", user_file(c) / "report"), 2,
        "--report", "cannot be created", "a-file is a file, not a folder"),
    cli("train --tensorboard in a read-only folder", lambda c: train(
        "--tensorboard", read_only(c) / "tb"), 2, "--tensorboard", "is not writable"),
    cli("train --out on a folder another run uses", lambda c: train("--out", in_use(c, c.tmp / "runs")), 2,
        "runs is in use by another funcdl run (pid 1234", "wait for it to end"),
    cli("train --resume on a folder another run uses", lambda c: train("--resume", in_use(c, c.tmp / "runs")), 2,
        "--resume", "is in use by another funcdl run"),
    cli("train --resume changing a recorded setting", lambda c: train("--resume", c.inputs.path("ckpt_lr")), 2,
        "was written with --lr 0.01, this run has --lr 0.001", "resume with the same settings"),
    cli("train --resume: checkpoint changed after writing", lambda c: train(
        "--resume", shutil.copytree(c.inputs.path("ckpt_changed"), c.tmp / "ckpt")), 2,
        "is damaged (its checksum does not match", "delete it to train from the start"),
    cli("train --resume: checkpoint holding NaN", lambda c: train(
        "--resume", shutil.copytree(c.inputs.path("ckpt_nan"), c.tmp / "ckpt")), 2,
        "is damaged", "holds NaN or infinite values"),
    # -- one line, never a traceback ----------------------------------------------------------------------------
    cli("train --seed 2**70", lambda c: train("--seed", str(2 ** 70)), 2,
        "--seed must be an integer from -2**63 to 2**63-1"),
    api("fit: seed 2**70", lambda c: fd.fit(small_model(), (X, Y), epochs=1, batch_size=10, seed=2 ** 70,
                                             verbose=False), ConfigError, "seed must be an integer from -2**63"),
    api("fit: a keras callback", lambda c: fd.fit(
        small_model(), (X, Y), epochs=1, batch_size=10, verbose=False,
        callbacks=[__import__("keras").callbacks.EarlyStopping()]), ConfigError,
        "fit got keras.callbacks.EarlyStopping, a Keras callback", "use fd.callbacks.EarlyStopping", needs=KERAS),
    api("fit: validation labels past the model's classes", lambda c: fd.fit(
        small_model(), (X, Y), validation_data=(X, np.where(Y == 9, 12, Y)), epochs=1, batch_size=10,
        verbose=False), DataError, "validation data: labels must be integers in [0, 10)", "max=12"),
    api("save_model: another model's variables", lambda c: fd.save_model(
        c.tmp / "m.funcdl", nn.Sequential((nn.Flatten(), nn.Dense(3))), small_variables(), input_shape=(4, 4, 1)),
        ShapeError, "save_model: variables: tensor params/layers_1/", "the architecture needs"),
    api("load_model: recorded input shape [-1, 4]", lambda c: fd.load_model(
        c.inputs.path("negative_shape.funcdl")), FileFormatError, "recorded input shape must be a list of positive",
        "got [-1, 4]"),
    api("load_model: recorded input shape \"abc\"", lambda c: fd.load_model(
        c.inputs.path("text_shape.funcdl")), FileFormatError, "must be a list of positive integers", '"abc"'),
    api("load_model: architecture nested 100000 deep", lambda c: fd.load_model(
        c.inputs.path("deep.funcdl")), FileFormatError, "has an invalid architecture", "nested too deeply"),
    api("load_model: integer weights", lambda c: fd.load_model(c.inputs.path("int_weights.funcdl")),
        FileFormatError, "has dtype int32; weights must be floating point"),
    api("load_model: complex weights", lambda c: fd.load_model(c.inputs.path("complex_weights.funcdl")),
        FileFormatError, "has dtype complex64; weights must be floating point"),
    api("load_model on a .pt2", lambda c: fd.load_model(c.inputs.path("clean.pt2")), FileFormatError,
        "is not a funcdl model file: it is a torch.export .pt2 archive", "funcdl convert", needs=TORCH),
    api("load_model on a .keras", lambda c: fd.load_model(c.inputs.path("conv3d.keras")), FileFormatError,
        "is not a funcdl model file: it is a Keras .keras archive", "funcdl convert", needs=KERAS),
    cli("convert a safetensors file named .pt", lambda c: [
        "convert", c.inputs.path("weights.pt"), c.tmp / "out.funcdl", "--arch", "mlp"], 2,
        "weights.pt is a safetensors file, not what its name says; rename it to end in .safetensors"),
    cli("--input-shape 28,x", lambda c: [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.funcdl", "--input-shape", "28,x"], 2,
        "--input-shape must be positive integers like 28,28,1; got '28,x'"),
    cli("--arch that is a binary file", lambda c: [
        "convert", c.inputs.path("weights.pt"), c.tmp / "out.funcdl", "--arch", c.inputs.path("picture.json")], 2,
        "picture.json is not valid JSON: it is a PNG image"),
    cli("--arch JSON nested 100000 deep", lambda c: [
        "convert", c.inputs.path("small.funcdl"), c.tmp / "out.funcdl", "--arch", c.inputs.path("deep.json")], 2,
        "deep.json is not a valid architecture: it is nested too deeply"),
    cli("inspect a .keras whose config is nested 100000 deep", lambda c: ["inspect", c.inputs.path("deep.keras")],
        2, "deep.keras is not a valid .keras file: its config is not JSON", needs=KERAS),
    cli("train --data-dir naming a file", lambda c: train("--dataset", "mnist", "--data-dir", user_file(c)), 2,
        "the data dir", "a-file is a file, not a folder"),
]


@dataclass
class Context:
    tmp: pathlib.Path
    inputs: Inputs
    monkeypatch: pytest.MonkeyPatch
    cleanup: list = field(default_factory=list)


def files_under(folder):
    """Every file under ``folder`` with a hash of its content: a row must leave the user's files as they were."""
    return sorted((str(p.relative_to(folder)), hashlib.sha256(p.read_bytes()).hexdigest())
                  for p in folder.rglob("*") if p.is_file())


def test_catalogue_is_large_and_names_are_unique():
    assert len(ROWS) >= 30 and len({row.name for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_bad_input(row, tmp_path, inputs, monkeypatch, capsys):
    for module in row.needs:
        pytest.importorskip(module)
    c = Context(tmp_path, inputs, monkeypatch)
    try:
        if isinstance(row.expect, int):
            argv = [str(a) for a in row.provoke(c)]
            before = files_under(tmp_path)
            capsys.readouterr()
            code = main(argv)
            message = capsys.readouterr().err
            assert code == row.expect, message
            assert "Traceback" not in message
            lines = message.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), message
        else:
            before = files_under(tmp_path)
            with pytest.raises(FuncdlError) as info:
                row.provoke(c)
            assert type(info.value) is row.expect, repr(info.value)
            message = str(info.value)
            assert "\n" not in message
        for part in row.message:
            assert part in message, message
        monkeypatch.undo()
        assert files_under(tmp_path) == before  # no destination and no temporary file
        assert not inputs.marker.exists()  # no hostile payload ran
    finally:
        for release in c.cleanup:
            release()
        for folder in [tmp_path, *tmp_path.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)


@pytest.mark.subprocess
def test_real_write_failure_leaves_nothing(tmp_path):
    """A write that really fails (a file size limit gives EFBIG, as a full disk gives ENOSPC): one line, exit 2."""
    source = tmp_path / "wide.funcdl"
    _funcdl(source, nn.Dense(512))  # about 33 KB, over the 8 KB limit below
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY)); "
               "from funcdl.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", limited, "convert", str(source), str(tmp_path / "copy.funcdl")],
                          capture_output=True, text=True, env=env, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), done.stderr
    assert "File too large; free space or choose another output" in lines[0]
    assert [name for name, _ in files_under(tmp_path)] == ["wide.funcdl"]


def test_failed_export_leaves_no_destination(tmp_path, capsys):
    """A conversion refused while the torch program is being built writes nothing at all."""
    pytest.importorskip("torch")
    source = tmp_path / "layernorm.funcdl"
    _funcdl(source, nn.Dense(4), nn.LayerNorm(use_scale=False))
    for destination in ("out.pt", "out.pt2", "out.safetensors"):
        assert main(["convert", str(source), str(tmp_path / destination)]) == 2
        assert "LayerNorm" in capsys.readouterr().err
    assert [name for name, _ in files_under(tmp_path)] == ["layernorm.funcdl"]


OUT_OF_MEMORY = """
import resource, sys
import numpy as np
import funcdl as fd
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (2 << 30), resource.RLIM_INFINITY))  # 2 GiB more than at start
x, y = np.zeros((2000, 28, 28, 1), np.float32), np.zeros(2000, np.int32)
try:
    fd.fit(fd.models.cnn(), (x, y), batch_size=2000, epochs=1, verbose=False)
except fd.errors.OutOfMemoryError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
"""


@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_out_of_memory_is_one_line_naming_the_batch_size():
    """A CNN epoch at batch size 2000 needs about 4.5 GB; with 2 GiB of address space to spare it cannot run."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True, env=env,
                          timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stderr
    assert len(lines) == 1 and lines[0].startswith("out of memory training with batch size 2000 ("), done.stderr
    assert lines[0].endswith("lower the batch size (--batch-size) or free memory on the device"), done.stderr
