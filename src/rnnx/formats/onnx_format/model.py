"""ONNX models: LSTM / GRU / RNN nodes read into canonical layers, and canonical layers written as nodes.

Reading: every LSTM, GRU and RNN node (subgraphs of If / Loop / Scan included) whose W, R, B
and P are initializers or Constant nodes becomes a RecurrentLayer named after its node
(op type + index when the node has none; made unique). Weights computed at run time are
reported by name, never guessed. External data is read only from files inside the model's
folder, checked before anything is loaded. The file is parsed as a skeleton (skeleton.py): each
tensor of 1 KiB or more stays in the file as external data at its own byte range, so that the
weights are read, by direction, only when a conversion uses them and `inspect` reads none.

Writing (a Bundle without an architecture, or one layer): one model with one node per
recurrent layer, layout 0 wrapped in Transposes. Default I/O, per layer (or per stack of
PyTorch layers of one module, chained):

    X          [batch, seq, in]            ([seq, batch, in] with time_major=True)
    initial_h  [L*D, batch, hidden]        optional (a zero default), opset >= 8
    initial_c  [L*D, batch, units]         LSTM only, optional likewise
    Y          [batch, seq, D*hidden]      ([seq, batch, D*hidden] with time_major=True),
                                            directions concatenated forward first
    Y_h        [L*D, batch, hidden]        final states, PyTorch's h_n layout
    Y_c        [L*D, batch, units]         LSTM only

With `layer=NAME` the names are exactly X, Y, Y_h, Y_c, initial_h, initial_c; otherwise
each is prefixed with the layer's name (`lstm_1_X`, `lstm_1_Y`, ...). Every node is named
after its layer, which is how `run_layer` (rnnx verify) finds it again.

A Bundle that has an architecture (source["has_architecture"]) goes to the whole-model
exporter, rnnx.graph.export_model, unless one layer is asked for.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ... import __version__
from ...canonical import Bundle, RecurrentLayer
from ...errors import FormatError, UnsupportedError, UsageError
from ...lazy import LazyArray
from . import external as external_weights
from . import nodes as onnx_nodes
from . import skeleton as onnx_skeleton
from .. import unheld_call_options
from .nodes import DEFAULT_OPSET, MIN_OPSET_OPTIONAL_STATES, OP_TYPE

RECURRENT_OPS = tuple(OP_TYPE.values())


# ======================================================================================
# Reading
# ======================================================================================
def read(path: Path, **_options) -> Bundle:
    model = load_model(path)
    base = Path(path).resolve().parent
    with _located(path):
        layers = [_layer_of(found, base) for found in recurrent_nodes(model)]
    source = {"format": "onnx", "producer": f"{model.producer_name} {model.producer_version}".strip(),
              "opset": default_opset(model), "has_architecture": False}
    try:
        return Bundle(layers, source)
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}.") from None


def refusal(layer: RecurrentLayer) -> str | None:
    """Why ONNX cannot hold `layer` (only a PyTorch LSTM projection), or None."""
    try:
        onnx_nodes.check_expressible(layer)
    except UnsupportedError as exc:
        return str(exc.args[0])
    return None


def load_model(path: Path, lazy: bool = True) -> onnx.ModelProto:
    """Parse `path` as an ONNX model without loading external data; FormatError if it is not one.

    lazy: the values of each tensor of external.INLINE_BYTES or more stay in the file, the tensor marked
    as external data at their byte range of the model file itself (see skeleton.py), so that the parsed
    model holds the structure but no weights; False parses every byte, as onnx.load does."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty (0 bytes); it is not an ONNX model.")
    location = _own_location(path) if lazy else None
    try:
        data = (path.read_bytes() if location is None
                else onnx_skeleton.skeleton(path, location, external_weights.INLINE_BYTES))
    except onnx_skeleton.ProtoError as exc:
        raise FormatError(f"{path} is not an ONNX model ({exc}); it may be truncated or another kind of "
                          f"file.") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # protobuf's DecodeError and friends: the bytes are not a ModelProto
        raise FormatError(f"{path} is not an ONNX model (its bytes do not parse as an ONNX ModelProto); "
                          f"it may be truncated or another kind of file.") from None
    del data
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise FormatError(f"{path} is not an ONNX model (no IR version, graph or opset found); "
                          f"it may be truncated or another kind of file.")
    with _located(path):
        check_external_data(model, path)
    return model


