"""Tests of funcdl.data: IDX parsing, MNIST / digits / TFDS loading, labels and splits."""

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest

from funcdl import data
from funcdl.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FUNCDL_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
MNIST_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

needs_mnist = pytest.mark.skipif(not (DATA_DIR / "mnist").is_dir(),
                                 reason=f"needs the full MNIST (70,000 images), not found in {DATA_DIR}/mnist: "
                                        "run `make data` to download it, or set FUNCDL_DATA_DIR")
SAMPLE_DIR = REPO / "tests" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test sees the user's FUNCDL_DATA_DIR or TFDS data: each gets an empty TFDS dir."""
    monkeypatch.delenv("FUNCDL_DATA_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds")))


# ------------------------------------------------------------------ IDX helpers


def idx_bytes(array, code=0x08, dims=None, extra=b""):
    """Serialise ``array`` as IDX (big-endian), optionally with a lying header or extra bytes."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}.get(code, ">u1")
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + np.asarray(array).astype(dtype).tobytes() + extra


def write(path, payload, gz):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_mnist(folder, n_train=6, n_test=4, gz=True, n_train_labels=None):
    """Four small MNIST-like IDX files; images 5x5, labels i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_tr = rng.integers(0, 256, (n_train, 5, 5), dtype=np.uint8)
    x_te = rng.integers(0, 256, (n_test, 5, 5), dtype=np.uint8)
    y_tr = (np.arange(n_train if n_train_labels is None else n_train_labels) % 10).astype(np.uint8)
    y_te = (np.arange(n_test) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    for name, arr in zip(MNIST_NAMES, (x_tr, y_tr, x_te, y_te)):
        write(folder / (name + suffix), idx_bytes(arr), gz)
    return x_tr, y_tr, x_te, y_te


# ------------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_raw():
    return data.load("mnist", DATA_DIR, normalize=False)


@needs_mnist
def test_mnist_shapes_dtypes_and_source(mnist_raw):
    d = mnist_raw
    assert d.train.x.shape == (60000, 28, 28, 1) and d.test.x.shape == (10000, 28, 28, 1)
    assert d.train.x.dtype == np.float32 and d.test.x.dtype == np.float32
    assert d.train.y.shape == (60000,) and d.train.y.dtype == np.int32 and d.test.y.dtype == np.int32
    assert d.num_classes == 10 and d.input_shape == (28, 28, 1) and d.validation is None
    assert d.name == "mnist" and "IDX" in d.source and str(DATA_DIR / "mnist") in d.source
    assert (d.mean, d.std) == (0.0, 1.0)


@needs_mnist
def test_mnist_pixel_statistics_and_class_counts(mnist_raw):
    x = mnist_raw.train.x
    assert x.min() == 0.0 and x.max() == 1.0
    assert abs(x.mean(dtype=np.float64) - 0.1307) < 1e-4
    assert abs(x.std(dtype=np.float64) - 0.3081) < 1e-4
    assert np.bincount(mnist_raw.train.y).tolist() == MNIST_COUNTS
    assert np.bincount(mnist_raw.test.y, minlength=10).sum() == 10000


@needs_mnist
def test_mnist_normalized_with_training_statistics(mnist_raw):
    d = data.load("mnist", DATA_DIR, normalize=True)
    assert abs(d.mean - 0.1307) < 1e-4 and abs(d.std - 0.3081) < 1e-4
    assert abs(d.train.x.mean(dtype=np.float64)) < 1e-4
    assert abs(d.train.x.std(dtype=np.float64) - 1.0) < 1e-4
    # The test set uses the *training* statistics, not its own.
    expected = (mnist_raw.test.x[:100] - np.float32(d.mean)) / np.float32(d.std)
    np.testing.assert_allclose(d.test.x[:100], expected, rtol=1e-5, atol=1e-5)


@needs_mnist
def test_mnist_found_through_environment_variable(monkeypatch):
    monkeypatch.setenv("FUNCDL_DATA_DIR", str(DATA_DIR))
    d = data.load("mnist", limit=10, normalize=False)
    assert d.train.x.shape == (10, 28, 28, 1) and d.test.x.shape == (10, 28, 28, 1)


# ---------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    got_x = data.read_idx(write(tmp_path / "x.idx", idx_bytes(images), gz))
    got_y = data.read_idx(write(tmp_path / "y.idx", idx_bytes(labels), gz))
    assert got_x.dtype == np.uint8 and got_x.shape == (2, 3, 4)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)
    assert got_x.flags.writeable


