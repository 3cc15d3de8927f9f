"""TensorFlow's tensor bundle (checkpoint format V2): `PREFIX.index` + `PREFIX.data-KKKKK-of-NNNNN`.

`read_bundle(prefix)` reads the index (a LevelDB-format table: prefix-compressed key/value
blocks, a block index and a 48-byte footer) and returns every tensor entry by name; the
header (the empty key) is checked. Nothing of the data shards is read until an entry's
`.read()` is called; each read checks the entry against its shard's size and the tensor's
masked CRC32C. Readers hand out `.lazy()`: an rnnx.lazy.LazyArray whose every load is such a
read, from the shard by path. `resolve_prefix(path)` turns what a user gives (a prefix, its
`.index`, a data or `.meta` file, or a folder holding a `checkpoint` text file) into a prefix.

Every malformation is a FormatError naming the file; claimed sizes are checked against the
file before anything of that size is allocated.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import FormatError, UnsupportedError
from ...lazy import LazyArray
from . import protos

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked CRC32C
NO_COMPRESSION = 0
COMPRESSION_NAMES = {1: "snappy", 2: "zlib", 3: "bz2", 4: "lz4", 5: "lz4hc", 6: "xpress", 7: "zstd"}
CRC_MASK_DELTA = 0xA282EAD8
DATA_SHARD = "{prefix}.data-{k:05d}-of-{n:05d}"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"

NUMPY_DTYPES = {protos.DT_FLOAT: "<f4", protos.DT_DOUBLE: "<f8", protos.DT_INT32: "<i4", protos.DT_UINT8: "u1",
                protos.DT_INT16: "<i2", protos.DT_INT8: "i1", protos.DT_INT64: "<i8", protos.DT_BOOL: "?",
                protos.DT_UINT16: "<u2", protos.DT_HALF: "<f2", protos.DT_UINT32: "<u4", protos.DT_UINT64: "<u8"}


def crc32c(data) -> int:
    import crc32c as _crc32c  # hardware CRC32C (SSE4.2 / ARMv8), a pinned dependency

    return _crc32c.crc32c(data)


def masked_crc32c(data) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a bundle: where it is and what it claims; `.read()` fetches and checks it."""

    name: str
    dtype: str  # numpy's name ("float32", ...), "string", or TensorFlow's name for others ("bfloat16")
    shape: tuple[int, ...]
    shard: Path
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool = False  # a partitioned variable: its data is in per-slice entries

    @property
    def is_numeric(self) -> bool:
        return self.dtype in {np.dtype(d).name for d in NUMPY_DTYPES.values()}

    def read(self):
        """The tensor as a numpy array (a list of bytes for DT_STRING), after its checksum is verified."""
        if self.sliced:
            raise self._partitioned()
        if self.dtype == "string":
            return _strings(self._raw(check=False), math.prod(self.shape), self)
        if not self.is_numeric:
            raise UnsupportedError(f"{self.shard.name}: tensor {self.name!r} is {self.dtype}, which rnnx cannot "
                                   f"hold as a numpy array.")
        stored = np.dtype(self.dtype).newbyteorder("<")
        return self._buffer().view(stored).reshape(self.shape).astype(np.dtype(self.dtype), copy=False)

    def lazy(self, shapes_only: bool = False):
        """The tensor as a LazyArray of its declared shape and dtype, each load a `.read()` (bounds and
        CRC32C checked); with `shapes_only`, loads give the placeholder and read nothing. What the index
        already refuses is refused now, before any tensor is read: an entry past its shard's end, and (for
        a conversion) a partitioned variable. Strings and other dtypes are as `.placeholder()` /
        `.read()` give them, now."""
        if self.sliced and not shapes_only:
            raise self._partitioned()
        if not self.is_numeric:
            return self.placeholder() if shapes_only else self.read()
        self._check_fits()
        return LazyArray(self.shape, self.dtype, self.placeholder if shapes_only else lambda: self.read(),
                         f"{self.shard.name}:{self.name}", reads_file=not shapes_only)

    def _partitioned(self) -> UnsupportedError:
        return UnsupportedError(
            f"{self.shard.name}: variable {self.name!r} is partitioned (saved in slices); rnnx does not join "
            f"partitioned variables. Load the checkpoint in TensorFlow and save it unpartitioned.")

    def placeholder(self) -> np.ndarray:
        """An array of the entry's shape and dtype that reads nothing from the shard (zeros, no memory of
        its own), for `rnnx inspect`; the shard must still hold the bytes the entry claims."""
        self._check_fits()
        if not self.is_numeric:
            return self.read()  # strings and exotic dtypes: the reader decides on their values
        return np.broadcast_to(np.zeros((), np.dtype(self.dtype)), self.shape)

    def _check_fits(self) -> None:
        try:
            shard_size = self.shard.stat().st_size
        except OSError:
            raise FormatError(f"{self.shard}: the data shard holding {self.name!r} is missing; a checkpoint needs "
                              f"every .data-* file written with its .index.") from None
        if self.offset + self.size > shard_size:
            raise FormatError(f"{self.shard}: tensor {self.name!r} is said to lie at bytes {self.offset}-"
                              f"{self.offset + self.size}, past the end of the shard ({shard_size} bytes); the file "
                              f"is truncated or damaged.")

    def _raw(self, check: bool = True) -> bytes:
        self._check_fits()
        with open(self.shard, "rb") as fh:
            fh.seek(self.offset)
            raw = fh.read(self.size)
        if len(raw) != self.size:
            raise self._short()
        if check:
            self.check(raw)
        return raw

    def _buffer(self) -> np.ndarray:
        """The entry's bytes, checksum verified, read straight into one array (no second copy)."""
        self._check_fits()
        buffer = np.empty(self.size, np.uint8)
        view, done = memoryview(buffer), 0
        with open(self.shard, "rb") as fh:
            fh.seek(self.offset)
            while done < self.size:
                got = fh.readinto(view[done:])
                if not got:
                    raise self._short()
                done += got
        self.check(buffer)
        return buffer

    def _short(self) -> FormatError:
        return FormatError(f"{self.shard}: tensor {self.name!r} could not be read whole; the file is truncated.")

    def check(self, checksummed) -> None:
        if self.crc32c is not None and masked_crc32c(checksummed) != self.crc32c:
            raise FormatError(f"{self.shard}: tensor {self.name!r} fails its CRC32C check; the data file is "
                              f"damaged.")


