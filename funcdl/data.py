"""Datasets as plain numpy arrays: MNIST (IDX files or TFDS), scikit-learn digits, any TFDS image set.

Everything returned is a frozen dataclass of numpy arrays: images are float32 NHWC
scaled to [0, 1] (optionally standardised with the training mean/std), labels are
int32 class indices (or one-hot float32). Heavy libraries (scikit-learn,
tensorflow_datasets and with it tensorflow) are imported only inside the
functions that need them, so ``import funcdl.data`` stays light.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import math
import os
import pathlib
import socket
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from funcdl.errors import ConfigError, DataError, choices_message
from funcdl.io import limits

DATASETS = ("mnist", "digits", "cifar10", "cifar100")  # plus any "tfds:NAME"

# IDX type codes -> big-endian numpy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_TFDS_PREFIX = "tfds:"


@dataclass(frozen=True, eq=False)  # eq=False: == on arrays is elementwise, not a bool
class ArrayDataset:
    """Examples and labels held in memory.

    Attributes:
      x: float32 images (N, H, W, C) or features (N, ...).
      y: int32 labels (N,) or one-hot float32 (N, K).
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if len(self.x) != len(self.y):
            raise DataError(f"dataset has {len(self.x)} examples but {len(self.y)} labels")

    def __len__(self):
        return len(self.x)


@dataclass(frozen=True, eq=False)
class Datasets:
    """The splits of one dataset and how they were prepared.

    Attributes:
      train, test: the training and test sets.
      validation: a set carved off train, or None.
      num_classes: number of classes K.
      input_shape: shape of one example, (H, W, C) for images.
      name: the dataset name as given to ``load``.
      source: where the data came from (a folder, "tfds:NAME", ...).
      mean, std: the normalisation applied, x = (x01 - mean) / std (0, 1 if none).
    """

    train: ArrayDataset
    test: ArrayDataset
    validation: ArrayDataset | None
    num_classes: int
    input_shape: tuple
    name: str
    source: str
    mean: float
    std: float


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | pathlib.Path, max_bytes: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw), decompressing no more than its header declares.

    Args:
      path: file path; gzip is detected from the content, not the suffix.
      max_bytes: the most bytes the header may declare (default ``funcdl.io.max_bytes()``:
        ``$FUNCDL_MAX_BYTES`` or 2 GiB); checked before anything is allocated.

    Returns:
      The array with the header's dims and a native-endian dtype
      (uint8 for MNIST images (N, 28, 28) and labels (N,)).

    Raises:
      DataError: naming the file, if it is missing, unreadable, too large, or its header
        (magic, type code, dims) disagrees with its payload.
    """
    path = pathlib.Path(path)
    limit = limits.max_bytes(max_bytes)
    try:
        with _open_idx(path) as stream:
            dims, dtype, header = _idx_header(path, stream)
            expected = math.prod(dims) * dtype.itemsize  # Python ints: a huge header cannot overflow
            limits.check_size(f"{path}: header dims {dims} of {dtype.name}", expected, limit, DataError)
            payload = stream.read(expected + 1)  # one byte more tells a file with extra bytes
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read: {e}") from None
    if len(payload) != expected:
        found = f"{len(payload)}" if len(payload) < expected else "more"
        what = "truncated" if len(payload) < expected else "has extra bytes"
        raise DataError(f"{path}: payload {what}: header dims {dims} of {dtype.name} need "
                        f"{expected} bytes after the header ({header} bytes), found {found}")
    array = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


def _open_idx(path: pathlib.Path) -> gzip.GzipFile | BinaryIO:
    """The file as a binary stream, through gzip when it starts with the gzip magic."""
    with open(path, "rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rb")  # closed by the caller's with-block
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block


def _idx_header(path: pathlib.Path, stream: gzip.GzipFile | BinaryIO) -> tuple[tuple[int, ...], np.dtype, int]:
    """(dims, big-endian dtype, header length) of the IDX stream, read from its first bytes."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: not an IDX file: only {len(head)} bytes, no 4-byte magic number")
    if head[0] != 0 or head[1] != 0:
        magic = int.from_bytes(head, "big")
        raise DataError(f"{path}: not an IDX file: bad magic number {magic} (0x{magic:08x}); "
                        "expected 0x0000TTNN (e.g. 2051 for images, 2049 for labels)")
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02x}; expected one of {known}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path}: truncated IDX header: {ndim} dims need {header} bytes, "
                        f"file has {4 + len(raw_dims)}")
    dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    return dims, _IDX_DTYPES[code], header


