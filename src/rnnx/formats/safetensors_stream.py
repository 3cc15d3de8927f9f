"""Writing a safetensors file tensor by tensor (the .safetensors and .rnnx writers).

`safetensors.numpy.save_file` wants every tensor in memory at once. This writer lays out the same
header (tensors sorted as safetensors sorts them: the order is taken from safetensors itself on
zero-length stand-ins, so it follows the installed version), then reads and writes each tensor in
turn: a lazy tensor (rnnx.lazy) is read only when its bytes are written. The bytes are those
`save_file` writes for the same tensors and metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ALIGNMENT = 8  # the header is padded with spaces to a multiple of 8 bytes


def save_file(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (name -> numpy or lazy array) and `metadata` to `path` as safetensors."""
    from safetensors.numpy import save

    stand_ins = {name: np.zeros((0,), np.dtype(array.dtype)) for name, array in tensors.items()}
    probe = save(stand_ins, metadata=metadata)  # safetensors' own order and dtype names
    probe_header = json.loads(probe[8:8 + int.from_bytes(probe[:8], "little")])
    header: dict = {}
    if metadata:
        header["__metadata__"] = probe_header["__metadata__"]
    offset = 0
    order = [name for name in probe_header if name != "__metadata__"]
    for name in order:
        array = tensors[name]
        nbytes = int(np.prod(array.shape, dtype=object)) * np.dtype(array.dtype).itemsize
        header[name] = {"dtype": probe_header[name]["dtype"], "shape": [int(d) for d in array.shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % ALIGNMENT)
    with open(path, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        for name in order:
            array = tensors[name]
            data = np.ascontiguousarray(np.asarray(array), dtype=np.dtype(array.dtype).newbyteorder("<"))
            out.write(memoryview(data).cast("B") if data.size else b"")
            del data