def test_read_idx_other_dtypes_become_native_endian(tmp_path):
    values = np.array([[-2, 300], [1000, -32000]], dtype=np.int16)
    got = data.read_idx(write(tmp_path / "s.idx", idx_bytes(values, code=0x0B), False))
    assert got.dtype == np.dtype(np.int16) and got.dtype.isnative
    np.testing.assert_array_equal(got, values)
    floats = np.array([0.5, -1.25], dtype=np.float32)
    np.testing.assert_array_equal(data.read_idx(write(tmp_path / "f.idx", idx_bytes(floats, code=0x0D), True)), floats)


def test_read_idx_real_magic_numbers(tmp_path):
    path = write(tmp_path / "x", idx_bytes(np.zeros((1, 2, 2), np.uint8)), False)
    assert int.from_bytes(path.read_bytes()[:4], "big") == 2051
    path = write(tmp_path / "y", idx_bytes(np.zeros(3, np.uint8)), False)
    assert int.from_bytes(path.read_bytes()[:4], "big") == 2049


@pytest.mark.parametrize("payload, match", [
    (b"\x12\x34\x08\x01" + (3).to_bytes(4, "big") + b"abc", "bad magic"),
    (bytes([0, 0, 0x07, 1]) + (3).to_bytes(4, "big") + b"abc", "unknown IDX data type code 0x07"),
    (idx_bytes(np.zeros((2, 3, 3), np.uint8), dims=(3, 3, 3)), "truncated"),
    (idx_bytes(np.zeros(5, np.uint8), extra=b"\x00"), "extra bytes"),
    (idx_bytes(np.zeros(4, np.int16), code=0x0B, dims=(8,)), "truncated"),
    (bytes([0, 0, 0x08, 3]) + (3).to_bytes(4, "big"), "truncated IDX header"),
    (b"\x00\x00", "only 2 bytes"),
    (bytes([0, 0, 0x08, 0]), "0 dimensions"),
])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_rejects_malformed_files(tmp_path, payload, match, gz):
    path = write(tmp_path / "bad-idx1-ubyte", payload, gz)
    with pytest.raises(DataError, match=match) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_and_corrupt_gzip(tmp_path):
    with pytest.raises(DataError, match="not found"):
        data.read_idx(tmp_path / "nope.gz")
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-12])
    with pytest.raises(DataError, match="corrupt.gz"):
        data.read_idx(corrupt)


# ----------------------------------------------------------------- load_mnist_idx


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_idx_reads_four_files(tmp_path, gz):
    expected = write_mnist(tmp_path, gz=gz)
    for got, want in zip(data.load_mnist_idx(tmp_path), expected):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_load_mnist_idx_count_mismatch(tmp_path):
    write_mnist(tmp_path, n_train=6, n_train_labels=5)
    with pytest.raises(DataError, match="6 images but 5 labels"):
        data.load_mnist_idx(tmp_path)


