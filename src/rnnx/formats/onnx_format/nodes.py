"""Canonical recurrent layers <-> ONNX LSTM / GRU / RNN nodes: the node-emission API.

Used by the ONNX writer (`onnx_model`) and by the whole-model exporter (`rnnx.graph`).
Everything here is pure numpy + onnx.helper; no runtime is needed.

Arrays and attributes
    onnx_weights(layer) -> OnnxWeights(W, R, B, P)
        W [D, G*u, in], R [D, G*u, hidden], B [D, 2*G*u] = [Wb ‖ Rb] (None when the layer has
        no bias), P [D, 3u] peepholes in ONNX order i, o, f (None without peepholes).
        Gate blocks in ONNX order (LSTM i, o, f, c; GRU z, r, h), reordered with
        `gates.reorder`. A layer with only one bias gets Rb = 0.
    onnx_attributes(layer) -> dict
        hidden_size, direction, linear_before_reset (GRU), activations with
        activation_alpha / activation_beta (only when they differ from the defaults; values
        listed in activation order for the activations that take them, which is how
        onnxruntime consumes them), clip, input_forget. Ready for `onnx.helper.make_node`.
    layer_from_onnx(name, op_type, W, R, B, P, attributes, provenance) -> RecurrentLayer
        The inverse (the ONNX reader uses it): B is split into b_w and b_r, both kept, so
        ONNX -> canonical -> ONNX is exact; float32 attribute values are read back as the
        constants they stand for (0.2, 1/6); direction="reverse" gives options["go_backwards"].
    check_expressible(layer)
        UnsupportedError when no ONNX operator can hold the layer (only an LSTM projection).

Emitting a node
    emit_layer(layer, x, prefix, opset=14, *, sequence_lens=None, initial_h=None,
               initial_c=None, batch_first=False, node_name=None, outputs=None,
               reverse=False) -> EmittedLayer
        One LSTM / GRU / RNN node (never a Loop), layout 0, plus its weight initializers
        named f"{prefix}_W", f"{prefix}_R", f"{prefix}_B", f"{prefix}_P". `x` is the name
        of the input tensor, time-major [seq, batch, in]; with batch_first=True it is
        [batch, seq, in] and a Transpose is emitted in front (onnxruntime refuses layout=1).
        sequence_lens ([batch] int32), initial_h / initial_c ([D, batch, hidden]) are tensor
        names or None. The node is named `node_name` (default: layer.name): `rnnx verify`
        finds a layer in an ONNX file by node name, so keep it equal to the layer name.
        EmittedLayer.Y is [seq, D, batch, hidden], Y_h [D, batch, hidden], Y_c [D, batch, u]
        (LSTM only, else None), all named after `prefix` unless `outputs` = (Y, Y_h, Y_c)
        names them; EmittedLayer.node is the recurrent node itself. reverse=True writes
        direction="reverse" (a one-direction layer reading the sequence from its end, e.g.
        Keras go_backwards; ONNX stores Y[t] at input step t). Raises UnsupportedError for
        what ONNX cannot hold (an LSTM projection) and UsageError for an opset outside
        MIN_OPSET..onnx.defs.onnx_opset_version().
    sequence_output(Y, prefix, batch_first, output=None) -> Emitted
        Y [seq, D, batch, hidden] -> [batch, seq, D*hidden] (batch_first) or
        [seq, batch, D*hidden]: the directions concatenated forward first, as a Keras
        Bidirectional(merge_mode="concat") or a PyTorch module returns them.
    default_state(name, shape_source, directions, size, dtype, prefix, batch_axis, opset) -> Emitted
        An optional graph input: a zero initializer [D, 1, size] named `name` (listed as a graph
        input by the caller, so a user may feed it) expanded to [D, batch, size] with the batch
        taken from `shape_source` (axis `batch_axis`). Needs Expand (opset >= 8).

Every emitted name starts with `prefix`, so several layers can share one graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...canonical import gates
from ...canonical.activations import Activation
from ...canonical.model import ACTIVATION_COUNT, DEFAULT_ACTIVATIONS, Direction, RecurrentLayer
from ...errors import FormatError, UnsupportedError, UsageError
from ...lazy import derived, joined, undo

DEFAULT_OPSET = 14
MIN_OPSET = 7  # LSTM-7 / GRU-7 / RNN-7: the forms every runtime knows
MIN_OPSET_OPTIONAL_STATES = 8  # Expand
# Lazy weights read by parts (formats/onnx_format/model.py): origin (BY_DIRECTION, parts) means the
# tensor is np.stack(parts), one per direction; (BY_HALF, (Wb, Rb)): a direction's bias is their concatenation.
BY_DIRECTION, BY_HALF = "onnx directions", "onnx bias halves"

OP_TYPE = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
CELL_OF_OP = {v: k for k, v in OP_TYPE.items()}
ONNX_GATES = {"lstm": gates.LSTM_ONNX, "gru": gates.GRU_ONNX, "rnn": gates.RNN_CANONICAL}
ONNX_DEFAULT_ACTIVATIONS = {  # the operator spec's defaults, per direction
    "lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh"), "rnn": ("Tanh",)}

# How many of activation_alpha / activation_beta each activation consumes, and the value
# the standalone ONNX operator of the same name defaults to (None: there is no default).
_PARAMETERS = {
    "HardSigmoid": ((0.2,), (0.5,)),
    "Affine": ((None,), (None,)),
    "ScaledTanh": ((None,), (None,)),
    "LeakyRelu": ((0.01,), ()),
    "ThresholdedRelu": ((1.0,), ()),
    "Elu": ((1.0,), ()),
}
# Exact values a float32 attribute stands for (0.2 is stored as 0.2000000030).
_KNOWN_FLOATS = (0.0, 0.5, 0.2, 1.0 / 6.0, 1.0, 0.01, 0.1, 0.3, 3.0, 6.0)

ONNX_DTYPES = {np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float32): TensorProto.FLOAT,
               np.dtype(np.float64): TensorProto.DOUBLE}


@dataclass(frozen=True)
class OnnxWeights:
    """The tensors of one ONNX recurrent node, all directions stacked on axis 0."""

    W: np.ndarray  # [D, G*u, in]
    R: np.ndarray  # [D, G*u, hidden]
    B: np.ndarray | None = None  # [D, 2*G*u] = [Wb ‖ Rb]
    P: np.ndarray | None = None  # [D, 3u], order i, o, f


@dataclass
class Emitted:
    """Nodes and initializers to add to a graph, and the name of the tensor they produce."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    output: str = ""


