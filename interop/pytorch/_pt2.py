"""Read ``torch.export`` ``.pt2`` archives into plain Python and numpy, without torch and without unpickling.

``torch.export.load`` unpickles members of the archive (``torch.load(weights_only=False)``, ``pickle.loads``)
and trusts the archive's own flags for which ones, so a crafted ``.pt2`` runs code there. ``read`` never hands
the file to any loader: it reads the JSON program and the raw tensor records itself, and refuses everything
else. Layouts read (``Pt2Archive.layout``):

``"pt2-archive"`` (``torch.export.save`` in torch >= 2.8; archive version 0)::

    <root>/archive_format                           "pt2"
    <root>/archive_version                          "0"
    <root>/byteorder                                "little" | "big"
    <root>/models/<model>.json                      the serialized ExportedProgram (graph, signature, ...)
    <root>/data/weights/<model>_weights_config.json {"config": {fqn: {path_name, is_param, use_pickle,
                                                    tensor_meta: {dtype, sizes, strides, storage_offset}}}}
    <root>/data/weights/weight_<i>                  raw storage bytes, shared by the views listed in the config
    <root>/data/constants/<model>_constants_config.json, tensor_<i>     the same for constants
    <root>/data/sample_inputs/<model>.pt            a torch.save zip: checked, not read
    <root>/extra/<name>                             extra files (text)
    (torch 2.6-2.7's ``package_pt2`` kept weights in ``data/weights/<model>.pt``, a torch.save zip: read too)

``"legacy"`` (``torch.export.save`` in torch 2.2-2.7; 2.1 named the state dict ``.json``)::

    serialized_exported_program.json, serialized_state_dict.pt, serialized_constants.pt,
    serialized_example_inputs.pt, version, extra_files/<name>

The ``.pt`` members there are ``torch.save`` zips, read by ``interop.pytorch._zip`` (tensors and containers only).

Tested with: archives ``torch.export.save`` writes in torch 2.13 (``pt2-archive``); the ``legacy`` layout written
from torch 2.13's own ``torch._export.serde.serialize`` exactly as torch 2.2-2.7's ``torch.export.save`` wrote it
(torch 2.13's ``torch.export.load`` still loads it); the ``data/weights/<model>.pt`` variant assembled from a
``torch.save`` of the state dict. Files written by older torch binaries were not available here; older schemas'
dtype names (``"FLOAT"``) are accepted besides the numbers.

Refused with one line (``FileFormatError``): any member whose bytes parse as a pickle (protocol 0-5, found by
content, whatever the config says), a config entry with ``use_pickle: true``, opaque/custom/TorchScript object
constants, AOTInductor or other compiled code, member paths outside the archive root or repeated, JSON that is
not an object of the expected shape, dtypes outside ``DTYPES``, views outside their storage, and archives
whose members or tensors would unpack to more than ``funcdl.io.max_bytes()`` (``$FUNCDL_MAX_BYTES``).
"""
from __future__ import annotations

import dataclasses
import json
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from funcdl.errors import FileFormatError
from funcdl.io import check_size, max_bytes
from interop.pytorch._zip import from_bytes, numpy_dtype, read_torch_zip, strided

# torch._export.serde.schema.ScalarType -> numpy dtype (older schemas wrote the member names)
DTYPES = {1: "u1", 2: "i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f2", 7: "<f4", 8: "<f8", 10: "<c8", 11: "<c16",
          12: "?", 13: "bfloat16", 28: "<u2", 34: "<u4", 35: "<u8"}
DTYPE_NAMES = {"BYTE": 1, "CHAR": 2, "SHORT": 3, "INT": 4, "LONG": 5, "HALF": 6, "FLOAT": 7, "DOUBLE": 8,
               "COMPLEXFLOAT": 10, "COMPLEXDOUBLE": 11, "BOOL": 12, "BFLOAT16": 13, "UINT16": 28, "UINT32": 34,
               "UINT64": 35}
