"""Property tests: any bytes either load or raise funcdl's own error (never a crash or a foreign error)."""
import gzip
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import funcdl as fd
from funcdl.errors import ConfigError, DataError, FileFormatError, FuncdlError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def _idx(magic_type, dims, payload):
    header = b"\x00\x00" + bytes([magic_type, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + payload


@SETTINGS
@given(st.binary(max_size=300))
def test_idx_reader_random_bytes(tmp_path, payload):
    for name, data in (("raw.idx", payload), ("packed.gz", gzip.compress(payload))):
        try:
            array = fd.data.read_idx(_write(tmp_path, name, data))
        except DataError:
            continue
        assert isinstance(array, np.ndarray)


@SETTINGS
@given(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]),
       st.lists(st.integers(0, 6), min_size=0, max_size=4), st.integers(-3, 3))
def test_idx_reader_near_valid_headers(tmp_path, dtype_code, dims, size_error):
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(dtype_code, 1)
    count = int(np.prod(dims)) if dims else 0
    payload = bytes(max(count * itemsize + size_error, 0))
    try:
        array = fd.data.read_idx(_write(tmp_path, "x.idx", _idx(dtype_code, dims, payload)))
    except DataError:
        return
    assert array.shape == tuple(dims) and len(payload) == count * itemsize


def _valid_model_file(tmp_path):
    model = fd.nn.Sequential([fd.nn.Dense(3), fd.nn.relu, fd.nn.Dense(2)])
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    path = tmp_path / "valid.funcdl"
    fd.save_model(path, model, variables, input_shape=(4,))
    return path.read_bytes()


@SETTINGS
@given(st.binary(max_size=400))
def test_model_reader_random_bytes(tmp_path, payload):
    with pytest.raises(FileFormatError):
        fd.load_model(_write(tmp_path, "random.funcdl", payload))


@SETTINGS
@given(st.data())
def test_model_reader_mutated_files(tmp_path, data):
    valid = bytearray(_valid_model_file(tmp_path))
    kind = data.draw(st.sampled_from(["flip", "truncate", "header_length"]))
    if kind == "flip":
        for position in data.draw(st.lists(st.integers(0, len(valid) - 1), min_size=1, max_size=8)):
            valid[position] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        valid = valid[:data.draw(st.integers(0, len(valid) - 1))]
    else:
        valid[:8] = struct.pack("<Q", data.draw(st.integers(0, 2 ** 64 - 1)))
    try:
        model, variables, _ = fd.load_model(_write(tmp_path, "mutated.funcdl", bytes(valid)))
    except FileFormatError:
        return
    assert isinstance(model, fd.nn.Layer) and isinstance(variables, dict)


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=8)
    names = st.sampled_from(sorted(fd.nn.REGISTRY) + ["Nope", ""])
    keys = st.sampled_from(["features", "kernel_size", "layers", "rate", "padding", "strides", "shape", "x",
                            "activation", "return_sequences", "axis", "groups"])
    return st.recursive(scalars, lambda children: st.lists(children, max_size=4) | st.builds(
        lambda name, fields: {"type": name, **fields}, names, st.dictionaries(keys, children, max_size=3)),
        max_leaves=12)


@SETTINGS
@given(_json_values())
def test_architecture_parser(config):
    try:
        layer = fd.nn.from_config(config)
    except ConfigError:
        return
    assert isinstance(layer, fd.nn.Layer)
    json.dumps(fd.nn.to_config(layer))  # whatever parsed serialises back


@pytest.mark.parametrize("case", ["truncated", "offsets_past_end", "huge_header", "wrong_dtype", "not_json"])
def test_malformed_safetensors_cases(tmp_path, case):
    valid = _valid_model_file(tmp_path)
    (length,) = struct.unpack("<Q", valid[:8])
    header = json.loads(valid[8:8 + length])
    if case == "truncated":
        payload = valid[: len(valid) - 7]
    elif case == "huge_header":
        payload = struct.pack("<Q", 2 ** 62) + valid[8:]
    elif case == "not_json":
        payload = valid[:8] + b"{" * length + valid[8 + length:]
    else:
        name = next(k for k in header if k != "__metadata__")
        if case == "offsets_past_end":
            header[name]["data_offsets"] = [0, 10 ** 9]
        else:
            header[name]["dtype"] = "Q7"
        text = json.dumps(header).encode()
        payload = struct.pack("<Q", len(text)) + text + valid[8 + length:]
    with pytest.raises(FileFormatError, match="not a valid safetensors file|does not match|architecture"):
        fd.load_model(_write(tmp_path, f"{case}.funcdl", payload))


def test_errors_are_funcdl_errors():
    for error in (ConfigError, DataError, FileFormatError):
        assert issubclass(error, FuncdlError)