@dataclass
class EmittedLayer:
    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    Y: str  # [seq, D, batch, hidden]
    Y_h: str  # [D, batch, hidden]
    Y_c: str | None  # [D, batch, u], LSTM only
    node: onnx.NodeProto | None = None  # the recurrent node itself (also in `nodes`)


# --- canonical -> ONNX arrays and attributes ------------------------------------------
def check_expressible(layer: RecurrentLayer) -> None:
    """Raise UnsupportedError when no ONNX recurrent operator can hold `layer`."""
    if layer.proj_size is not None:
        raise UnsupportedError(
            f"Layer {layer.name!r} is an LSTM with a projection (PyTorch proj_size={layer.proj_size}); "
            f"the ONNX LSTM operator has none. Convert it to PyTorch (.pt) or .rnnx instead.")


def onnx_weights(layer: RecurrentLayer) -> OnnxWeights:
    """W, R, B, P of `layer` in ONNX layout (see the module docstring). When the layer's tensors are
    lazy (rnnx.lazy) so are these: each is computed from its own canonical tensors when read."""
    check_expressible(layer)
    order = ONNX_GATES[layer.cell]
    canonical = gates.CANONICAL_ORDER[layer.cell]
    dirs = layer.directions
    D, rows = len(dirs), dirs[0].W.shape[0]

    def stacked(key, src=canonical, dst=order):
        parts = tuple(getattr(d, key) for d in dirs)
        shape = (D, *parts[0].shape)
        # each direction's gate blocks in ONNX's order: views of the canonical tensors, written as they are
        return joined(parts, shape, layer.dtype, lambda *values: [
            gates.split_gates(np.asarray(v), src)[g] for v in values for g in dst])

    W, R = stacked("W"), stacked("R")
    B = None
    if layer.has_bias:
        zeros = np.zeros((D, rows), layer.dtype)
        b_w = stacked("b_w") if dirs[0].b_w is not None else zeros
        b_r = stacked("b_r") if dirs[0].b_r is not None else zeros
        B = derived((b_w, b_r), (D, 2 * rows), layer.dtype, lambda w, r: np.concatenate([w, r], axis=1),
                    together=True)  # the halves of one stored bias are read once
    P = stacked("P", gates.PEEPHOLE_CANONICAL, gates.PEEPHOLE_ONNX) if layer.has_peepholes else None
    return OnnxWeights(W, R, B, P)