def _own_location(path: Path) -> str | None:
    """The model file's name as an external-data location in its own folder, or None when it cannot be
    one (not UTF-8, or a name the location check refuses): then the file is parsed whole."""
    name = Path(path).resolve().name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return name if _location_inside(name) else None


@contextmanager
def _located(path):
    """Prefix the file name to errors about one node; turn what malformed input trips into FormatError."""
    try:
        yield
    except (FormatError, UnsupportedError) as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        raise type(exc)(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, UnicodeError) as exc:
        raise FormatError(f"{path}: the model is inconsistent ({type(exc).__name__}: {exc}); it may be "
                          f"damaged.") from None


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


# --- external data ---------------------------------------------------------------------
def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Refuse external data outside the model's folder, missing, or shorter than it claims."""
    folder = Path(path).resolve().parent
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor {tensor.name!r} keeps its data in {location!r}"
        if not _location_inside(location):
            raise FormatError(f"{where}, outside the model's folder; rnnx reads external data only from "
                              f"files beside the model.")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):
            raise FormatError(f"{where}, which leads outside the model's folder; rnnx refuses to read it.")
        if not target.is_file():
            raise FormatError(f"{where}, which does not exist beside the model.")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else target.stat().st_size - offset
        except ValueError:
            raise FormatError(f"{where} with an unreadable offset or length.") from None
        if offset < 0 or length < 0 or offset + length > target.stat().st_size:
            raise FormatError(f"{where} at bytes {offset}..{offset + length}, past the end of that file.")


def _location_inside(location: str) -> bool:
    """Whether `location` names a file in the model's folder or below it (as text: no '..', no root,
    no drive, on POSIX or Windows)."""
    parts = set(PurePosixPath(location).parts) | set(PureWindowsPath(location).parts)
    return not (not location or ".." in parts or PurePosixPath(location).is_absolute()
                or PureWindowsPath(location).is_absolute() or bool(PureWindowsPath(location).drive))


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


# --- finding recurrent nodes and their constant weights ----------------------------------
@dataclass
class FoundNode:
    name: str  # unique layer name
    node: onnx.NodeProto
    scope: "Scope"
    graph_path: str
    opset: int | None


class Scope:
    """What each tensor name of a graph (and of the graphs around it) is: constant, input or computed."""

    def __init__(self, graph: onnx.GraphProto, outer: "Scope | None" = None):
        self.outer = outer
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.inputs = {i.name for i in graph.input} - set(self.constants)
        self.producers: dict[str, onnx.NodeProto] = {}
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producers[out] = node
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
                if value is not None:
                    self.constants[node.output[0]] = value

    def constant(self, name: str, owner: str, role: str) -> onnx.TensorProto:
        """The constant tensor `name` (following Identity nodes), or UnsupportedError naming its origin."""
        scope: Scope | None = self
        seen = 0
        while scope is not None:
            if name in scope.constants:
                return scope.constants[name]
            if name in scope.inputs:
                raise UnsupportedError(f"node {owner!r}: {role} is the graph input {name!r}, fed at run time; "
                                       f"rnnx reads only constant weights (initializers or Constant nodes).")
            producer = scope.producers.get(name)
            if producer is not None:
                if producer.op_type == "Identity" and producer.input and seen < 100:
                    name, seen = producer.input[0], seen + 1
                    continue
                label = producer.name or producer.op_type
                if producer.op_type == "Constant":
                    raise FormatError(f"node {owner!r}: {role} comes from Constant node {label!r}, which holds no "
                                      f"dense tensor (only 'value' tensors can be weights).")
                raise UnsupportedError(f"node {owner!r}: {role} is computed at run time by node {label!r} "
                                       f"({producer.op_type}); rnnx reads only constant weights.")
            scope = scope.outer
        raise FormatError(f"node {owner!r}: its input {role} {name!r} is defined nowhere in the model.")


