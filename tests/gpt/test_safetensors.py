"""Tests for gpt/safetensors.py: round trips, agreement with the reference package, corrupt files, atomic writes."""
import json
import os
import struct

import numpy as np
import pytest

from gpt import safetensors as st
from gpt.safetensors import SafetensorsError, load_file, load_metadata, read_header, save_file

DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "float16", "int32", "uint32", "float32",
          "complex64", "float64", "int64", "uint64"]


def sample_tensors():
    """One small array of every supported dtype, plus 0-d, empty and non-contiguous ones."""
    rng = np.random.default_rng(0)
    tensors = {f"t.{d}": (rng.standard_normal((2, 3)) * 50).astype(d) for d in DTYPES}
    tensors.update({"scalar": np.array(3.5, np.float32), "empty": np.zeros((0, 4), np.int64),
                    "transposed": np.arange(12.0).reshape(3, 4).T, "big_endian": np.arange(5, dtype=">i4")})
    return tensors


def write_raw(path, header, data=b"", header_len=None):
    """A hand-made file: header length, JSON header (dict or bytes), data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data)
    return path


def test_round_trip_all_dtypes(tmp_path):
    tensors = sample_tensors()
    save_file(tensors, tmp_path / "a.safetensors", metadata={"format": "test", "ünï": "cödé"})
    loaded = load_file(tmp_path / "a.safetensors")
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].shape == array.shape and loaded[name].dtype == array.dtype.newbyteorder("=")
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable and loaded[name].flags.c_contiguous
    assert load_metadata(tmp_path / "a.safetensors") == {"format": "test", "ünï": "cödé"}


def test_layout_alignment_and_header(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"b": np.ones(3, np.uint8), "a": np.ones(2, np.float32), "c": np.ones(1, np.float64)}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8:8 + n].rstrip(b" ").endswith(b"}")
    tensors, metadata = read_header(path)
    assert list(tensors) == ["c", "a", "b"]  # widest dtype first, then by name, as the reference
    assert tensors["a"] == {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}
    assert metadata == {}


def test_empty_file_of_tensors(tmp_path):
    save_file({}, tmp_path / "e.safetensors")
    assert load_file(tmp_path / "e.safetensors") == {}
    assert (tmp_path / "e.safetensors").read_bytes() == b"\x08" + b"\0" * 7 + b"{}      "


def test_bf16_is_upcast_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exactly representable in bfloat16
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    header = {"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}
    loaded = load_file(write_raw(tmp_path / "bf.safetensors", header, bits.tobytes()))
    assert loaded["x"].dtype == np.float32
    np.testing.assert_array_equal(loaded["x"], values.reshape(2, 2))


def test_reference_reads_our_files_byte_identical(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in sample_tensors().items() if k != "transposed"}  # the reference needs C order
    save_file(tensors, tmp_path / "ours.safetensors", metadata={"k": "v"})
    assert (tmp_path / "ours.safetensors").read_bytes() == sn.save(tensors, metadata={"k": "v"})
    theirs = sn.load_file(str(tmp_path / "ours.safetensors"))
    for name, array in tensors.items():
        np.testing.assert_array_equal(theirs[name], array)


def test_we_read_reference_files(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    tensors = {k: v for k, v in sample_tensors().items() if k != "transposed"}
    sn.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"k": "v"})
    loaded = load_file(tmp_path / "theirs.safetensors")
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
    assert load_metadata(tmp_path / "theirs.safetensors") == {"k": "v"}


def test_truncated_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"wte.weight": np.zeros((100, 10), np.float32)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: tensor 'wte\.weight' claims .*truncated"):
        load_file(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"\x01\x02"), "too few for a safetensors header"),
    (lambda p: write_raw(p, {}, header_len=2**62), "over the 100.0 MB limit"),
    (lambda p: write_raw(p, {}, header_len=1000), r"header claims 1\.0 kB but the file has .* \(truncated\?\)"),
    (lambda p: write_raw(p, b"{not json"), "header is not valid JSON"),
    (lambda p: write_raw(p, b"[1, 2]"), "header is JSON list, expected an object"),
    (lambda p: write_raw(p, {"__metadata__": {"a": 1}}), "__metadata__ must map strings to strings"),
    (lambda p: write_raw(p, {"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
     "tensor 'x' has dtype 'F8_E4M3', which this reader does not support"),
    (lambda p: write_raw(p, {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
     "tensor 'x' has shape"),
    (lambda p: write_raw(p, {"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4),
     "tensor 'x' has data_offsets"),
    (lambda p: write_raw(p, {"x": {"dtype": "F32", "shape": [1]}}), "tensor 'x' entry must have exactly"),
    (lambda p: write_raw(p, {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
     "needs 8 bytes but its data_offsets span 4 bytes"),
    (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
     "tensors 'a' and 'b' overlap"),
    (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
     "4 unused bytes before tensor 'a'"),
    (lambda p: write_raw(p, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
     "4 trailing bytes after the last tensor"),
])
def test_corrupt_files_raise(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    make(path)
    for read in (load_file, load_metadata):
        with pytest.raises(SafetensorsError, match=message) as info:
            read(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SafetensorsError, match="nope.safetensors: cannot open"):
        load_file(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("tensors, metadata, message", [
    ([np.zeros(1)], None, "tensors must be a dict"),
    ({"x": [1.0]}, None, "tensor 'x' is a list, not a NumPy array"),
    ({"x": np.array(["a"])}, None, "tensor 'x' has dtype <U1, which safetensors cannot hold"),
    ({"__metadata__": np.zeros(1)}, None, "tensor name '__metadata__' is not allowed"),
    ({"x": np.zeros(1)}, {"step": 3}, "metadata must be a dict of str -> str"),
])
def test_bad_input_to_save(tmp_path, tensors, metadata, message):
    with pytest.raises(SafetensorsError, match=message):
        save_file(tensors, tmp_path / "x.safetensors", metadata=metadata)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_interrupted_save_keeps_previous_file(tmp_path, monkeypatch, failing):
    path = tmp_path / "ckpt.safetensors"
    save_file({"w": np.ones(4, np.float32)}, path, metadata={"version": "1"})

    def crash(*args):
        raise OSError("simulated crash")
    monkeypatch.setattr(os, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_file({"w": np.zeros(4, np.float32)}, path, metadata={"version": "2"})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert load_metadata(path) == {"version": "1"}
    np.testing.assert_array_equal(load_file(path)["w"], np.ones(4, np.float32))


def test_writer_failing_midway_keeps_previous_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_file({"w": np.ones(4, np.float32)}, path)
    with pytest.raises(RuntimeError, match="killed"):
        with st.atomic_write(path) as f:
            f.write(b"half a header")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    np.testing.assert_array_equal(load_file(path)["w"], np.ones(4, np.float32))
