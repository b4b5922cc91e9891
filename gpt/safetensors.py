"""Read and write the safetensors format with NumPy alone (no `safetensors` package, never pickle).

A safetensors file is three parts:
  8 bytes   N, the header length, unsigned little-endian
  N bytes   a JSON header: {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
            "__metadata__": {str: str}}, padded with spaces so the data starts 8-byte aligned
  the rest  the tensors' raw little-endian C-order bytes, back to back; offsets count from here
Files written here are byte-identical to the reference writer's: tensors ordered by dtype, widest
first, then by name, with the JSON written compactly.

Reading trusts nothing: the header length is bounded by the file, every tensor's byte count must
match its shape and dtype, and the tensors must tile the data exactly (no gaps, overlaps or
trailing bytes), all before any tensor is allocated, so reading never allocates more than the
file holds. Any problem raises SafetensorsError naming the file and what is wrong. Writing is
atomic (see atomic_write), so a crash mid-save leaves the previous file intact, and a full disk
raises DiskFullError, one line naming the folder and the bytes the file needed. write_file and
write_json write any bytes, or JSON, the same way (the project's other files go through them).

BF16 tensors are read by upcasting to float32 (NumPy has no bfloat16); that is exact.
Left out: writing BF16 and the float8/float4 dtypes, memory-mapped (lazy) loading, and
the `safe_open` slicing API.
"""
import contextlib
import errno
import json
import math
import os
import re
import shutil
import struct
import uuid

import numpy as np

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit
MAX_DIMS = 32  # NumPy 1.x's limit on array dimensions (2.x allows 64)
MAX_ELEMENTS_BYTES = 2**62  # NumPy refuses shapes whose nonzero sizes multiply past ~2**63 bytes, even empty ones

# name -> little-endian NumPy dtype, in the reference's dtype order (narrowest first)
_DTYPES = {
    "BOOL": "|b1", "U8": "|u1", "I8": "|i1", "I16": "<i2", "U16": "<u2", "F16": "<f2",
    "BF16": "<u2", "I32": "<i4", "U32": "<u4", "F32": "<f4", "C64": "<c8", "F64": "<f8",
    "I64": "<i8", "U64": "<u8",
}
_RANK = {name: rank for rank, name in enumerate(_DTYPES)}
_NAME_OF = {np.dtype(code).str: name for name, code in _DTYPES.items() if name != "BF16"}


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, or tensors that cannot be saved; the message says which."""


# ---- writing -------------------------------------------------------------------------------
def save_file(tensors, path, metadata=None):
    """Write {name: np.ndarray} and optional {str: str} metadata to `path` atomically.

    Arrays of any layout or byte order are written as C-contiguous little-endian bytes.
    """
    arrays = {name: _little_endian(name, array) for name, array in _checked_tensors(tensors).items()}
    arrays = {name: arrays[name] for name in sorted(arrays, key=lambda n: (-_RANK[_dtype_name(arrays[n])], n))}
    header = _header(arrays, _checked_metadata(metadata))
    size = 8 + len(header) + sum(array.nbytes for array in arrays.values())
    with atomic_write(path, size) as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for array in arrays.values():
            f.write(array.reshape(-1).view(np.uint8))


def _checked_tensors(tensors):
    """`tensors` itself if it is a {str: np.ndarray} dict that safetensors can hold."""
    if not isinstance(tensors, dict):
        raise SafetensorsError(f"tensors must be a dict of name -> np.ndarray, not {type(tensors).__name__}")
    for name, array in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"tensor name {name!r} is not allowed: use a string other than '__metadata__'")
        if not isinstance(array, np.ndarray):
            raise SafetensorsError(f"tensor {name!r} is a {type(array).__name__}, not a NumPy array: "
                                   "convert it with np.asarray (or move it to the CPU) first")
    return tensors


def _little_endian(name, array):
    """`array` as a C-contiguous little-endian array; SafetensorsError for dtypes the format lacks."""
    dtype = array.dtype.newbyteorder("<")
    if dtype.str not in _NAME_OF:
        raise SafetensorsError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold; "
                               f"use one of {', '.join(str(np.dtype(_DTYPES[n])) for n in _NAME_OF.values())}")
    return np.asarray(array, dtype=dtype, order="C")


def _dtype_name(array):
    """The safetensors dtype name ("F32", ...) of a little-endian array."""
    return _NAME_OF[array.dtype.str]


def _checked_metadata(metadata):
    """`metadata` if it is None or a {str: str} dict (the only kind the format allows)."""
    if metadata is not None and not (isinstance(metadata, dict) and
                                     all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise SafetensorsError("metadata must be a dict of str -> str (serialise other values, e.g. with json.dumps)")
    return metadata


def _header(arrays, metadata):
    """The JSON header for `arrays` (in data order) as bytes padded with spaces to a multiple of 8."""
    header = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": _dtype_name(array), "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


class DiskFullError(ValueError):
    """A file that did not fit on its disk; the message names the folder and the bytes it needed."""


# the name atomic_write gives a file while it is being written: "<path>.tmp-<12 hex digits>"
TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{12}$")
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space, or over a quota


@contextlib.contextmanager
def atomic_write(path, size=None):
    """Open a binary file that replaces `path` only once it is completely written and on disk.

    Writes go to a temporary file in the same directory; on success it is flushed, fsynced and
    renamed over `path` (atomic on POSIX and Windows), then the directory is fsynced so the
    rename itself survives a power cut. On any error the temporary file is removed and `path`
    is left as it was; a full disk (or quota) raises DiskFullError, one line naming the folder
    and `size`, the bytes the caller is about to write (or, if not given, those written so far).
    A process killed mid-write leaves its temporary file (TEMPORARY names it), which the next
    run in that folder removes (gpt/rundir.py).
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            raise DiskFullError(no_space_message(path, size, written)) from None
        raise
    _fsync_directory(directory)