def _find_idx(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    """The file for ``stem`` in ``folder``: gz or raw, '-idx' or '.idx' spelling."""
    for base in (stem, stem.replace("-idx", ".idx")):
        for name in (base + ".gz", base):
            if (folder / name).is_file():
                return folder / name
    return None


def _missing_mnist_files(folder: pathlib.Path) -> list[str]:
    return [stem + ".gz" for stem in _MNIST_FILES.values() if _find_idx(folder, stem) is None]


def load_mnist_idx(folder: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST IDX files from ``folder``.

    Args:
      folder: directory holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz),
        t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz).

    Returns:
      (x_train, y_train, x_test, y_test): uint8 arrays (N, 28, 28), (N,), (M, 28, 28), (M,).

    Raises:
      DataError: if a file is missing or malformed, or images and labels disagree.
    """
    folder = pathlib.Path(folder)
    missing = _missing_mnist_files(folder)
    if missing:
        raise DataError(f"MNIST files missing in {folder}: {', '.join(missing)}")
    arrays = {key: read_idx(_find_idx(folder, stem) or folder / stem) for key, stem in _MNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"MNIST {split} files in {folder}: expected images (N, H, W) and labels (N,), "
                            f"got shapes {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise DataError(f"MNIST {split} files in {folder}: {len(x)} images but {len(y)} labels")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"MNIST files in {folder}: train images {arrays['x_train'].shape[1:]} "
                        f"and test images {arrays['x_test'].shape[1:]} differ in size")
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


# ------------------------------------------------------------------------ CIFAR


@dataclass(frozen=True)
class CifarFormat:
    """One CIFAR binary release: its folder, files and record layout (https://www.cs.toronto.edu/~kriz/cifar.html).

    Attributes:
      name, title: ``cifar10`` / ``CIFAR-10``.
      folder: the folder the binary tarball extracts to.
      train_files, test_files: the files of each split, in order.
      label_bytes: label bytes before each image (CIFAR-100: coarse, then fine).
      classes: the class count of the label used (CIFAR-100: the fine one, the last label byte).
      label_limits: the class count each label byte must stay below.
      tarball: what to download.
    """
    name: str
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_bytes: int
    classes: int
    label_limits: tuple[int, ...]
    tarball: str

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + CIFAR_IMAGE_BYTES


CIFAR_HOST = "www.cs.toronto.edu"  # where TFDS downloads both releases from
CIFAR_IMAGE_BYTES = 3 * 32 * 32  # channel-major: 1,024 red, then green, then blue bytes, rows top to bottom
CIFAR = {
    "cifar10": CifarFormat("cifar10", "CIFAR-10", "cifar-10-batches-bin",
                           tuple(f"data_batch_{i}.bin" for i in range(1, 6)), ("test_batch.bin",), 1, 10, (10,),
                           "cifar-10-binary.tar.gz"),
    "cifar100": CifarFormat("cifar100", "CIFAR-100", "cifar-100-binary", ("train.bin",), ("test.bin",), 2, 100,
                            (20, 100), "cifar-100-binary.tar.gz"),
}


def read_cifar_bin(path: str | pathlib.Path, cifar: CifarFormat,
                   max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR binary file: records of label byte(s) then 3,072 channel-major pixel bytes.

    Args:
      path: e.g. ``cifar-10-batches-bin/data_batch_1.bin``.
      cifar: the release (``CIFAR['cifar10']`` or ``CIFAR['cifar100']``).
      max_bytes: the largest file accepted (default ``funcdl.io.max_bytes()``), checked before reading.

    Returns:
      (images uint8 (N, 32, 32, 3) NHWC, labels uint8 (N, label_bytes)).

    Raises:
      DataError: naming the file, if it is missing, unreadable, over the limit, not a whole number of
        records, empty, or holds a label past its class count.
    """
    path = pathlib.Path(path)
    record = cifar.record_bytes
    try:
        size = path.stat().st_size
        limits.check_size(f"{path}", size, limits.max_bytes(max_bytes), DataError)
        if size == 0 or size % record:
            raise DataError(f"{path}: {size:,} bytes is not a whole number of {record:,}-byte {cifar.title} "
                            f"records ({cifar.label_bytes} label byte(s) + {CIFAR_IMAGE_BYTES:,} pixel bytes); "
                            "a damaged file, or not the binary version")
        raw = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if raw.size != size:
        raise DataError(f"{path}: changed while it was read ({raw.size:,} of {size:,} bytes)")
    raw = raw.reshape(-1, record)
    labels = raw[:, :cifar.label_bytes]
    for column, limit in enumerate(cifar.label_limits):
        top = int(labels[:, column].max())
        if top >= limit:
            first = int(np.argmax(labels[:, column] >= limit))
            raise DataError(f"{path}: record {first} has label {top} (byte {column}); {cifar.title} labels must "
                            f"be below {limit}: a damaged file or another format")
    images = raw[:, cifar.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _cifar_folder(folder: pathlib.Path, cifar: CifarFormat) -> pathlib.Path | None:
    """The folder holding ``cifar``'s binary files under ``folder``, or None."""
    for candidate in (folder / cifar.folder, folder / cifar.name / cifar.folder, folder):
        if (candidate / cifar.test_files[0]).is_file() or (candidate / cifar.train_files[0]).is_file():
            return candidate
    return None


def load_cifar_binary(folder: str | pathlib.Path,
                      cifar: CifarFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read a CIFAR binary folder (``cifar-10-batches-bin/`` or ``cifar-100-binary/``).

    Returns:
      (x_train, y_train, x_test, y_test): uint8 images (N, 32, 32, 3) and int32 labels (N,) (CIFAR-100: fine).

    Raises:
      DataError: naming every missing file, or the first malformed one.
    """
    folder = pathlib.Path(folder)
    missing = [name for name in cifar.train_files + cifar.test_files if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{cifar.title} files missing in {folder}: {', '.join(missing)}; extract "
                        f"{cifar.tarball} (the binary version) there")
    splits = []
    for names in (cifar.train_files, cifar.test_files):
        parts = [read_cifar_bin(folder / name, cifar) for name in names]
        splits += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1][:, -1] for p in parts]).astype(np.int32)]
    return splits[0], splits[1], splits[2], splits[3]


def _load_cifar(cifar, folder, limit):
    """CIFAR from its binary folder under ``folder``, else from TFDS (prepared, or downloaded), else DataError."""
    notes = []
    if folder is not None:
        found = _cifar_folder(folder, cifar) if folder.is_dir() else None
        if found is not None:
            x_tr, y_tr, x_te, y_te = load_cifar_binary(found, cifar)
            return (_limited(_images01(x_tr, 255), y_tr, limit), _limited(_images01(x_te, 255), y_te, limit),
                    cifar.classes, f"{found} (binary files)")
        pickled = folder / cifar.folder.replace("-bin", "-py").replace("-binary", "-python")
        notes.append(f"{pickled} is the pickled Python version, which funcdl does not read (unpickling runs code)"
                     if pickled.is_dir() else f"no {cifar.folder}/ in {folder}")
    for tfds_dir in dict.fromkeys(d for d in (folder, _tfds_default_dir()) if d is not None):
        if (tfds_dir / cifar.name).is_dir():  # prepared there: no network needed, and no TensorFlow import before
            try:
                return _load_tfds(cifar.name, tfds_dir, limit, download=False)
            except DataError as e:
                notes.append(str(e))
    if _online(CIFAR_HOST):
        try:
            return _load_tfds(cifar.name, None, limit)
        except DataError as e:
            notes.append(str(e))
    else:
        notes.append(f"offline ({CIFAR_HOST} cannot be resolved), so TFDS cannot download it")
    raise DataError(f"{cifar.title} not found: {'; '.join(notes)}; extract {cifar.tarball} (the binary version, "
                    f"https://www.cs.toronto.edu/~kriz/cifar.html) into DIR and pass --data-dir DIR, or let TFDS "
                    "download it when online")


def _online(host: str, timeout: float = 5.0) -> bool:
    """Whether ``host``'s name resolves within ``timeout`` seconds (TFDS retries for minutes when offline)."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(socket.getaddrinfo, host, 443)
    try:
        return bool(future.result(timeout))
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)  # a resolver that hangs is left behind, not waited for


# ------------------------------------------------------------------------ labels


def check_labels(y: Any, num_classes: int) -> np.ndarray:
    """Check that labels are class indices in [0, K) or one-hot rows of width K.

    Args:
      y: int labels (N,) or one-hot / probability rows (N, K).
      num_classes: K.

    Returns:
      ``y`` unchanged.

    Raises:
      DataError: saying what is wrong, with min/max for out-of-range indices.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape[1] != num_classes:
            raise DataError(f"one-hot labels have {y.shape[1]} columns; expected {num_classes} classes")
        if y.size and (not np.all(np.isfinite(y)) or y.min() < 0 or y.max() > 1
                       or not np.allclose(y.sum(axis=1), 1.0, atol=1e-3)):
            raise DataError("one-hot labels must be rows of values in [0, 1] that sum to 1")
        return y
    if y.ndim != 1:
        raise DataError(f"labels must have shape (N,) or (N, {num_classes}); got {y.shape}")
    check_class_labels(y, num_classes)
    return y


def check_class_labels(y: Any, num_classes: int | None = None, what: str = "labels") -> np.ndarray:
    """Integer class labels (N,) as int32, checked: whole numbers, >= 0, and < ``num_classes`` when known.

    Float labels holding whole numbers are accepted (as keras does).

    Raises:
      DataError: naming ``what``, the offending dtype or the min/max found.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{what}: class labels must have shape (N,); got {y.shape}")
    if y.size == 0:
        return y.astype(np.int32)
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{what}: class labels must be integers (whole numbers), found non-integer values")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: class labels have dtype {y.dtype}; they must be integers")
    low, high = y.min(), y.max()
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{what}: labels must be integers {bound}; found min={low:g}, max={high:g}")
    return y.astype(np.int32)


def one_hot(labels: Any, num_classes: int) -> np.ndarray:
    """Encode class indices as one-hot rows.

    Args:
      labels: int labels (N,) in [0, K).
      num_classes: K.

    Returns:
      float32 (N, K).

    Raises:
      DataError: if a label is out of range or labels are not 1-D integers.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataError(f"one_hot needs labels of shape (N,); got {labels.shape}")
    check_labels(labels, num_classes)
    return np.eye(num_classes, dtype=np.float32)[labels.astype(np.int64)]


# ------------------------------------------------------------------------ splits


def train_validation_split(dataset: ArrayDataset, fraction: float, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """Split off a random ``fraction`` of a dataset as validation set.

    Deterministic for a given seed; both parts keep the original example order.

    Args:
      dataset: the set to split, N examples.
      fraction: share of examples for validation, 0 < fraction < 1.
      seed: int seed of the permutation.

    Returns:
      (train, validation): ArrayDatasets of N - round(fraction * N) and round(fraction * N) examples.

    Raises:
      ConfigError: if fraction is not in (0, 1).
      DataError: if either part would be empty.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1); got {fraction}")
    n = len(dataset)
    n_val = int(round(float(fraction) * n))
    if n_val == 0 or n_val == n:
        raise DataError(f"validation fraction {fraction} of {n} examples leaves an empty split")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (ArrayDataset(dataset.x[train_idx], dataset.y[train_idx]),
            ArrayDataset(dataset.x[val_idx], dataset.y[val_idx]))