STRIDED = (7, "Strided")  # torch._export.serde.schema.Layout
CODE_SUFFIXES = (".so", ".dll", ".dylib", ".cpp", ".cc", ".cu", ".cubin", ".ptx", ".o", ".pyd", ".py", ".pyc")
_LEGACY_PROGRAM = "serialized_exported_program.json"
_RECORD_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")


# -- the result ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Pt2Node:
    """One ``call_function`` node of the program's graph, as torch serialised it.

    Attributes:
      name: the node's name (its first output's name in older schemas).
      target: the operator, e.g. ``"torch.ops.aten.conv2d.default"`` (a string: never resolved here).
      inputs: ``({"name": schema argument name, "arg": {"as_tensor": {"name": ...}} | {"as_int": 3} | ...,
        "kind": ...}, ...)``.
      outputs: the output arguments (``{"as_tensor": {"name": ...}}``, ``{"as_tensors": [...]}``, ...).
      metadata: torch's strings: ``stack_trace``, ``nn_module_stack``, ``torch_fn``, ...
    """
    name: str
    target: str
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    metadata: dict[str, str]

    @property
    def stack_trace(self) -> str | None:
        """The Python stack torch recorded when it traced this node, or None."""
        return self.metadata.get("stack_trace")

    @property
    def source(self) -> str | None:
        """The user's source line of this node: ``'File "net.py", line 12, in forward: x = self.fc(x)'``."""
        lines = [line.strip() for line in (self.stack_trace or "").splitlines() if line.strip()]
        if not lines:
            return None
        return f"{lines[0]}: {lines[1]}" if len(lines) > 1 and not lines[1].startswith("File ") else lines[0]


@dataclasses.dataclass(frozen=True)
class Pt2Spec:
    """One entry of the graph signature: what a placeholder (input) or an output stands for.

    Attributes:
      kind: ``parameter``, ``buffer``, ``tensor_constant``, ``user_input``, ``constant_input``, ``token``
        (inputs); ``user_output``, ``buffer_mutation``, ``loss_output``, ... (outputs).
      name: the graph value's name (placeholder or output), or None.
      target: the state-dict / constants key it maps to (``"conv.weight"``), or None.
      persistent: for buffers, whether the state dict holds it.
      raw: the spec as serialised.
    """
    kind: str
    name: str | None
    target: str | None
    persistent: bool | None
    raw: dict