def test_load_mnist_idx_missing_file_is_named(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist_idx(tmp_path)


def test_load_mnist_from_subfolder_or_directly(tmp_path):
    x_tr, y_tr, x_te, _ = write_mnist(tmp_path / "a" / "mnist")
    d = data.load("mnist", tmp_path / "a", normalize=False)
    assert d.source == f"{tmp_path / 'a' / 'mnist'} (IDX files)"
    assert d.train.x.shape == (6, 5, 5, 1) and d.input_shape == (5, 5, 1)
    np.testing.assert_array_equal(d.train.x[..., 0], x_tr.astype(np.float32) / 255)
    np.testing.assert_array_equal(d.train.y, y_tr)
    write_mnist(tmp_path / "b", gz=False)
    d = data.load("mnist", str(tmp_path / "b"), normalize=False, limit=3)
    assert d.source == f"{tmp_path / 'b'} (IDX files)"
    assert len(d.train) == 3 and len(d.test) == 3


# ------------------------------------------------------------------ missing data


def test_missing_mnist_names_where_it_looked_and_is_quick(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        data.load("mnist", tmp_path)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "mnist") in message and str(tmp_path) in message
    assert os.environ["TFDS_DATA_DIR"] in message
    assert "FUNCDL_DATA_DIR" in message and "digits" in message and "train-images-idx3-ubyte.gz" in message


def test_missing_mnist_without_data_dir(tmp_path):
    with pytest.raises(DataError, match="no data dir given"):
        data.load("mnist")


def test_partial_mnist_folder_says_what_is_missing(tmp_path):
    write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte.gz"):
        data.load("mnist", tmp_path)


def test_nonexistent_data_dir_is_reported(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", tmp_path / "absent")


def test_resolve_data_dir(monkeypatch, tmp_path):
    assert data.resolve_data_dir() is None
    monkeypatch.setenv("FUNCDL_DATA_DIR", str(tmp_path))
    assert data.resolve_data_dir() == tmp_path
    assert data.resolve_data_dir("/x/y") == Path("/x/y")
    assert data.resolve_data_dir("~/d") == Path.home() / "d"


# ------------------------------------------------------------------------ digits


def test_digits_shapes_range_and_determinism():
    raw = data.load("digits", normalize=False)
    assert raw.train.x.shape == (1437, 8, 8, 1) and raw.test.x.shape == (360, 8, 8, 1)
    assert raw.train.x.dtype == np.float32 and raw.train.y.dtype == np.int32
    assert raw.num_classes == 10 and raw.input_shape == (8, 8, 1) and raw.source == "scikit-learn digits"
    assert raw.train.x.min() == 0.0 and raw.train.x.max() == 1.0 and raw.test.x.max() <= 1.0
    # Stratified 80/20 split: every class is in both parts in proportion.
    total = np.bincount(raw.train.y) + np.bincount(raw.test.y)
    assert np.all(np.abs(np.bincount(raw.test.y) - 0.2 * total) <= 1)
    again = data.load("digits", normalize=False)
    np.testing.assert_array_equal(raw.train.x, again.train.x)
    np.testing.assert_array_equal(raw.test.y, again.test.y)
    norm = data.load("digits", normalize=True)
    assert abs(norm.train.x.mean()) < 1e-5 and abs(norm.train.x.std() - 1) < 1e-4
    assert norm.mean == pytest.approx(raw.train.x.mean(dtype=np.float64))


def test_digits_one_hot_validation_and_limit():
    d = data.load("digits", one_hot=True, validation_split=0.25, seed=3, limit=100)
    assert d.train.y.shape == (75, 10) and d.train.y.dtype == np.float32
    assert len(d.validation) == 25 and len(d.test) == 100
    np.testing.assert_array_equal(d.train.y.sum(axis=1), 1.0)
    again = data.load("digits", one_hot=True, validation_split=0.25, seed=3, limit=100)
    np.testing.assert_array_equal(d.validation.x, again.validation.x)
    other = data.load("digits", one_hot=True, validation_split=0.25, seed=4, limit=100)
    assert not np.array_equal(d.validation.x, other.validation.x)


def test_limit_keeps_first_examples():
    full = data.load("digits", normalize=False)
    small = data.load("digits", normalize=False, limit=7)
    np.testing.assert_array_equal(small.train.x, full.train.x[:7])
    np.testing.assert_array_equal(small.test.y, full.test.y[:7])


# ---------------------------------------------------------------- config errors


def test_unknown_dataset_lists_choices():
    with pytest.raises(ConfigError) as info:
        data.load("cifar")
    assert "'cifar'" in str(info.value)
    for choice in ("mnist", "digits", "tfds:NAME"):
        assert choice in str(info.value)
    with pytest.raises(ConfigError):
        data.load("tfds:")


@pytest.mark.parametrize("split", [-0.1, 1.0, 1.5])
def test_bad_validation_split(split):
    with pytest.raises(ConfigError, match="validation_split"):
        data.load("digits", validation_split=split)


def test_bad_limit():
    with pytest.raises(ConfigError, match="limit"):
        data.load("digits", limit=0)


# ------------------------------------------------------------- labels & splits


def test_one_hot():
    got = data.one_hot(np.array([2, 0, 1]), 3)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert data.one_hot(np.array([], np.int32), 4).shape == (0, 4)
    with pytest.raises(DataError, match=r"\[0, 3\); found min=0, max=3"):
        data.one_hot(np.array([0, 3]), 3)
    with pytest.raises(DataError, match="shape"):
        data.one_hot(np.zeros((2, 2), np.int32), 3)


def test_check_labels():
    y = np.array([0, 9, 4])
    assert data.check_labels(y, 10) is y
    with pytest.raises(DataError, match=r"labels must be integers in \[0, 10\); found min=-1, max=4"):
        data.check_labels(np.array([-1, 4]), 10)
    with pytest.raises(DataError, match="min=0, max=10"):
        data.check_labels(np.array([0, 10]), 10)
    with pytest.raises(DataError, match="integers"):
        data.check_labels(np.array([0.5, 1.0]), 10)
    data.check_labels(np.array([1.0, 2.0]), 10)  # integral floats are fine
    data.check_labels(np.eye(3, dtype=np.float32), 3)  # one-hot accepted
    with pytest.raises(DataError, match="columns"):
        data.check_labels(np.eye(3, dtype=np.float32), 4)
    with pytest.raises(DataError, match="sum to 1"):
        data.check_labels(np.ones((2, 3), np.float32), 3)
    with pytest.raises(DataError, match="shape"):
        data.check_labels(np.zeros((2, 2, 2)), 3)


def test_train_validation_split_deterministic_and_disjoint():
    ds = data.ArrayDataset(np.arange(100, dtype=np.float32)[:, None], np.arange(100) % 10)
    train, val = data.train_validation_split(ds, 0.2, seed=1)
    assert len(train) == 80 and len(val) == 20
    ids_t, ids_v = train.x[:, 0].astype(int), val.x[:, 0].astype(int)
    assert set(ids_t).isdisjoint(ids_v) and set(ids_t) | set(ids_v) == set(range(100))
    np.testing.assert_array_equal(train.y, ids_t % 10)  # x and y stay paired
    train2, val2 = data.train_validation_split(ds, 0.2, seed=1)
    np.testing.assert_array_equal(val.x, val2.x)
    np.testing.assert_array_equal(train.x, train2.x)
    _, val3 = data.train_validation_split(ds, 0.2, seed=2)
    assert not np.array_equal(val.x, val3.x)
    assert ids_v.tolist() != list(range(80, 100))  # a permutation, not a tail
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError):
            data.train_validation_split(ds, bad, seed=0)
    with pytest.raises(DataError, match="empty"):
        data.train_validation_split(data.ArrayDataset(np.zeros((3, 1)), np.zeros(3, np.int32)), 0.01, 0)


def test_array_dataset_length_mismatch():
    with pytest.raises(DataError, match="3 examples but 2 labels"):
        data.ArrayDataset(np.zeros((3, 2)), np.zeros(2))
    assert len(data.ArrayDataset(np.zeros((4, 2)), np.zeros(4))) == 4


# --------------------------------------------------------------------- TFDS path


def test_tfds_dataset_through_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        d = data.load("tfds:mnist", tmp_path, limit=5, one_hot=True, normalize=True)
    assert d.train.x.shape == (5, 28, 28, 1) and d.train.x.dtype == np.float32
    assert d.train.y.shape == (5, 10) and d.num_classes == 10 and d.source.startswith("tfds:mnist")
    assert abs(d.train.x.mean()) < 1e-5  # normalised with its own training statistics
    # Plain "mnist" falls back to TFDS when no IDX files exist and TFDS has it prepared.
    (Path(os.environ["TFDS_DATA_DIR"]) / "mnist").mkdir()
    with tfds.testing.mock_data(num_examples=7):
        d = data.load("mnist", tmp_path, normalize=False)
    assert d.source.startswith("tfds:mnist") and d.train.x.shape == (7, 28, 28, 1)
    assert 0.0 <= d.train.x.min() and d.train.x.max() <= 1.0
    # Without the mock TFDS finds nothing there and the error carries its reason.
    with pytest.raises(DataError, match="MNIST not found.*could not find data"):
        data.load("mnist", tmp_path)


def test_tfds_unknown_dataset_is_data_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="tfds:no_such_dataset_xyz.*not found") as info:
        data.load("tfds:no_such_dataset_xyz", tmp_path)
    assert len(str(info.value)) < 500


