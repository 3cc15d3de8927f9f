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

from .. import progress
from ..lazy import chunks

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
            for data in chunks(array, np.dtype(array.dtype).newbyteorder("<")):
                out.write(memoryview(data).cast("B") if data.size else b"")
                progress.wrote(data.nbytes, name)
                del data


NUMPY_OF = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "U64": np.uint64,
            "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16, "I8": np.int8, "U8": np.uint8,
            "BOOL": np.bool_}


def lazy_tensor(handle, path: Path, key: str):
    """Tensor `key` of the open safetensors file `handle` (safe_open) as a LazyArray read by reopening
    `path`: the header gives its shape and dtype; None for dtypes numpy lacks (the caller decides)."""
    from ..lazy import LazyArray

    info = handle.get_slice(key)
    dtype = NUMPY_OF.get(info.get_dtype())
    if dtype is None:
        return None

    def load():
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return f.get_tensor(key)

    return LazyArray(info.get_shape(), dtype, load, f"{Path(path).name}:{key}")
