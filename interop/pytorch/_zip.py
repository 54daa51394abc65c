"""A reader of ``torch.save`` zip archives that never unpickles: tensors and plain containers only.

A ``torch.save`` file (zip format, torch >= 1.6) holds ``<root>/data.pkl``, a
pickle whose persistent ids name the raw storage records ``<root>/data/<key>``,
and ``<root>/byteorder``. ``read_torch_zip`` walks the pickle's opcodes with
``pickletools.genops`` (which only parses) and interprets a small, fixed set of
them on its own stack: containers (dict, list, tuple), strings, numbers, None,
booleans, and the handful of globals torch writes for tensors
(``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, the typed
storages, ``collections.OrderedDict``). Any other global, opcode or object is
refused: nothing is imported, called or constructed from the file. The legacy
``.pt2`` layouts (torch <= 2.7) keep their weights in such archives.
"""
from __future__ import annotations

import dataclasses
import io
import pickletools
import zipfile
from collections.abc import Callable
from typing import Any

import ml_dtypes  # numpy's bfloat16, installed with jax
import numpy as np

from funcdl.errors import FileFormatError
from funcdl.io import check_size

# torch storage class -> numpy dtype of one element (little-endian; swapped for big-endian archives)
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?", "ComplexFloatStorage": "<c8", "ComplexDoubleStorage": "<c16",
}
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                    ("torch._utils", "_rebuild_parameter")} | {("torch", name) for name in STORAGE_DTYPES}
# opcodes that only move data; anything else (INST, OBJ, NEWOBJ, EXT*, ...) is refused
_PUSH = {"BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG", "BINFLOAT", "FLOAT", "BINUNICODE",
         "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "STRING",
         "BINSTRING", "SHORT_BINSTRING"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype for a spelling of ``STORAGE_DTYPES`` (bfloat16 comes from ml_dtypes, a jax dependency)."""
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclasses.dataclass(frozen=True)
class _Storage:
    """A persistent id: the storage record ``key`` holding ``numel`` elements of ``dtype``."""
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class _Global:
    """A name the pickle looked up (never imported)."""
    module: str
    name: str


class _Mark:
    """The pickle MARK on the stack."""


class _Reader:
    """Interprets one ``data.pkl``; tensors come from ``load(storage) -> flat array`` (or stay unread)."""

    def __init__(self, what: str, load: Callable[[_Storage], np.ndarray] | None):
        self.what = what
        self.load = load
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def refuse(self, detail: str) -> FileFormatError:
        return FileFormatError(f"{self.what}: refused to load: {detail}; funcdl reads tensors and plain containers "
                               "only (a pickle that would run code or build other objects)")

    def pop_mark(self) -> list[Any]:
        items: list[Any] = []
        while self.stack:
            item = self.stack.pop()
            if isinstance(item, _Mark):
                return items[::-1]
            items.append(item)
        raise self.refuse("a pickle whose MARK is missing")

    def run(self, data: bytes) -> Any:
        try:
            for opcode, arg, _ in pickletools.genops(data):
                if opcode.name == "STOP":
                    if len(self.stack) != 1:
                        raise self.refuse("a malformed pickle")
                    return self.stack.pop()
                self.step(opcode.name, arg)
        except FileFormatError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, RecursionError) as err:
            raise FileFormatError(f"{self.what}: damaged pickle: {err}") from None
        raise FileFormatError(f"{self.what}: damaged pickle: no STOP")

    def step(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in ("PROTO", "FRAME"):
            return
        if name in _PUSH:
            stack.append(arg)
        elif name in _CONSTANTS:
            stack.append(_CONSTANTS[name])
        elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
            stack.append({"EMPTY_DICT": {}, "EMPTY_LIST": [], "EMPTY_TUPLE": ()}[name])
        elif name == "MARK":
            stack.append(_Mark())
        elif name in ("TUPLE", "LIST", "DICT"):
            items = self.pop_mark()
            stack.append(tuple(items) if name == "TUPLE" else list(items) if name == "LIST" else _pairs(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count or any(isinstance(item, _Mark) for item in stack[-count:]):
                raise self.refuse("a malformed pickle")
            items = stack[-count:]
            del stack[-count:]
            stack.append(tuple(items))
        else:
            self.step_more(name, arg)

    def step_more(self, name: str, arg: Any) -> None:
        stack = self.stack
        if name in ("BINPUT", "LONG_BINPUT", "PUT"):
            self.memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(self.memo[int(arg)])
        elif name in ("SETITEM", "SETITEMS"):
            items = [stack.pop(), stack.pop()][::-1] if name == "SETITEM" else self.pop_mark()
            target = stack[-1]
            if not isinstance(target, dict):
                raise self.refuse("SETITEM on a non-dict")
            target.update(_pairs(items))
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else self.pop_mark()
            if not isinstance(stack[-1], list):
                raise self.refuse("APPEND on a non-list")
            stack[-1].extend(items)
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            module, attribute = arg.split(" ", 1) if name == "GLOBAL" else (stack.pop(-2), stack.pop())
            if (module, attribute) not in _ALLOWED_GLOBALS:
                raise self.refuse(f"it names the Python object {module}.{attribute}")
            stack.append(_Global(module, attribute))
        elif name == "BINPERSID":
            stack.append(self.persistent(stack.pop()))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(self.call(stack.pop(), args))
        elif name == "BUILD":
            state = stack.pop()
            if not (isinstance(stack[-1], dict) and isinstance(state, dict)):  # a state dict's _metadata
                raise self.refuse("BUILD of an object")
        else:
            raise self.refuse(f"the pickle opcode {name}")

    def persistent(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)):
            raise self.refuse(f"an unknown persistent id {str(pid)[:60]}")
        _, kind, key, _location, numel = pid
        if not (isinstance(key, str) and key.isalnum() and isinstance(numel, int) and numel >= 0):
            raise self.refuse(f"a malformed storage id {str(pid)[:60]}")
        return _Storage(key, numpy_dtype(STORAGE_DTYPES[kind.name]), numel)

    def call(self, function: Any, args: Any) -> Any:
        if not isinstance(function, _Global) or not isinstance(args, tuple):
            raise self.refuse("a call of something other than an allowed global")
        if function.name == "OrderedDict" and args == ():
            return {}
        if function.name == "_rebuild_tensor_v2" and 6 <= len(args) <= 7 and isinstance(args[0], _Storage):
            return self.tensor(*args[:4])
        if function.name == "_rebuild_parameter" and len(args) == 3:
            return args[0]
        raise self.refuse(f"a call of {function.module}.{function.name} with unexpected arguments")

    def tensor(self, storage: _Storage, offset: Any, size: Any, stride: Any) -> Any:
        if not (isinstance(size, tuple) and isinstance(stride, tuple) and isinstance(offset, int)):
            raise self.refuse("a tensor with malformed sizes")
        if self.load is None:
            return storage
        return strided(self.load(storage), tuple(size), tuple(stride), offset, self.what)


def _pairs(items: list[Any]) -> dict:
    if len(items) % 2:
        raise FileFormatError("damaged pickle: a dict with an odd number of items")
    keys = items[::2]
    if not all(isinstance(k, (str, int)) for k in keys):
        raise FileFormatError("damaged pickle: a dict key that is not a string or a number")
    return dict(zip(keys, items[1::2]))


def strided(flat: np.ndarray, size: tuple, stride: tuple, offset: int, what: str) -> np.ndarray:
    """A copy of the view ``flat.as_strided(size, stride, offset)`` (all in elements), bounds-checked first.

    Raises:
      FileFormatError if the view would read outside ``flat`` or the sizes are malformed.
    """
    numbers = size + stride + (offset,)
    if len(size) != len(stride) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                           for v in numbers):
        raise FileFormatError(f"{what}: tensor sizes {size}, strides {stride}, offset {offset} are malformed")
    if any(d == 0 for d in size):
        return np.zeros(size, flat.dtype)
    last = offset + sum((d - 1) * s for d, s in zip(size, stride))
    if last >= flat.size:
        raise FileFormatError(f"{what}: a tensor of sizes {size}, strides {stride}, offset {offset} reads past its "
                              f"storage of {flat.size} elements")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, tuple(s * itemsize for s in stride), writeable=False)
    return np.array(view, order="C")


class _Records:
    """The storage records of one torch zip, read within the byte budget; tensors' allocations counted too."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, what: str, limit: int):
        self.archive, self.prefix, self.what, self.limit = archive, prefix, what, limit
        self.allocated = 0
        order = _text(archive, f"{prefix}byteorder", what) if f"{prefix}byteorder" in archive.namelist() else "little"
        if order not in ("little", "big"):
            raise FileFormatError(f"{what}: unknown byte order {order[:20]!r}")
        self.big = order == "big"
        self.cache: dict[str, np.ndarray] = {}

    def load(self, storage: _Storage) -> np.ndarray:
        if storage.key in self.cache:
            return self.cache[storage.key]
        name = f"{self.prefix}data/{storage.key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise FileFormatError(f"{self.what}: storage record {name} is missing") from None
        nbytes = storage.numel * storage.dtype.itemsize
        if info.file_size != nbytes:
            raise FileFormatError(f"{self.what}: storage record {name} holds {info.file_size} bytes, its tensor "
                                  f"needs {nbytes}")
        self.allocated += nbytes
        check_size(f"{self.what}: its tensors", self.allocated, self.limit)
        try:
            raw = self.archive.read(name)
        except (zipfile.BadZipFile, OSError) as err:
            raise FileFormatError(f"{self.what}: damaged record {name}: {err}") from None
        self.cache[storage.key] = from_bytes(raw, storage.dtype, self.big)
        return self.cache[storage.key]


def from_bytes(raw: bytes, dtype: np.dtype, big_endian: bool = False) -> np.ndarray:
    """The flat array of ``raw`` read as ``dtype`` elements (stored big-endian when ``big_endian``), native order."""
    if not big_endian or dtype.itemsize == 1:
        return np.frombuffer(raw, dtype=dtype)
    unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize  # a complex number is two floats
    words = np.frombuffer(raw, dtype=np.dtype(f">u{unit}"))
    return words.astype(np.dtype(f"=u{unit}")).view(dtype)


def _text(archive: zipfile.ZipFile, name: str, what: str) -> str:
    try:
        return archive.read(name).decode("ascii").strip()
    except UnicodeDecodeError:
        raise FileFormatError(f"{what}: {name} is not text") from None


def read_torch_zip(data: bytes, what: str, limit: int, tensors: bool = True) -> Any:
    """The object a ``torch.save`` zip archive holds, read without unpickling.

    Args:
      data: the archive's bytes (already bounded by the caller's limit).
      what: names the archive in error messages (e.g. ``"m.pt2: serialized_state_dict.pt"``).
      limit: the most bytes its members may unpack to, and its tensors may take.
      tensors: read the tensors' storages; False only checks the pickle (tensors come back unread).
    Returns:
      dicts, lists, tuples, strings, numbers and numpy arrays (C-contiguous copies).
    Raises:
      FileFormatError for any other object, a damaged archive, or views outside their storage.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise FileFormatError(f"{what}: not a torch.save zip archive") from None
    with archive:
        check_size(what, sum(info.file_size for info in archive.infolist()), limit)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise FileFormatError(f"{what}: a torch.save archive holds one <root>/data.pkl; found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        records = _Records(archive, prefix, what, limit)
        try:
            pickle = archive.read(pickles[0])
        except (zipfile.BadZipFile, OSError) as err:
            raise FileFormatError(f"{what}: damaged archive: {err}") from None
        return _Reader(what, records.load if tensors else None).run(pickle)