def onnx_attributes(layer: RecurrentLayer) -> dict:
    """The node attributes that make an ONNX operator compute exactly what `layer` computes."""
    attrs: dict = {"hidden_size": layer.hidden_size}
    if layer.num_directions == 2:
        attrs["direction"] = "bidirectional"
    if layer.cell == "gru":
        attrs["linear_before_reset"] = 1 if layer.reset_after else 0
    names = [a.name for a in layer.activations]
    if tuple(names) != ONNX_DEFAULT_ACTIVATIONS[layer.cell] or any(
            a.alpha is not None or a.beta is not None for a in layer.activations):
        alphas, betas = [], []
        for act in layer.activations:
            takes_alpha, takes_beta = _PARAMETERS.get(act.name, ((), ()))
            if takes_alpha:
                alphas.append(_param(layer, act, act.alpha, takes_alpha[0], "alpha"))
            if takes_beta:
                betas.append(_param(layer, act, act.beta, takes_beta[0], "beta"))
        attrs["activations"] = names * layer.num_directions  # onnxruntime wants one set per direction
        if alphas:
            attrs["activation_alpha"] = alphas * layer.num_directions
        if betas:
            attrs["activation_beta"] = betas * layer.num_directions
    if layer.clip is not None:
        attrs["clip"] = float(layer.clip)
    if layer.input_forget:
        attrs["input_forget"] = 1
    return attrs


def _param(layer, act: Activation, value, default, which) -> float:
    if value is None:
        value = default
    if value is None:
        raise UnsupportedError(f"Layer {layer.name!r}: activation {act.name} has no {which} value.")
    return float(value)


# --- ONNX -> canonical ----------------------------------------------------------------
def layer_from_onnx(name: str, op_type: str, W: np.ndarray, R: np.ndarray, B: np.ndarray | None = None,
                    P: np.ndarray | None = None, attributes: dict | None = None,
                    provenance: dict | None = None, options: dict | None = None) -> RecurrentLayer:
    """The canonical layer an ONNX LSTM / GRU / RNN node with these constant tensors computes.

    `attributes` maps attribute names to plain Python values (strings decoded). A node with
    direction="reverse" becomes a one-direction layer with options["go_backwards"] = True (the
    cell is the same; only the order it reads the sequence in differs). Raises FormatError
    (inconsistent shapes) or UnsupportedError (activations rnnx cannot hold).
    """
    attributes = dict(attributes or {})
    cell = CELL_OF_OP[op_type]
    where = f"node {name!r} ({op_type})"
    direction = attributes.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise FormatError(f"{where}: unknown direction {direction!r}.")
    D = 2 if direction == "bidirectional" else 1
    options = dict(options or {})
    if direction == "reverse":  # the cell runs over the sequence from its end, as Keras go_backwards does
        options["go_backwards"] = True
    G = gates.gate_count(cell)
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D or W.shape[1] % G:
        raise FormatError(f"{where}: W {list(W.shape)} and R {list(R.shape)} do not fit {D} direction(s) "
                          f"of {G} gates.")
    u = W.shape[1] // G
    hidden = attributes.get("hidden_size", u)
    if hidden != u or R.shape[1:] != (G * u, u):
        raise FormatError(f"{where}: hidden_size {hidden}, W {list(W.shape)} and R {list(R.shape)} disagree.")
    if B is not None and B.shape != (D, 2 * G * u):
        raise FormatError(f"{where}: B has shape {list(B.shape)}, expected {[D, 2 * G * u]}.")
    if P is not None and (cell != "lstm" or P.shape != (D, 3 * u)):
        raise FormatError(f"{where}: P has shape {list(P.shape)}, expected {[D, 3 * u]}.")
    dtype = W.dtype
    if any(t is not None and t.dtype != dtype for t in (R, B, P)):
        raise FormatError(f"{where}: W, R, B and P have different element types.")

    order, canonical = ONNX_GATES[cell], gates.CANONICAL_ORDER[cell]

    def of_direction(T, k, half=None, src=order, dst=canonical):
        """Direction k of T [D, ...] in canonical gate order (B: its half 0 = Wb or 1 = Rb); lazy if T is,
        and then computed from just its own part of T when T is read by parts."""
        width = T.shape[1] // 2
        source, index = T, (k,)
        parts = undo(T, BY_DIRECTION)
        if parts is not None:
            source, index = parts[k], ()
        if half is not None:
            halves = undo(source, BY_HALF) if parts is not None else None
            if halves is not None:
                source = halves[half]
            else:
                index += (slice(half * width, (half + 1) * width),)

        def compute(t):
            rows = t[index] if index else t
            out = gates.reorder(rows, src, dst)
            return out if out.base is None and out is not t else out.copy()  # owns its values, holds no t

        return derived(source, T.shape[1:] if half is None else (width,), T.dtype, compute)

    directions = [
        Direction(W=of_direction(W, k), R=of_direction(R, k),
                  b_w=None if B is None else of_direction(B, k, 0), b_r=None if B is None else of_direction(B, k, 1),
                  P=None if P is None else of_direction(P, k, None, gates.PEEPHOLE_ONNX, gates.PEEPHOLE_CANONICAL))
        for k in range(D)]
    try:
        return RecurrentLayer(
            name=name, cell=cell, directions=directions,
            activations=_read_activations(where, cell, D, attributes),
            reset_after=bool(attributes.get("linear_before_reset", 0)) if cell == "gru" else True,
            clip=None if attributes.get("clip") is None else _exact_float(attributes["clip"]),
            input_forget=bool(attributes.get("input_forget", 0)),
            provenance=dict(provenance or {}), options=options)
    except ValueError as exc:
        raise FormatError(f"{where}: {exc}.") from None