# ------------------------------------------------------------- committed MNIST sample


def test_committed_sample_is_real_mnist_and_intact():
    import hashlib
    folder = SAMPLE_DIR / "mnist"
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    d = data.load("mnist", SAMPLE_DIR, normalize=False)
    assert d.train.x.shape == (2000, 28, 28, 1) and d.test.x.shape == (1000, 28, 28, 1)
    assert sorted(set(d.train.y.tolist())) == list(range(10)) and d.train.x.max() == 1.0


@needs_mnist
def test_committed_sample_is_the_head_of_the_full_set():
    sample = data.load("mnist", SAMPLE_DIR, normalize=False)
    full = data.load("mnist", DATA_DIR, normalize=False, limit=2000)
    np.testing.assert_array_equal(sample.train.x, full.train.x)
    np.testing.assert_array_equal(sample.train.y, full.train.y)
    np.testing.assert_array_equal(sample.test.x, full.test.x[:1000])
    np.testing.assert_array_equal(sample.test.y, full.test.y[:1000])


# --------------------------------------------------------------------- download


def _serve(folder):
    """A local HTTP server over ``folder``; returns (server, base URL)."""
    import functools
    import http.server
    import threading
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _sample_checksums():
    import hashlib
    folder = SAMPLE_DIR / "mnist"
    return {name: hashlib.sha256(gzip.decompress((folder / f"{name}.gz").read_bytes())).hexdigest()
            for name in MNIST_NAMES}