# --------------------------------------------------------------------- locations


def resolve_data_dir(data_dir: str | pathlib.Path | None = None) -> pathlib.Path | None:
    """The data folder: the argument, else $FUNCDL_DATA_DIR, else None.

    Args:
      data_dir: str / Path or None.

    Returns:
      pathlib.Path (user-expanded) or None.
    """
    value = data_dir if data_dir not in (None, "") else os.environ.get("FUNCDL_DATA_DIR") or None
    return pathlib.Path(value).expanduser() if value is not None else None


def _check_data_dir(folder: pathlib.Path | None) -> None:
    """DataError when the data folder names a file (it is not "missing": the user named the wrong thing)."""
    if folder is not None and folder.exists() and not folder.is_dir():
        raise DataError(f"the data dir {folder} is a file, not a folder; give the folder that holds mnist/ "
                        "(--data-dir DIR or FUNCDL_DATA_DIR)")


def _tfds_default_dir() -> pathlib.Path:
    """TFDS's default data dir, read from the environment now (tfds caches it at import)."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


# ------------------------------------------------------------------------- load


def load(name: str, data_dir: str | pathlib.Path | None = None, *, validation_split: float = 0.0, seed: int = 0,
         normalize: bool = False, one_hot: bool = False, limit: int | None = None) -> Datasets:
    """Load a dataset as float32 NHWC images in [0, 1] (optionally standardised) and int labels.

    Args:
      name: "mnist", "digits", "cifar10", "cifar100" or "tfds:NAME" (any TFDS image-classification dataset).
      data_dir: folder containing ``mnist/``, ``cifar-10-batches-bin/`` or ``cifar-100-binary/`` (or a TFDS
        data dir); default $FUNCDL_DATA_DIR.
      validation_split: share of train held out as validation, in [0, 1); 0 means none.
      seed: seed of the validation split.
      normalize: standardise with the training set's scalar mean and std (default: keep [0, 1]).
      one_hot: return labels as float32 (N, K) instead of int32 (N,).
      limit: keep only the first ``limit`` training and test examples.

    Returns:
      Datasets with train/test (and validation) ArrayDatasets, x (N, H, W, C).

    Raises:
      ConfigError: unknown name or bad settings.
      DataError: data missing or malformed (the message says where it looked).
    """
    key = str(name).strip()
    if not (0.0 <= float(validation_split) < 1.0):
        raise ConfigError(f"validation_split must be in [0, 1); got {validation_split}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None; got {limit!r}")
    folder = resolve_data_dir(data_dir)
    if key.lower() != "digits":
        _check_data_dir(folder)
    if key.lower() == "mnist":
        raw = _load_mnist(folder, limit)
    elif key.lower() == "digits":
        raw = _load_digits(limit)
    elif key.lower() in CIFAR:
        raw = _load_cifar(CIFAR[key.lower()], folder, limit)
    elif key.startswith(_TFDS_PREFIX) and len(key) > len(_TFDS_PREFIX):
        raw = _load_tfds(key[len(_TFDS_PREFIX):], folder, limit)
    else:
        raise ConfigError(choices_message("dataset", name, [*DATASETS, "tfds:NAME"]))
    return _finish(key, raw, validation_split, seed, normalize, one_hot)


def _finish(name, raw, validation_split, seed, normalize, use_one_hot):
    """Split, normalise and encode the raw (x in [0,1], int labels) arrays into Datasets."""
    train, test, num_classes, source = raw
    for part in (train, test):
        check_labels(part.y, num_classes)
    validation = None
    if validation_split > 0:
        train, validation = train_validation_split(train, validation_split, seed)
    mean, std = _mean_std(train.x) if normalize else (0.0, 1.0)
    if std == 0.0:  # constant images: dividing would give NaN; keep the scale
        std = 1.0

    def prepare(part):
        if part is None:
            return None
        x = part.x if not normalize else (part.x - np.float32(mean)) / np.float32(std)  # stays float32
        y = one_hot(part.y, num_classes) if use_one_hot else part.y.astype(np.int32)
        return ArrayDataset(x, y)

    return Datasets(train=prepare(train), test=prepare(test), validation=prepare(validation),
                    num_classes=int(num_classes), input_shape=tuple(int(d) for d in train.x.shape[1:]),
                    name=name, source=source, mean=float(mean), std=float(std))


def _mean_std(x, chunk=8192):
    """Scalar mean and std of ``x`` in float64, by chunks so no float64 copy of x is made."""
    n = x.size
    total = sum(np.sum(x[i:i + chunk], dtype=np.float64) for i in range(0, len(x), chunk))
    mean = total / n
    sq = sum(np.sum(np.square(x[i:i + chunk].astype(np.float64) - mean)) for i in range(0, len(x), chunk))
    return float(mean), float(np.sqrt(sq / n))


def _images01(x, scale):
    """uint8/int images (N, H, W) or (N, H, W, C) -> float32 NHWC in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return (x.astype(np.float32) / np.float32(scale))


