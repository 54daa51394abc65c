"""CIFAR-10/100 from the standard binary folders, and TFDS preparing mnist and cifar10 offline."""
import json
import pathlib
from unittest import mock

import numpy as np
import pytest

import funcdl as fd
from funcdl.cli import main
from funcdl.data import CIFAR, load_cifar_binary, read_cifar_bin
from funcdl.errors import DataError

CIFAR10, CIFAR100 = CIFAR["cifar10"], CIFAR["cifar100"]


def cifar_records(count, cifar, seed=0):
    """(records bytes, images (N, 32, 32, 3), label bytes (N, label_bytes)) of random CIFAR records."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, limit, count) for limit in cifar.label_limits], 1).astype(np.uint8)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(count, -1)  # channel-major, as the files hold them
    return np.concatenate([labels, planes], 1).tobytes(), images, labels


def write_cifar(root, cifar, train_per_file=8, test=6, seed=0):
    """A synthetic binary release under ``root/<cifar.folder>``; returns its images and labels."""
    folder = pathlib.Path(root) / cifar.folder
    folder.mkdir(parents=True)
    parts = {}
    for index, name in enumerate(cifar.train_files + cifar.test_files):
        count = test if name in cifar.test_files else train_per_file
        data, images, labels = cifar_records(count, cifar, seed + index)
        (folder / name).write_bytes(data)
        parts[name] = (images, labels)
    return parts


def test_records_are_read_channel_major_into_nhwc(tmp_path):
    parts = write_cifar(tmp_path, CIFAR10)
    x_train, y_train, x_test, y_test = load_cifar_binary(tmp_path / CIFAR10.folder, CIFAR10)
    expected = np.concatenate([parts[name][0] for name in CIFAR10.train_files])
    np.testing.assert_array_equal(x_train, expected)
    np.testing.assert_array_equal(y_train, np.concatenate([parts[n][1][:, 0] for n in CIFAR10.train_files]))
    assert x_train.shape == (40, 32, 32, 3) and x_test.shape == (6, 32, 32, 3) and y_test.dtype == np.int32
    # one record by hand: the label byte, then 1,024 red, 1,024 green, 1,024 blue bytes
    record = np.arange(3073, dtype=np.int64) % 251
    record[0] = 7
    (tmp_path / "one.bin").write_bytes(record.astype(np.uint8).tobytes())
    images, labels = read_cifar_bin(tmp_path / "one.bin", CIFAR10)
    assert labels.tolist() == [[7]]
    assert images[0, 0, 1].tolist() == [2, (1 + 1024 + 1) % 251, (1 + 2048 + 1) % 251]


def test_cifar100_uses_the_fine_label(tmp_path):
    parts = write_cifar(tmp_path, CIFAR100, train_per_file=10, test=4)
    data = fd.data.load("cifar100", tmp_path, validation_split=0.2, seed=1)
    assert data.num_classes == 100 and data.input_shape == (32, 32, 3)
    assert len(data.train) == 8 and len(data.validation) == 2 and "binary files" in data.source
    np.testing.assert_array_equal(data.test.y, parts["test.bin"][1][:, 1])
    np.testing.assert_allclose(data.test.x, parts["test.bin"][0] / np.float32(255))


def test_load_by_name_finds_the_folder_and_normalises(tmp_path):
    write_cifar(tmp_path / "cifar10", CIFAR10)  # DIR/cifar10/cifar-10-batches-bin works too
    data = fd.data.load("CIFAR10", tmp_path, normalize=True, one_hot=True, limit=12)
    assert data.train.x.shape == (12, 32, 32, 3) and data.train.y.shape == (12, 10)
    assert abs(float(data.train.x.mean())) < 1e-5


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "data_batch_3.bin").unlink() or (f / "test_batch.bin").unlink(),
     "CIFAR-10 files missing in {f}: data_batch_3.bin, test_batch.bin; extract cifar-10-binary.tar.gz"),
    (lambda f: (f / "data_batch_2.bin").write_bytes(b"\x01" * 3072),
     "data_batch_2.bin: 3,072 bytes is not a whole number of 3,073-byte CIFAR-10 records"),
    (lambda f: (f / "test_batch.bin").write_bytes(b""), "0 bytes is not a whole number"),
    (lambda f: (f / "data_batch_1.bin").write_bytes(b"\x0c" + bytes(3072)),
     "data_batch_1.bin: record 0 has label 12 (byte 0); CIFAR-10 labels must be below 10"),
])
def test_damaged_folders_name_the_file(tmp_path, damage, message):
    write_cifar(tmp_path, CIFAR10)
    folder = tmp_path / CIFAR10.folder
    damage(folder)
    with pytest.raises(DataError) as info:
        fd.data.load("cifar10", tmp_path)
    assert message.format(f=folder) in str(info.value) and "\n" not in str(info.value)


def test_size_limit_is_checked_before_reading(tmp_path, monkeypatch):
    write_cifar(tmp_path, CIFAR10)
    monkeypatch.setenv("FUNCDL_MAX_BYTES", "10000")
    with pytest.raises(DataError, match="data_batch_1.bin would unpack to 24,584 bytes, over the limit of 10,000"):
        fd.data.load("cifar10", tmp_path)


def test_the_pickled_version_is_named_and_never_read(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(fd.data, "_online", lambda host, timeout=5.0: False)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"\x80\x04not read")
    with pytest.raises(DataError) as info:
        fd.data.load("cifar10", tmp_path)
    message = str(info.value)
    assert "cifar-10-batches-py is the pickled Python version, which funcdl does not read" in message
    assert "offline" in message and "cifar-10-binary.tar.gz" in message


# -- TFDS: what it needs to download and prepare mnist and cifar10, run offline -------------------------------------
def _prepare_offline(name, data_dir, downloaded):
    """``tfds.builder(name).download_and_prepare()`` with the download replaced by ``downloaded``."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with mock.patch.object(tfds.download.DownloadManager, "download_and_extract",
                           lambda self, url_or_urls: downloaded(url_or_urls)):
        builder = tfds.builder(name, data_dir=str(data_dir))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return builder