def test_download_verifies_and_writes_atomically(tmp_path):
    from funcdl import download
    server, url = _serve(SAMPLE_DIR / "mnist")
    try:
        folder = download.download_mnist(tmp_path / "data", mirrors=("http://127.0.0.1:1/", url),
                                         checksums=_sample_checksums())
    finally:
        server.shutdown()
    assert sorted(p.name for p in folder.iterdir()) == sorted(n + ".gz" for n in MNIST_NAMES)  # no temporaries
    assert data.load("mnist", tmp_path / "data").train.x.shape == (2000, 28, 28, 1)


def test_download_refuses_a_file_with_the_wrong_checksum(tmp_path):
    from funcdl import download
    server, url = _serve(SAMPLE_DIR / "mnist")
    try:
        with pytest.raises(DataError, match="checksum mismatch for train-images-idx3-ubyte"):
            download.download_mnist(tmp_path, mirrors=(url,))  # the sample is not the full set
    finally:
        server.shutdown()
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_offline_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from funcdl import download
    with pytest.raises(DataError, match=r"could not download .*offline or the mirrors are unreachable"):
        download.download_mnist(tmp_path, mirrors=("http://127.0.0.1:1/",))
    monkeypatch.setattr(download, "MIRRORS", ("http://127.0.0.1:1/",))
    monkeypatch.setattr(download.download_mnist, "__defaults__", (download.MIRRORS, None))
    assert download.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download") and err.count("\n") == 1
    assert download.main([]) == 2 and "usage" in capsys.readouterr().err