def write_file(path, data):
    """Write the bytes `data` to `path` atomically (atomic_write, which knows the size they need)."""
    with atomic_write(path, len(data)) as f:
        f.write(data)


def write_json(path, obj, indent=1):
    """Write `obj` as indented JSON (UTF-8) to `path` atomically, through write_file."""
    write_file(path, json.dumps(obj, indent=indent).encode("utf-8"))


def no_space_message(path, size=None, written=0):
    """One line: `path` did not fit in its folder, which needed `size` bytes (at least `written`)."""
    directory = os.path.dirname(os.path.abspath(path))
    needed = f"{size:,} bytes" if size is not None else f"more than the {written:,} bytes written"
    name = os.path.basename(path)
    kept = f"the previous {name} is unchanged" if os.path.exists(path) else f"{name} was not written"
    return (f"no space left in {directory} for {name}: it needs {needed}, {shutil.disk_usage(directory).free:,} "
            f"are free; {kept}. Free some space (or write elsewhere) and run again")


def _fsync_directory(directory):
    """Make a rename in `directory` durable; a no-op where directories cannot be opened (Windows)."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---- reading -------------------------------------------------------------------------------
def load_file(path):
    """{name: np.ndarray} from a safetensors file; each array is a fresh, writable copy in file order."""
    entries, _, data_start = _read_checked_header(path)
    tensors = {}
    with _open(path) as f:
        for name, (dtype, shape, begin, end) in entries.items():
            array = np.empty(shape, np.dtype(_DTYPES[dtype]))
            f.seek(data_start + begin)
            if f.readinto(array.reshape(-1).view(np.uint8)) != end - begin:
                raise SafetensorsError(f"{path}: tensor {name!r} could not be read in full (file changed?)")
            tensors[name] = _upcast_bf16(array) if dtype == "BF16" else array
    return tensors


def load_metadata(path):
    """The file's {str: str} `__metadata__` ({} when it has none), without reading any tensor."""
    return read_header(path)[1]