def recurrent_nodes(model: onnx.ModelProto) -> list[FoundNode]:
    """Every LSTM / GRU / RNN node of the default domain, subgraphs included, with a unique name."""
    found: list[FoundNode] = []
    taken: set[str] = set()
    opset = default_opset(model)

    def visit(graph: onnx.GraphProto, outer: Scope | None, graph_path: str):
        scope = Scope(graph, outer)
        for node in graph.node:
            if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
                name = _text(node.name) or f"{node.op_type}_{len(found)}"
                unique, k = name, 1
                while unique in taken:
                    k += 1
                    unique = f"{name}_{k}"
                taken.add(unique)
                found.append(FoundNode(unique, node, scope, graph_path, opset))
            for attr in node.attribute:
                subgraphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                for sub in subgraphs:
                    visit(sub, scope, f"{graph_path}/{_text(node.name) or node.op_type}.{attr.name}")

    visit(model.graph, None, _text(model.graph.name) or "main")
    return found


def _text(name) -> str:
    """A name as text: protobuf hands over a string field that is not valid UTF-8 as bytes."""
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def node_attributes(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        out[attr.name] = value
    return out


def node_weights(found: FoundNode, base: Path) -> onnx_nodes.OnnxWeights:
    """W, R, B, P of a recurrent node as numpy arrays (B, P None when absent)."""
    node = found.node

    def tensor(index: int, role: str):
        if len(node.input) <= index or not node.input[index]:
            return None
        proto = found.scope.constant(node.input[index], found.name, role)
        return _to_array(proto, base, found.name, role)

    W, R = tensor(1, "W"), tensor(2, "R")
    if W is None or R is None:
        raise FormatError(f"node {found.name!r} has no W or R input.")
    return onnx_nodes.OnnxWeights(W, R, tensor(3, "B"), tensor(7, "P") if node.op_type == "LSTM" else None)


_FLOAT_TYPES = {TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2}


def _to_array(proto: onnx.TensorProto, base: Path, owner: str, role: str) -> np.ndarray:
    where = f"node {owner!r}: {role}"
    if proto.data_type not in _FLOAT_TYPES:
        raise FormatError(f"{where} holds {TensorProto.DataType.Name(proto.data_type)} values; rnnx reads float16, "
                          f"float32 and float64 weights, so export the model with float32 weights.")
    dims = list(proto.dims)
    if any(d < 0 for d in dims) or len(dims) > 8:
        raise FormatError(f"{where} has an impossible shape {dims}.")
    count = math.prod(int(d) for d in dims)  # Python ints: an int64 product of claimed dims can wrap around
    itemsize = _FLOAT_TYPES[proto.data_type]
    if proto.data_location == TensorProto.EXTERNAL:
        info = {e.key: e.value for e in proto.external_data}
        available = int(info["length"]) if info.get("length") else None
    elif proto.HasField("raw_data"):
        available = len(proto.raw_data)
    elif proto.data_type == TensorProto.DOUBLE:
        available = len(proto.double_data) * itemsize
    elif proto.data_type == TensorProto.FLOAT16:
        available = len(proto.int32_data) * itemsize
    else:
        available = len(proto.float_data) * itemsize
    if available is not None and available != count * itemsize:
        raise FormatError(f"{where} claims shape {dims} but holds {available} bytes, not {count * itemsize}.")
    if proto.data_location == TensorProto.EXTERNAL:
        return _external_array(proto, base, dims, where, role)
    try:
        array = numpy_helper.to_array(proto, base_dir=str(base))
    except Exception as exc:  # onnx raises assorted errors on malformed tensors
        raise FormatError(f"{where} cannot be decoded ({exc}).") from None
    if array.shape != tuple(dims):
        raise FormatError(f"{where} claims shape {dims} but holds {array.size} values.")
    return np.ascontiguousarray(array)


_NUMPY_OF = {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8"),
             TensorProto.FLOAT16: np.dtype("<f2")}


def _external_array(proto: onnx.TensorProto, base: Path, dims: list, where: str, role: str = ""):
    """A weight kept out of the parsed model (in an external data file or in the model file itself, its
    range already checked to lie inside the model's folder and the file) as a LazyArray reading just
    that range when used. A weight [D, ...] of a recurrent node is read by direction, and a bias B by
    direction and half (Wb, Rb): each part is its own range, so that the canonical layer, made of those
    parts, reads each byte once (see nodes.BY_DIRECTION)."""
    info = {e.key: e.value for e in proto.external_data}
    target = (base / info["location"]).resolve()
    offset = int(info.get("offset", 0) or 0)
    dtype = _NUMPY_OF[proto.data_type]
    count = math.prod(int(d) for d in dims)
    if count * dtype.itemsize > target.stat().st_size - offset:
        raise FormatError(f"{where} claims shape {dims}, more than {info['location']} holds.")
    native = dtype.newbyteorder("=")

    def ranged(start: int, shape: list, name: str) -> LazyArray:
        size = math.prod(shape)
        return LazyArray(shape, native, lambda: read_range(target, start, dtype, size).astype(
            native, copy=False).reshape(shape), name)

    def combined(shape: list, parts: tuple, how, tag: str, name: str) -> LazyArray:
        return LazyArray(shape, native, lambda: how([p.load() for p in parts]), name, reads_file=False,
                         origin=(tag, parts))

    def direction(start: int, shape: list, name: str) -> LazyArray:
        if role != "B" or len(shape) != 1 or shape[0] % 2:
            return ranged(start, shape, name)
        half = shape[0] // 2
        halves = (ranged(start, [half], f"{name}[Wb]"), ranged(start + half * dtype.itemsize, [half], f"{name}[Rb]"))
        return combined(shape, halves, np.concatenate, onnx_nodes.BY_HALF, name)

    label = f"{info['location']}:{proto.name}"
    if len(dims) < 2 or not dims[0]:
        return ranged(offset, dims, label)
    stride = count // dims[0] * dtype.itemsize
    parts = tuple(direction(offset + k * stride, dims[1:], f"{label}[{k}]") for k in range(dims[0]))
    return combined(dims, parts, np.stack, onnx_nodes.BY_DIRECTION, label)


def read_range(path: Path, offset: int, dtype: np.dtype, count: int) -> np.ndarray:
    """`count` values of `dtype` at byte `offset` of `path`: how every tensor the model file or its
    external data keeps out of the parsed model is read (the range is checked beforehand)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return np.fromfile(fh, dtype, count)


def _layer_of(found: FoundNode, base: Path) -> RecurrentLayer:
    weights = node_weights(found, base)
    attributes = node_attributes(found.node)
    provenance = {"format": "onnx", "class_name": found.node.op_type, "node": _text(found.node.name),
                  "graph": found.graph_path}
    if found.opset is not None:
        provenance["opset"] = found.opset
    options = {}
    if attributes.get("layout"):
        options["layout"] = int(attributes["layout"])
    return onnx_nodes.layer_from_onnx(found.name, found.node.op_type, weights.W, weights.R, weights.B,
                                      weights.P, attributes, provenance, options)


# ======================================================================================
# Writing
# ======================================================================================
def write(bundle: Bundle, path: Path, layer: str | None = None, opset: int | None = None,
          time_major: bool = False, external_data: bool | None = None,
          external_data_limit: int = external_weights.PROTOBUF_LIMIT, **options) -> list[str]:
    """external_data: None = only when the model is over `external_data_limit` bytes (protobuf's 2 GiB),
    True = always (model.onnx plus model.onnx.data beside it), False = never."""
    opset = onnx_nodes.check_opset(DEFAULT_OPSET if opset is None else opset)
    notes: list[str] = []
    if layer is None and bundle.source.get("has_architecture"):
        try:
            from ...graph import export_model
        except ImportError as exc:
            if not (exc.name or "").startswith("rnnx.graph"):
                raise
            notes.append("this rnnx has no whole-model exporter yet, so each recurrent layer was written as "
                         "its own node with its own inputs and outputs")
        else:
            return list(export_model(bundle, Path(path), opset=opset, time_major=time_major,
                                     external_data=external_data, external_data_limit=external_data_limit,
                                     **options) or [])
    if options.get("engine") == "tf2onnx":
        why = "--layer asks for one layer" if layer is not None else "it holds no model architecture"
        source = bundle.source.get("path", "the source")
        raise UsageError(f"--engine tf2onnx converts whole Keras 2 models, and {source} cannot be one ({why}); "
                         f"leave --engine out to write per-layer ONNX models.")
    if layer is not None and len(bundle.layers) > 1:
        bundle = bundle.only(layer)
    if not bundle.layers:
        raise UsageError(f"{bundle.source.get('path', 'The source')} holds no recurrent layer to write to ONNX.")
    for each in bundle.layers:
        onnx_nodes.check_expressible(each)  # refused before any tensor is read

    def build(store):
        return build_layers_model(bundle, opset=opset, time_major=time_major, plain_names=layer is not None,
                                  store=store)

    more = external_weights.write_model(Path(path), build, external=external_data, limit=external_data_limit)
    unheld = unheld_call_options(bundle.layers, "a per-layer ONNX model", "its Y holds the two directions "
                                 "concatenated, so merge them as the source did", backwards_kept=True)
    return notes + more + unheld


def stacks(layers: list[RecurrentLayer]) -> list[list[RecurrentLayer]]:
    """Layers grouped into units: the layers of one PyTorch num_layers>1 module (provenance `module` and
    `stack_index` 0..n-1, each taking the previous one's output) form one chained unit."""
    units: list[list[RecurrentLayer]] = []
    by_module: dict[str, list[RecurrentLayer]] = {}
    for layer in layers:
        module, index = layer.provenance.get("module"), layer.provenance.get("stack_index")
        if isinstance(module, str) and isinstance(index, int):
            if module not in by_module:
                by_module[module] = []
                units.append(by_module[module])
            by_module[module].append(layer)
        else:
            units.append([layer])
    out = []
    for unit in units:
        unit.sort(key=lambda l: l.provenance.get("stack_index", 0))
        if len(unit) > 1 and not _chainable(unit):
            out.extend([l] for l in unit)
        else:
            out.append(unit)
    return out


def _chainable(unit: list[RecurrentLayer]) -> bool:
    first = unit[0]
    return ([l.provenance["stack_index"] for l in unit] == list(range(len(unit)))
            and all(l.cell == first.cell and l.num_directions == first.num_directions
                    and l.hidden_size == first.hidden_size and l.units == first.units
                    and l.dtype == first.dtype for l in unit)
            and all(nxt.input_size == prev.num_directions * prev.hidden_size
                    for prev, nxt in zip(unit, unit[1:])))


def build_layers_model(bundle: Bundle, opset: int = DEFAULT_OPSET, time_major: bool = False,
                       plain_names: bool = False, store: external_weights.WeightStore | None = None
                       ) -> tuple[onnx.ModelProto, list[str]]:
    """The per-layer model (see the module docstring) and notes for the user. With a `store`, each
    layer's large initializers go to it as soon as the layer is emitted (the model refers to them)."""
    for layer in bundle.layers:
        onnx_nodes.check_expressible(layer)
    units = stacks(bundle.layers)
    notes = [f"layer {l.name!r} runs backwards in time (go_backwards): its node has direction=reverse and, "
             f"as ONNX does, Y[t] is the output at input step t (Keras returns that sequence reversed)"
             for l in bundle.layers if _runs_backwards(l)]
    doubles = [l.name for l in bundle.layers if l.dtype == np.float64]
    if doubles:
        notes.append(f"{', '.join(doubles)}: written in float64 as the source holds them; onnxruntime "
                     f"(1.32) runs LSTM / GRU / RNN only in float32 and float16")
    with_states = opset >= MIN_OPSET_OPTIONAL_STATES
    if not with_states:
        notes.append(f"opset {opset} has no Expand, so initial states are not graph inputs (they start at "
                     f"zero); use --opset {MIN_OPSET_OPTIONAL_STATES} or newer for streaming")
    nodes, inits, inputs, outputs, described = [], [], [], [], []
    for unit in units:
        unit_name = (unit[0].provenance["module"] or "rnn") if len(unit) > 1 else unit[0].name
        io = _io_names(unit_name, plain_names and len(units) == 1)
        part = _emit_unit(unit, io, opset, time_major, with_states, store.tensor if store is not None else None)
        nodes += part["nodes"]
        inits += [store.keep(t) for t in part["initializers"]] if store is not None else part["initializers"]
        inputs += part["inputs"]
        outputs += part["outputs"]
        described.append({"unit": unit_name, "layers": [l.name for l in unit], "nodes": [l.name for l in unit],
                          "class_name": [str(l.provenance.get("class_name", l.kind)) for l in unit],
                          "inputs": [i.name for i in part["inputs"]],
                          "outputs": [o.name for o in part["outputs"]]})
    _check_unique_names(nodes, inits, inputs, outputs)
    graph = helper.make_graph(nodes, "rnnx", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="rnnx", producer_version=__version__,
                              doc_string="Recurrent layers written by rnnx; see metadata_props for provenance.")
    model.ir_version = max(4, helper.find_min_ir_version_for(opsets))
    metadata = {
        "rnnx.version": __version__,
        "rnnx.source_file": str(bundle.source.get("path", "")),
        "rnnx.source_format": str(bundle.source.get("format", "")),
        "rnnx.io_layout": "time_major" if time_major else "batch_first",
        "rnnx.layers": json.dumps(described),
    }
    helper.set_model_props(model, metadata)
    return model, notes


def _io_names(unit: str, plain: bool) -> dict[str, str]:
    keys = ("X", "Y", "Y_h", "Y_c", "initial_h", "initial_c")
    return {k: k if plain else f"{unit}_{k}" for k in keys}


def _runs_backwards(layer: RecurrentLayer) -> bool:
    return layer.num_directions == 1 and bool(layer.options.get("go_backwards"))


def _emit_unit(unit: list[RecurrentLayer], io: dict, opset: int, time_major: bool, with_states: bool,
               tensor=None) -> dict:
    """A chain of one or more layers with its graph inputs and outputs (`tensor` makes the weight
    initializers, see onnx_nodes.emit_layer)."""
    first, last = unit[0], unit[-1]
    elem = onnx_nodes.onnx_dtype(first.dtype)
    D, L, is_lstm = first.num_directions, len(unit), first.cell == "lstm"
    batch, seq = ("batch", "seq") if io["X"] == "X" else (f"{io['X']}_batch", f"{io['X']}_seq")
    x_shape = [seq, batch, first.input_size] if time_major else [batch, seq, first.input_size]
    y_shape = ([seq, batch, D * last.hidden_size] if time_major else [batch, seq, D * last.hidden_size])
    inputs = [helper.make_tensor_value_info(io["X"], elem, x_shape)]
    outputs = [helper.make_tensor_value_info(io["Y"], elem, y_shape),
               helper.make_tensor_value_info(io["Y_h"], elem, [L * D, batch, first.hidden_size])]
    if is_lstm:
        outputs.append(helper.make_tensor_value_info(io["Y_c"], elem, [L * D, batch, first.units]))
    nodes, inits = [], []

    states = {}
    if with_states:
        for key, size in (("initial_h", first.hidden_size), ("initial_c", first.units))[: 2 if is_lstm else 1]:
            default = onnx_nodes.default_state(io[key], io["X"], L * D, size, first.dtype, f"{io[key]}_default",
                                               batch_axis=1 if time_major else 0, opset=opset)
            nodes += default.nodes
            inits += default.initializers
            inputs.append(helper.make_tensor_value_info(io[key], elem, [L * D, None, size]))
            states[key] = default.output

    x, finals_h, finals_c = io["X"], [], []
    for k, layer in enumerate(unit):
        prefix = f"{layer.name}/{OP_TYPE[layer.cell]}"  # internal names, apart from the I/O names
        per_layer = {}
        for key, full in states.items():
            if L == 1:
                per_layer[key] = full
            else:  # this layer's slice of the stack's [L*D, batch, size] state
                idx = numpy_helper.from_array(np.arange(k * D, (k + 1) * D, dtype=np.int64), f"{prefix}_{key}_rows")
                inits.append(idx)
                nodes.append(helper.make_node("Gather", [full, idx.name], [f"{prefix}_{key}"],
                                              name=f"{prefix}_{key}_slice", axis=0))
                per_layer[key] = f"{prefix}_{key}"
        single = L == 1
        names = (f"{prefix}_Y", io["Y_h"] if single else f"{prefix}_Y_h", io["Y_c"] if single else f"{prefix}_Y_c")
        emitted = onnx_nodes.emit_layer(layer, x, prefix, opset, initial_h=per_layer.get("initial_h"),
                                        initial_c=per_layer.get("initial_c"), batch_first=(k == 0 and not time_major),
                                        outputs=names, reverse=_runs_backwards(layer), tensor=tensor)
        nodes += emitted.nodes
        inits += emitted.initializers
        finals_h.append(emitted.Y_h)
        finals_c.append(emitted.Y_c)
        is_last = k == L - 1
        merged = onnx_nodes.sequence_output(emitted.Y, prefix, batch_first=is_last and not time_major,
                                            output=io["Y"] if is_last else None)
        nodes += merged.nodes
        inits += merged.initializers
        x = merged.output
    if L > 1:
        nodes.append(helper.make_node("Concat", finals_h, [io["Y_h"]], name=f"{io['Y_h']}_concat", axis=0))
        if is_lstm:
            nodes.append(helper.make_node("Concat", finals_c, [io["Y_c"]], name=f"{io['Y_c']}_concat", axis=0))
    return {"nodes": nodes, "initializers": inits, "inputs": inputs, "outputs": outputs}


def _check_unique_names(nodes, inits, inputs, outputs) -> None:
    produced: dict[str, int] = {}
    for node in nodes:
        for out in node.output:
            produced[out] = produced.get(out, 0) + 1
    for t in inits:
        produced[t.name] = produced.get(t.name, 0) + 1
    for i in inputs:
        if i.name not in {t.name for t in inits}:
            produced[i.name] = produced.get(i.name, 0) + 1
    clashes = sorted(n for n, c in produced.items() if c > 1)
    if clashes:
        raise UsageError(f"The layer names make clashing ONNX tensor names ({', '.join(clashes[:5])}); "
                         f"write the layers one at a time with --layer.")


# ======================================================================================
# Running one layer (rnnx verify)
# ======================================================================================
def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """Run the node of `path` named layer.name on x [batch, seq, in]; Y [batch, seq, D, hidden].

    The node is copied as it is written (attributes and constant weights) into a one-node model
    and run in onnxruntime, so what is checked is the file's own node, not a re-export of it.
    A direction="reverse" node (Keras go_backwards) is run forward: the cell is what is checked.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_mtime_ns, stat.st_size, layer.name)
    if key not in _LAST_NODE:  # verify runs one node on several inputs: build its model and session once
        _LAST_NODE.clear()
        model = load_model(path)
        with _located(path):
            found = _find_node(model, layer.name)
            _LAST_NODE[key] = (single_node_model(found, path.resolve().parent, default_opset(model)),
                               f"node {found.name!r}", {})
    single, where, session = _LAST_NODE[key]
    with _located(path):
        Y = run_single_node(single, np.swapaxes(np.asarray(x), 0, 1), where, session)
    return np.transpose(Y, (2, 0, 1, 3))


_LAST_NODE: dict = {}  # the one-node model last run, its label and its onnxruntime session (one entry)


def _find_node(model: onnx.ModelProto, name: str) -> FoundNode:
    found = recurrent_nodes(model)
    for candidate in found:
        if candidate.name == name:
            return candidate
    # A whole-model graph names the node after its layer unless a graph output already took the
    # name (the layer's output is a model output): then the node's Y is `<layer>/rnn_Y`.
    produced = re.compile(rf"{re.escape(name)}(_|/|/rnn_|/rnn_\d+_)Y")
    for candidate in found:
        if any(produced.fullmatch(out) for out in candidate.node.output):
            return candidate
    known = ", ".join(f.name for f in found) or "none"
    raise FormatError(f"there is no recurrent node for layer {name!r}; the recurrent nodes are: {known}.")


def single_node_model(found: FoundNode, base: Path, opset: int | None) -> onnx.ModelProto:
    """The node `found` alone: input X [seq, batch, in] (layout 0), its constant weights, output Y."""
    node = found.node
    weights = node_weights(found, base)
    attrs = {k: v for k, v in node_attributes(node).items() if k not in ("layout", "output_sequence")}
    if attrs.get("direction") == "reverse":
        attrs["direction"] = "forward"  # the cell is what is verified; its reading order is the caller's
    tensors = {"W": weights.W, "R": weights.R, "B": weights.B, "P": weights.P}
    inits = [numpy_helper.from_array(np.asarray(a), k) for k, a in tensors.items() if a is not None]
    # X W R B sequence_lens initial_h initial_c P: states and lengths left out
    inputs = ["X", "W", "R", "B" if weights.B is not None else "", "", "", "", "P" if weights.P is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    elem = onnx_nodes.onnx_dtype(weights.W.dtype)
    one = helper.make_node(node.op_type, inputs, ["Y"], name=found.name, **attrs)
    graph = helper.make_graph([one], "single", [helper.make_tensor_value_info("X", elem, [None, None, None])],
                              [helper.make_tensor_value_info("Y", elem, None)], inits)
    opsets = [helper.make_opsetid("", max(7, opset or DEFAULT_OPSET))]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = max(4, helper.find_min_ir_version_for(opsets))
    return model


def run_single_node(model: onnx.ModelProto, X: np.ndarray, where: str, cache: dict | None = None) -> np.ndarray:
    """Y of the one-node `model` on X; `cache` (a dict) keeps its session for the next call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = (cache or {}).get("session")
        if session is None:
            session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            if cache is not None:
                cache["session"] = session
        elem = session.get_inputs()[0].type
        dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16}.get(elem, np.float32)
        run_options = ort.RunOptions()
        run_options.log_severity_level = 4  # the error comes back as our own sentence, not a log line
        return session.run(None, {"X": X.astype(dtype)}, run_options)[0]
    except Exception as exc:  # onnxruntime raises its own untyped errors
        if model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE:
            raise UnsupportedError(
                f"{where}: onnxruntime has no float64 {model.graph.node[0].op_type} kernel, so this float64 "
                f"node cannot be run or verified there; to run the model in onnxruntime, convert a float32 copy "
                f"of the source.") from None
        raise UnsupportedError(f"{where}: onnxruntime cannot run it ({str(exc).strip().splitlines()[0]}).") from None
