"""LSTM, GRU, SimpleRNN, CuDNNLSTM, CuDNNGRU, RNN(cell) and Bidirectional as rnnx.torch_nn.KerasRecurrent.

The weights come canonical from the Keras reader (CuDNN kernels already untangled; gate blocks
in cuDNN order, which is PyTorch's). The cell runs in nn.LSTM / nn.GRU / nn.RNN (FastLSTM /
FastGRU) where those compute exactly what the layer does: sigmoid / tanh gates, a reset-after
GRU, a tanh or relu SimpleRNN, and no mask reaching the layer. Anything else (Keras 2
hard_sigmoid, reset-before GRUs, masks as lengths) runs in torch_nn.RecurrentLoop. Around the
cell KerasRecurrent does what Keras does, as the ONNX backend does (to_onnx/layers/recurrent.py):
a mask becomes per-row lengths (exact for right-padded batches), go_backwards, return_sequences,
return_state, merge modes, initial_state, stateful states carried between calls, time_major.

`RNN(LSTMCell / GRUCell / SimpleRNNCell)` is the layer of its cell (also inside Bidirectional);
`RNN(StackedRNNCells)` is one KerasRecurrent per cell, the canonical layer "<rnn>/<cell name>", each
reading the whole sequence of the one before, as the ONNX backend chains its nodes.
"""

from __future__ import annotations

import numpy as np

from ....canonical.activations import RELU, SIGMOID, TANH
from ....canonical.model import DEFAULT_ACTIVATIONS
from ....errors import UnsupportedError
from ...to_onnx.layers.recurrent import RECURRENT_CLASSES
from ...to_onnx.layers.recurrent import _cell_call as cell_call  # noqa: PLC2701  (one reading of RNN(cell))
from ...to_onnx.layers.recurrent import _STATES_OF_CELL as STATES_OF_CELL  # noqa: PLC2701
from ..program import Program, Value, literal, py
from ..registry import converter

WRAPPER_DEFAULTS = {"directions": 1, "go_backwards": False, "return_sequences": False, "return_state": False,
                    "merge_mode": "concat", "zero_output_for_mask": False, "stateful": False, "time_major": False}
FAST_ACTIVATIONS = {"lstm": ((SIGMOID, TANH, TANH),), "gru": ((SIGMOID, TANH),), "rnn": ((TANH,), (RELU,))}


@converter(*RECURRENT_CLASSES)
def recurrent(prog: Program, call, inputs: list[Value]) -> list[Value]:
    return _layer(prog, call, call.config, inputs, directions=1, merge_mode="concat")


@converter("RNN")
def rnn(prog: Program, call, inputs: list[Value]) -> list[Value]:
    """RNN(cell): a built-in cell is its layer; StackedRNNCells is a chain of layers, one per cell."""
    cell = call.config.get("cell") or {}
    if cell.get("class_name") == "StackedRNNCells":
        return _stacked(prog, call, inputs, (cell.get("config") or {}).get("cells") or [])
    return recurrent(prog, cell_call(call), inputs)


def _stacked(prog: Program, call, inputs: list[Value], cells: list) -> list[Value]:
    """RNN(StackedRNNCells([...])): cell k reads the whole output sequence of cell k-1 (in input time order,
    zeros over the padding, which the next cell skips as it gets the same mask), which is what Keras computes
    step by step; the last cell gives the RNN's outputs. return_state: every cell's states in order."""
    if not cells:
        raise UnsupportedError(f"Layer {call.name!r} is an RNN around an empty StackedRNNCells.")
    given = inputs[1:]
    counts = [STATES_OF_CELL.get(c.get("class_name"), 1) if isinstance(c, dict) else 1 for c in cells]
    if given and len(given) != sum(counts):
        raise UnsupportedError(f"Layer {call.name!r} (RNN) is called with {len(given)} initial state tensors; its "
                               f"{len(cells)} stacked cells have {sum(counts)}.")
    x, states, start = inputs[0], [], 0
    for k, cell in enumerate(cells):
        cell_name = (cell.get("config") or {}).get("name") if isinstance(cell, dict) else None
        sub = cell_call(call, cell, f"{call.name}/{cell_name or k}")
        last = k == len(cells) - 1
        prog.comment(f"cell {k + 1} of {len(cells)}: {literal(sub.name)} (" + (
            "its outputs are the RNN's)" if last else "its whole sequence feeds the next cell)"))
        # an inner cell returns its sequence in input time order (go_backwards only runs it reversed)
        overrides = {} if last else {"return_sequences": True, "keras_order": False,
                                     "zero_output_for_mask": True if x.mask is not None else None}
        outputs = _layer(prog, sub, sub.config, [x, *given[start:start + counts[k]]], directions=1,
                         merge_mode="concat", **overrides)
        start += counts[k]
        x = outputs[0]
        states += outputs[1:]
    return [x, *states]