@dataclasses.dataclass(frozen=True)
class Pt2Graph:
    """The program's graph.

    Attributes:
      nodes: the ``call_function`` nodes in order.
      inputs: the placeholders' names in order (parameters, buffers, constants, then user inputs).
      outputs: the graph's output arguments.
      input_specs, output_specs: the signature (which placeholder is which parameter, ...).
      tensor_values: {value name: tensor meta as serialised}; sizes may be symbolic (``{"as_expr": ...}``).
    """
    nodes: tuple[Pt2Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[dict, ...]
    input_specs: tuple[Pt2Spec, ...]
    output_specs: tuple[Pt2Spec, ...]
    tensor_values: dict[str, dict]


@dataclasses.dataclass(frozen=True)
class Pt2Program:
    """One exported program: its graph and its tensors as numpy arrays (C-contiguous copies).

    Attributes:
      name: the program's name in the archive (``"model"`` for ``torch.export.save``).
      graph: the parsed graph.
      state_dict: parameters and persistent buffers, {fqn: array} (``ExportedProgram.state_dict``).
      constants: tensor constants and non-persistent buffers, {fqn: array}.
      schema_version: ``(major, minor)`` of torch's export schema.
      torch_version: the torch that wrote it, when recorded.
      range_constraints: symbolic sizes' ranges, e.g. ``{"s77": {"min_val": 2, "max_val": null}}``.
      program: the whole serialised ExportedProgram (validated JSON).
    """
    name: str
    graph: Pt2Graph
    state_dict: dict[str, np.ndarray]
    constants: dict[str, np.ndarray]
    schema_version: tuple[int, int]
    torch_version: str | None
    range_constraints: dict
    program: dict

    @property
    def tensors(self) -> dict[str, np.ndarray]:
        """Every tensor by its fqn: the state dict and the constants."""
        return {**self.state_dict, **self.constants}


@dataclasses.dataclass(frozen=True)
class Pt2Archive:
    """What a ``.pt2`` file holds.

    Attributes:
      path: the file.
      layout: ``"pt2-archive"`` (torch >= 2.8) or ``"legacy"`` (torch 2.1-2.7).
      programs: {name: program}.
      extra_files: {name: text} (``torch.export.save(..., extra_files=...)``).
    """
    path: str
    layout: str
    programs: dict[str, Pt2Program]
    extra_files: dict[str, str]

    @property
    def program(self) -> Pt2Program:
        """The archive's one program (``torch.export.save`` writes one, named ``model``)."""
        if len(self.programs) != 1:
            raise FileFormatError(f"{self.path} holds {len(self.programs)} programs ({', '.join(self.programs)}); "
                                  "pick one from .programs")
        return next(iter(self.programs.values()))


# -- content checks --------------------------------------------------------------------------------------------
def pickle_protocol(data: bytes) -> int | None:
    """The protocol (0-5) of ``data`` if its bytes are one whole pickle, else None; nothing is executed.

    A pickle is a stream of opcodes ending in STOP; ``pickletools.genops`` only parses them. Protocol 2+
    streams start with PROTO; 0 and 1 are told apart by their opcodes.
    """
    if len(data) < 2 or data[-1:] != b".":  # every pickle ends with STOP ('.'); most data fails here
        return None
    protocol: Any = 0
    end: Any = -1
    try:
        for opcode, arg, position in pickletools.genops(data):
            protocol = arg if opcode.name == "PROTO" else max(protocol, opcode.proto)
            end = position
    except Exception:  # genops raises ValueError and friends on anything that is not a pickle  # noqa: BLE001
        return None
    return int(protocol) if end == len(data) - 1 else None


def _refuse_pickle(path: Path, name: str, data: bytes) -> None:
    protocol = pickle_protocol(data)
    if protocol is not None:
        raise FileFormatError(f"{path}: refused to load: member {name} is a pickle (protocol {protocol}), which runs "
                              "code when loaded; funcdl reads only JSON and raw tensor records from a .pt2")


class _Members:
    """The archive's members, each read at most once, every one checked for pickles by content."""

    def __init__(self, path: Path, archive: zipfile.ZipFile, limit: int):
        self.path, self.archive, self.limit = path, archive, limit
        self.names = archive.namelist()
        self.unread = {n for n in self.names if not n.endswith("/")}
        self.allocated = 0

    def read(self, name: str) -> bytes:
        try:
            data = self.archive.read(name)
        except KeyError:
            raise FileFormatError(f"{self.path}: member {name} is missing") from None
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as err:
            raise FileFormatError(f"{self.path}: damaged member {name}: {err}") from None
        self.unread.discard(name)
        _refuse_pickle(self.path, name, data)
        return data

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(f"{self.path}: member {name} is not UTF-8 text") from None

    def json(self, name: str) -> dict:
        try:
            value = json.loads(self.text(name))
        except json.JSONDecodeError as err:
            raise FileFormatError(f"{self.path}: member {name} is not valid JSON: {str(err)[:80]}") from None
        except RecursionError:
            raise FileFormatError(f"{self.path}: member {name} is not valid JSON: nested too deeply") from None
        return _object(value, f"{self.path}: {name}")

    def torch_zip(self, name: str, tensors: bool = True) -> Any:
        data = self.read(name)
        return read_torch_zip(data, f"{self.path}: {name}", self.limit, tensors)

    def allocate(self, nbytes: int) -> None:
        self.allocated += nbytes
        check_size(f"{self.path}: its tensors", self.allocated, self.limit)

    def check_rest(self) -> None:
        """Read every member not read yet, refusing pickles and torch.save archives among them."""
        for name in sorted(self.unread):
            data = self.read(name)
            if data[:4] == b"PK\x03\x04":
                read_torch_zip(data, f"{self.path}: {name}", self.limit, tensors=False)


def _object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise FileFormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise FileFormatError(f"{what}: expected a JSON list, got {type(value).__name__}")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise FileFormatError(f"{what}: expected a string, got {type(value).__name__}")
    return value


# -- member names ----------------------------------------------------------------------------------------------
def _check_names(path: Path, archive: zipfile.ZipFile) -> list[str]:
    """The member names, refused if any lies outside the root, repeats, or holds compiled code."""
    names = [info.filename for info in archive.infolist()]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})[0]
        raise FileFormatError(f"{path}: refused to load: member {repeated} appears more than once")
    for name in names:
        parts = name.rstrip("/").split("/")
        if (name.startswith("/") or "\\" in name or "\x00" in name or ":" in parts[0]
                or any(part in ("", ".", "..") for part in parts)):
            raise FileFormatError(f"{path}: refused to load: member name {name[:80]!r} points outside the archive")
        if "aotinductor" in parts or name.lower().endswith(CODE_SUFFIXES):
            raise FileFormatError(f"{path}: refused to load: it holds compiled code (AOTInductor: {name[:80]}); "
                                  "funcdl reads exported programs, not compiled ones")
        if parts[-1].startswith(_OBJECT_PREFIXES):
            raise FileFormatError(f"{path}: refused to load: member {name} is a pickled custom/opaque object "
                                  "constant (code would run when loaded)")
    return names


