"""Format "safetensors": a PyTorch state dict stored as safetensors, read and written without torch.

Keys are grouped into modules exactly as for .pt files (see torch_layout). A safetensors
file carrying an rnnx manifest is a `.rnnx` file under another name and is read as one.
Only `run_layer` (used by `rnnx verify`) needs torch.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..canonical import Bundle, RecurrentLayer
from ..errors import FormatError
from ..io import atomic_output
from . import torch_layout
from .torch_layout import refusal  # noqa: F401  (the format protocol: refusal(layer))


def read(path: Path, **options) -> Bundle:
    from safetensors import safe_open

    from . import rnnx_file

    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if rnnx_file.MANIFEST_KEY in metadata:
                return rnnx_file.read(path, **options)
            state = {key: f.get_tensor(key) for key in f.keys()}
    except FormatError:
        raise
    except Exception as exc:  # safetensors raises untyped errors for broken headers, bfloat16 for numpy...
        raise FormatError(f"{path} is not a readable safetensors file ({exc}). bfloat16 tensors cannot be "
                          f"read without torch: save them as float32.") from None
    state, stripped = torch_layout.strip_wrappers(_natural_order(state), in_checkpoint=False)
    source = {"format": "safetensors"}
    if stripped:
        source["stripped_prefix"] = stripped
    return Bundle(torch_layout.read_state_dict(state, path), source)


def _natural_order(state: dict) -> dict:
    """safetensors does not keep the order keys were saved in; sort them with numbers read as numbers."""
    def key(name: str):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]

    return {k: state[k] for k in sorted(state, key=key)}


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    from safetensors.numpy import save_file

    state, notes = torch_layout.to_state_dict(bundle)
    with atomic_output(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    return notes


def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    from .torch_pt import run_written_layer

    return run_written_layer(read(path), path, layer, x)
