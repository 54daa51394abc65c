"""Shared fixtures: fixed keys, the data folder, and small datasets."""
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FUNCDL_DATA_DIR", ROOT.parent / "shared" / "data"))


@pytest.fixture
def data_dir():
    """The folder holding mnist/ (FUNCDL_DATA_DIR, else ../shared/data)."""
    if not (DATA_DIR / "mnist").is_dir():
        pytest.fail(f"real MNIST not found in {DATA_DIR}/mnist; set FUNCDL_DATA_DIR")
    return DATA_DIR


@pytest.fixture
def tiny_images():
    """100 random 8x8x1 images with 10 classes, fixed seed; (x, y)."""
    rng = np.random.default_rng(0)
    return rng.random((100, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 100).astype(np.int32)