def _open(path: Path, limit: int) -> zipfile.ZipFile:
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist or is not a file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise FileFormatError(f"{path} is not a torch.export .pt2 archive (not a zip file: {err})") from None
    try:
        check_size(str(path), sum(info.file_size for info in archive.infolist()), limit)
        _check_names(path, archive)
    except FileFormatError:
        archive.close()
        raise
    return archive


# -- tensors ---------------------------------------------------------------------------------------------------
def _int(value: Any, what: str) -> int:
    """An int from a serialised SymInt (``{"as_int": 3}``) or a plain int; symbolic sizes are refused."""
    if isinstance(value, dict) and set(value) == {"as_int"}:
        value = value["as_int"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FileFormatError(f"{what}: expected a concrete integer size, got {str(value)[:60]}")
    return value


def tensor_dtype(code: Any, what: str) -> np.dtype:
    """The numpy dtype of a serialised ScalarType (its number, or its name in older schemas)."""
    number = DTYPE_NAMES.get(code) if isinstance(code, str) else code
    if isinstance(number, bool) or number not in DTYPES:
        raise FileFormatError(f"{what}: dtype {str(code)[:30]} is not one funcdl reads "
                              f"({', '.join(DTYPE_NAMES).lower()})")
    return numpy_dtype(DTYPES[number])


@dataclasses.dataclass(frozen=True)
class _Meta:
    """One stored tensor: its record, dtype and view."""
    record: str
    dtype: np.dtype
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.sizes:
            count *= size
        return count * self.dtype.itemsize


def _payload_meta(fqn: str, meta: Any, what: str, prefix: str) -> _Meta:
    """Check one config entry (``PayloadMeta``) and return its tensor view."""
    where = f"{what}: entry {fqn[:80]!r}"
    meta = _object(meta, where)
    record = _string(meta.get("path_name"), f"{where} path_name")
    if record.startswith(_OBJECT_PREFIXES) or meta.get("tensor_meta") is None:
        raise FileFormatError(f"{where.split(': ', 1)[0]}: refused to load: {fqn[:80]!r} is a custom/opaque object "
                              "constant (a pickled Python or TorchScript object; code would run when loaded)")
    if meta.get("use_pickle") is not False:
        raise FileFormatError(f"{where.split(': ', 1)[0]}: refused to load: {fqn[:80]!r} is stored as a pickle "
                              f"(use_pickle: {meta.get('use_pickle')}); funcdl reads raw tensor records only")
    if not (_RECORD_NAME.match(record) and record.startswith(prefix)):
        raise FileFormatError(f"{where}: record name {record[:80]!r} is not a {prefix}<n> record")
    tensor = _object(meta["tensor_meta"], f"{where} tensor_meta")
    if tensor.get("layout", 7) not in STRIDED:
        raise FileFormatError(f"{where}: layout {tensor.get('layout')} is not strided (sparse tensors are not read)")
    sizes = tuple(_int(v, f"{where} sizes") for v in _list(tensor.get("sizes"), f"{where} sizes"))
    strides = tuple(_int(v, f"{where} strides") for v in _list(tensor.get("strides"), f"{where} strides"))
    offset = _int(tensor.get("storage_offset", 0), f"{where} storage_offset")
    return _Meta(record, tensor_dtype(tensor.get("dtype"), where), sizes, strides, offset)


def _read_config(members: _Members, folder: str, config_name: str, prefix: str, big: bool) -> dict:
    """{fqn: array} of one weights/constants config and the raw records it names."""
    what = f"{members.path}: {config_name}"
    config = _object(members.json(config_name).get("config"), f"{what} config")
    metas = {fqn: _payload_meta(fqn, meta, what, prefix) for fqn, meta in config.items()}
    members.allocate(sum(meta.nbytes for meta in metas.values()))  # before any record is read
    tensors: dict[str, np.ndarray] = {}
    for record in sorted({meta.record for meta in metas.values()}):
        raw = members.read(f"{folder}{record}")
        if raw[:4] == b"PK\x03\x04":
            raise FileFormatError(f"{members.path}: refused to load: record {folder}{record} is a zip archive "
                                  "(a torch.save pickle), not raw tensor bytes as its config says")
        for fqn, meta in metas.items():
            if meta.record == record:
                tensors[fqn] = _view(raw, meta, f"{what}: {fqn[:80]!r}", big)
    return tensors


def _view(raw: bytes, meta: _Meta, what: str, big: bool) -> np.ndarray:
    if len(raw) % meta.dtype.itemsize:
        raise FileFormatError(f"{what}: record {meta.record} holds {len(raw)} bytes, not a whole number of "
                              f"{meta.dtype} elements")
    if not raw and meta.nbytes:
        raise FileFormatError(f"{what}: record {meta.record} is empty but the tensor has shape {meta.sizes}")
    return strided(from_bytes(raw, meta.dtype, big), meta.sizes, meta.strides, meta.offset, what)


def _tensor_dict(value: Any, what: str) -> dict[str, np.ndarray]:
    """A {name: array} read from a torch.save zip, refused if it holds anything else."""
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, np.ndarray)
                                              for k, v in value.items()):
        raise FileFormatError(f"{what}: expected a dict of tensors, got {type(value).__name__}")
    return dict(value)


