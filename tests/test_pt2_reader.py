"""funcdl's own .pt2 reader: real torch.export archives read bit-exactly, hostile ones refused, bombs capped.

Every hostile archive is a funcdl-written .pt2 (which converts cleanly: the control) changed in one way; each is
refused with one line through the API and exit 2 through ``funcdl inspect`` / ``funcdl convert``, and the payload,
proven live by unpickling it here, never creates its marker file.
"""
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest
from hostile_files import (
    Payload,
    deflated_zeros,
    gzip_idx_bomb,
    payload_pickle,
    prove_live,
    rewrite,
    torch_save_bytes,
    weight_config,
    zip_bomb_like,
)

from funcdl import nn
from funcdl.cli import main
from funcdl.errors import DataError, FileFormatError
from interop import pytorch
from interop.pytorch import _pt2

torch = pytest.importorskip("torch")

INPUT_SHAPE = (4, 4, 1)


# -- real archives ---------------------------------------------------------------------------------------------
class Net(torch.nn.Module):
    """Parameters, BatchNorm buffers, a tensor constant, a non-persistent and a transposed buffer, tied weights."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.bn = torch.nn.BatchNorm2d(2)
        self.fc = torch.nn.Linear(8, 8)
        self.tied = torch.nn.Linear(8, 8, bias=False)
        self.tied.weight = self.fc.weight
        self.register_buffer("scale", torch.arange(8.0, dtype=torch.float64), persistent=False)
        self.register_buffer("table", torch.randn(8, 3).t())  # strides (1, 3): not contiguous
        self.register_buffer("counts", torch.tensor([1, 2, 3], dtype=torch.int32))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("float16", torch.randn(3).half())
        self.register_buffer("bf16", torch.randn(3).bfloat16())
        self.offset = torch.tensor([0.5, -1.5, 2.0])  # a tensor constant

    def forward(self, x):
        y = torch.flatten(self.bn(self.conv(x)), 1)
        y = self.tied(self.fc(y)) * self.scale.float()
        z = y[:, :3] @ self.table.t()[:3] + self.offset + self.counts + self.mask + self.float16 + self.bf16
        return z


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(path, ExportedProgram) of ``Net`` saved by torch.export with a dynamic batch axis."""
    torch.manual_seed(0)
    module = Net().eval()
    module.bn.running_mean.normal_()
    module.bn.running_var.uniform_(0.5, 2.0)
    program = torch.export.export(module, (torch.randn(2, 1, 4, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path_factory.mktemp("real") / "net.pt2"
    torch.export.save(program, str(path), extra_files={"notes.txt": "hello"})
    return path, program


def _bits(tensor):
    """The tensor's bytes as numpy, so that comparisons are bit-exact (bfloat16 and NaNs included)."""
    tensor = tensor.detach().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.int16)
    return tensor.numpy()


def _assert_bit_exact(arrays, tensors):
    assert set(arrays) == set(tensors)
    for key, tensor in tensors.items():
        array = arrays[key]
        assert array.shape == tuple(tensor.shape) and array.flags.c_contiguous, key
        expected = _bits(tensor)
        got = array.view(np.int16) if array.dtype.name == "bfloat16" else array
        assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes(), key


def test_reads_every_tensor_of_a_real_archive_bit_exactly(exported):
    path, program = exported
    archive = pytorch.read_pt2(path)
    assert archive.layout == "pt2-archive" and archive.extra_files == {"notes.txt": "hello"}
    read = archive.program
    _assert_bit_exact(read.state_dict, program.state_dict)
    _assert_bit_exact(read.constants, program.constants)
    assert read.state_dict["fc.weight"].tobytes() == read.state_dict["tied.weight"].tobytes()
    assert read.torch_version == torch.__version__ and read.schema_version[0] >= 8


def test_graph_signature_and_source_lines(exported):
    path, program = exported
    graph = pytorch.read_pt2(path).program.graph
    kinds = {spec.target: spec.kind for spec in graph.input_specs if spec.target}
    assert kinds["conv.weight"] == "parameter" and kinds["bn.running_mean"] == "buffer"
    assert kinds["offset"] == "tensor_constant" and kinds["scale"] == "buffer"
    assert [spec.name for spec in graph.input_specs] == list(graph.inputs)
    assert [str(node.target) for node in program.graph.nodes if node.op == "call_function"] == [
        node.target.replace("torch.ops.", "", 1) for node in graph.nodes]
    conv = next(node for node in graph.nodes if "conv2d" in node.target)
    assert conv.inputs[1]["arg"] == {"as_tensor": {"name": "p_conv_weight"}}
    assert "test_pt2_reader.py" in conv.source and "self.conv(x)" in conv.source
    batch = graph.tensor_values["x"]["sizes"][0]
    assert "as_expr" in batch  # the dynamic batch axis stays symbolic in the graph


def test_reads_the_legacy_layout_of_torch_2_2_to_2_7(exported, tmp_path):
    """torch <= 2.7 wrote the program beside torch.save zips; torch's own serializer still writes those bytes."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize
    _, program = exported
    artifact = serialize(program)
    path = tmp_path / "legacy.pt2"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("serialized_exported_program.json", artifact.exported_program)
        archive.writestr("serialized_state_dict.pt", artifact.state_dict)
        archive.writestr("serialized_constants.pt", artifact.constants)
        archive.writestr("serialized_example_inputs.pt", artifact.example_inputs)
        archive.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        archive.writestr("extra_files/funcdl.json", "{}")
    torch.export.load(str(path))  # the layout is real: torch still loads it
    read = _pt2.read(path)
    assert read.layout == "legacy" and read.extra_files == {"funcdl.json": "{}"}
    _assert_bit_exact(read.program.state_dict, program.state_dict)
    _assert_bit_exact(read.program.constants, program.constants)


def test_reads_weights_kept_in_a_torch_save_member(exported, tmp_path):
    """torch 2.6-2.7's package_pt2 kept the weights in data/weights/<model>.pt (a torch.save zip)."""
    path, program = exported
    with zipfile.ZipFile(path) as original:
        root = original.namelist()[0].split("/", 1)[0]
    legacy = tmp_path / "weights_pt.pt2"
    with zipfile.ZipFile(path) as original, zipfile.ZipFile(legacy, "w") as copy:
        for name in original.namelist():
            if "/data/weights/" not in name:
                copy.writestr(name, original.read(name))
        state = {k: v.detach().clone() for k, v in program.state_dict.items()}
        copy.writestr(f"{root}/data/weights/model.pt", torch_save_bytes(torch, state))
    _assert_bit_exact(_pt2.read(legacy).program.state_dict, program.state_dict)


def test_funcdl_round_trip_never_calls_torch_loaders(tmp_path, monkeypatch):
    model, variables, path = _funcdl_pt2(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a torch loader was called")
    monkeypatch.setattr(torch.export, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded_model, loaded, input_shape = pytorch.load_torch_model(path)
    assert nn.to_config(loaded_model) == nn.to_config(model) and input_shape == INPUT_SHAPE
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_reading_needs_no_torch(tmp_path):
    _, _, path = _funcdl_pt2(tmp_path)
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "from interop import pytorch\n"
            f"archive = pytorch.read_pt2({str(path)!r})\n"
            "print(sorted(archive.program.state_dict), 'torch' in sys.modules and sys.modules['torch'] is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 0, done.stderr
    assert "'1.weight'" in done.stdout and done.stdout.strip().endswith("False")


# -- hostile archives ------------------------------------------------------------------------------------------
def _funcdl_pt2(folder):
    model = nn.Sequential((nn.Flatten(), nn.Dense(6), nn.BatchNorm(), nn.Dense(3)))
    variables = model.init(jax.random.key(0), np.zeros((1,) + INPUT_SHAPE, np.float32))
    path = Path(folder) / "clean.pt2"
    if not path.exists():
        pytorch.save_torch_file(path, model, variables, INPUT_SHAPE)
    return model, variables, path


def _marker(folder):
    return Path(folder) / "payload-ran"


def _use_pickle(config, flag=True):
    config["config"][next(iter(config["config"]))]["use_pickle"] = flag
    return config


def _object_constant(prefix):
    def edit(config):
        config["config"]["evil"] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}
        return config
    return edit


def _huge_view(config):
    meta = config["config"][next(iter(config["config"]))]["tensor_meta"]
    meta["sizes"], meta["strides"] = [{"as_int": 1 << 31}, {"as_int": 1 << 31}], [{"as_int": 0}, {"as_int": 0}]
    return config


def _view_past_end(config):
    config["config"][next(iter(config["config"]))]["tensor_meta"]["storage_offset"] = {"as_int": 10 ** 6}
    return config


# name -> (builder(clean, target, marker) -> payload bytes or None, words of the one-line error)
HOSTILE = {
    "protocol 0 pickle in an extra member": (
        lambda c, t, m: _with(rewrite(c, t, add={"data/notes": payload_pickle(m, 0)}), payload_pickle(m, 0)),
        ("refused", "data/notes is a pickle (protocol 0)")),
    "protocol 1 pickle as an extra file": (
        lambda c, t, m: _with(rewrite(c, t, add={"extra/readme.txt": payload_pickle(m, 1)}), payload_pickle(m, 1)),
        ("refused", "pickle (protocol 1)")),
    "protocol 2 pickle as the sample inputs": (
        lambda c, t, m: _with(rewrite(c, t, replace={"sample_inputs/model.pt": payload_pickle(m, 2)}),
                              payload_pickle(m, 2)), ("refused", "sample_inputs/model.pt is a pickle (protocol 2)")),
    "protocol 5 pickle in a weight record flagged use_pickle false": (
        lambda c, t, m: _with(rewrite(c, t, replace={"data/weights/weight_0": payload_pickle(m, 5)}),
                              payload_pickle(m, 5)), ("refused", "weight_0 is a pickle (protocol 5)")),
    "torch.save pickle in a weight record flagged use_pickle false": (
        lambda c, t, m: _with(rewrite(c, t, replace={"data/weights/weight_0": _torch_payload(m)}), None),
        ("refused", "weight_0 is a zip archive", "not raw tensor bytes")),
    "torch.save pickle as the sample inputs": (
        lambda c, t, m: _with(rewrite(c, t, replace={"sample_inputs/model.pt": _torch_payload(m)}), None),
        ("refused to load", "names the Python object")),
    "weight marked use_pickle true": (
        lambda c, t, m: _with(rewrite(c, t, replace={"data/weights/weight_0": _torch_payload(m)},
                                      edit_json=weight_config(_use_pickle)), None),
        ("refused", "stored as a pickle (use_pickle: True)")),
    "opaque object constant": (
        lambda c, t, m: _with(rewrite(c, t, add={"data/constants/opaque_obj_0": payload_pickle(m, 2)},
                                      edit_json={"_constants_config.json": _object_constant("opaque_obj_")}),
                              payload_pickle(m, 2)), ("refused", "opaque_obj_0", "custom/opaque object")),
    "custom (TorchScript) object constant": (
        lambda c, t, m: _with(rewrite(c, t, add={"data/constants/custom_obj_0": payload_pickle(m, 4)},
                                      edit_json={"_constants_config.json": _object_constant("custom_obj_")}),
                              payload_pickle(m, 4)), ("refused", "custom_obj_0")),
    "object constant under a tensor name": (
        lambda c, t, m: _with(rewrite(c, t, edit_json={"_constants_config.json": _object_constant("tensor_9")}), None),
        ("refused", "'evil' is a custom/opaque object")),
    "path traversal member": (
        lambda c, t, m: _with(rewrite(c, t, extra_names=[("../../payload.py", b"print('hi')")]), None),
        ("refused", "'../../payload.py' points outside the archive")),
    "absolute member path": (
        lambda c, t, m: _with(rewrite(c, t, extra_names=[("/tmp/payload", b"x")]), None),
        ("refused", "points outside the archive")),
    "duplicate member": (
        lambda c, t, m: _with(_duplicate(c, t), None), ("refused", "appears more than once")),
    "AOTInductor compiled code": (
        lambda c, t, m: _with(rewrite(c, t, add={"data/aotinductor/model/model.so": b"\x7fELF"}), None),
        ("refused", "compiled code")),
    "tensor meta declaring 2**62 elements": (
        lambda c, t, m: _with(rewrite(c, t, edit_json=weight_config(_huge_view)), None),
        ("over the limit", "FUNCDL_MAX_BYTES")),
    "view past the end of its record": (
        lambda c, t, m: _with(rewrite(c, t, edit_json=weight_config(_view_past_end)), None),
        ("reads past its storage",)),
    "program JSON that is a list": (
        lambda c, t, m: _with(rewrite(c, t, replace={"models/model.json": b"[]"}), None),
        ("expected a JSON object, got list",)),
    "program JSON nested 100000 deep": (
        lambda c, t, m: _with(rewrite(c, t, replace={"models/model.json": b"[" * 100000}), None),
        ("is not valid JSON: nested too deeply",)),
}


def _with(path, payload):
    return path, payload


def _torch_payload(marker):
    data = torch_save_bytes(torch, {"weight": torch.zeros(2), "payload": Payload(marker)})
    return data


def _duplicate(clean, target):
    with zipfile.ZipFile(clean) as original:
        config = next(n for n in original.namelist() if n.endswith("_weights_config.json"))
    return rewrite(clean, target, extra_names=[(config, b'{"config": {}}')])


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    return _funcdl_pt2(tmp_path_factory.mktemp("clean"))[2]


def test_the_clean_archive_converts(clean, tmp_path, capsys):
    assert main(["inspect", str(clean)]) == 0
    assert main(["convert", str(clean), str(tmp_path / "out.funcdl")]) == 0


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_with_one_line(case, clean, tmp_path, capsys):
    build, words = HOSTILE[case]
    marker = _marker(tmp_path)
    path, payload = build(clean, tmp_path / "hostile.pt2", marker)
    if payload is not None:
        prove_live(payload, marker)
    with pytest.raises(FileFormatError) as info:
        pytorch.read_pt2(path)
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    for argv in (["inspect", str(path)], ["convert", str(path), str(tmp_path / "out.funcdl")]):
        capsys.readouterr()
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words[0] in lines[0], lines
    assert not marker.exists() and not (tmp_path / "out.funcdl").exists()


def test_torch_payloads_are_live(tmp_path):
    """The torch.save payloads above run when torch loads them unsafely (as torch.export.load would)."""
    import io
    marker = _marker(tmp_path)
    torch.load(io.BytesIO(_torch_payload(marker)), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_pickles_of_every_protocol_are_found_by_content(protocol, tmp_path):
    data = payload_pickle(_marker(tmp_path), protocol)
    assert _pt2.pickle_protocol(data) == protocol
    assert _pt2.pickle_protocol(np.arange(64, dtype=np.float32).tobytes()) is None
    assert _pt2.pickle_protocol(data[:-1]) is None and _pt2.pickle_protocol(data + b"x") is None


# -- resource limits --------------------------------------------------------------------------------------------
_HIGH_WATER = ("def high_water():\n"  # VmHWM: this process's peak RSS (ru_maxrss would count the forking parent)\n"
               "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
               "    return int(line.split()[1]) / 1024\n")


def _peak_rss(argv, env=None):
    """(exit code, stderr, peak RSS MB, RSS MB after imports) of ``funcdl ARGV`` in a fresh process."""
    code = (_HIGH_WATER + "import json, sys\n"
            "from funcdl.cli import main\n"
            "import interop.pytorch, interop.keras\n"
            "base = high_water()\n"
            "code = main(sys.argv[1:])\n"
            "print(json.dumps([code, high_water(), base]))")
    done = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result[0], done.stderr, result[1], result[2]


def _assert_capped(argv, words, env=None, extra_mb=100):
    code, stderr, peak, base = _peak_rss(argv, env)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(w in lines[0] for w in words), stderr
    assert peak - base < extra_mb and peak < 300, (peak, base)  # the bomb was never unpacked
    print(f"peak RSS {peak:.0f} MB (after imports {base:.0f} MB): {lines[0][:100]}")


def test_pt2_zip_bomb_is_refused_before_unpacking(clean, tmp_path):
    """A ~2.5 MB archive whose first weight inflates to 2.5 GB: over the default 2 GiB limit."""
    bomb = zip_bomb_like(clean, tmp_path / "bomb.pt2", "data/weights/weight_0", 5 << 29)
    assert bomb.stat().st_size < 8 << 20
    _assert_capped(["inspect", bomb], ("would unpack to 2,684,", "over the limit of 2,147,483,648"))


def test_pt2_bomb_under_a_lower_limit(clean, tmp_path):
    bomb = zip_bomb_like(clean, tmp_path / "bomb.pt2", "extra/funcdl.json", 300 << 20)
    # refused at the metadata member's own cap (1 MiB, under the 64 MiB limit) before anything is inflated
    _assert_capped(["convert", bomb, tmp_path / "out.funcdl"], ("funcdl.json would unpack to 314,572,800 bytes",
                                                                "over the limit of 1,048,576"),
                   {"FUNCDL_MAX_BYTES": str(64 << 20)})
    assert not (tmp_path / "out.funcdl").exists()


def test_pt_zip_bomb_is_refused_before_torch_loads_it(tmp_path):
    path = tmp_path / "bomb.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    zip_bomb_like(path, tmp_path / "bomb2.pt", "/data/0", 300 << 20).replace(path)
    _assert_capped(["convert", path, tmp_path / "out.funcdl", "--arch", "mlp"], ("over the limit",),
                   {"FUNCDL_MAX_BYTES": str(64 << 20)})


def test_keras_zip_bomb_is_refused_before_keras_reads_it(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
        archive.writestr("metadata.json", "{}")
        deflated_zeros(archive, "model.weights.h5", 300 << 20)
    _assert_capped(["inspect", path], ("bomb.keras would unpack to", "over the limit"),
                   {"FUNCDL_MAX_BYTES": str(64 << 20)})


def test_hdf5_dataset_declaring_terabytes_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "huge.weights.h5"
    with h5py.File(path, "w") as handle:  # chunks never written: the file stays tiny
        handle.create_dataset("layers/dense/vars/0", shape=(10 ** 6, 10 ** 6), dtype="f4", chunks=(100, 100),
                              compression="gzip")
    assert path.stat().st_size < 1 << 20
    _assert_capped(["convert", path, tmp_path / "out.funcdl", "--arch", "mlp"],
                   ("its datasets would unpack to 4,000,000,000,000 bytes", "over the limit"))


def test_gzip_idx_bomb_stops_at_the_declared_size(tmp_path):
    """The issue's case: 1 MB of gzip that inflates to a GB behind a header declaring 10 images."""
    bomb = gzip_idx_bomb(tmp_path / "train-images-idx3-ubyte.gz", (10, 28, 28), 1 << 30)
    code = (_HIGH_WATER + "import json\nfrom funcdl import data\nfrom funcdl.errors import DataError\n"
            "base = high_water()\n"
            f"try:\n    data.read_idx({str(bomb)!r})\nexcept DataError as err:\n    message = str(err)\n"
            "print(json.dumps([message, high_water(), base]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    message, peak, base = json.loads(done.stdout.strip().splitlines()[-1])
    assert "payload has extra bytes" in message and peak - base < 50 and peak < 300, (message, peak, base)
    print(f"gzip IDX bomb: peak RSS {peak:.0f} MB (after imports {base:.0f} MB)")


def test_idx_header_with_huge_dims_does_not_overflow(tmp_path):
    from funcdl import data
    path = gzip_idx_bomb(tmp_path / "huge.gz", (2 ** 32 - 1,) * 4, 0, code=0x0E)
    with pytest.raises(DataError, match=r"would unpack to 2,\d{3},.* bytes, over the limit") as info:
        data.read_idx(path)
    assert "\n" not in str(info.value)  # (2**32-1)**4 * 8 bytes: no int64 wrap-around to a small number
    honest = gzip_idx_bomb(tmp_path / "honest.gz", (1000, 1000), 10 ** 6)
    assert data.read_idx(honest).shape == (1000, 1000)
    with pytest.raises(DataError, match="over the limit of 1,000"):
        data.read_idx(honest, max_bytes=1000)


def test_limit_setting_is_checked(monkeypatch, clean):
    from funcdl.errors import ConfigError
    from funcdl.io import max_bytes
    monkeypatch.setenv("FUNCDL_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="FUNCDL_MAX_BYTES must be a positive number of bytes, got 'lots'"):
        max_bytes()
    monkeypatch.setenv("FUNCDL_MAX_BYTES", "1000")
    assert max_bytes() == 1000 and max_bytes(5) == 5
    with pytest.raises(FileFormatError, match="over the limit of 1,000"):
        pytorch.read_pt2(clean)
    assert pytorch.read_pt2(clean, max_bytes=10 ** 7).program.state_dict


def test_pickle_protocol_ignores_ordinary_bytes():
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert _pt2.pickle_protocol(rng.standard_normal(16).astype(np.float32).tobytes() + b".") is None
    assert _pt2.pickle_protocol(pickle.dumps([1, 2, 3], protocol=0)) == 0