def _limited(x, y, limit):
    return ArrayDataset(x[:limit], y[:limit]) if limit else ArrayDataset(x, y)


def _load_mnist(folder, limit):
    """MNIST from IDX files in <folder>/mnist or <folder>, else from TFDS, else DataError."""
    looked = []
    notes = []
    if folder is not None:
        looked = [str(folder / "mnist"), str(folder)]
        if not folder.is_dir():
            notes.append(f"{folder} does not exist")
        for candidate in (folder / "mnist", folder) if folder.is_dir() else ():
            if not candidate.is_dir():
                continue
            missing = _missing_mnist_files(candidate)
            if not missing:
                x_tr, y_tr, x_te, y_te = load_mnist_idx(candidate)
                return (_limited(_images01(x_tr, 255), y_tr, limit), _limited(_images01(x_te, 255), y_te, limit),
                        10, f"{candidate} (IDX files)")
            if len(missing) < len(_MNIST_FILES):
                notes.append(f"{candidate} lacks {', '.join(missing)}")
    tfds_dirs = [_tfds_default_dir()]
    if folder is not None and folder.is_dir() and folder not in tfds_dirs:
        tfds_dirs.append(folder)
    for tfds_dir in tfds_dirs:
        # Only ask TFDS where it could have prepared MNIST: spares importing tensorflow for nothing.
        if (tfds_dir / "mnist").is_dir():
            try:
                return _load_tfds("mnist", tfds_dir, limit, download=False)
            except DataError as e:
                notes.append(str(e))
    dirs = "the TFDS data dir" + ("s " if len(tfds_dirs) > 1 else " ") + " and ".join(map(str, tfds_dirs))
    where = ", ".join(looked) + (" and " if looked else "") + dirs
    given = "" if folder is not None else " (no data dir given)"
    detail = f" ({'; '.join(notes)})" if notes else ""
    raise DataError(f"MNIST not found{given}: looked in {where}{detail}; put the four IDX files "
                    f"({', '.join(s + '.gz' for s in _MNIST_FILES.values())}) in DIR/mnist and pass "
                    "--data-dir DIR or set FUNCDL_DATA_DIR, or use --dataset digits which needs no download")


