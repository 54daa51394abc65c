"""What a file is, from its first bytes: so a file with the wrong name is called what it is, not "damaged".

Only signatures are read (a few bytes, a zip's member names, a safetensors header's length): nothing is
parsed further and nothing is unpacked.
"""
import json
import struct
import zipfile
from pathlib import Path
from typing import NamedTuple

_TEXT = bytes(range(32, 127)) + b"\t\n\r\f\b"


class Kind(NamedTuple):
    """What a file is: ``name`` for people (``'a safetensors file'``), ``suffix`` the ending it should have."""
    name: str
    suffix: str = ""


def sniff(path: str | Path) -> Kind | None:
    """The kind of file ``path`` holds by its content, or None when its first bytes match nothing known."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return Kind("a Python pickle (a legacy torch.save file?)", ".pt")
    if _is_safetensors(path, head):
        return Kind("a safetensors file", ".safetensors")
    if head and all(byte in _TEXT or byte >= 0x80 for byte in head) and _utf8(head):
        return Kind("a text file")
    return None


_SIGNATURES = [
    (b"\x89HDF\r\n\x1a\n", Kind("an HDF5 file (Keras .h5 / .weights.h5)", ".h5")),
    (b"\x1f\x8b", Kind("a gzip stream", ".gz")),
    (b"\x89PNG\r\n\x1a\n", Kind("a PNG image")),
    (b"\xff\xd8\xff", Kind("a JPEG image")),
    (b"\x08\x01\x12", Kind("a protocol buffer (TensorFlow saved_model.pb?)", ".pb")),
]


def _zip_kind(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return Kind("a damaged zip archive")
    if "config.json" in names and any(name.endswith("metadata.json") for name in names):
        return Kind("a Keras .keras archive", ".keras")
    if any(("/" + name).endswith("/serialized_exported_program.json") or (
            ("/" + name).rsplit("/", 2)[-2:-1] == ["models"] and name.endswith(".json")) for name in names):
        return Kind("a torch.export .pt2 archive", ".pt2")
    if any(("/" + name).endswith("/data.pkl") for name in names):
        return Kind("a torch.save zip (a .pt file)", ".pt")
    return Kind("a zip archive")


def _is_safetensors(path, head):
    """A little-endian u64 header length, then that many bytes of JSON object."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    try:
        size = Path(path).stat().st_size
    except OSError:
        return False
    if length > size - 8 or length > 100 << 20:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(8)
            header = json.loads(handle.read(length))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(header, dict)


def _utf8(head):
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(head) - 3  # a character cut at the end of the sample
    return True


# zips whose members name no known format, and the model files that are zips (their readers judge them)
_ZIPS = ("a zip archive", "a damaged zip archive")
_ZIPPED = (".keras", ".pt", ".pth", ".pt2")
# the endings a kind of file may have besides its own
_ALSO = {".pt": (".pth",), ".h5": (".hdf5",), ".safetensors": (".funcdl",)}


def misnamed(path: str | Path) -> str | None:
    """A one-line reason when ``path``'s content is not what its name says (a safetensors file named .pt,
    a text file named .keras), or None when it fits its name or is of no kind known here.
    """
    kind = sniff(path)
    if kind is None:
        return None
    if kind.name in _ZIPS and str(path).lower().endswith(_ZIPPED):
        return None  # a zip of a layout not recognised here: its reader says what is wrong with it
    if not kind.suffix:
        return f"{path} is not a model file: it is {kind.name}"
    if str(path).lower().endswith((kind.suffix, *_ALSO.get(kind.suffix, ()))):
        return None
    return f"{path} is {kind.name}, not what its name says; rename it to end in {kind.suffix}"
