"""Format "torch": state dicts and checkpoints written by torch.save (.pt, .pth, .bin, .ckpt, .tar).

Zip-format files (torch.save's default since 1.6) are read by zip_pickle with numpy alone
and a restricted unpickler, lazily: a tensor's bytes are read from the file when it is used
(written, verified), so `inspect` and refusals read none. Legacy files (pickle streams) are
read whole, only with `torch.load(path, map_location="cpu", weights_only=True)`. Either way a
checkpoint that needs arbitrary pickle code (a whole pickled model, a custom class) is refused
and nothing from it runs. Nested checkpoints (`{'epoch', 'model', 'optimizer'}`, Lightning's
`{'state_dict': ...}`) are searched for the dict holding the recurrent weights;
see layout.py for how keys become layers. .pt files are written in the zip format by
zip_writer, without torch; torch is imported only here, lazily, to read legacy files and run
layers for verify.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np

from ...canonical import Bundle, RecurrentLayer
from ...errors import FormatError, UnsupportedError
from ...io import atomic_output
from . import layout as torch_layout
from . import zip_pickle as torch_zip
from .layout import refusal  # noqa: F401  (the format protocol: refusal(layer))


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise UnsupportedError("Writing .pt files and running them for verify needs PyTorch (pip install "
                               "'rnnx[torch]'); without it, use .safetensors files.") from None
    return torch


def read(path: Path, **_options) -> Bundle:
    if torch_zip.is_torch_zip(path):
        loaded = torch_zip.load_state(path, lazy=True)  # tensors read when used
        is_tensor = torch_zip.is_tensor
    else:
        loaded, is_tensor = _load_legacy(path)
    if is_tensor(loaded) or not isinstance(loaded, dict):
        kind = "tensor" if is_tensor(loaded) else type(loaded).__name__
        raise FormatError(f"{path} holds a {kind}, not a state dict; save "
                          f"model.state_dict() (a dict of tensors) with torch.save.")
    try:
        state, found_at = torch_layout.find_state_dict(loaded, is_tensor)
    except torch_layout.UnreadableTree as exc:
        raise FormatError(f"{path} holds {exc.args[0]}, which no torch.save state dict has; the file is damaged "
                          f"or forged.") from None
    state, stripped = torch_layout.strip_wrappers(state, in_checkpoint=bool(found_at))
    if is_tensor is not torch_zip.is_tensor:
        state = {key: _from_torch(tensor) for key, tensor in state.items()}
    arrays, notes = to_numpy(state, path)
    source = {"format": "torch", "notes": notes}
    if found_at:
        source["checkpoint_key"] = found_at
    if stripped:
        source["stripped_prefix"] = stripped
    return Bundle(torch_layout.read_state_dict(arrays, path), source)


def _load_legacy(path: Path):
    """A file from torch.save(..., _use_new_zipfile_serialization=False) (or torch < 1.6): torch.load it."""
    with open(path, "rb") as fh:
        head = fh.read(1)
    if head != b"\x80":  # a pickle protocol opcode; torch.save writes protocol 2
        raise FormatError(f"{path} is not a readable PyTorch file (neither a zip archive nor a pickle); "
                          f"it may be truncated or not written by torch.save.")
    try:
        import torch
    except ModuleNotFoundError:
        raise UnsupportedError(f"{path} is in PyTorch's legacy format (before 1.6, or saved with "
                               f"_use_new_zipfile_serialization=False), which only torch can open; install "
                               f"torch (pip install 'rnnx[torch]') or save the file again with a newer torch.") \
            from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise FormatError(torch_zip.refusal_message(path, found.group(1) if found else "")) from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... on broken files
        raise FormatError(f"{path} is not a readable PyTorch file ({_first_line(exc)}); "
                          f"it may be truncated or not written by torch.save.") from None
    return loaded, lambda value: isinstance(value, torch.Tensor)


def _from_torch(tensor):
    """A torch tensor as torch_zip gives tensors: a numpy array, BFloat16Array or UnreadableTensor."""
    import torch

    tensor = tensor.detach()
    if tensor.layout != torch.strided or tensor.is_quantized:
        return torch_zip.UnreadableTensor(f"a {tensor.layout} / quantized tensor")
    if tensor.dtype == torch.bfloat16:
        return torch_zip.BFloat16Array(tensor.float().numpy())
    try:
        return tensor.resolve_conj().resolve_neg().contiguous().numpy()
    except (TypeError, RuntimeError) as exc:  # float8, meta-device, ... tensors
        return torch_zip.UnreadableTensor(_first_line(exc))


def to_numpy(state: dict, path: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays, notes = {}, []
    for key, tensor in state.items():
        if isinstance(tensor, torch_zip.BFloat16Array):
            if torch_layout.is_recurrent_key(key):
                raise FormatError(f"{path}: {key} is bfloat16, which rnnx does not hold; cast the model to "
                                  f"float32 (model.float()) and save it again.")
            notes.append(f"{key}: bfloat16 read as float32")
            tensor = tensor.float32
        if isinstance(tensor, torch_zip.UnreadableTensor):
            if torch_layout.is_recurrent_key(key):
                raise FormatError(f"{path}: {key} cannot be read as a numpy array ({tensor.kind}).")
            notes.append(f"{key}: {tensor.kind}, not carried along")
            continue
        arrays[key] = tensor
    return arrays, notes


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    """torch.save's zip format, written without torch, one tensor at a time (torch_format/zip_writer.py)."""
    from .zip_writer import archive_name, save_state_dict

    state, notes = torch_layout.to_state_dict(bundle)
    with atomic_output(path) as tmp:
        save_state_dict(state, tmp, archive_name(path))
    return notes