def _load_digits(limit):
    """scikit-learn's 8x8 digits, split 80/20 stratified with random_state=0."""
    # scikit-learn only when digits are loaded: `import funcdl.data` stays light
    from sklearn.datasets import load_digits  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    bunch = load_digits()
    x = bunch.images.reshape(-1, 8, 8, 1)
    y = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return (_limited(_images01(x_tr, 16), y_tr, limit), _limited(_images01(x_te, 16), y_te, limit),
            10, "scikit-learn digits")


def _load_tfds(name, tfds_dir, limit, download=True):
    """A TFDS image-classification dataset (features image, label; splits train, test).

    Args:
      name: TFDS dataset name (optionally "name/config:version").
      tfds_dir: TFDS data dir, or None for TFDS's default.
      limit: keep the first ``limit`` examples of each split.
      download: let TFDS download and prepare it if it is not prepared yet.

    Returns:
      (train, test, num_classes, source) with images float32 NHWC in [0, 1].

    Raises:
      DataError: with TFDS's reason when it cannot provide the data.
    """
    try:
        # tensorflow_datasets (and with it TensorFlow) only when TFDS is asked for
        import tensorflow_datasets as tfds  # noqa: PLC0415
    except ImportError as e:
        raise DataError(f"tfds:{name} needs tensorflow-datasets ({e}); pip install tensorflow-datasets") from None
    where = str(tfds_dir) if tfds_dir is not None else str(_tfds_default_dir())
    try:
        builder = tfds.builder(name, data_dir=where)
        if download and not builder.is_prepared():
            builder.download_and_prepare()
        features = builder.info.features
        if "image" not in features or "label" not in features:
            raise DataError(f"tfds:{name} is not an image-classification dataset: "
                            f"features are {', '.join(features.keys())}; need image and label")
        num_classes = int(features["label"].num_classes)
        splits = [_tfds_split(tfds, builder, split, limit) for split in ("train", "test")]
    except DataError:
        raise
    except Exception as e:  # TFDS raises many types (AssertionError, NotFound, network errors)
        # DatasetNotFoundError appends the whole catalogue; keep the first part.
        reason = " ".join(str(e).split()).split(" Available datasets:")[0][:300] or type(e).__name__
        raise DataError(f"tfds:{name} unavailable in TFDS data dir {where}: {type(e).__name__}: {reason}") from None
    return splits[0], splits[1], num_classes, f"tfds:{name} ({where})"


def _tfds_split(tfds, builder, split, limit):
    """One TFDS split as an ArrayDataset, read in batches (batch_size=-1 breaks on unknown sizes)."""
    ds = builder.as_dataset(split=split, shuffle_files=False)
    if limit:
        ds = ds.take(limit)
    images, labels = [], []
    for batch in tfds.as_numpy(ds.batch(4096)):
        images.append(batch["image"])
        labels.append(batch["label"])
    if not images:
        raise DataError(f"TFDS split {split!r} of {builder.name} is empty")
    x = np.concatenate(images)
    if x.ndim != 4:
        raise DataError(f"TFDS {builder.name} images have shape {x.shape[1:]}; expected (H, W, C)")
    scale = 255.0 if x.dtype == np.uint8 else 1.0  # float images are taken as already in [0, 1]
    return ArrayDataset(_images01(x, scale), np.concatenate(labels).astype(np.int32))