# -- the program -----------------------------------------------------------------------------------------------
_SPEC_TARGETS = ("parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "user_input_name")


def _spec(raw: Any, what: str) -> Pt2Spec:
    """One signature entry: a JSON object with one key, its kind."""
    raw = _object(raw, what)
    if len(raw) != 1:
        raise FileFormatError(f"{what}: expected one kind per signature entry, got {sorted(raw)[:4]}")
    kind, body = next(iter(raw.items()))
    body = _object(body, f"{what} {kind}")
    if kind == "custom_obj":
        raise FileFormatError(f"{what.split(': ', 1)[0]}: refused to load: the program takes a custom object "
                              "(a TorchScript/opaque object that only unpickling can build)")
    arg: dict[str, Any] = body["arg"] if isinstance(body.get("arg"), dict) else {}
    name = arg.get("name", (arg.get("as_tensor") or {}).get("name") if isinstance(arg.get("as_tensor"), dict)
                   else None)
    target = next((body[k] for k in _SPEC_TARGETS if isinstance(body.get(k), str)), None)
    persistent = body.get("persistent") if isinstance(body.get("persistent"), bool) else None
    return Pt2Spec(kind, name if isinstance(name, str) else None, target, persistent, raw)


def _node(raw: Any, what: str) -> Pt2Node:
    raw = _object(raw, what)
    target = _string(raw.get("target"), f"{what} target")
    inputs = tuple(_object(v, f"{what} input") for v in _list(raw.get("inputs"), f"{what} inputs"))
    outputs = tuple(_object(v, f"{what} output") for v in _list(raw.get("outputs"), f"{what} outputs"))
    metadata = _object(raw.get("metadata", {}), f"{what} metadata")
    metadata = {str(k): v for k, v in metadata.items() if isinstance(v, str)}
    first = (outputs[0].get("as_tensor") or {}) if outputs and isinstance(outputs[0].get("as_tensor"), dict) else {}
    name = raw.get("name") if isinstance(raw.get("name"), str) else first.get("name", target)
    return Pt2Node(str(name), target, inputs, outputs, metadata)


def _graph(module: dict, what: str) -> Pt2Graph:
    graph = _object(module.get("graph"), f"{what} graph")
    signature = _object(module.get("signature"), f"{what} signature")
    if graph.get("custom_obj_values"):
        raise FileFormatError(f"{what.split(': ', 1)[0]}: refused to load: the graph holds custom objects "
                              "(TorchScript/opaque objects that only unpickling can build)")
    nodes = tuple(_node(n, f"{what} node {i}") for i, n in enumerate(_list(graph.get("nodes"), f"{what} nodes")))
    inputs = tuple(_object(v, f"{what} input") for v in _list(graph.get("inputs"), f"{what} inputs"))
    names = tuple(str((v.get("as_tensor") or {}).get("name", "")) if isinstance(v.get("as_tensor"), dict) else ""
                  for v in inputs)
    specs = [_list(signature.get(k), f"{what} {k}") for k in ("input_specs", "output_specs")]
    tensor_values = _object(graph.get("tensor_values", {}), f"{what} tensor_values")
    return Pt2Graph(nodes, names, tuple(_object(v, f"{what} output") for v in
                                        _list(graph.get("outputs"), f"{what} outputs")),
                    tuple(_spec(s, f"{what} input spec") for s in specs[0]),
                    tuple(_spec(s, f"{what} output spec") for s in specs[1]),
                    {str(k): v for k, v in tensor_values.items() if isinstance(v, dict)})


def _program(name: str, program: dict, state_dict: dict, constants: dict, what: str) -> Pt2Program:
    """A ``Pt2Program``, checked that every parameter, buffer and constant of its signature has its tensor."""
    graph = _graph(_object(program.get("graph_module"), f"{what} graph_module"), what)
    for spec in graph.input_specs:
        if spec.kind in ("parameter", "buffer", "tensor_constant") and spec.target not in state_dict \
                and spec.target not in constants:
            raise FileFormatError(f"{what}: the graph's {spec.kind} {str(spec.target)[:80]!r} has no stored tensor")
    version = program.get("schema_version")
    major, minor = (version.get("major"), version.get("minor")) if isinstance(version, dict) else (0, 0)
    torch_version = program.get("torch_version")
    return Pt2Program(name, graph, state_dict, constants, (int(major or 0), int(minor or 0)),
                      torch_version if isinstance(torch_version, str) else None,
                      _dict_or_empty(program.get("range_constraints")),
                      program)


# -- layouts ---------------------------------------------------------------------------------------------------
def _read_archive_layout(members: _Members, root: str) -> Pt2Archive:
    """The ``pt2-archive`` layout (torch >= 2.8)."""
    path = members.path
    if members.text(f"{root}archive_format").strip() != "pt2":
        raise FileFormatError(f"{path}: archive_format is not 'pt2'")
    version = members.text(f"{root}archive_version").strip() if f"{root}archive_version" in members.names else "0"
    if version != "0":
        raise FileFormatError(f"{path}: pt2 archive version {version[:20]!r}; funcdl reads version 0 (torch 2.8-2.13)")
    order = members.text(f"{root}byteorder").strip() if f"{root}byteorder" in members.names else "little"
    if order not in ("little", "big"):
        raise FileFormatError(f"{path}: unknown byte order {order[:20]!r}")
    models = sorted(n[len(f"{root}models/"):-len(".json")] for n in members.names
                    if n.startswith(f"{root}models/") and n.endswith(".json") and n.count("/") == root.count("/") + 1)
    if not models:
        raise FileFormatError(f"{path}: the archive holds no exported program (models/*.json)")
    programs = {name: _archive_program(members, root, name, order == "big") for name in models}
    extra = {n[len(f"{root}extra/"):]: members.text(n) for n in members.names
             if n.startswith(f"{root}extra/") and not n.endswith("/")}
    members.check_rest()
    return Pt2Archive(str(path), "pt2-archive", programs, extra)


def _archive_program(members: _Members, root: str, name: str, big: bool) -> Pt2Program:
    """One program of the ``pt2-archive`` layout, with its weights and constants."""
    tables = []
    for folder, prefix in (("weights", "weight_"), ("constants", "tensor_")):
        legacy = f"{root}data/{folder}/{name}.pt"  # torch 2.6-2.7 package_pt2: a torch.save zip
        config = f"{root}data/{folder}/{name}_{folder}_config.json"
        if legacy in members.names:
            tables.append(_tensor_dict(members.torch_zip(legacy), f"{members.path}: {legacy}"))
        elif config in members.names:
            tables.append(_read_config(members, f"{root}data/{folder}/", config, prefix, big))
        else:
            raise FileFormatError(f"{members.path}: program {name!r} has no {folder} config ({config})")
    sample = f"{root}data/sample_inputs/{name}.pt"
    if sample in members.names:
        members.torch_zip(sample, tensors=False)  # checked for pickled objects, never needed
    program = members.json(f"{root}models/{name}.json")
    return _program(name, program, tables[0], tables[1], f"{members.path}: models/{name}.json")


def _dict_or_empty(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _read_legacy_layout(members: _Members) -> Pt2Archive:
    """The flat layout ``torch.export.save`` wrote in torch 2.1-2.7."""
    path = members.path
    tables: list[Any] = []
    for stem in ("serialized_state_dict", "serialized_constants"):
        name = next((f"{stem}{s}" for s in (".pt", ".json") if f"{stem}{s}" in members.names), None)
        if name is None:
            tables.append({})
            continue
        tables.append(_tensor_dict(members.torch_zip(name), f"{path}: {name}"))
    if "serialized_example_inputs.pt" in members.names:
        members.torch_zip("serialized_example_inputs.pt", tensors=False)
    program = members.json(_LEGACY_PROGRAM)
    extra = {n[len("extra_files/"):]: members.text(n) for n in members.names
             if n.startswith("extra_files/") and not n.endswith("/")}
    members.check_rest()
    return Pt2Archive(str(path), "legacy", {"model": _program("model", program, tables[0], tables[1],
                                                               f"{path}: {_LEGACY_PROGRAM}")}, extra)


def read(path: str | Path, max_bytes_override: int | None = None) -> Pt2Archive:
    """Read a ``.pt2`` file without torch and without unpickling anything.

    Args:
      path: the archive.
      max_bytes_override: the most bytes its members (and, separately, its tensors) may unpack to; default
        ``funcdl.io.max_bytes()`` (``$FUNCDL_MAX_BYTES`` or 2 GiB).
    Returns:
      a ``Pt2Archive``: programs with their graphs and tensors ({fqn: numpy array}), and the extra files.
    Raises:
      FileFormatError (one line) for hostile, damaged or oversized archives (see the module docstring).
    """
    path = Path(path)
    limit = max_bytes(max_bytes_override)
    with _open(path, limit) as archive:
        members = _Members(path, archive, limit)
        if _LEGACY_PROGRAM in members.names:
            return _read_legacy_layout(members)
        roots = {n.split("/", 1)[0] for n in members.names}
        root = f"{next(iter(roots))}/" if len(roots) == 1 else None
        if root is None or f"{root}archive_format" not in members.names:
            raise FileFormatError(f"{path} is not a torch.export .pt2 archive (it has neither archive_format nor "
                                  f"{_LEGACY_PROGRAM})")
        return _read_archive_layout(members, root)