def _read_activations(where: str, cell: str, D: int, attributes: dict) -> tuple[Activation, ...]:
    n = ACTIVATION_COUNT[cell]
    names = list(attributes.get("activations") or [])
    if not names:
        names = list(ONNX_DEFAULT_ACTIVATIONS[cell])
    elif cell == "rnn" and len(names) == 2 * D and D == 1:
        names = names[:1]  # RNN's spec default lists two (Tanh, Tanh) even for one direction
    if len(names) == n and D == 2:
        names = names * 2
    if len(names) != n * D:
        raise FormatError(f"{where}: {len(names)} activations listed, expected {n * D}.")
    alphas = iter(attributes.get("activation_alpha") or [])
    betas = iter(attributes.get("activation_beta") or [])
    acts = []
    for raw in names:
        # the spec spells names in CamelCase; some exporters write lower case
        name = next((k for k in _ALL_ACTIVATION_NAMES if k.lower() == str(raw).lower()), None)
        if name is None:
            raise UnsupportedError(f"{where}: activation {raw!r} is not one rnnx knows "
                                   f"({', '.join(_ALL_ACTIVATION_NAMES)}).")
        takes_alpha, takes_beta = _PARAMETERS.get(name, ((), ()))
        alpha = _exact_float(next(alphas, takes_alpha[0])) if takes_alpha else None
        beta = _exact_float(next(betas, takes_beta[0])) if takes_beta else None
        if (takes_alpha and alpha is None) or (takes_beta and beta is None):
            raise FormatError(f"{where}: activation {name} needs activation_alpha and activation_beta values.")
        acts.append(Activation(name, alpha, beta))
    if D == 2 and acts[:n] != acts[n:]:
        raise UnsupportedError(f"{where}: its two directions use different activations; rnnx's canonical "
                               f"form holds one set per layer.")
    if tuple(acts[:n]) == DEFAULT_ACTIVATIONS[cell]:
        return DEFAULT_ACTIVATIONS[cell]
    return tuple(acts[:n])


_ALL_ACTIVATION_NAMES = ("Sigmoid", "Tanh", "Relu", "HardSigmoid", "Affine", "LeakyRelu", "ThresholdedRelu",
                         "ScaledTanh", "Elu", "Softsign", "Softplus")


def _exact_float(value) -> float | None:
    """The number a float32 attribute stands for: 0.2 rather than 0.20000000298."""
    if value is None:
        return None
    f32 = np.float32(value)
    for known in _KNOWN_FLOATS:
        if np.float32(known) == f32:
            return known
    return float(str(f32)) if np.isfinite(f32) else float(f32)


# --- emitting nodes --------------------------------------------------------------------
def check_opset(opset: int) -> int:
    latest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= latest:
        raise UsageError(f"ONNX opset {opset!r} is not one rnnx writes; choose {MIN_OPSET} to {latest} "
                         f"(default {DEFAULT_OPSET}).")
    return opset


