"""What a TF1 `.meta` graph says about its recurrent cells, read without TensorFlow.

A `.meta` file is a serialized MetaGraphDef. rnnx decodes only the parts it needs with a
small protobuf wire-format reader: the nodes of the main graph and of every function in
its library (TF 2 control flow puts a `dynamic_rnn` loop body in a function), and of each
node its name, op, inputs and a few attributes. The facts found per cell, keyed by the
name of the cell's kernel variable:

- forget_bias: the constant added to the f gate (`Add(split:2, Const)` after the fused
  kernel's Split, or the `forget_bias` attribute of a BlockLSTM / LSTMBlockCell op);
- the activation applied to the candidate j (`split:1`);
- whether the cell clips its state or projection (TF clips the cell state c itself,
  which ONNX's and rnnx's `clip` of activation inputs does not express);
- the sizes of a CudnnRNN opaque buffer (the Const inputs of CudnnRNNParamsSize /
  CudnnRNNParamsToCanonical) and its rnn_mode / direction / input_mode.

Field numbers are TensorFlow's (tensorflow/core/protobuf/meta_graph.proto,
framework/graph.proto, node_def.proto, attr_value.proto, function.proto, tensor.proto);
tests compare them with TensorFlow's compiled descriptors.
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import FormatError

# message -> {field name: number}
FIELDS = {
    "MetaGraphDef": {"graph_def": 2},
    "GraphDef": {"node": 1, "library": 2},
    "FunctionDefLibrary": {"function": 1},
    "FunctionDef": {"signature": 1, "node_def": 3},
    "OpDef": {"name": 1},
    "NodeDef": {"name": 1, "op": 2, "input": 3, "attr": 5},
    "AttrValue": {"s": 2, "i": 3, "f": 4, "b": 5, "tensor": 8},
    "TensorProto": {"dtype": 1, "tensor_content": 4, "float_val": 5, "double_val": 6, "int_val": 7, "string_val": 8},
}
# protobuf map<string, AttrValue> entries
MAP_ENTRY = {"key": 1, "value": 2}

DT_FLOAT, DT_DOUBLE, DT_INT32 = 1, 2, 3
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

# Ops a variable's value passes through between the variable and the op that uses it.
_PASS_THROUGH = {"Identity", "Enter", "ReadVariableOp", "Switch", "RefSwitch", "RefEnter", "Snapshot"}
_VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
_ACTIVATION_OPS = {"Tanh": "Tanh", "Relu": "Relu", "Sigmoid": "Sigmoid"}


class _Truncated(Exception):
    pass


_UNDECODABLE = (_Truncated, UnicodeDecodeError, struct.error)


def _damaged(meta_path) -> FormatError:
    return FormatError(f"{meta_path}: the .meta graph is truncated or not a MetaGraphDef; "
                       f"remove it or pass --forget-bias to read the checkpoint without it.")


def _decoding(function):
    """Attributes are decoded when asked for: a damaged one is a FormatError naming the file."""
    @functools.wraps(function)
    def wrapper(graphs, *args, **kwargs):
        try:
            return function(graphs, *args, **kwargs)
        except _UNDECODABLE:
            raise _damaged(graphs.path) from None
    return wrapper


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Truncated
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf: bytes):
    """(field number, wire type, value) of each field of one message; value is an int or bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            if size > end - pos:
                raise _Truncated
            value, pos = buf[pos:pos + size], pos + size
        elif wire == FIXED32:
            if pos + 4 > end:
                raise _Truncated
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == FIXED64:
            if pos + 8 > end:
                raise _Truncated
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise _Truncated
        yield number, wire, value


def _blob(wire: int, value) -> bytes:
    """A length-delimited field's bytes; any other wire type where one is expected means a damaged file."""
    if wire != LENGTH:
        raise _Truncated
    return value


def _text(wire: int, value) -> str:
    return _blob(wire, value).decode("utf-8", "replace")


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    raw_attrs: list[bytes] = field(default_factory=list)

    def attr(self, key: str):
        """The decoded AttrValue `key` (float, int, bool, bytes or a TensorProto's first value), or None."""
        raw = self.raw_attr(key)
        return None if raw is None else _attr_value(raw)

    def raw_attr(self, key: str) -> bytes | None:
        for entry in self.raw_attrs:
            parts = {n: _blob(w, v) for n, w, v in fields(entry)}
            if parts.get(MAP_ENTRY["key"], b"").decode("utf-8", "replace") == key:
                return parts.get(MAP_ENTRY["value"], b"")
        return None

    def const_strings(self) -> list[str]:
        """The elements of a string Const (a Saver's tensor_names)."""
        raw = self.raw_attr("value")
        tensor = next((_blob(w, v) for n, w, v in fields(raw) if n == FIELDS["AttrValue"]["tensor"]), None) \
            if raw else None
        return _strings(tensor) if tensor is not None else []