@pytest.mark.slow
def test_tfds_prepares_cifar10_offline_and_load_reads_it(tmp_path):
    parts = write_cifar(tmp_path / "download", CIFAR10, train_per_file=4, test=3)
    (tmp_path / "download" / CIFAR10.folder / "batches.meta.txt").write_text(
        "\n".join("airplane automobile bird cat deer dog frog horse ship truck".split()) + "\n")
    builder = _prepare_offline("cifar10", tmp_path / "tfds", lambda url: str(tmp_path / "download"))
    assert builder.info.splits["train"].num_examples == 20
    data = fd.data.load("cifar10", tmp_path / "tfds")  # no binary folder there: the prepared TFDS copy
    assert data.source.startswith("tfds:cifar10") and data.test.x.shape == (3, 32, 32, 3)
    assert sorted(data.test.y.tolist()) == sorted(parts["test_batch.bin"][1][:, 0].tolist())


@pytest.mark.slow
def test_tfds_prepares_mnist_offline(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.image_classification import mnist
    monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", 12)
    monkeypatch.setattr(mnist, "_TEST_EXAMPLES", 5)
    rng = np.random.default_rng(0)
    files = {}
    for split, count in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        files[f"{split}_data"] = tmp_path / f"{split}-images"
        files[f"{split}_data"].write_bytes(b"\0\0\x08\x03" + np.array([count, 28, 28], ">u4").tobytes()
                                           + images.tobytes())
        files[f"{split}_labels"] = tmp_path / f"{split}-labels"
        files[f"{split}_labels"].write_bytes(b"\0\0\x08\x01" + np.array([count], ">u4").tobytes()
                                             + rng.integers(0, 10, count, dtype=np.uint8).tobytes())
    builder = _prepare_offline("mnist", tmp_path / "tfds", lambda urls: {k: str(v) for k, v in files.items()})
    assert builder.info.splits["test"].num_examples == 5
    assert isinstance(tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))["image"], np.ndarray)


def test_the_zoo_cnn_trains_on_a_cifar_folder_with_augmentation(tmp_path, capsys):
    write_cifar(tmp_path, CIFAR10)  # 5 x 8 training records, 6 test records
    code = main(["train", "--model", "cnn", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--augment",
                 "--epochs", "2", "--batch-size", "8", "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["dataset"] == "cifar10" and result["augment"] is True and result["epochs"] == 2
    assert (result["train_examples"], result["validation_examples"], result["test_examples"]) == (36, 4, 6)
    assert result["compiles_after_first_epoch"] == 0 and np.isfinite(result["final_train_loss"])
    assert result["params"] == 1_626_442  # the CNN sized for 32x32x3 inputs (12,544 features into Dense(128))