def emit_layer(layer: RecurrentLayer, x: str, prefix: str, opset: int = DEFAULT_OPSET, *,
               sequence_lens: str | None = None, initial_h: str | None = None, initial_c: str | None = None,
               batch_first: bool = False, node_name: str | None = None,
               outputs: tuple[str, str, str | None] | None = None, reverse: bool = False,
               tensor=None) -> EmittedLayer:
    """One ONNX recurrent node computing `layer` on tensor `x` (see the module docstring).

    `outputs` overrides the names of Y, Y_h, Y_c (default f"{prefix}_Y", ...). reverse=True
    (one-direction layers) writes direction="reverse": the node reads the sequence from its end
    and, as ONNX does, stores Y[t] at the input's time index t. `tensor(array, name)` makes the
    weight initializers (default numpy_helper.from_array; the ONNX writer passes one that streams
    each tensor to its data file as soon as it is computed).
    """
    check_opset(opset)
    tensor = tensor or _initializer
    weights = onnx_weights(layer)
    attrs = onnx_attributes(layer)
    if reverse:
        if layer.num_directions != 1:
            raise UsageError(f"Layer {layer.name!r} is bidirectional; reverse applies to one-direction layers.")
        attrs["direction"] = "reverse"
    nodes: list[onnx.NodeProto] = []
    if batch_first:
        nodes.append(helper.make_node("Transpose", [x], [f"{prefix}_X_time_major"], name=f"{prefix}_X_transpose",
                                      perm=[1, 0, 2]))
        x = f"{prefix}_X_time_major"
    inits = [tensor(weights.W, f"{prefix}_W"), tensor(weights.R, f"{prefix}_R")]
    inputs = [x, f"{prefix}_W", f"{prefix}_R", "", sequence_lens or "", initial_h or "", initial_c or "", ""]
    if weights.B is not None:
        inits.append(tensor(weights.B, f"{prefix}_B"))
        inputs[3] = f"{prefix}_B"
    if weights.P is not None:
        inits.append(tensor(weights.P, f"{prefix}_P"))
        inputs[7] = f"{prefix}_P"
    if layer.cell != "lstm":
        inputs = inputs[:6]  # GRU / RNN stop at initial_h
    while inputs and inputs[-1] == "":
        inputs.pop()  # trailing optional inputs are simply omitted
    names = outputs or (f"{prefix}_Y", f"{prefix}_Y_h", f"{prefix}_Y_c")
    outputs = list(names[:3] if layer.cell == "lstm" else names[:2])
    node = helper.make_node(OP_TYPE[layer.cell], inputs, outputs, name=node_name or layer.name, **attrs)
    node.doc_string = f"rnnx: layer {layer.name} ({layer.provenance.get('class_name', layer.kind)})"
    nodes.append(node)
    return EmittedLayer(nodes, inits, outputs[0], outputs[1], outputs[2] if layer.cell == "lstm" else None, node)


def _initializer(array, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def sequence_output(Y: str, prefix: str, batch_first: bool, output: str | None = None) -> Emitted:
    """Y [seq, D, batch, hidden] -> [batch, seq, D*hidden] or [seq, batch, D*hidden] named `output`."""
    output = output or f"{prefix}_Y_merged"
    perm = [2, 0, 1, 3] if batch_first else [0, 2, 1, 3]
    shape = numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{prefix}_Y_merge_shape")
    return Emitted(
        nodes=[helper.make_node("Transpose", [Y], [f"{prefix}_Y_transposed"], name=f"{prefix}_Y_transpose",
                                perm=perm),
               helper.make_node("Reshape", [f"{prefix}_Y_transposed", shape.name], [output],
                                name=f"{prefix}_Y_merge")],
        initializers=[shape], output=output)


def default_state(name: str, shape_source: str, directions: int, size: int, dtype: np.dtype, prefix: str,
                  batch_axis: int, opset: int) -> Emitted:
    """An optional state input `name`: zeros [D, 1, size] by default, expanded to [D, batch, size]."""
    if opset < MIN_OPSET_OPTIONAL_STATES:
        raise UsageError(f"Optional state inputs need ONNX opset {MIN_OPSET_OPTIONAL_STATES} or newer (Expand).")
    zeros = numpy_helper.from_array(np.zeros((directions, 1, size), dtype), name)
    index = numpy_helper.from_array(np.array([batch_axis], np.int64), f"{prefix}_batch_axis")
    outer = numpy_helper.from_array(np.array([directions], np.int64), f"{prefix}_state_D")
    inner = numpy_helper.from_array(np.array([size], np.int64), f"{prefix}_state_size")
    return Emitted(
        nodes=[
            helper.make_node("Shape", [shape_source], [f"{prefix}_input_shape"], name=f"{prefix}_input_shape"),
            helper.make_node("Gather", [f"{prefix}_input_shape", index.name], [f"{prefix}_batch"],
                             name=f"{prefix}_batch", axis=0),
            helper.make_node("Concat", [outer.name, f"{prefix}_batch", inner.name], [f"{prefix}_state_shape"],
                             name=f"{prefix}_state_shape", axis=0),
            helper.make_node("Expand", [name, f"{prefix}_state_shape"], [f"{prefix}_expanded"],
                             name=f"{prefix}_expand"),
        ],
        initializers=[zeros, index, outer, inner], output=f"{prefix}_expanded")


def onnx_dtype(dtype: np.dtype) -> int:
    return ONNX_DTYPES[np.dtype(dtype)]
