"""Read-only numpy views of a file's byte ranges, memory-mapped.

A tensor stored as plain bytes (an HDF5 dataset without chunks or filters, ...) is handed out as
a view of the mapped file: the page cache serves it and no copy is made until a layout change
writes its result, which saves one pass over every tensor of a conversion. The range is checked
against the file's size before it is mapped. The view keeps the mapping alive; the file may be
closed or renamed meanwhile (on POSIX), but a file truncated while a view of it is read ends the
process, as any mapped file does.
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path

import numpy as np


def map_range(path: Path, offset: int, shape, dtype) -> np.ndarray | None:
    """The bytes [offset, offset + nbytes) of `path` as a read-only array of `shape` and `dtype`, or None
    when they do not lie inside the file (the caller reads the ordinary way, which reports the damage)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset < 0 or offset + nbytes > size:
            return None
        if nbytes == 0:
            return np.empty(shape, dtype)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(f.fileno(), offset + nbytes - start, access=mmap.ACCESS_READ, offset=start)
    return np.frombuffer(mapping, dtype, math.prod(shape), offset - start).reshape(shape)


__all__ = ["map_range"]
