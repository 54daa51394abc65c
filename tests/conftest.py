"""Shared fixtures: fixed keys, the data folder, and small datasets."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FUNCDL_DATA_DIR") or ROOT.parent / "shared" / "data")
SAMPLE_DIR = ROOT / "tests" / "data"  # the first 2,000 / 1,000 real MNIST images (tests/data/README.md)
FULL_MNIST_MISSING = (f"needs the full MNIST (70,000 images), not found in {DATA_DIR}/mnist: run `make data` "
                      "to download it, or set FUNCDL_DATA_DIR to a folder holding mnist/")


def has_full_mnist():
    """Whether the full MNIST lies in DATA_DIR/mnist (FUNCDL_DATA_DIR, else ../shared/data)."""
    return (DATA_DIR / "mnist").is_dir()


@pytest.fixture
def data_dir():
    """A folder holding real MNIST in mnist/: the full set when present, else the committed sample."""
    return DATA_DIR if has_full_mnist() else SAMPLE_DIR


@pytest.fixture
def full_data_dir():
    """The folder holding the full MNIST; skips (saying how to get it) when it is absent."""
    if not has_full_mnist():
        pytest.skip(FULL_MNIST_MISSING)
    return DATA_DIR


@pytest.fixture
def tiny_images():
    """100 random 8x8x1 images with 10 classes, fixed seed; (x, y)."""
    rng = np.random.default_rng(0)
    return rng.random((100, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 100).astype(np.int32)
