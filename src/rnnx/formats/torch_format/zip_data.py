"""Where a zip member's bytes lie, found from the archive's metadata, and reading them when asked.

`locate` is called while the archive is open: it takes the member's sizes from the central
directory and its data offset from the local header, and checks them against the file's size, so
that a member the file cannot hold is refused before anything is read. `read_data` reopens the
file by path later and reads that range alone (stored members, which torch.save writes) or the
member through zipfile (compressed ones); either way the bytes are checked against the member's
CRC-32, as zipfile checks them, so a file damaged or changed since it was opened is refused then.
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


def read_data(member: MemberData) -> np.ndarray:
    """The member's bytes as a fresh uint8 array, read from the file now; FormatError when the file no
    longer holds what it held when the member was located."""
    raw = np.empty(member.size, np.uint8)
    if member.compress_type == zipfile.ZIP_STORED:
        crc = _read_range(member, memoryview(raw))
    else:
        crc = _read_compressed(member, memoryview(raw))
    if crc != member.crc:
        raise FormatError(f"{member.path}: member {member.name!r} does not match its checksum; the file is damaged "
                          f"or was changed after it was opened.")
    return raw


def _read_range(member: MemberData, view: memoryview) -> int:
    crc, filled = 0, 0
    try:
        with open(member.path, "rb") as fh:
            fh.seek(member.start)
            while filled < member.size:
                got = fh.readinto(view[filled:filled + _CHUNK])
                if not got:
                    break
                crc = zlib.crc32(view[filled:filled + got], crc)
                filled += got
    except OSError as exc:
        raise FormatError(f"{member.path} cannot be read again ({exc.strerror}); it was moved or removed after "
                          f"it was opened.") from None
    if filled < member.size:
        raise FormatError(f"{member.path}: member {member.name!r} ends early; the file is truncated or was "
                          f"changed after it was opened.")
    return crc


def _read_compressed(member: MemberData, view: memoryview) -> int:
    """Through zipfile (which checks the CRC itself when the member ends); the CRC of what was read."""
    filled = 0
    try:
        with zipfile.ZipFile(member.path) as zf:
            info = zf.getinfo(member.name)
            if (info.file_size, info.compress_type, info.CRC) != (member.size, member.compress_type, member.crc):
                raise KeyError(member.name)
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
    return zlib.crc32(view)
