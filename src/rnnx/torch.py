"""Load weights from any file rnnx reads straight into a live PyTorch module.

    import rnnx.torch
    model = MyModel()                                   # has nn.LSTM / nn.GRU / nn.RNN / *Cell children
    rnnx.torch.load_state_dict(model, "keras_model.h5")  # by order of appearance
    rnnx.torch.load_state_dict(model, "ckpt.pt", by_name=True)

The recurrent submodules of `module` (in `named_modules()` order; each layer of a stacked
module counts once) receive the recurrent layers of the file (in file order), or, with
`by_name=True`, the layer whose name matches the submodule the way `rnnx convert` names
it: `encoder.rnn.l1` for layer 1 of module `encoder.rnn` read from a PyTorch file, the
layer name made an identifier (`lstm_1`) for other sources. Every pair is checked (cell
kind, directions, bias, projection, shapes, what PyTorch cannot express) before any
parameter is touched; then the tensors are copied in (cast to the module's dtype).
Non-recurrent layers are not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canonical import Bundle, RecurrentLayer
from .errors import UnsupportedError, UsageError
from .formats.torch_format import layout as torch_layout

__all__ = ["load_state_dict"]


@dataclass
class _Slot:
    name: str  # module path in the model ("" for the model itself)
    module: object
    index: int | None  # stack index, None for a cell module

    @property
    def label(self) -> str:
        where = repr(self.name) if self.name else "the model itself"
        return where if self.index is None else f"{where} layer {self.index}"


def load_state_dict(module, source, by_name: bool = False) -> list[tuple[str, str]]:
    """Copy the recurrent weights of `source` (a path or a Bundle) into `module`.

    Returns (submodule slot, source layer name) pairs, e.g. ("encoder.rnn.l0", "lstm_1").
    Raises UsageError when the layers do not fit the module (nothing is changed then) and
    UnsupportedError for a layer PyTorch cannot express (hard_sigmoid gates, reset-before GRU...).
    """
    import torch

    from .api import load

    bundle = source if isinstance(source, Bundle) else load(source)
    layers = bundle.layers
    for layer in layers:
        reason = torch_layout.refusal(layer)
        if reason:
            raise UnsupportedError(reason)
    slots = _slots(module, torch)
    pairs = _match_by_name(slots, layers) if by_name else _match_by_order(slots, layers)
    planned = [(slot, layer, _check(slot, layer, torch)) for slot, layer in pairs]
    with torch.no_grad():
        for slot, _, params in planned:
            for key, array in params.items():
                getattr(slot.module, key).copy_(torch.from_numpy(np.array(array, copy=True)))
    return [(_slot_name(slot), layer.name) for slot, layer, _ in planned]


def _slots(module, torch) -> list[_Slot]:
    nn = torch.nn
    slots = []
    for name, sub in module.named_modules():
        if isinstance(sub, nn.RNNBase):
            slots.extend(_Slot(name, sub, k) for k in range(sub.num_layers))
        elif isinstance(sub, nn.RNNCellBase):
            slots.append(_Slot(name, sub, None))
    if not slots:
        raise UsageError(f"{type(module).__name__} has no nn.LSTM, nn.GRU, nn.RNN or cell submodule to load into.")
    return slots


def _match_by_order(slots, layers):
    if len(slots) != len(layers):
        raise UsageError(
            f"The module has {len(slots)} recurrent layer(s) ({', '.join(_slot_name(s) for s in slots)}) but the "
            f"file has {len(layers)} ({', '.join(l.name for l in layers) or 'none'}); pass by_name=True to match "
            f"by name, or convert one layer with --layer.")
    return list(zip(slots, layers))


def _match_by_name(slots, layers):
    by_key = {(s.name, s.index): s for s in slots}
    pairs = []
    for layer in layers:
        slot = next((by_key[k] for k in _wanted_keys(layer) if k in by_key), None)
        if slot is None:
            raise UsageError(
                f"No submodule matches layer {layer.name!r} (looked for "
                f"{' or '.join(_key_name(k) for k in _wanted_keys(layer))}); the module's recurrent layers are: "
                f"{', '.join(_slot_name(s) for s in slots)}.")
        pairs.append((slot, layer))
    return pairs


def _wanted_keys(layer: RecurrentLayer) -> list[tuple[str, int | None]]:
    p = layer.provenance
    keys = []
    if torch_layout.is_torch_layer(layer):
        keys.append((p["module"], p.get("stack_index")))
    stacked = torch_layout.stacked_key(layer.name)  # `enc.rnn.l0` from a PyTorch file, through other formats
    if stacked:
        keys.append(stacked)
    ident = torch_layout.identifier(layer.name)
    return keys + [(ident, 0), (ident, None)]


def _check(slot: _Slot, layer: RecurrentLayer, torch) -> dict[str, np.ndarray]:
    """The parameters to copy for this pair, after checking the layer fits the submodule."""
    sub, nn = slot.module, torch.nn
    cell_style = slot.index is None
    kinds = {"lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell), "rnn": (nn.RNN, nn.RNNCell)}
    problem = None
    if not isinstance(sub, kinds[layer.cell]):
        problem = f"it is a {layer.cell.upper()} layer and the submodule is {type(sub).__name__}"
    elif not cell_style and (2 if sub.bidirectional else 1) != layer.num_directions:
        problem = f"it has {layer.num_directions} direction(s), the submodule {2 if sub.bidirectional else 1}"
    elif cell_style and layer.num_directions != 1:
        problem = "it is bidirectional and a cell module has one direction"
    elif bool(sub.bias) != layer.has_bias:
        problem = "the submodule " + ("has biases and the layer none" if sub.bias else "has no biases")
    elif (getattr(sub, "proj_size", 0) or None) != layer.proj_size:
        problem = f"proj_size is {layer.proj_size or 0} in the file and {getattr(sub, 'proj_size', 0)} in the submodule"
    elif layer.cell == "rnn" and sub.nonlinearity != torch_layout.nonlinearity(layer):
        problem = f"it uses {torch_layout.nonlinearity(layer)} and the submodule {sub.nonlinearity}"
    params = torch_layout.layer_params(layer, slot.index or 0, cell_style)
    if problem is None:
        for key, array in params.items():
            have = getattr(sub, key, None)
            if have is None or tuple(have.shape) != array.shape:
                shape = None if have is None else tuple(have.shape)
                problem = f"{key} is {array.shape} in the file and {shape} in the submodule"
                break
    if problem:
        raise UsageError(f"Layer {layer.name!r} does not fit {slot.label}: {problem}. "
                         f"The file's layer is {_constructor(layer, cell_style)}.")
    return params


def _constructor(layer: RecurrentLayer, cell_style: bool) -> str:
    classes = torch_layout.CELL_CLASS if cell_style else torch_layout.MODULE_CLASS
    return torch_layout.constructor(classes[layer.cell], layer.input_size, layer.units, bias=layer.has_bias,
                                    bidirectional=layer.num_directions == 2, proj_size=layer.proj_size or 0,
                                    nonlinearity=torch_layout.nonlinearity(layer))


def _slot_name(slot: _Slot) -> str:
    return _key_name((slot.name, slot.index))


def _key_name(key) -> str:
    name, index = key
    if index is None:
        return name or "(model)"
    return f"{name}.l{index}" if name else f"l{index}"
