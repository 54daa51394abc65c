"""Hostile files for the safety tests: crafted .pt2 archives, pickles whose loading creates a marker file, bombs.

Every payload here is live: ``Payload(marker)`` unpickled by ``pickle.loads`` (or ``torch.load(weights_only=False)``)
opens the marker file for writing, which is what the tests prove never happens inside funcdl.
"""
import io
import json
import pickle
import zipfile
import zlib
from pathlib import Path


class Payload:
    """Unpickling this creates the marker file: what a hostile model file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def payload_pickle(marker, protocol):
    """A pickle (of ``protocol``) whose loading creates ``marker``."""
    return pickle.dumps(Payload(marker), protocol=protocol)


def prove_live(data, marker):
    """Unpickle ``data`` here, on purpose, and check that it created ``marker`` (then remove it)."""
    pickle.loads(data)  # noqa: S301 - the test's own payload, to show it is armed
    assert Path(marker).exists()
    Path(marker).unlink()


def rewrite(source, target, replace=None, add=None, edit_json=None, extra_names=()):
    """Copy the zip ``source`` to ``target``, replacing members' bytes, adding members, editing JSON members.

    Args:
      replace: {suffix of a member name: new bytes}.
      add: {member name (relative to the archive root unless it starts with '/' or '..'): bytes}.
      edit_json: {suffix of a member name: function(dict) -> dict}.
      extra_names: raw member names written as they are (path traversal, duplicates).
    """
    replace, add, edit_json = replace or {}, add or {}, edit_json or {}
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        names = original.namelist()
        root = names[0].split("/", 1)[0] + "/"
        for name in names:
            data = original.read(name)
            for suffix, new in replace.items():
                if name.endswith(suffix):
                    data = new
            for suffix, function in edit_json.items():
                if name.endswith(suffix):
                    data = json.dumps(function(json.loads(data))).encode()
            copy.writestr(name, data)
        for name, data in add.items():
            copy.writestr(name if name.startswith(("/", "..")) else root + name, data)
        for name, data in extra_names:
            copy.writestr(zipfile.ZipInfo(name), data)
    return target


def weight_config(function):
    """An ``edit_json`` entry applying ``function`` to the weights config of the archive's program."""
    return {"_weights_config.json": function}


def deflated_zeros(archive, name, size, chunk=64 << 20):
    """Write a member of ``size`` zero bytes, deflated (a few MB on disk per GB declared)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    zeros = bytes(min(chunk, size))
    with archive.open(info, "w", force_zip64=True) as handle:
        left = size
        while left:
            handle.write(zeros[:min(left, chunk)])
            left -= min(left, chunk)


def zip_bomb_like(source, target, member_suffix, size):
    """``source`` with the member ending in ``member_suffix`` replaced by ``size`` deflated zero bytes."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", compresslevel=1) as copy:
        for name in original.namelist():
            if name.endswith(member_suffix):
                deflated_zeros(copy, name, size)
            else:
                copy.writestr(name, original.read(name))
    return target


def gzip_idx_bomb(path, dims, size, code=0x08):
    """A gzip IDX file whose header declares ``dims`` and whose stream then inflates to ``size`` zero bytes."""
    header = b"\x00\x00" + bytes([code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header))
        zeros, left = bytes(64 << 20), size
        while left:
            handle.write(compressor.compress(zeros[:min(left, len(zeros))]))
            left -= min(left, len(zeros))
        handle.write(compressor.flush())
    return path


def torch_save_bytes(torch, obj):
    """``torch.save(obj)`` as bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
