"""Run folders in use are locked; a resume must repeat the run's settings; stale temporaries are cleaned up.

The lock and resume tests start real ``funcdl train`` processes: the first holds its folders while a second
is started against them.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import funcdl as fd
from funcdl.errors import ConfigError, FileFormatError
from funcdl.io import atomic, run_folder
from funcdl.train import ModelCheckpoint, checkpoint

TRAIN = ["train", "--dataset", "digits", "--limit", "64", "--batch-size", "32", "--quiet"]
ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}


def _funcdl(*argv, **popen):
    return subprocess.Popen([sys.executable, "-m", "funcdl.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, **popen)


def _finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _wait_for(path, process, timeout=240):
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.subprocess
def test_second_run_on_a_folder_in_use_is_refused_and_the_lock_goes_with_the_run(tmp_path):
    out = tmp_path / "run"
    first = _funcdl(*TRAIN, "--epochs", "1000000", "--checkpoint-every", "100000", "--out", out, "--resume", out)
    _wait_for(out / run_folder.LOCK, first)
    for flag in ("--out", "--resume"):
        code, _, err = _finish(_funcdl(*TRAIN, "--epochs", "1", flag, out))
        line = _one_error_line(err)
        assert code == 2 and f"{flag} {out} is in use by another funcdl run (pid {first.pid}" in line, line
    os.kill(first.pid, signal.SIGKILL)  # however the holder ends, the kernel releases its lock
    first.wait()
    assert (out / run_folder.LOCK).exists()  # a killed run cannot remove its lock file: a stale one is no lock
    code, _, err = _finish(_funcdl(*TRAIN, "--epochs", "1", "--out", out))
    assert code == 0, err
    assert not (out / run_folder.LOCK).exists()  # a run that ends removes its lock file
    assert {"history.json", "model.funcdl"} <= {p.name for p in out.iterdir()}


@pytest.mark.subprocess
@pytest.mark.parametrize("change, message", [
    (["--lr", "0.01"], "was written with --lr 0.001, this run has --lr 0.01"),
    (["--batch-size", "16"], "was written with --batch-size 32, this run has --batch-size 16"),
    (["--optimizer", "sgd"], "was written with --optimizer adam, this run has --optimizer sgd"),
    (["--loss", "sparse_categorical_crossentropy"], "with --loss cross_entropy, this run has --loss sparse_categ"),
    (["--limit", "48"], "was written with --limit 64, this run has --limit 48"),
    (["--normalize"], "was written with --normalize off, this run has --normalize on"),
    (["--flavor", "keras"], "was written with --flavor torch, this run has --flavor keras"),
    (["--model", "cnn"], "was written with --model mlp, this run has --model cnn"),
    (["--precision", "bf16"], "was written with --precision fp32, this run has --precision bf16"),
])
def test_resume_refuses_a_changed_setting_naming_it(tmp_path, change, message):
    folder = tmp_path / "ckpt"
    code, _, err = _finish(_funcdl(*TRAIN, "--epochs", "1", "--resume", folder))
    assert code == 0, err
    before = (folder / checkpoint.FILENAME).read_bytes()
    code, _, err = _finish(_funcdl(*TRAIN, "--epochs", "2", "--resume", folder, *change))
    line = _one_error_line(err)
    assert code == 2 and message in line and "resume with the same settings" in line, line
    assert (folder / checkpoint.FILENAME).read_bytes() == before


def test_fit_resume_refuses_other_settings_and_other_data(tiny_images, tmp_path):
    x, y = tiny_images
    kwargs = dict(epochs=1, batch_size=20, verbose=False)
    fd.fit(fd.models.mlp(), (x, y), callbacks=[ModelCheckpoint(tmp_path)], **kwargs)
    with pytest.raises(FileFormatError, match="was written with batch_size 20, this run has batch_size 10"):
        fd.fit(fd.models.mlp(), (x, y), resume=tmp_path, **{**kwargs, "batch_size": 10})
    with pytest.raises(FileFormatError, match="was written with loss cross_entropy, this run has loss mse"):
        fd.fit(fd.models.mlp(), (x, np.eye(10, dtype=np.float32)[y]), resume=tmp_path, loss="mse", **kwargs)
    with pytest.raises(FileFormatError, match="was written for other training data"):
        fd.fit(fd.models.mlp(), (x[::-1], y[::-1]), resume=tmp_path, **kwargs)
    with pytest.raises(FileFormatError, match="was written for other training data"):
        fd.fit(fd.models.mlp(), (x[:90], y[:90]), resume=tmp_path, **kwargs)
    resumed = fd.fit(fd.models.mlp(), (x, y), resume=tmp_path, **{**kwargs, "epochs": 2})
    assert resumed.epochs_done == 2


def test_stale_temporaries_of_dead_processes_are_removed_and_nothing_else(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".model.funcdl.funcdl-{dead_pid}-abcd1234.tmp",
             tmp_path / f".net.keras.funcdl-{dead_pid}-zz_99xy0.keras"]
    stale_folder = tmp_path / f".saved.funcdl-{dead_pid}-k3j4h5g6.tmp"
    kept = [tmp_path / f".model.funcdl.funcdl-{os.getpid()}-abcd1234.tmp",  # a write of a live process
            tmp_path / ".model.funcdl.abcd1234.tmp",  # not our pattern
            tmp_path / "notes.tmp", tmp_path / f"model.funcdl-{dead_pid}-abcd1234.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    stale_folder.mkdir()
    (stale_folder / "saved_model.pb").write_bytes(b"partial")
    with run_folder.locked([("--out", tmp_path)]):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_a_write_removes_the_stale_temporaries_of_its_own_destination(tmp_path):
    stale = tmp_path / ".m.funcdl.funcdl-999999999-abcd1234.tmp"  # no such process
    other = tmp_path / ".other.funcdl.funcdl-999999999-abcd1234.tmp"
    stale.write_bytes(b"partial")
    other.write_bytes(b"partial")
    model = fd.models.mlp()
    variables = model.init(fd.train.split_seed(0)[0], np.zeros((1, 8, 8, 1), np.float32))
    fd.save_model(tmp_path / "m.funcdl", model, variables, input_shape=(8, 8, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "m.funcdl"]


@pytest.mark.parametrize("flag", ["--out", "--resume", "--tensorboard", "--report"])
def test_output_folders_are_checked_before_anything_is_made(tmp_path, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"{flag} .*cannot be created: .*a-file is a file, not a folder"):
        run_folder.check_output_folder(blocker / "run", flag)
    with pytest.raises(ConfigError, match=f"{flag} .*a-file exists and is not a folder"):
        run_folder.check_output_folder(blocker, flag)
    run_folder.check_output_folder(tmp_path / "new" / "deeper", flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


LOCK_ONCE = """
import sys
from funcdl.errors import ConfigError
from funcdl.io import run_folder
try:
    with run_folder.locked([("--out", sys.argv[1])]):
        sys.exit(0)
except ConfigError as err:
    print(err, file=sys.stderr)
    sys.exit(3)
"""


def test_a_refused_lock_leaves_no_folder_behind(tmp_path):
    with run_folder.locked([("--out", tmp_path / "run")]):
        with pytest.raises(ConfigError, match="is in use by another funcdl run"), run_folder.locked(
                [("--resume", tmp_path / "run")]):
            pass
        other = subprocess.run([sys.executable, "-c", LOCK_ONCE, str(tmp_path / "run")], capture_output=True,
                               text=True, env=ENV, timeout=120)
        assert other.returncode == 3 and "is in use by another funcdl run" in other.stderr, other.stderr
    assert list(tmp_path.iterdir()) == []  # the run wrote nothing: its folder and lock file are gone


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_folders_get_the_users_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert atomic.umask() == mask
        with atomic.atomic_path(tmp_path / "file") as tmp:
            tmp.write_text("x")
        with atomic.atomic_path(tmp_path / "folder", folder=True, kind="test", entries=("marker",)) as tmp:
            (tmp / "marker").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "file").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "file"
    path.write_text("old")
    path.chmod(0o640)
    with atomic.atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