def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    return run_written_layer(read(path), path, layer, x)


def run_written_layer(written: Bundle, path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """Y [batch, seq, directions, hidden] of the layer that `layer` was written as, computed by torch."""
    torch = _torch()
    target = _find(written, path, layer)
    module = build_module(target, torch, torch_layout.nonlinearity(layer))
    compute = torch.float64 if target.dtype == np.float64 else torch.float32  # CPU kernels: no float16 RNNs
    module = module.to(compute)
    inputs = torch.from_numpy(np.ascontiguousarray(x)).to(compute)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "LSTM with projections is not supported with oneDNN" and the like
        if target.provenance.get("class_name", "").endswith("Cell"):
            h, steps = None, []
            for t in range(inputs.shape[1]):
                h = module(inputs[:, t], h)
                steps.append(h[0] if isinstance(h, tuple) else h)
            out = torch.stack(steps, dim=1)
        else:
            out, _ = module(inputs)
    batch, seq = x.shape[:2]
    return out.numpy().reshape(batch, seq, target.num_directions, target.hidden_size)


def build_module(layer: RecurrentLayer, torch, nonlinearity: str = "tanh"):
    """A fresh torch module holding `layer` alone (batch_first; a cell module for cell layers)."""
    nn = torch.nn
    cell_style = layer.provenance.get("class_name", "").endswith("Cell")
    kwargs = {"bias": layer.has_bias}
    if layer.cell == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    if cell_style:
        cls = getattr(nn, torch_layout.CELL_CLASS[layer.cell][3:])
    else:
        cls = getattr(nn, torch_layout.MODULE_CLASS[layer.cell][3:])
        kwargs.update(batch_first=True, bidirectional=layer.num_directions == 2)
        if layer.proj_size:
            kwargs["proj_size"] = layer.proj_size
    dtype = torch.from_numpy(np.zeros(0, layer.dtype)).dtype
    module = cls(layer.input_size, layer.units, dtype=dtype, **kwargs)
    params = torch_layout.layer_params(layer, 0, cell_style)
    module.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in params.items()}, strict=True)
    return module


def _find(written: Bundle, path: Path, layer: RecurrentLayer) -> RecurrentLayer:
    names = {l.name: l for l in written.layers}
    for name in torch_layout.written_names(layer):
        if name in names:
            return names[name]
    known = ", ".join(names) or "none"
    raise FormatError(f"{path} has no module for layer {layer.name!r} (looked for "
                      f"{' or '.join(torch_layout.written_names(layer))}; found {known}).")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
