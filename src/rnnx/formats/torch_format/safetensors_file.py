"""Format "safetensors": a PyTorch state dict stored as safetensors, read and written without torch.

Keys are grouped into modules exactly as for .pt files (see torch_layout). A safetensors
file carrying an rnnx manifest is a `.rnnx` file under another name and is read as one.
Only `run_layer` (used by `rnnx verify`) needs torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...canonical import Bundle, RecurrentLayer
from ...errors import FormatError
from ...io import atomic_output
from ..safetensors_stream import lazy_tensor
from . import layout as torch_layout
from . import pt as torch_pt
from . import zip_pickle as torch_zip
from .layout import refusal  # noqa: F401  (the format protocol: refusal(layer))


def read(path: Path, **options) -> Bundle:
    from safetensors import safe_open

    from .. import rnnx_file

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if rnnx_file.MANIFEST_KEY in metadata:
                return rnnx_file.read(path, **options)
            state = {key: _tensor(f, key, path) for key in f.keys()}
    except FormatError:
        raise
    except Exception as exc:  # safetensors raises untyped errors for broken headers
        raise FormatError(f"{path} is not a readable safetensors file ({exc}); it may be truncated or "
                          f"not a safetensors file.") from None
    state, stripped = torch_layout.strip_wrappers(_natural_order(state), in_checkpoint=False)
    arrays, notes = torch_pt.to_numpy(state, path)
    source = {"format": "safetensors", "notes": notes}
    if stripped:
        source["stripped_prefix"] = stripped
    return Bundle(torch_layout.read_state_dict(arrays, path), source)


def _tensor(f, key: str, path: Path):
    """A numpy array; bfloat16 (which numpy lacks) as torch_zip.BFloat16Array, read from the file's bytes
    whether or not ml_dtypes happens to be imported; other dtypes numpy cannot hold as UnreadableTensor."""
    dtype = f.get_slice(key).get_dtype()
    if dtype == "BF16":
        return torch_zip.BFloat16Array((_raw(path, key).astype(np.uint32) << 16).view(np.float32))
    if dtype not in NUMPY_DTYPES:
        return torch_zip.UnreadableTensor(f"a {dtype} tensor")
    return lazy_tensor(f, path, key)  # read when used


NUMPY_DTYPES = ("F64", "F32", "F16", "I64", "U64", "I32", "U32", "I16", "U16", "I8", "U8", "BOOL")


def _raw(path: Path, key: str) -> np.ndarray:
    """The bytes of tensor `key`, shaped; safe_open has already checked the header against the file size."""
    import json
    import struct

    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        entry = json.loads(fh.read(length))[key]
        start, end = entry["data_offsets"]
        fh.seek(8 + length + start)
        data = fh.read(end - start)
    return np.frombuffer(data, np.uint8).view("<u2").reshape(entry["shape"])


def _natural_order(state: dict) -> dict:
    """safetensors does not keep the order keys were saved in; sort them with numbers read as numbers."""
    def key(name: str):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]

    return {k: state[k] for k in sorted(state, key=key)}


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    from ..safetensors_stream import save_file

    state, notes = torch_layout.to_state_dict(bundle)
    with atomic_output(path) as tmp:
        save_file(state, tmp, metadata={"format": "pt"})  # tensor by tensor
    return notes


def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    from .pt import run_written_layer

    return run_written_layer(read(path), path, layer, x)