@converter("Bidirectional")
def bidirectional(prog: Program, call, inputs: list[Value]) -> list[Value]:
    inner = call.inner()
    if inner.class_name == "RNN":
        if (inner.config.get("cell") or {}).get("class_name") == "StackedRNNCells":
            raise UnsupportedError(f"Layer {call.name!r} is a Bidirectional around an RNN(StackedRNNCells), which "
                                   f"rnnx's PyTorch model export does not handle.")
        inner = cell_call(inner)
    if inner.class_name not in RECURRENT_CLASSES + ("RNN",):
        raise UnsupportedError(f"Layer {call.name!r} is a Bidirectional around a {inner.class_name}, which rnnx's "
                               f"PyTorch model export does not handle.")
    if inner.option("go_backwards", False):
        raise UnsupportedError(f"Layer {call.name!r}: a Bidirectional whose forward layer has go_backwards=True is "
                               f"not handled by rnnx's PyTorch model export.")
    mode = call.config.get("merge_mode", "concat")
    if mode not in ("concat", "sum", "mul", "ave", None):
        raise UnsupportedError(f"Layer {call.name!r} (Bidirectional) has merge_mode {mode!r}; rnnx knows concat, "
                               f"sum, mul, ave and None.")
    return _layer(prog, call, inner.config, inputs, directions=2, merge_mode=mode)


def _layer(prog: Program, call, config: dict, inputs: list[Value], directions: int, merge_mode,
           return_sequences: bool | None = None, keras_order: bool = True,
           zero_output_for_mask: bool | None = None) -> list[Value]:
    """The KerasRecurrent call of one layer. The keyword overrides serve a stacked cell that feeds the next:
    its sequence whatever the config says, in input time order (keras_order=False: go_backwards runs the cell
    reversed but does not reverse what it returns), zeros over the padding."""
    time_major = bool(config.get("time_major", False))
    if time_major and inputs[0].mask is not None:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) is time-major and masked; rnnx's PyTorch "
                               f"model export handles masks on batch-major layers.")
    sequences = bool(config.get("return_sequences", False)) if return_sequences is None else return_sequences
    layer = prog.ctx.recurrent(call)
    if layer.num_directions != directions:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) was read with {layer.num_directions} "
                               f"direction(s); its config needs {directions}.")
    x, given = inputs[0], inputs[1:]
    names = 2 if layer.cell == "lstm" else 1
    if given and len(given) != directions * names:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) is called with {len(given)} initial state "
                               f"tensors; rnnx expected {directions * names}.")
    go_backwards = bool(config.get("go_backwards", False))
    direction = "bidirectional" if directions == 2 else ("reverse" if go_backwards else "forward")
    attr = prog.attribute(call)
    if attr is None:
        class_name, args, kwargs, params = core_module(layer, direction, fast=is_fast(layer) and x.mask is None)
        rnn = construction(class_name, args, kwargs)
        stateful = bool(config.get("stateful", False))
        zero_padding = bool(config.get("zero_output_for_mask", False)) if zero_output_for_mask is None \
            else zero_output_for_mask
        options = {"directions": directions, "go_backwards": go_backwards and keras_order,
                   "return_sequences": sequences,
                   "return_state": bool(config.get("return_state", False)), "merge_mode": merge_mode,
                   "zero_output_for_mask": zero_padding, "stateful": stateful, "time_major": time_major}
        shown = "".join(f", {k}={v!r}" for k, v in options.items() if v != WRAPPER_DEFAULTS[k])
        wrapper = f"rnnx_nn.KerasRecurrent({rnn}, {layer.cell!r}{shown})"
        attr = prog.module(call, wrapper, {f"rnn.{k}": v for k, v in params.items()})
        if stateful:
            prog.stateful.append(attr)
    elif x.mask is not None and f"{attr}.rnn.weight_ih" not in prog.state:
        raise UnsupportedError(f"Layer {call.name!r} is called again with a mask after a call without one; rnnx's "
                               f"PyTorch model export handles a shared recurrent layer called alike each time.")
    states = f"[{', '.join(v.var for v in given)}]" if given else "None"
    count = _output_count(config, directions, merge_mode, names)
    targets = [prog.identifier(call.scope if k == 0 else f"{call.scope}_{k}") for k in range(count)]
    lhs = f"{targets[0]} = " if count == 1 else f"{', '.join(targets)} = "
    call_text = f"self.{attr}({x.var}, {x.mask or 'None'}, {states})"
    prog.emit(lhs + call_text + ("[0]" if count == 1 else ""))
    n_main = 2 if merge_mode is None and directions == 2 else 1
    outputs = [Value(t, 3 if sequences else 2, x.mask if sequences else None) for t in targets[:n_main]]
    return outputs + [Value(t, 2) for t in targets[n_main:]]


