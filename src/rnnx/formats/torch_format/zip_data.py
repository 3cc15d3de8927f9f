"""Where a zip member's bytes lie, found from the archive's metadata, and reading them when asked.

`locate` is called while the archive is open: it takes the member's sizes from the central
directory and its data offset from the local header, and checks them against the file's size, so
that a member the file cannot hold is refused before anything is read. `read_data` reopens the
file by path later and reads a byte range of the member: from the file directly for stored members
(what torch.save writes), through zipfile for compressed ones. With `check` the member's CRC-32 is
verified as zipfile verifies it, which takes reading the whole member, so a file damaged or
changed since it was opened is refused then.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import FormatError

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zipfile.structFileHeader
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED, _UTF8_NAME = 0x1, 0x800
_CHUNK = 1 << 24


@dataclass(frozen=True)
class MemberData:
    """One member's bytes in the archive at `path`: `size` bytes from `start` when stored."""

    path: Path
    name: str
    start: int
    size: int
    compress_type: int
    crc: int


def locate(fh, info: zipfile.ZipInfo, path: Path, archive_size: int) -> MemberData:
    """The member `info` of the archive open as `fh` (binary, seekable): where its data starts, checked.

    Its central-directory sizes must already be plausible (zip_pickle._checked_info); raises
    zipfile.BadZipFile for a local header zipfile would refuse and FormatError for data past the end."""
    if info.header_offset + _LOCAL_HEADER.size > archive_size:
        raise zipfile.BadZipFile(f"Truncated file header of {info.filename!r}")
    fh.seek(info.header_offset)
    header = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
    signature, flags, name_length, extra_length = header[0], header[3], header[10], header[11]
    if signature != _LOCAL_SIGNATURE:
        raise zipfile.BadZipFile(f"Bad magic number for file header of {info.filename!r}")
    raw_name = fh.read(name_length)
    name = raw_name.decode("utf-8" if flags & _UTF8_NAME else "cp437", "replace")
    if name != info.orig_filename:
        raise zipfile.BadZipFile(f"File name in directory {info.orig_filename!r} and header {name!r} differ.")
    if info.flag_bits & _ENCRYPTED:
        raise FormatError(f"{path}: member {info.filename!r} is encrypted; torch.save never encrypts, so rnnx "
                          f"does not read the file.")
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.compress_size > archive_size:
        raise FormatError(f"{path}: member {info.filename!r} reaches past the end of the file "
                          f"({start + info.compress_size} of {archive_size} bytes); the file is truncated.")
    return MemberData(Path(path), info.filename, start, info.file_size, info.compress_type, info.CRC)


def read_data(member: MemberData, start: int = 0, stop: int | None = None, check: bool = True) -> np.ndarray:
    """Bytes [start, stop) of the member (all of it by default) as a fresh uint8 array, read from the file
    now. `check`: verify the member's CRC-32, which means reading all of it (keeping only the range).
    FormatError when the file no longer holds what it held when the member was located."""
    stop = member.size if stop is None else stop
    if not 0 <= start <= stop <= member.size:
        raise ValueError(f"bytes {start}:{stop} of a member of {member.size}")
    if member.compress_type == zipfile.ZIP_STORED:
        return _read_stored(member, start, stop, check)
    raw = _read_compressed(member)  # decompressing starts at the member's beginning anyway
    return raw if (start, stop) == (0, member.size) else raw[start:stop].copy()


def _read_stored(member: MemberData, start: int, stop: int, check: bool) -> np.ndarray:
    out = np.empty(stop - start, np.uint8)
    view, scratch = memoryview(out), None
    pos, last = (0, member.size) if check else (start, stop)
    crc = 0
    try:
        with open(member.path, "rb") as fh:
            fh.seek(member.start + pos)
            while pos < last:
                n = min(_CHUNK, last - pos)
                direct = start <= pos and pos + n <= stop
                if not direct and scratch is None:
                    scratch = memoryview(bytearray(_CHUNK))
                target = view[pos - start:pos - start + n] if direct else scratch[:n]
                got = fh.readinto(target)
                if not got:
                    break
                if check:
                    crc = zlib.crc32(target[:got], crc)
                lo, hi = max(pos, start), min(pos + got, stop)
                if not direct and lo < hi:
                    view[lo - start:hi - start] = target[lo - pos:hi - pos]
                pos += got
    except OSError as exc:
        raise FormatError(f"{member.path} cannot be read again ({exc.strerror}); it was moved or removed after "
                          f"it was opened.") from None
    if pos < last:
        raise FormatError(f"{member.path}: member {member.name!r} ends early; the file is truncated or was "
                          f"changed after it was opened.")
    if check and crc != member.crc:
        raise _checksum_error(member)
    return out


def _read_compressed(member: MemberData) -> np.ndarray:
    """All of a compressed member, through zipfile, CRC checked."""
    raw = np.empty(member.size, np.uint8)
    view, filled = memoryview(raw), 0
    try:
        with zipfile.ZipFile(member.path) as zf:
            info = zf.getinfo(member.name)
            if (info.file_size, info.compress_type, info.CRC) != (member.size, member.compress_type, member.crc):
                raise zipfile.BadZipFile(f"{member.name!r} is not the member it was")
            with zf.open(info) as fh:
                while filled < member.size:
                    got = fh.readinto(view[filled:filled + _CHUNK])
                    if not got:
                        break
                    filled += got
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise FormatError(f"{member.path}: member {member.name!r} cannot be read again ({exc}); the file is "
                          f"damaged or was changed after it was opened.") from None
    if filled < member.size:
        raise FormatError(f"{member.path}: member {member.name!r} ends early; the file is truncated or was "
                          f"changed after it was opened.")
    if zlib.crc32(view) != member.crc:
        raise _checksum_error(member)
    return raw


def _checksum_error(member: MemberData) -> FormatError:
    return FormatError(f"{member.path}: member {member.name!r} does not match its checksum; the file is damaged "
                       f"or was changed after it was opened.")