def read_header(path):
    """({name: {"dtype", "shape", "data_offsets"}}, metadata) from the checked header; reads no tensor."""
    entries, metadata, _ = _read_checked_header(path)
    tensors = {name: {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
               for name, (dtype, shape, begin, end) in entries.items()}
    return tensors, metadata


def _upcast_bf16(bits):
    """float32 from bfloat16 bit patterns (uint16): bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _open(path):
    """`path` opened for binary reading; SafetensorsError if it cannot be."""
    try:
        return open(path, "rb")
    except OSError as e:
        raise SafetensorsError(f"{path}: cannot open ({e.strerror})") from None


def _read_checked_header(path):
    """({name: (dtype, shape, begin, end)} in data order, metadata, data start) after every check."""
    with _open(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        if file_size < 8:
            raise SafetensorsError(f"{path}: file has {file_size} bytes, too few for a safetensors header")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES:
            raise SafetensorsError(f"{path}: header length {_size(n)} is over the {_size(MAX_HEADER_BYTES)} "
                                   "limit (not a safetensors file?)")
        if 8 + n > file_size:
            raise SafetensorsError(f"{path}: header claims {_size(n)} but the file has {_size(file_size)} (truncated?)")
        raw = f.read(n)
    header = _parse_json(path, raw)
    metadata = _parse_metadata(path, header.pop("__metadata__", {}))
    entries = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
    entries = dict(sorted(entries.items(), key=lambda item: item[1][2:]))
    _check_layout(path, entries, file_size - 8 - n)
    return entries, metadata, 8 + n


def _parse_json(path, raw):
    """The header bytes as a JSON object."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, an integer of 4300+ digits, deep nesting
        raise SafetensorsError(f"{path}: header is not valid JSON ({type(e).__name__}: {e}); "
                               "not a safetensors file?") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is JSON {type(header).__name__}, expected an object")
    return header


def _parse_metadata(path, metadata):
    """`__metadata__` checked to be {str: str}."""
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise SafetensorsError(f"{path}: __metadata__ must map strings to strings")
    return metadata


def _parse_entry(path, name, entry):
    """(dtype, shape, begin, end) from one header entry, with its byte count checked."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"{path}: tensor {name!r} entry must have exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise SafetensorsError(f"{path}: tensor {name!r} has dtype {_short(dtype)}, which this reader does not "
                               f"support (known: {', '.join(_DTYPES)})")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(_is_count(d) for d in shape)):
        raise SafetensorsError(f"{path}: tensor {name!r} has shape {_short(shape)}, expected a list of at most "
                               f"{MAX_DIMS} sizes >= 0")
    if math.prod(d for d in shape if d) * np.dtype(_DTYPES[dtype]).itemsize > MAX_ELEMENTS_BYTES:
        raise SafetensorsError(f"{path}: tensor {name!r} has shape {_short(shape)}, too large for an array")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        raise SafetensorsError(f"{path}: tensor {name!r} has data_offsets {_short(offsets)}, expected [begin, end] "
                               "with 0 <= begin <= end")
    nbytes = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise SafetensorsError(f"{path}: tensor {name!r} of shape {shape} and dtype {dtype} needs {_size(nbytes)} "
                               f"but its data_offsets span {_size(offsets[1] - offsets[0])}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _is_count(x):
    """True for a non-negative int (JSON booleans excluded)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_layout(path, entries, data_size):
    """The tensors, in offset order, must fit in the file and tile the data with no gap or overlap."""
    for name, (_, _, _, end) in entries.items():
        if end > data_size:
            raise SafetensorsError(f"{path}: tensor {name!r} claims bytes up to {_size(end)} but the file has "
                                   f"{_size(data_size)} of data (truncated?)")
    position, previous = 0, None
    for name, (_, _, begin, end) in entries.items():
        if begin < position:
            raise SafetensorsError(f"{path}: tensors {previous!r} and {name!r} overlap (bytes {begin}..{position})")
        if begin > position:
            raise SafetensorsError(f"{path}: {begin - position} unused bytes before tensor {name!r}")
        position, previous = end, name
    if position != data_size:
        raise SafetensorsError(f"{path}: {data_size - position} trailing bytes after the last tensor")


def _short(value, limit=80):
    """repr(value) cut to `limit` characters, for messages about values read from a file."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _size(n):
    """A byte count for messages: '300 bytes', '1.2 MB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
