"""tf.contrib.cudnn_rnn's `opaque_kernel`: one flat cuDNN parameter buffer -> canonical layers.

The buffer holds, for every layer and direction in turn (layer 0 fw, layer 0 bw, layer 1
fw, ...), every weight matrix (cuDNN's linLayerID order: the input matrices of each gate,
(u, in) row-major, then the recurrent ones, (u, u)); after all of them, every bias
vector in the same order (input biases, then recurrent biases). Checked on the one real
file we have (a bidirectional one-layer CudnnLSTM, TF 1.8) against the canonical copies
saved beside it. cuDNN's gate order is rnnx's canonical one (LSTM i, f, c, o; GRU r, z, n)
and cuDNN keeps both biases, so the buffer maps onto canonical layers with no reorder.

The sizes (layers, units, input size, direction) are not in the buffer: they come from the
CudnnRNNParamsToCanonical op of the `.meta` graph, else from the canonical copies
(`rnn/multi_rnn_cell/cell_K/cudnn_compatible_lstm_cell/...` or
`stack_bidirectional_rnn/cell_K/bidirectional_rnn/{fw,bw}/...`). When the copies are in
the file they are read too, and each must equal its part of the buffer: that check reads the
buffer and the copies while the checkpoint is read. The layers' tensors are lazy when the
buffer is (rnnx.lazy): each is its slice of the buffer, which is read whole (its checksum
covers all of it) whenever one of them is.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ...canonical.activations import RELU, TANH
from ...canonical.model import Direction, RecurrentLayer
from ...errors import FormatError, UnsupportedError
from ...lazy import derived
from . import tf1_meta

# rnn_mode -> (canonical cell, matrices per gate side, class name, activations or None)
MODES = {
    "lstm": ("lstm", 4, "CudnnLSTM", None),
    "gru": ("gru", 3, "CudnnGRU", None),
    "rnn_tanh": ("rnn", 1, "CudnnRNNTanh", (TANH,)),
    "rnn_relu": ("rnn", 1, "CudnnRNNRelu", (RELU,)),
}
SCOPE_MODES = {"cudnn_lstm": "lstm", "cudnn_gru": "gru", "cudnn_rnn_tanh": "rnn_tanh", "cudnn_rnn_relu": "rnn_relu"}
COPY_MODES = {"lstm": "lstm", "gru": "gru"}
_CELL_K = re.compile(r"(?:^|/)cell_(\d+)/")
_KERNELS = ("kernel", "weights", "gates/kernel", "gates/weights")  # a copy's first kernel: rows = input + units
_BIASES = ("bias", "biases", "gates/bias", "gates/biases")


def layers(reader, scope: str, name: str, copies: list) -> list[RecurrentLayer]:
    where = reader.where
    sizes = _sizes(reader, scope, name, copies)
    num_layers, units, input_size, mode, bidirectional = sizes
    cell, n, class_name, activations = MODES[mode]
    D = 2 if bidirectional else 1
    buffer = reader.array(name)
    if buffer.ndim != 1:
        raise FormatError(f"{where}{name!r} has shape {buffer.shape}; a cuDNN opaque buffer is one flat vector.")
    inputs = [input_size if k == 0 else D * units for k in range(num_layers)]
    expected = sum(D * n * units * (width + units + 2) for width in inputs)
    if buffer.shape[0] != expected:
        raise FormatError(f"{where}{name!r} holds {buffer.shape[0]} values, but a {class_name} of {num_layers} "
                          f"layer(s), {units} units, input {input_size}, {D} direction(s) has {expected}; the "
                          f"sizes rnnx found for it do not fit.")
    parts = _layout(num_layers, D, n, units, inputs)
    out = _layers(parts, lambda start, shape: _part(buffer, start, shape), scope, name, cell, class_name,
                  activations)
    if copies:  # compared with views of the buffer read once, not with the lazy tensors (one read each)
        values = np.asarray(buffer)
        decoded = _layers(parts, lambda start, shape: values[start:start + math.prod(shape)].reshape(shape), scope,
                          name, cell, class_name, activations)
        _check_copies(reader, scope, decoded, copies, bidirectional)
    return out


def _layout(num_layers: int, D: int, n: int, units: int, inputs: list[int]) -> list[list[dict]]:
    """Per layer, per direction: where each canonical tensor lies in the buffer, {name: (start, shape)}."""
    pos = 0
    parts = [[{} for _ in range(D)] for _ in range(num_layers)]
    for k in range(num_layers):
        for d in range(D):
            for key, shape in (("W", (n * units, inputs[k])), ("R", (n * units, units))):
                parts[k][d][key] = (pos, shape)
                pos += math.prod(shape)
    for k in range(num_layers):
        for d in range(D):
            for key in ("b_w", "b_r"):
                parts[k][d][key] = (pos, (n * units,))
                pos += n * units
    return parts


def _part(buffer, start: int, shape: tuple):
    """The canonical tensor at `start` of the buffer: a copy of its slice (lazy when the buffer is)."""
    size = math.prod(shape)
    return derived(buffer, shape, buffer.dtype, lambda b: b[start:start + size].reshape(shape).copy())


def _layers(parts, part, scope, name, cell, class_name, activations) -> list[RecurrentLayer]:
    num_layers = len(parts)
    out = []
    for k, directions in enumerate(parts):
        layer_name = scope if num_layers == 1 else f"{scope}/cell_{k}"
        built = [Direction(**{key: part(*where) for key, where in places.items()}) for places in directions]
        out.append(RecurrentLayer(layer_name, cell, built, activations=activations, reset_after=True,
                                  provenance={"format": "tf1", "class_name": class_name, "scope": scope,
                                              "opaque_kernel": name, "stack_index": k,
                                              "num_layers": num_layers}))
    return out


def _sizes(reader, scope, name, copies):
    graphs = reader.graphs()
    facts = tf1_meta.cudnn_facts(graphs, [name], list(reader.variables)).get(name) if graphs else None
    where = reader.where
    if facts is not None:
        if facts.input_mode not in ("linear_input", "auto_select") or (
                facts.input_mode == "auto_select" and facts.input_size == facts.num_units):
            raise UnsupportedError(f"{where}{name!r} was built with input_mode {facts.input_mode!r} (no input "
                                   f"matrix); rnnx reads cuDNN layers with linear_input.")
        if facts.rnn_mode not in MODES:
            raise UnsupportedError(f"{where}{name!r} is a cuDNN {facts.rnn_mode!r} RNN; rnnx reads "
                                   f"{', '.join(MODES)}.")
        return (facts.num_layers, facts.num_units, facts.input_size, facts.rnn_mode,
                facts.direction == "bidirectional")
    if copies:
        first = min(copies, key=lambda c: c.scope)  # a layer-0 cell: cell_0 sorts first
        mode = COPY_MODES[first.kind.cell]
        stack = {int(m.group(1)) for c in copies if (m := _CELL_K.search(c.scope[len(scope):] + "/"))}
        kernel = next((first.names[k] for k in _KERNELS if k in first.names), None)
        bias = next((first.names[b] for b in _BIASES if b in first.names), None)
        if kernel is None or bias is None or len(reader.shape(bias)) != 1 or len(reader.shape(kernel)) != 2:
            raise FormatError(f"{where}the canonical copy {first.scope!r} beside {name!r} has no kernel and bias "
                              f"of the shapes a copy has, so the buffer's sizes are unknown.")
        units = reader.shape(bias)[0] // (4 if mode == "lstm" else 2)
        return (max(stack) + 1 if stack else 1, units, reader.shape(kernel)[0] - units, mode,
                any("/bw/" in c.scope for c in copies))
    guess = SCOPE_MODES.get(scope.rpartition("/")[2], "a cuDNN RNN")
    raise FormatError(f"{where}{name!r} ({guess}) is a cuDNN opaque buffer whose layer sizes are neither in a "
                      f".meta graph nor in canonical copies beside it; put the checkpoint's .meta file next to it.")


def _check_copies(reader, scope, layers_, copies, bidirectional):
    """Each canonical copy must equal its slice of the opaque buffer (biases compared summed where TF summed them)."""
    by_scope = {}
    for layer in reader.recurrent_layers(copies):
        by_scope[layer.name] = layer
    for k, layer in enumerate(layers_):
        want = (f"{scope}/stack_bidirectional_rnn/cell_{k}/bidirectional_rnn" if bidirectional
                else f"{scope}/rnn/multi_rnn_cell/cell_{k}")
        copy = by_scope.get(want)
        if copy is None or copy.num_directions != layer.num_directions or copy.cell != layer.cell:
            raise FormatError(f"{reader.where}the canonical copies of {scope!r} do not hold layer {k} as the opaque "
                              f"buffer does (found {', '.join(sorted(by_scope)) or 'none'}).")
        for d, (mine, theirs) in enumerate(zip(layer.directions, copy.directions)):
            pairs = {"W": (mine.W, theirs.W), "R": (mine.R, theirs.R)}
            if layer.cell == "gru":
                u = layer.units
                pairs["b_w"] = (np.concatenate([mine.fused_bias()[:2 * u], mine.b_w[2 * u:]]), theirs.b_w)
                pairs["b_r"] = (mine.b_r[2 * u:], theirs.b_r[2 * u:])
            else:
                pairs["b_w"] = (mine.fused_bias(), theirs.fused_bias())
            for key, (a, b) in pairs.items():
                if a.shape != b.shape or not np.array_equal(a, b):
                    diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
                    raise FormatError(
                        f"{reader.where}the opaque buffer of {scope!r} and its canonical copy {copy.name!r} disagree "
                        f"({key} of direction {d}, largest difference {diff:g}); the checkpoint is inconsistent.")
    reader.notes.append(f"{scope}: the cuDNN opaque buffer was decoded and equals its canonical copies "
                        f"({', '.join(sorted(by_scope))}), which are not listed again")
