"""The `model.weights.h5` member of a `.keras` zip as a file h5py reads, neither extracted nor held in memory.

Keras stores the member uncompressed (zipfile's default, ZIP_STORED). Such a member is read in place,
through a read-only view bounded to its byte range of the archive, opened again for every read (the
archive must still be the one that was read: same size and modification time); a variable stored as
plain bytes (contiguous, unfiltered: what Keras writes) is then mapped from the archive, a read-only
view as the Keras 2 reader gives, if its range lies inside the member. Its CRC-32 is checked,
streaming, before the first tensor is read, so `inspect` reads headers only and a conversion still
refuses a damaged member. A compressed member (an archive zipped again by another tool) cannot be
read in place: it is decompressed once, in pieces, into an anonymous temporary file (zipfile checks
its CRC-32 on the way) that lives as long as the arrays read from it. Memory stays at one piece
either way; a compressed member costs its size in temporary disk space and one pass at read time.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ...errors import FormatError
from ...mapped import map_range

PIECE = 1 << 20  # bytes per read when checking a CRC or decompressing
LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra field length (30 bytes)


class ByteRange(io.RawIOBase):
    """Bytes [start, start + size) of the open binary file `fh`, read-only and seekable; closing it
    leaves `fh` open."""

    def __init__(self, fh, start: int, size: int):
        super().__init__()
        self._fh, self._start, self._size, self._pos = fh, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))  # nothing past the range's end
        if n == 0:
            return 0
        self._fh.seek(self._start + self._pos)
        got = self._fh.readinto(memoryview(buffer).cast("B")[:n])
        self._pos += got
        return got


class ArchiveMember:
    """One member of the zip at `path` (its checked ZipInfo `info`, read through the open ZipFile `zf`)."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
        self.path, self.name, self.size, self.crc = path, name, info.file_size, info.CRC
        self.where = f"{path} ({name})"
        self._crc_checked = False
        self._spooled = None
        with zf.open(info):  # zipfile checks the local header: signature, name, encryption
            pass
        if info.compress_type == zipfile.ZIP_STORED:
            self._start = self._data_start(info)
            stat = os.stat(path)
            self._stamp = (stat.st_size, stat.st_mtime_ns)
        else:
            self._spooled = self._decompressed(zf, info)
            self._crc_checked = True

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        archive_size = os.stat(self.path).st_size
        with open(self.path, "rb") as fh:
            fh.seek(info.header_offset)
            header = fh.read(LOCAL_HEADER.size)
        if len(header) != LOCAL_HEADER.size or LOCAL_HEADER.unpack(header)[0] != b"PK\x03\x04":
            raise FormatError(f"{self.path}: the member {self.name} has no local header where the directory "
                              f"says; the archive is damaged.")
        _, name_length, extra_length = LOCAL_HEADER.unpack(header)
        start = info.header_offset + LOCAL_HEADER.size + name_length + extra_length
        if info.compress_size != info.file_size or start + info.file_size > archive_size:
            raise FormatError(f"{self.path}: the stored member {self.name} claims {info.file_size} bytes from "
                              f"offset {start}, past the archive's {archive_size} bytes (or a stored size that "
                              f"differs from its compressed size); the archive is truncated or forged.")
        return start

    def _decompressed(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        spool = tempfile.TemporaryFile()  # anonymous: removed when closed, or when the process ends
        try:
            total = 0
            with zf.open(info) as src:
                while piece := src.read(PIECE):
                    total += len(piece)
                    if total > info.file_size:
                        break
                    spool.write(piece)
        except BaseException:
            spool.close()
            raise
        if total != info.file_size:
            spool.close()
            raise FormatError(f"{self.path}: the member {self.name} does not hold the {info.file_size} bytes it "
                              f"declares.")
        spool.flush()
        return spool

    @contextmanager
    def h5(self, checked: bool = False):
        """The member opened with h5py (read-only); `checked`: its CRC-32 verified first (once)."""
        import h5py

        if self._spooled is not None:
            with h5py.File(ByteRange(self._spooled, 0, self.size), "r") as h5:
                yield h5
            return
        try:
            fh = open(self.path, "rb")
        except OSError as exc:
            raise FormatError(f"{self.path} cannot be opened again to read its weights ({exc.strerror}); it was "
                              f"moved or deleted after it was read.") from None
        with fh:
            stat = os.fstat(fh.fileno())
            if (stat.st_size, stat.st_mtime_ns) != self._stamp:
                raise FormatError(f"{self.path} changed after it was read; read it again.")
            view = ByteRange(fh, self._start, self.size)
            if checked and not self._crc_checked:
                self._check_crc(view)
            with h5py.File(view, "r") as h5:
                yield h5

    def mapped(self, offset: int, shape, dtype):
        """The member's bytes from `offset` as a read-only array of `shape` and `dtype` mapped from the archive,
        or None (a compressed member, or a range that leaves the member). Called while `h5(checked=True)`
        holds the member open: the archive is the one read and its CRC-32 was checked."""
        nbytes = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
        if self._spooled is not None or offset < 0 or offset + nbytes > self.size:
            return None
        return map_range(self.path, self._start + offset, shape, dtype)

    def _check_crc(self, view: ByteRange) -> None:
        crc, buffer = 0, bytearray(PIECE)
        while n := view.readinto(buffer):
            crc = zlib.crc32(memoryview(buffer)[:n], crc)
        if crc != self.crc:
            raise FormatError(f"{self.where} does not match its CRC-32; the archive is damaged.")
        view.seek(0)
        self._crc_checked = True
