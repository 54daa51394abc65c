"""``funcdl convert`` replaces only what it created, in one step, and keeps the model's metadata where it can.

The refusals (a folder of the user's, the source itself, ``.``) are rows of ``test_catalogue.py``; these tests
check what a conversion that is allowed leaves behind.
"""
import os
import subprocess
import sys

import jax
import pytest

import funcdl as fd
from funcdl import nn
from funcdl.cli import main
from funcdl.io import atomic, formats
from interop import tensorflow as itf  # imports no tensorflow until a function needs it

METADATA = {"dataset": "mnist", "mean": "0.1307", "std": "0.3081", "num_classes": "10"}
INPUT_SHAPE = (4, 4, 1)


@pytest.fixture
def source(tmp_path):
    """A small .funcdl carrying the metadata ``funcdl train`` records."""
    model = nn.Sequential((nn.Flatten(), nn.Dense(3)))
    path = tmp_path / "model.funcdl"
    fd.save_model(path, model, model.init(jax.random.key(0), jax.numpy.zeros((1,) + INPUT_SHAPE)),
                  input_shape=INPUT_SHAPE, metadata=METADATA)
    return path


def _convert(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out.strip()


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("destination, needs", [
    ("copy.funcdl", None), ("copy.keras", "keras"), ("copy.weights.h5", "keras"), ("copy.h5", "keras"),
    ("copy.safetensors", "torch"), ("copy.pt2", "torch"),
])
def test_metadata_is_kept_by_every_format_that_can_carry_it(tmp_path, source, capsys, destination, needs):
    if needs:
        pytest.importorskip(needs)
    line = _convert(capsys, source, tmp_path / destination)
    assert "kept its metadata (dataset, mean, num_classes, std)" in line, line
    assert formats.metadata(tmp_path / destination) == METADATA
    if destination.endswith((".funcdl", ".keras", ".h5")) and not destination.endswith(".weights.h5"):
        _convert(capsys, tmp_path / destination, tmp_path / "back.funcdl")  # and read back from it
        assert fd.io.model_file.read_metadata(tmp_path / "back.funcdl") == METADATA


def test_a_state_dict_says_what_it_dropped(tmp_path, source, capsys):
    pytest.importorskip("torch")
    line = _convert(capsys, source, tmp_path / "copy.pt")
    assert "dropped its metadata (dataset, mean, num_classes, std): .pt files cannot carry it" in line, line


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two renames"])
def test_a_saved_model_is_replaced_whole_and_nothing_stray_is_left(tmp_path, source, capsys, monkeypatch,
                                                                   exchange):
    pytest.importorskip("tensorflow")
    if not exchange:  # a system without an atomic exchange: the old folder is moved aside, then deleted
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    saved = tmp_path / "saved"
    _convert(capsys, source, saved)
    first = (saved / "saved_model.pb").stat().st_ino
    line = _convert(capsys, source, f"{saved}/")
    assert "kept its metadata" in line and (saved / "saved_model.pb").stat().st_ino != first
    assert itf.read_metadata(saved) == METADATA
    assert _names(tmp_path) == ["model.funcdl", "saved"]  # no temporary, no ..*.old


def test_force_replaces_a_saved_model_holding_other_files(tmp_path, source, capsys):
    pytest.importorskip("tensorflow")
    saved = tmp_path / "saved"
    _convert(capsys, source, saved)
    (saved / "notes.txt").write_text("added by hand")
    assert main(["convert", str(source), str(saved)]) == 2
    assert "it also holds notes.txt" in capsys.readouterr().err and (saved / "notes.txt").exists()
    _convert(capsys, source, saved, "--force")
    assert "notes.txt" not in _names(saved) and "saved_model.pb" in _names(saved)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_converted_files_and_folders_get_the_users_umask(tmp_path, source, capsys, mask):
    pytest.importorskip("tensorflow")
    old = os.umask(mask)
    try:
        _convert(capsys, source, tmp_path / "copy.funcdl")
        _convert(capsys, source, tmp_path / "saved")
    finally:
        os.umask(old)
    assert (tmp_path / "copy.funcdl").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "saved").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.subprocess
def test_a_saved_model_past_the_file_size_limit_is_one_line(tmp_path, source):
    """A real write failure inside TensorFlow (EFBIG, as a full disk gives ENOSPC): one line, nothing left."""
    pytest.importorskip("tensorflow")
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY)); "
               "from funcdl.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", limited, "convert", str(source), str(tmp_path / "saved")],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines == [f"error: cannot write {tmp_path / 'saved'}: File too large; free space or choose another "
                     "output"], done.stderr
    assert _names(tmp_path) == ["model.funcdl"]