def _attr_value(buf: bytes):
    A = FIELDS["AttrValue"]
    for number, wire, value in fields(buf):
        if number == A["f"] and wire == FIXED32:
            return struct.unpack("<f", value)[0]
        if number in (A["i"], A["b"]) and wire == VARINT:
            return value if number == A["i"] else bool(value)
        if number == A["s"]:
            return bytes(_blob(wire, value))
        if number == A["tensor"]:
            return _tensor_scalar(_blob(wire, value))
    return None


def _tensor_scalar(buf: bytes):
    """The first element of a numeric TensorProto (the Consts of a cell are scalars)."""
    T = FIELDS["TensorProto"]
    dtype, content, values = DT_FLOAT, None, []
    for number, wire, value in fields(buf):
        if number == T["dtype"] and wire == VARINT:
            dtype = value
        elif number == T["tensor_content"]:
            content = _blob(wire, value)
        elif number == T["float_val"]:
            values += list(struct.unpack(f"<{len(value) // 4}f", value[:len(value) // 4 * 4])) \
                if wire == LENGTH else [struct.unpack("<f", value)[0]]
        elif number == T["double_val"]:
            values += list(struct.unpack(f"<{len(value) // 8}d", value[:len(value) // 8 * 8])) \
                if wire == LENGTH else [struct.unpack("<d", value)[0]]
        elif number == T["int_val"]:
            values += _packed_varints(value) if wire == LENGTH else [value] if wire == VARINT else []
    if content:
        fmt = {DT_FLOAT: "<f", DT_DOUBLE: "<d", DT_INT32: "<i"}.get(dtype)
        size = struct.calcsize(fmt) if fmt else 0
        return struct.unpack(fmt, content[:size])[0] if fmt and len(content) >= size else None
    return values[0] if values else None


def _strings(buf: bytes) -> list[str]:
    """The string_val elements of a DT_STRING TensorProto."""
    number = FIELDS["TensorProto"]["string_val"]
    return [bytes(v).decode("utf-8", "replace") for n, w, v in fields(buf) if n == number and w == LENGTH]


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _node(buf: bytes) -> Node:
    N = FIELDS["NodeDef"]
    name, op, inputs, attrs = "", "", [], []
    for number, wire, value in fields(buf):
        if number == N["name"]:
            name = _text(wire, value)
        elif number == N["op"]:
            op = _text(wire, value)
        elif number == N["input"]:
            inputs.append(_text(wire, value))
        elif number == N["attr"]:
            attrs.append(_blob(wire, value))
    return Node(name, op, inputs, attrs)


def read_graphs(meta_path: Path) -> list[dict[str, Node]]:
    """The main graph and every library function, each as {node name: Node}."""
    try:
        data = Path(meta_path).read_bytes()
        graph_def = b"".join(v for n, w, v in fields(data) if n == FIELDS["MetaGraphDef"]["graph_def"] and w == LENGTH)
        main, functions = {}, []
        for number, wire, value in fields(graph_def):
            if number == FIELDS["GraphDef"]["node"]:
                node = _node(_blob(wire, value))
                main[node.name] = node
            elif number == FIELDS["GraphDef"]["library"]:
                for n, w, fn in fields(_blob(wire, value)):
                    if n == FIELDS["FunctionDefLibrary"]["function"]:
                        functions.append({nd.name: nd for nd in (_node(_blob(w2, v)) for k, w2, v in
                                                               fields(_blob(w, fn))
                                                               if k == FIELDS["FunctionDef"]["node_def"])})
    except _UNDECODABLE:
        raise _damaged(meta_path) from None
    if not main and not functions:
        raise FormatError(f"{meta_path}: the .meta graph holds no graph nodes; remove it or pass --forget-bias "
                          f"to read the checkpoint without it.")
    return [main, *functions]


@dataclass
class CellFacts:
    forget_bias: set = field(default_factory=set)
    activations: set = field(default_factory=set)
    clipped: bool = False
    op: str | None = None  # BlockLSTM / LSTMBlockCell when the cell ran as one fused op


@dataclass
class CudnnFacts:
    num_layers: int
    num_units: int
    input_size: int
    rnn_mode: str
    direction: str
    input_mode: str


def mangled(name: str) -> str:
    """How TF 2 control flow spells a captured tensor inside a function's argument names."""
    return re.sub(r"[^a-z0-9]", "_", name.lower())


class Graphs:
    """Look-ups across the main graph and the function bodies of one `.meta` file."""

    def __init__(self, graphs: list[dict[str, Node]], path: Path | None = None):
        self.graphs = graphs
        self.path = path
        self.consumers = []
        for g in graphs:
            by_source: dict[tuple[str, int], list[Node]] = {}
            for node in g.values():
                for ref in node.inputs:
                    by_source.setdefault(_split_ref(ref), []).append(node)
            self.consumers.append(by_source)
        self.saved_as = self._saved_names()

    def _saved_names(self) -> dict[str, str]:
        """Graph variable -> the name a Saver stored it under (they differ when Saver(var_list={...}) renamed it)."""
        out: dict[str, str] = {}
        for k, g in enumerate(self.graphs):
            for node in g.values():
                if node.op not in ("SaveV2", "SaveSlices", "Save") or len(node.inputs) < 3:
                    continue
                names_node = g.get(_split_ref(node.inputs[1])[0])
                names = names_node.const_strings() if names_node is not None and names_node.op == "Const" else []
                first = 3 if node.op == "SaveV2" or node.op == "SaveSlices" else 2
                for saved, ref in zip(names, node.inputs[first:]):
                    graph_name = self._graph_variable(k, ref)
                    if graph_name is not None:
                        out[graph_name] = saved
        return out

    def _graph_variable(self, k: int, ref: str) -> str | None:
        g = self.graphs[k]
        name = _split_ref(ref)[0]
        for _ in range(32):
            node = g.get(name)
            if node is None:
                return None
            if node.op in _VARIABLE_OPS:
                return node.name
            if node.op not in _PASS_THROUGH or not node.inputs:
                return None
            name = _split_ref(node.inputs[0])[0]
        return None

    def variable_of(self, k: int, ref: str, variables: list[str]) -> str | None:
        """The checkpoint variable (one of `variables`) whose value reaches input `ref` of graph k."""
        g = self.graphs[k]
        name, _ = _split_ref(ref)
        for _ in range(32):
            node = g.get(name)
            if node is None:  # a function argument: TF names it after the captured tensor
                graph_names = set(variables) | set(self.saved_as)
                hits = [v for v in graph_names if mangled(v) + "_read" in name or name.endswith(mangled(v))]
                if not hits:
                    hits = [v for v in graph_names if mangled(v) in name]
                found = self.saved_as.get(max(hits, key=len), max(hits, key=len)) if hits else None
                return found if found in variables else None
            if node.op in _VARIABLE_OPS:
                found = self.saved_as.get(node.name, node.name)
                return found if found in variables else None
            if node.op not in _PASS_THROUGH or not node.inputs:
                return None
            name, _ = _split_ref(node.inputs[0])
        return None

    def const(self, k: int, ref: str):
        node = self.graphs[k].get(_split_ref(ref)[0])
        if node is None:
            return None
        if node.op == "Const":
            return node.attr("value")
        if node.op in _PASS_THROUGH and node.inputs:
            return self.const(k, node.inputs[0])
        return None


def _split_ref(ref: str) -> tuple[str, int]:
    """'node', 'node:2' (graph) or 'node:output:2' (function) -> (node, output index)."""
    ref = ref.lstrip("^")
    parts = ref.split(":")
    if len(parts) >= 2 and parts[-1].isdigit():
        return parts[0], int(parts[-1])
    return parts[0], 0


def read(meta_path: Path) -> Graphs:
    graphs = read_graphs(meta_path)
    try:
        return Graphs(graphs, meta_path)
    except _UNDECODABLE:
        raise _damaged(meta_path) from None


@_decoding
def lstm_facts(graphs: Graphs, kernels: list[str], all_variables: list[str]) -> dict[str, CellFacts]:
    """forget_bias, activations and clipping of every fused-kernel LSTM cell found in the graph."""
    facts: dict[str, CellFacts] = {}
    for k, g in enumerate(graphs.graphs):
        clip_scopes = {n.name.rpartition("/")[0] for n in g.values() if n.op in ("ClipByValue", "Minimum", "Maximum")}
        for node in g.values():
            if node.op in ("BlockLSTM", "BlockLSTMV2", "LSTMBlockCell"):
                w_index = 4 if node.op.startswith("BlockLSTM") else 3
                kernel = graphs.variable_of(k, node.inputs[w_index], all_variables) \
                    if len(node.inputs) > w_index else None
                if kernel not in kernels:
                    continue
                f = facts.setdefault(kernel, CellFacts())
                f.op = node.op
                fb = node.attr("forget_bias")
                f.forget_bias.add(1.0 if fb is None else float(fb))
                clip = node.attr("cell_clip")
                f.clipped |= clip is not None and clip > 0
                f.activations.add("Tanh")
            elif node.op == "Split" and len(node.inputs) == 2 and node.attr("num_split") == 4:
                kernel = _fused_kernel(graphs, k, node.inputs[1], all_variables)
                if kernel not in kernels:
                    continue
                f = facts.setdefault(kernel, CellFacts())
                for consumer in graphs.consumers[k].get((node.name, 2), []):  # f + forget_bias
                    if consumer.op in ("Add", "AddV2"):
                        other = [r for r in consumer.inputs if _split_ref(r) != (node.name, 2)]
                        value = graphs.const(k, other[0]) if other else None
                        if value is not None:
                            f.forget_bias.add(float(value))
                for consumer in graphs.consumers[k].get((node.name, 1), []):  # activation(j)
                    f.activations.add(_ACTIVATION_OPS.get(consumer.op, consumer.op))
                scope = node.name.rpartition("/")[0]
                f.clipped |= any(s == scope or s.startswith(scope + "/") for s in clip_scopes)
    return facts


@_decoding
def activations_after(graphs: Graphs, kernels: list[str], all_variables: list[str]) -> dict[str, set[str]]:
    """The ops applied to MatMul(x, kernel) + bias, per kernel: a GRU candidate's or an RNN cell's activation."""
    found: dict[str, set[str]] = {}
    for k, g in enumerate(graphs.graphs):
        for node in g.values():
            if node.op != "MatMul" or len(node.inputs) != 2:
                continue
            kernel = graphs.variable_of(k, node.inputs[1], all_variables)
            if kernel not in kernels:
                continue
            for biased in graphs.consumers[k].get((node.name, 0), []):
                if biased.op in ("BiasAdd", "Add", "AddV2"):
                    found.setdefault(kernel, set()).update(
                        _ACTIVATION_OPS.get(c.op, c.op) for c in graphs.consumers[k].get((biased.name, 0), []))
    return found


@_decoding
def layer_roles(graphs: Graphs, variables: list[str]) -> dict[str, tuple]:
    """How the graph uses non-cell variables: ("embedding",) for a Gather's table (embedding_lookup),
    ("kernel", bias) for W in MatMul(x, W) + b."""
    roles: dict[str, tuple] = {}
    for k, g in enumerate(graphs.graphs):
        for node in g.values():
            if node.op in ("Gather", "GatherV2", "ResourceGather") and node.inputs:
                table = graphs.variable_of(k, node.inputs[0], variables)
                if table is not None:
                    roles[table] = ("embedding",)
            elif node.op == "MatMul" and len(node.inputs) == 2:
                kernel = graphs.variable_of(k, node.inputs[1], variables)
                if kernel is None:
                    continue
                for add in graphs.consumers[k].get((node.name, 0), []):
                    if add.op in ("BiasAdd", "Add", "AddV2"):
                        biases = [graphs.variable_of(k, r, variables) for r in add.inputs
                                  if _split_ref(r) != (node.name, 0)]
                        if biases and biases[0] is not None:
                            roles[kernel] = ("kernel", biases[0])
    return roles


def _fused_kernel(graphs: Graphs, k: int, ref: str, variables: list[str]) -> str | None:
    """The kernel variable of MatMul -> BiasAdd -> (this Split input)."""
    g = graphs.graphs[k]
    node = g.get(_split_ref(ref)[0])
    if node is None or node.op not in ("BiasAdd", "Add", "AddV2"):
        return None
    for ref2 in node.inputs:
        mm = g.get(_split_ref(ref2)[0])
        if mm is not None and mm.op == "MatMul" and len(mm.inputs) == 2:
            return graphs.variable_of(k, mm.inputs[1], variables)
    return None


@_decoding
def cudnn_facts(graphs: Graphs, opaque: list[str], all_variables: list[str]) -> dict[str, CudnnFacts]:
    """Sizes and mode of each CudnnRNN opaque buffer, from the ops that convert it."""
    out: dict[str, CudnnFacts] = {}
    for k, g in enumerate(graphs.graphs):
        for node in g.values():
            if node.op not in ("CudnnRNNParamsToCanonical", "CudnnRNNParamsToCanonicalV2") or len(node.inputs) < 4:
                continue
            variable = graphs.variable_of(k, node.inputs[3], all_variables)
            sizes = [graphs.const(k, r) for r in node.inputs[:3]]
            if variable not in opaque or any(not isinstance(s, int) for s in sizes):
                continue
            text = {a: (node.attr(a) or b"").decode("ascii", "replace")
                    for a in ("rnn_mode", "direction", "input_mode")}
            out[variable] = CudnnFacts(*sizes, text["rnn_mode"] or "lstm", text["direction"] or "unidirectional",
                                       text["input_mode"] or "linear_input")
    return out