def _strings(raw: bytes, count: int, entry: TensorEntry) -> list[bytes]:
    """DT_STRING layout: a varint64 length per element, a masked CRC32C of those lengths, the bytes.

    TensorFlow's checksum covers each length as a fixed little-endian integer (4 bytes, 8 for
    lengths past 2^32-1; not its varint), then
    the 4 length-checksum bytes, then the string bytes."""
    if count + 4 > len(raw):  # each length takes at least one byte
        raise FormatError(f"{entry.shard}: string tensor {entry.name!r} declares {count} elements in {len(raw)} "
                          f"bytes; the checkpoint is damaged.")
    lengths, pos = [], 0
    try:
        for _ in range(count):
            length, pos = protos.read_varint(raw, pos)
            lengths.append(length)
    except protos.ProtoError:
        raise FormatError(f"{entry.shard}: string tensor {entry.name!r} is malformed.") from None
    if pos + 4 + sum(lengths) != len(raw):
        raise FormatError(f"{entry.shard}: string tensor {entry.name!r} does not hold the bytes it declares.")
    entry.check(b"".join(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little") for n in lengths) + raw[pos:])
    pos += 4
    out = []
    for length in lengths:
        out.append(raw[pos:pos + length])
        pos += length
    return out


# ------------------------------------------------------------------ the index table

def read_bundle(prefix: Path) -> dict[str, TensorEntry]:
    """Every tensor of the bundle at `prefix` (`prefix.index` must exist), by name, in key order."""
    prefix = Path(prefix)
    index = Path(f"{prefix}.index")
    try:
        data = index.read_bytes()
    except OSError as exc:
        raise FormatError(f"{index} cannot be read ({exc.strerror}).") from None
    records = read_table(data, index)
    if not records or records[0][0] != b"":
        raise FormatError(f"{index} has no bundle header; it is not a TensorFlow checkpoint index.")
    try:
        header = protos.decode(records[0][1], protos.BUNDLE_HEADER)
    except protos.ProtoError as exc:
        raise FormatError(f"{index}: the bundle header is malformed ({exc}).") from None
    num_shards = header.get("num_shards", 0)
    if header.get("endianness", 0) != 0:
        raise UnsupportedError(f"{index} was written on a big-endian machine; rnnx reads little-endian bundles.")
    if not 1 <= num_shards <= 100_000:
        raise FormatError(f"{index}: the bundle header declares {num_shards} data shards.")
    entries: dict[str, TensorEntry] = {}
    for key, value in records[1:]:
        name = _text(key, index)
        entries[name] = _entry(name, value, prefix, num_shards, index)
    return entries


def _text(key: bytes, index: Path) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{index}: a tensor name is not UTF-8 text; the index is damaged.") from None


def _entry(name: str, value: bytes, prefix: Path, num_shards: int, index: Path) -> TensorEntry:
    try:
        proto = protos.decode(value, protos.BUNDLE_ENTRY)
    except protos.ProtoError as exc:
        raise FormatError(f"{index}: the entry of {name!r} is malformed ({exc}).") from None
    shape_proto = proto.get("shape", {})
    if shape_proto.get("unknown_rank"):
        raise FormatError(f"{index}: tensor {name!r} has an unknown rank.")
    shape = tuple(d.get("size", 0) for d in shape_proto.get("dim", []))
    if any(d < 0 or d >= 1 << 62 for d in shape):
        raise FormatError(f"{index}: tensor {name!r} declares the shape {shape}.")
    dtype_code = proto.get("dtype", 0)
    dtype = protos.DTYPE_NAMES.get(dtype_code, f"DataType {dtype_code}")
    shard_id, offset, size = proto.get("shard_id", 0), proto.get("offset", 0), proto.get("size", 0)
    if shard_id >= num_shards:
        raise FormatError(f"{index}: tensor {name!r} is in shard {shard_id}, but the bundle has {num_shards}.")
    if dtype_code in NUMPY_DTYPES and not proto.get("slices"):
        claimed = math.prod(shape) * np.dtype(NUMPY_DTYPES[dtype_code]).itemsize  # Python ints: no wrap
        if claimed != size:
            raise FormatError(f"{index}: tensor {name!r} declares the shape {shape} ({claimed} bytes of {dtype}) "
                              f"but holds {size} bytes; the index is damaged.")
    shard = Path(DATA_SHARD.format(prefix=prefix, k=shard_id, n=num_shards))
    return TensorEntry(name, dtype, shape, shard, offset, size, proto.get("crc32c"), bool(proto.get("slices")))


def read_table(data: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a LevelDB-format table, in order."""
    if len(data) < FOOTER_SIZE:
        raise FormatError(f"{path} is {len(data)} bytes, too short for a TensorFlow table; it is truncated.")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise FormatError(f"{path} does not end with the table magic number; it is truncated or not a "
                          f"TensorFlow checkpoint index.")
    try:
        _meta_offset, pos = protos.read_varint(footer, 0)
        _meta_size, pos = protos.read_varint(footer, pos)
        index_offset, pos = protos.read_varint(footer, pos)
        index_size, pos = protos.read_varint(footer, pos)
    except protos.ProtoError:
        raise FormatError(f"{path}: the table footer is malformed.") from None
    records = []
    for _separator, handle in _block(data, index_offset, index_size, path):
        try:
            offset, pos = protos.read_varint(handle, 0)
            size, _ = protos.read_varint(handle, pos)
        except protos.ProtoError:
            raise FormatError(f"{path}: a block handle in the table index is malformed.") from None
        records.extend(_block(data, offset, size, path))
    return records


def _block(data: bytes, offset: int, size: int, path: Path) -> list[tuple[bytes, bytes]]:
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise FormatError(f"{path}: a table block lies past the end of the file; it is truncated or damaged.")
    compression = data[end]
    if compression != NO_COMPRESSION:
        raise UnsupportedError(f"{path}: a table block is {COMPRESSION_NAMES.get(compression, 'compressed')}-"
                               f"compressed (type {compression}); TensorFlow writes bundles uncompressed and rnnx "
                               f"reads only those.")
    stored_crc = int.from_bytes(data[end + 1:end + 5], "little")
    if masked_crc32c(data[offset:end + 1]) != stored_crc:
        raise FormatError(f"{path}: a table block fails its CRC32C check; the file is damaged.")
    block = memoryview(data)[offset:end]
    if size < 4:
        raise FormatError(f"{path}: a table block is too short.")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = size - 4 - 4 * num_restarts
    if entries_end < 0:
        raise FormatError(f"{path}: a table block declares more restart points than it holds.")
    out, pos, key = [], 0, b""
    try:
        while pos < entries_end:
            shared, pos = protos.read_varint(block, pos)
            unshared, pos = protos.read_varint(block, pos)
            value_length, pos = protos.read_varint(block, pos)
            if shared > len(key) or pos + unshared + value_length > entries_end:
                raise protos.ProtoError("entry out of bounds")
            key = key[:shared] + bytes(block[pos:pos + unshared])
            pos += unshared
            out.append((key, bytes(block[pos:pos + value_length])))
            pos += value_length
    except protos.ProtoError:
        raise FormatError(f"{path}: a table block holds a malformed entry; the file is damaged.") from None
    return out


# ------------------------------------------------------------------ what the user gives -> a prefix

DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


def resolve_prefix(path: Path) -> Path:
    """The checkpoint prefix `path` names: PREFIX, PREFIX.index, PREFIX.meta, PREFIX.data-*, or a folder."""
    path = Path(path)
    if path.is_dir():
        return _prefix_of_folder(path)
    text = str(path)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix) and Path(text[: -len(suffix)] + ".index").exists():
            return Path(text[: -len(suffix)])
    stripped = DATA_SUFFIX.sub("", text)
    if Path(stripped + ".index").exists():
        return Path(stripped)
    if path.is_file() and is_table(path):
        raise UnsupportedError(
            f"{path} is a V1 checkpoint (a single table file without .index / .data-* beside it, written by "
            f"TensorFlow before 0.12); rnnx reads V2 checkpoints only. Load it in TensorFlow 1.x and save it "
            f"again with tf.train.Saver (write_version V2).")
    raise FormatError(f"{path}: no checkpoint with this prefix ({path.name}.index is missing).")


def is_table(path: Path) -> bool:
    """Whether the file ends with the LevelDB table magic (an index, or a whole V1 checkpoint)."""
    try:
        size = path.stat().st_size
        if size < FOOTER_SIZE:
            return False
        with open(path, "rb") as fh:
            fh.seek(size - 8)
            return int.from_bytes(fh.read(8), "little") == TABLE_MAGIC
    except OSError:
        return False


def _prefix_of_folder(folder: Path) -> Path:
    found = sorted(p.name[: -len(".index")] for p in folder.glob("*.index"))
    state = folder / "checkpoint"
    if state.is_file():
        latest = latest_checkpoint(state)
        if latest is not None:
            candidates = [Path(latest)] if os.path.isabs(latest) else []
            candidates.append(folder / latest)
            candidates.append(folder / Path(latest.replace("\\", "/")).name)  # an absolute path from elsewhere
            for candidate in candidates:
                if Path(f"{candidate}.index").is_file():
                    return candidate
            raise FormatError(
                f"{state} names the checkpoint {latest!r}, which is not in {folder} (prefixes found: "
                f"{', '.join(found) or 'none'}); give one of those prefixes.")
    if len(found) == 1:
        return folder / found[0]
    if found:
        raise FormatError(f"{folder} holds several checkpoints ({', '.join(found)}) and no checkpoint file says "
                          f"which is latest; give one prefix.")
    raise FormatError(f"{folder} is a folder holding neither a SavedModel (saved_model.pb) nor a TensorFlow "
                      f"checkpoint (*.index); give the path of a model or weights file.")


CHECKPOINT_LINE = re.compile(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


def latest_checkpoint(state: Path) -> str | None:
    """The model_checkpoint_path of a `checkpoint` text file (a text-format CheckpointState)."""
    try:
        text = state.read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = CHECKPOINT_LINE.match(line)
        if match:  # text-format escapes (\", \\, octal bytes of UTF-8) undone byte-wise
            try:
                return codecs.escape_decode(match.group(1).encode("utf-8"))[0].decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return match.group(1)
    return None
