"""Download MNIST's four IDX files into a data folder, checksum-verified: ``python -m funcdl.download``.

``make data`` runs this. The files are fetched from the two mirrors the
frameworks use (torchvision's and TensorFlow's), and each is accepted only if
its *decompressed* content has the well-known SHA-256 (a re-compressed copy is
as good as the original). Every file is written to a temporary name and
renamed into place, so an interrupted download leaves nothing half-written.
Without a network the command says so in one line and exits 2.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pathlib
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from funcdl.errors import DataError, FuncdlError
from funcdl.io.atomic import atomic_path

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
# SHA-256 of each file's decompressed content (60,000 / 10,000 examples, 28x28 uint8).
CHECKSUMS = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MAX_BYTES = 64 << 20  # the largest file is 9.9 MB compressed, 47 MB decompressed
TIMEOUT = 30


def _fetch(url: str, limit: int = MAX_BYTES) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        payload = response.read(limit + 1)
    if len(payload) > limit:
        raise DataError(f"{url} is larger than {limit} bytes; refusing it")
    return payload


def _verified(payload: bytes, stem: str, checksum: str, url: str) -> bytes:
    """``payload`` if its decompressed content has ``checksum``, else DataError."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(payload)) as stream:
            content = stream.read(MAX_BYTES + 1)
    except (OSError, EOFError) as err:
        raise DataError(f"{url}: not a gzip file ({err})") from None
    if hashlib.sha256(content).hexdigest() != checksum:
        raise DataError(f"{url}: checksum mismatch for {stem}; the mirror's file is not MNIST's, try again later")
    return payload


def download_mnist(data_dir: str | os.PathLike[str], mirrors: Sequence[str] = MIRRORS,
                   checksums: Mapping[str, str] | None = None) -> pathlib.Path:
    """Fetch the four MNIST IDX gz files into ``data_dir/mnist`` (files already there and valid are kept).

    Args:
      data_dir: the data folder (``--data-dir`` / ``$FUNCDL_DATA_DIR``); ``mnist/`` is created in it.
      mirrors: base URLs tried in order for each file.
      checksums: ``{stem: sha256 of the decompressed file}``; MNIST's by default.
    Returns:
      the ``mnist`` folder.
    Raises:
      DataError: offline, or no mirror served a file with the right checksum.
    """
    checksums = CHECKSUMS if checksums is None else checksums
    folder = pathlib.Path(data_dir).expanduser() / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    for stem, checksum in checksums.items():
        target = folder / f"{stem}.gz"
        if target.is_file():
            with contextlib.suppress(DataError):
                _verified(target.read_bytes(), stem, checksum, str(target))
                continue
        payload = _download_one(stem, checksum, mirrors)
        with atomic_path(target) as tmp:
            tmp.write_bytes(payload)
    return folder


def _download_one(stem: str, checksum: str, mirrors: Sequence[str]) -> bytes:
    reasons = []
    for mirror in mirrors:
        url = f"{mirror}{stem}.gz"
        try:
            return _verified(_fetch(url), stem, checksum, url)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reasons.append(f"{url}: {getattr(err, 'reason', err)}")
        except DataError as err:
            reasons.append(str(err))
    raise DataError(f"could not download {stem}.gz (offline or the mirrors are unreachable: "
                    f"{'; '.join(reasons)}); copy the four MNIST IDX files into the data folder by hand")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m funcdl.download [DATA_DIR]``: DATA_DIR defaults to ``$FUNCDL_DATA_DIR``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    target = argv[0] if argv else os.environ.get("FUNCDL_DATA_DIR")
    if not target or len(argv) > 1:
        print("error: usage: python -m funcdl.download DATA_DIR (or set FUNCDL_DATA_DIR)", file=sys.stderr)
        return 2
    try:
        folder = download_mnist(target)
    except (FuncdlError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MNIST is in {folder} (checksums verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