def _output_count(config: dict, directions: int, merge_mode, names: int) -> int:
    main = 2 if directions == 2 and merge_mode is None else 1
    return main + (directions * names if config.get("return_state", False) else 0)


def is_fast(layer) -> bool:
    """Whether nn.LSTM / nn.GRU / nn.RNN compute exactly this layer (without lengths)."""
    if layer.clip is not None or layer.input_forget or layer.has_peepholes or layer.proj_size is not None:
        return False
    if layer.cell == "gru" and not layer.reset_after:
        return False
    return tuple(layer.activations) in FAST_ACTIVATIONS[layer.cell]


def core_module(layer, direction: str, fast: bool) -> tuple[str, list, dict, dict]:
    """The rnnx.torch_nn module computing canonical `layer`'s cell: class name, constructor arguments,
    keyword arguments and its parameters by state-dict key. Shared with rnnx.onnx2torch."""
    return _fast_module(layer, direction) if fast else _loop_module(layer, direction)


def construction(class_name: str, args: list, kwargs: dict) -> str:
    return f"rnnx_nn.{class_name}({', '.join([*map(py, args), *(f'{k}={py(v)}' for k, v in kwargs.items())])})"


def _biases(layer, d) -> tuple[np.ndarray, np.ndarray]:
    zeros = np.zeros(d.W.shape[0], layer.dtype)
    return (zeros if d.b_w is None else d.b_w), (zeros if d.b_r is None else d.b_r)


def _fast_module(layer, direction: str) -> tuple[str, list, dict, dict]:
    args = [layer.input_size, layer.units] + ([] if direction == "forward" else [direction])
    if layer.cell == "lstm":
        class_name, kwargs, inner = "FastLSTM", {}, "lstm"
    else:
        class_name, inner = "FastGRU", "rnn"
        args = [layer.cell, *args]
        kwargs = {"nonlinearity": "relu"} if layer.activations[0] == RELU else {}
    params = {}
    for k, d in enumerate(layer.directions):
        suffix = "_l0_reverse" if k == 1 else "_l0"
        b_ih, b_hh = _biases(layer, d)
        params |= {f"{inner}.weight_ih{suffix}": d.W, f"{inner}.weight_hh{suffix}": d.R,
                   f"{inner}.bias_ih{suffix}": b_ih, f"{inner}.bias_hh{suffix}": b_hh}
    return class_name, args, kwargs, params


def _loop_module(layer, direction: str) -> tuple[str, list, dict, dict]:
    acts = layer.activations
    args = [layer.cell, layer.input_size, layer.units] + ([] if direction == "forward" else [direction])
    kwargs = {} if tuple(acts) == DEFAULT_ACTIVATIONS[layer.cell] else {"activations": [a.name for a in acts]}
    if any(a.alpha is not None or a.beta is not None for a in acts):
        kwargs |= {"alphas": [float(a.alpha or 0.0) for a in acts], "betas": [float(a.beta or 0.0) for a in acts]}
    if layer.clip is not None:
        kwargs["clip"] = float(layer.clip)
    if layer.input_forget:
        kwargs["input_forget"] = True
    if layer.has_peepholes:
        kwargs["peepholes"] = True
    if layer.cell == "gru" and not layer.reset_after:
        kwargs["reset_after"] = False
    biases = [_biases(layer, d) for d in layer.directions]
    params = {"weight_ih": np.stack([d.W for d in layer.directions]),
              "weight_hh": np.stack([d.R for d in layer.directions]),
              "bias_ih": np.stack([b[0] for b in biases]), "bias_hh": np.stack([b[1] for b in biases]),
              "peephole": np.stack([d.P for d in layer.directions]) if layer.has_peepholes
              else np.zeros((layer.num_directions, 0), layer.dtype)}
    return "RecurrentLoop", args, kwargs, params
