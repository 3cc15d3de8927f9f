"""Format "torch": state dicts and checkpoints written by torch.save (.pt, .pth, .bin, .ckpt, .tar).

Files are opened only with `torch.load(path, map_location="cpu", weights_only=True)`:
a checkpoint that needs arbitrary pickle code (a whole pickled model, a custom class)
is refused and nothing from it runs. Nested checkpoints (`{'epoch', 'model', 'optimizer'}`,
Lightning's `{'state_dict': ...}`) are searched for the dict holding the recurrent weights;
see torch_layout for how keys become layers. torch is imported only here, lazily.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..canonical import Bundle, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from ..io import atomic_output
from . import torch_layout
from .torch_layout import refusal  # noqa: F401  (the format protocol: refusal(layer))


def _torch():
    try:
        import torch
    except ModuleNotFoundError:
        raise UnsupportedError("Reading and writing .pt files needs PyTorch (pip install 'rnnx[torch]'); "
                               "without it, use .safetensors files.") from None
    return torch


def read(path: Path, **_options) -> Bundle:
    torch = _torch()
    import pickle

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise FormatError(
            f"{path} needs arbitrary pickle code to load{what}, which rnnx refuses to run. If you trust the "
            f"file, load it in PyTorch yourself and save model.state_dict() with torch.save.") from None
    except Exception as exc:  # torch raises RuntimeError, KeyError, EOFError... on broken files
        raise FormatError(f"{path} is not a readable PyTorch file ({_first_line(exc)}); "
                          f"it may be truncated or not written by torch.save.") from None
    if isinstance(loaded, torch.Tensor) or not isinstance(loaded, dict):
        raise FormatError(f"{path} holds a {type(loaded).__name__}, not a state dict; save "
                          f"model.state_dict() (a dict of tensors) with torch.save.")
    state, found_at = torch_layout.find_state_dict(loaded, lambda v: isinstance(v, torch.Tensor))
    state, stripped = torch_layout.strip_wrappers(state, in_checkpoint=bool(found_at))
    arrays, notes = _to_numpy(state, path, torch)
    source = {"format": "torch", "notes": notes}
    if found_at:
        source["checkpoint_key"] = found_at
    if stripped:
        source["stripped_prefix"] = stripped
    return Bundle(torch_layout.read_state_dict(arrays, path), source)


def _to_numpy(state: dict, path: Path, torch) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays, notes = {}, []
    for key, tensor in state.items():
        tensor = tensor.detach()
        if tensor.dtype == torch.bfloat16:
            if torch_layout.is_recurrent_key(key):
                raise FormatError(f"{path}: {key} is bfloat16, which rnnx does not hold; cast the model to "
                                  f"float32 (model.float()) and save it again.")
            notes.append(f"{key}: bfloat16 read as float32")
            tensor = tensor.float()
        if tensor.layout != torch.strided or tensor.is_quantized:
            notes.append(f"{key}: a {tensor.layout} / quantized tensor, not carried along")
            continue
        try:
            arrays[key] = tensor.contiguous().numpy()
        except (TypeError, RuntimeError) as exc:  # complex, meta-device, ... tensors
            if torch_layout.is_recurrent_key(key):
                raise FormatError(f"{path}: {key} cannot be read as a numpy array ({_first_line(exc)}).") from None
            notes.append(f"{key}: not carried along ({_first_line(exc)})")
    return arrays, notes


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    state, notes = torch_layout.to_state_dict(bundle)
    torch = _torch()
    tensors = {key: torch.from_numpy(np.array(array, copy=True)) for key, array in state.items()}
    with atomic_output(path) as tmp:
        torch.save(tensors, str(tmp))
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
