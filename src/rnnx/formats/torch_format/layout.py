"""PyTorch state dicts <-> canonical layers, in plain numpy (no torch import here).

Reading: a flat {key: array} state dict is grouped by module prefix. Keys
`weight_ih_l{k}[_reverse]`, `weight_hh_l{k}...`, `bias_ih_l{k}...`, `bias_hh_l{k}...`,
`weight_hr_l{k}...` form an nn.LSTM / nn.GRU / nn.RNN; `weight_ih`, `weight_hh`,
`bias_ih`, `bias_hh` (no suffix) an nn.LSTMCell / nn.GRUCell / nn.RNNCell. The cell
kind comes from the shapes: weight_hh is (g*u, u) (or (4u, proj) with weight_hr (proj, u)),
so g = rows / u is 4 for LSTM, 3 for GRU, 1 for a simple RNN.

Canonical names: stacked layer k of module `enc.rnn` is `enc.rnn.l{k}` (`l{k}` for a
module at the root); a cell module keeps its own prefix (`cell` at the root). Every
other tensor rides along as an OpaqueLayer per module prefix.

Writing: each canonical layer becomes an nn.LSTM / nn.GRU / nn.RNN with num_layers=1
under a prefix made from its name, except layers that came from one stacked torch
module (or a cell module) and are all present: those go back under that module with
their own keys, so a round trip reproduces every key and tensor.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...canonical import Bundle, Direction, OpaqueLayer, RecurrentLayer
from ...canonical.activations import RELU, SIGMOID, TANH
from ...canonical.gates import CANONICAL_ORDER, GRU_TORCH, LSTM_TORCH, RNN_CANONICAL, reorder
from ...lazy import is_lazy
from ...errors import FormatError, UnsupportedError

TORCH_ORDER = {"lstm": LSTM_TORCH, "gru": GRU_TORCH, "rnn": RNN_CANONICAL}
CELL_BY_GATES = {4: "lstm", 3: "gru", 1: "rnn"}
MODULE_CLASS = {"lstm": "nn.LSTM", "gru": "nn.GRU", "rnn": "nn.RNN"}
CELL_CLASS = {"lstm": "nn.LSTMCell", "gru": "nn.GRUCell", "rnn": "nn.RNNCell"}
RNN_ASSUMPTION = ("a state dict does not record nn.RNN's nonlinearity; tanh is assumed "
                  "(a module built with nonlinearity='relu' computes other numbers)")

_RECURRENT_KEY = re.compile(
    r"^(?:(?P<module>.+)\.)?(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"(?:_l(?P<layer>\d+)(?P<reverse>_reverse)?)?\Z", re.DOTALL)
# Leading key segments added by wrappers, stripped when every key of a state dict has them:
# DataParallel / DistributedDataParallel and torch.compile always; Lightning's `model.` only
# inside a checkpoint (a plain state dict may really have a child called `model`).
_WRAPPERS = ("module.", "_orig_mod.")
_CHECKPOINT_WRAPPERS = ("model.",)


# --- finding the state dict in a loaded checkpoint ---------------------------------------

def is_recurrent_key(key: str) -> bool:
    m = _RECURRENT_KEY.match(key)
    return bool(m) and not (m["param"] == "weight_hr" and m["layer"] is None)


def find_state_dict(tree: dict, is_tensor) -> tuple[dict, str]:
    """The sub-dict of a loaded checkpoint that holds every recurrent weight, flattened.

    `tree` is any nesting of dicts; leaves that are not tensors (`is_tensor`) are ignored.
    Returns ({dotted key: tensor}, the path of that sub-dict, "" for the root).
    """
    flat = flatten(tree, is_tensor)
    recurrent = [k for k in flat if is_recurrent_key(k)]
    node, path = tree, []
    while recurrent:
        inner = [k for k, v in node.items() if isinstance(v, dict)
                 and all(r.startswith(".".join([*path, str(k)]) + ".") for r in recurrent)]
        if len(inner) != 1:
            break
        path.append(str(inner[0]))
        node = node[inner[0]]
    state = flatten(node, is_tensor)
    prefix = ".".join(path)
    return state, prefix


class UnreadableTree(ValueError):
    """A loaded checkpoint no torch.save writes: dicts inside themselves, or nested absurdly deep."""


MAX_DEPTH = 64  # checkpoints nest dicts a few levels deep; a pickle can nest them without end


def flatten(tree: dict, is_tensor, prefix: str = "") -> dict:
    """{dotted key: tensor} in the order the dicts hold them. Iterative and depth-limited, so a hostile
    pickle's nesting cannot exhaust the stack or memory; raises UnreadableTree."""
    out = {}
    stack = [(prefix, iter(tree.items()), id(tree))]
    open_dicts = {id(tree)}
    while stack:
        prefix, items, _ = stack[-1]
        for key, value in items:
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                if id(value) in open_dicts:
                    raise UnreadableTree(f"a dict that contains itself (at {name[:80]!r})")
                if len(stack) >= MAX_DEPTH:
                    raise UnreadableTree(f"dicts nested more than {MAX_DEPTH} deep")
                open_dicts.add(id(value))
                stack.append((name + ".", iter(value.items()), id(value)))
                break
            if is_tensor(value):
                out[name] = value
        else:
            open_dicts.discard(stack.pop()[2])
    return out


def strip_wrappers(state: dict, in_checkpoint: bool) -> tuple[dict, str]:
    """Remove wrapper prefixes (`module.`, ...) that every key shares; returns (state, removed)."""
    removed = ""
    wrappers = _WRAPPERS + (_CHECKPOINT_WRAPPERS if in_checkpoint else ())
    while state:
        common = next((w for w in wrappers if all(k.startswith(w) for k in state)), None)
        if common is None:
            break
        state = {k[len(common):]: v for k, v in state.items()}
        removed += common
    return state, removed


# --- reading: flat state dict -> Bundle items -----------------------------------------------

@dataclass
class _ModuleKeys:
    prefix: str
    cell_style: bool
    tensors: dict = field(default_factory=dict)  # (stack k, direction d) -> {param: array}


def read_state_dict(state: dict[str, np.ndarray], path: Path) -> list[RecurrentLayer | OpaqueLayer]:
    """Group a flat state dict of numpy arrays into canonical layers and opaque items, in key order."""
    modules: dict[str, _ModuleKeys] = {}
    opaque: dict[str, list] = {}
    order: list[tuple[str, str]] = []  # ("rnn" | "opaque", prefix) in first-seen order
    for key, array in state.items():
        m = _RECURRENT_KEY.match(key)
        if m and is_recurrent_key(key):
            prefix, cell_style = m["module"] or "", m["layer"] is None
            group = modules.get(prefix)
            if group is None:
                group = modules[prefix] = _ModuleKeys(prefix, cell_style)
                order.append(("rnn", prefix))
            if group.cell_style != cell_style:
                raise FormatError(
                    f"{path}: module {_shown(prefix)} mixes cell keys (weight_ih) and stacked keys "
                    f"(weight_ih_l0); these do not form one PyTorch module.")
            slot = (0, 0) if cell_style else (int(m["layer"]), 1 if m["reverse"] else 0)
            group.tensors.setdefault(slot, {})[m["param"]] = array
        else:
            prefix, _, param = key.rpartition(".")
            if prefix not in opaque:
                opaque[prefix] = []
                order.append(("opaque", prefix))
            opaque[prefix].append((param, array))

    layers = {prefix: _module_layers(modules[prefix], path) for kind, prefix in order if kind == "rnn"}
    taken: set = set()
    for group in layers.values():
        for layer in group:  # a cell module `rnn.l0` next to a stacked `rnn` would share a name
            layer.name = _unique(layer.name, taken)
            taken.add(layer.name)
    out: list = []
    for kind, prefix in order:
        if kind == "rnn":
            out.extend(layers[prefix])
        else:
            name = _unique(prefix or "(root)", taken)  # an opaque prefix may equal a cell module's name
            taken.add(name)
            out.append(OpaqueLayer(name, None, opaque[prefix], {"format": "torch", "module": prefix}))
    return out


def _module_layers(group: _ModuleKeys, path: Path) -> list[RecurrentLayer]:
    where = f"{path}: module {_shown(group.prefix)}"
    slots = group.tensors
    stack = sorted({k for k, _ in slots})
    if stack != list(range(len(stack))):
        missing = sorted(set(range(stack[-1] + 1)) - set(stack))
        raise FormatError(f"{where} has layers {stack} but no layer {missing[0]} (keys *_l{missing[0]} missing); "
                          f"a PyTorch module numbers its layers from 0 without gaps.")
    dirs = sorted({d for _, d in slots})
    if dirs == [1]:
        raise FormatError(f"{where} holds only *_reverse keys; the forward direction (keys without "
                          f"_reverse) is missing.")
    for k in stack:
        have = sorted(d for kk, d in slots if kk == k)
        if have != dirs:
            raise FormatError(f"{where}: layer {k} has {len(have)} direction(s) while others have {len(dirs)}; "
                              f"a bidirectional module has *_reverse keys for every layer.")
    params = set(slots[(0, 0)])
    dtypes = set()
    for slot, tensors in slots.items():
        if set(tensors) != params:
            raise FormatError(f"{where}: layer {slot[0]} holds {sorted(tensors)} but layer 0 holds "
                              f"{sorted(params)}; every layer and direction needs the same keys.")
        dtypes |= {str(a.dtype) for a in tensors.values()}
    for need in ("weight_ih", "weight_hh"):
        if need not in params:
            raise FormatError(f"{where} has no {need} key; it is not a complete PyTorch recurrent module.")
    if len(dtypes) > 1:
        raise FormatError(f"{where} mixes dtypes {sorted(dtypes)}; a PyTorch module holds one dtype. "
                          f"Cast the model (e.g. model.float()) and save it again.")
    if dtypes and not dtypes <= {"float16", "float32", "float64"}:
        raise FormatError(f"{where} holds {dtypes.pop()} weights; rnnx reads float16, float32 and float64 "
                          f"recurrent weights. Cast the model (e.g. model.float()) and save it again.")
    if ("bias_ih" in params) != ("bias_hh" in params):
        raise FormatError(f"{where} has only one of bias_ih / bias_hh; PyTorch modules have both or neither.")

    first = slots[(0, 0)]
    hh, hr = first["weight_hh"], first.get("weight_hr")
    if hh.ndim != 2 or (hr is not None and hr.ndim != 2):
        raise FormatError(f"{where}: weight_hh has shape {hh.shape}; a recurrent matrix is 2-D.")
    units = hr.shape[1] if hr is not None else hh.shape[1]
    gates = hh.shape[0] // units if units and hh.shape[0] % units == 0 else 0
    if gates not in CELL_BY_GATES:
        raise FormatError(f"{where}: weight_hh has shape {tuple(hh.shape)}, which is not (4u, u), (3u, u) or "
                          f"(u, u); it does not form an nn.LSTM, nn.GRU or nn.RNN.")
    cell = CELL_BY_GATES[gates]
    if hr is not None and cell != "lstm":
        raise FormatError(f"{where} has weight_hr (a projection) but its shapes say {cell.upper()}; "
                          f"only nn.LSTM has proj_size.")
    hidden = hh.shape[1]
    layers = []
    num_layers, num_dirs = len(stack), len(dirs)
    for k in stack:
        expected_in = None if k == 0 else num_dirs * hidden
        directions = []
        for d in dirs:
            t = slots[(k, d)]
            if expected_in is not None and t["weight_ih"].ndim == 2 and t["weight_ih"].shape[1] != expected_in:
                raise FormatError(
                    f"{where}: weight_ih_l{k} has {t['weight_ih'].shape[1]} columns but layer {k} reads the "
                    f"{expected_in} outputs of layer {k - 1}; the shapes do not form one module.")
            if t["weight_hh"].shape != hh.shape:
                raise FormatError(f"{where}: layer {k} weight_hh has shape {tuple(t['weight_hh'].shape)}, "
                                  f"layer 0 {tuple(hh.shape)}; the shapes do not form one module.")
            directions.append(_direction(t, cell))
        if group.cell_style:
            name = group.prefix or "cell"
        else:
            name = f"{group.prefix}.l{k}" if group.prefix else f"l{k}"
        provenance = {"format": "torch", "module": group.prefix}
        if group.cell_style:
            provenance["class_name"] = CELL_CLASS[cell]
        else:
            provenance.update(class_name=MODULE_CLASS[cell], stack_index=k, num_layers=num_layers)
        if cell == "rnn":
            provenance["assumption"] = RNN_ASSUMPTION
        try:
            layer = RecurrentLayer(name, cell, directions, provenance=provenance)
        except ValueError as exc:
            raise FormatError(f"{where}: the shapes do not form a PyTorch {cell.upper()} ({exc}).") from None
        layers.append(layer)
    first_layer = layers[0]
    rebuild = constructor(
        first_layer.provenance["class_name"], first_layer.input_size, first_layer.units, num_layers=num_layers,
        bias=first_layer.has_bias, bidirectional=num_dirs == 2, proj_size=first_layer.proj_size or 0)
    for layer in layers:
        layer.provenance["rebuild"] = rebuild
    return layers


def _direction(t: dict, cell: str) -> Direction:
    order = TORCH_ORDER[cell]
    canonical = CANONICAL_ORDER[cell]

    def gates(key):
        return None if key not in t else reorder(t[key], order, canonical)

    return Direction(W=gates("weight_ih"), R=gates("weight_hh"), b_w=gates("bias_ih"), b_r=gates("bias_hh"),
                     proj=t.get("weight_hr"))


def constructor(class_name: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                bidirectional: bool = False, proj_size: int = 0, nonlinearity: str = "tanh",
                batch_first: bool = False) -> str:
    """The Python call that builds a module with these weights, e.g. `nn.LSTM(10, 20, num_layers=2)`."""
    args = [str(input_size), str(hidden_size)]
    if num_layers != 1:
        args.append(f"num_layers={num_layers}")
    if nonlinearity != "tanh":
        args.append(f"nonlinearity={nonlinearity!r}")
    if not bias:
        args.append("bias=False")
    if batch_first:
        args.append("batch_first=True")
    if bidirectional:
        args.append("bidirectional=True")
    if proj_size:
        args.append(f"proj_size={proj_size}")
    return f"{class_name}({', '.join(args)})"


# --- writing: canonical -> flat state dict -----------------------------------------------------

def refusal(layer: RecurrentLayer) -> str | None:
    """Why a PyTorch module cannot hold `layer` exactly, or None when it can."""
    cls = MODULE_CLASS[layer.cell]
    what = None
    if layer.cell == "gru" and not layer.reset_after:
        what = "a reset-before GRU (Keras reset_after=False), whose reset gate acts before the recurrent matmul"
    elif layer.has_peepholes:
        what = "peephole connections"
    elif layer.clip is not None:
        what = f"cell clipping (clip={layer.clip:g})"
    elif layer.input_forget:
        what = "coupled input and forget gates (input_forget)"
    elif layer.cell == "rnn" and layer.activations[0] not in (TANH, RELU):
        what = f"activation {layer.activations[0].describe()}"
    elif layer.cell != "rnn" and layer.activations[0] != SIGMOID:
        what = f"gate activation {layer.activations[0].describe()} (PyTorch gates always use Sigmoid)"
    elif layer.cell != "rnn" and any(a != TANH for a in layer.activations[1:]):
        what = f"activations {layer.describe_activations()} (PyTorch uses Sigmoid and Tanh only)"
    if what is None:
        return None
    return f"Layer {layer.name!r} uses {what}, which a PyTorch {cls} cannot express; convert it to ONNX (.onnx) instead."


def nonlinearity(layer: RecurrentLayer) -> str:
    return "relu" if layer.cell == "rnn" and layer.activations[0] == RELU else "tanh"


def layer_params(layer: RecurrentLayer, k: int = 0, cell_style: bool = False) -> dict[str, np.ndarray]:
    """The state-dict entries (without module prefix) of `layer` as stacked layer k, or as a cell module."""
    order, canonical = TORCH_ORDER[layer.cell], CANONICAL_ORDER[layer.cell]
    out = {}
    for d, direction in enumerate(layer.directions):
        suffix = "" if cell_style else f"_l{k}" + ("_reverse" if d else "")
        out["weight_ih" + suffix] = reorder(direction.W, canonical, order)
        out["weight_hh" + suffix] = reorder(direction.R, canonical, order)
        if layer.has_bias:
            zeros = np.zeros(direction.W.shape[0], direction.W.dtype)
            b_ih = direction.b_w if direction.b_w is not None else zeros
            b_hh = direction.b_r if direction.b_r is not None else zeros
            out["bias_ih" + suffix] = reorder(b_ih, canonical, order)
            out["bias_hh" + suffix] = reorder(b_hh, canonical, order)
        if direction.proj is not None:
            out["weight_hr" + suffix] = direction.proj
    return out


@dataclass
class Emission:
    """One PyTorch module of the written state dict."""

    prefix: str
    layers: list[RecurrentLayer]  # in stack order
    cell_style: bool
    batch_first: bool

    @property
    def class_name(self) -> str:
        return (CELL_CLASS if self.cell_style else MODULE_CLASS)[self.layers[0].cell]

    def params(self) -> dict[str, np.ndarray]:
        out = {}
        for k, layer in enumerate(self.layers):
            out.update(layer_params(layer, k, self.cell_style))
        return out

    def constructor(self) -> str:
        first = self.layers[0]
        return constructor(self.class_name, first.input_size, first.units, num_layers=len(self.layers),
                           bias=first.has_bias, bidirectional=first.num_directions == 2,
                           proj_size=first.proj_size or 0, nonlinearity=nonlinearity(first),
                           batch_first=self.batch_first)


def identifier(name: str) -> str:
    """A layer name made a valid Python identifier (a module attribute name)."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII) or "layer"
    if ident[0].isdigit() or keyword.iskeyword(ident):
        ident = "_" + ident
    return ident


def is_torch_layer(layer: RecurrentLayer) -> bool:
    return layer.provenance.get("format") == "torch" and "module" in layer.provenance


def plan(bundle: Bundle) -> list[Emission]:
    """Which module each recurrent layer goes to, in bundle order (refusing what torch cannot hold)."""
    for layer in bundle.layers:
        reason = refusal(layer)
        if reason:
            raise UnsupportedError(reason)
    stacks: dict[str, list[RecurrentLayer]] = {}
    for layer in bundle.layers:
        if is_torch_layer(layer) and "stack_index" in layer.provenance:
            stacks.setdefault(layer.provenance["module"], []).append(layer)
    by_name = _stacks_by_name(bundle.layers)
    emissions, done = [], set()
    for layer in bundle.layers:
        if id(layer) in done:
            continue
        p = layer.provenance
        if is_torch_layer(layer) and p.get("class_name", "").endswith("Cell"):
            emissions.append(Emission(p["module"], [layer], True, False))
        elif is_torch_layer(layer) and "stack_index" in p and _whole_stack(stacks[p["module"]]):
            members = sorted(stacks[p["module"]], key=lambda l: l.provenance["stack_index"])
            emissions.append(Emission(p["module"], members, False, False))
            done |= {id(m) for m in members}
        elif not is_torch_layer(layer) and id(layer) in by_name:
            members = by_name[id(layer)]
            emissions.append(Emission(_STACKED_NAME.match(layer.name)["module"] or "", members, False, True))
            done |= {id(m) for m in members}
        else:
            emissions.append(Emission(identifier(layer.name), [layer], False, not is_torch_layer(layer)))
    return emissions


# How the reader names layer k of a stacked module: `encoder.rnn.l1`, `l0` at the root.
_STACKED_NAME = re.compile(r"^(?:(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.)?l(?P<k>\d+)$", re.ASCII)


def stacked_key(name: str) -> tuple[str, int] | None:
    """(module path, layer index) when `name` is how the reader names a stacked layer (`enc.rnn.l1`)."""
    match = _STACKED_NAME.match(name)
    return (match["module"] or "", int(match["k"])) if match else None


def _stacks_by_name(layers: list[RecurrentLayer]) -> dict[int, list[RecurrentLayer]]:
    """Layers from elsewhere (Keras, ONNX, .rnnx) named as the reader names stacked PyTorch layers.

    Such names come from a PyTorch file converted along a chain; writing them back under that
    module (`lstm.l0` -> module `lstm`, `l0, l1` -> a root nn.LSTM(num_layers=2)) makes the
    names survive another round trip instead of growing (`lstm_l0.l0`). Only complete stacks
    whose layers chain are grouped; id(layer) -> the stack's layers in order.
    """
    groups: dict[str, list[RecurrentLayer]] = {}
    for layer in layers:
        match = _STACKED_NAME.match(layer.name)
        if match and not is_torch_layer(layer) and not keyword.iskeyword(match["module"] or "_"):
            groups.setdefault(match["module"] or "", []).append(layer)
    out = {}
    for module, members in groups.items():
        indices = [int(_STACKED_NAME.match(m.name)["k"]) for m in members]
        first = members[0]
        chained = all(
            m.cell == first.cell and m.num_directions == first.num_directions and m.has_bias == first.has_bias
            and m.proj_size == first.proj_size and m.dtype == first.dtype and m.activations == first.activations
            and m.input_size == prev.num_directions * prev.hidden_size
            for prev, m in zip(members, members[1:]))
        if indices == list(range(len(members))) and chained:
            out.update({id(m): members for m in members})
    return out


def written_names(layer: RecurrentLayer) -> list[str]:
    """Names the layer may have when the written file is read back, most specific first."""
    return list(dict.fromkeys([layer.name, f"{identifier(layer.name)}.l0"]))


def _whole_stack(members: list[RecurrentLayer]) -> bool:
    indices = sorted(m.provenance["stack_index"] for m in members)
    first = members[0]
    same = all(m.cell == first.cell and m.num_directions == first.num_directions and m.has_bias == first.has_bias
               and m.proj_size == first.proj_size and m.dtype == first.dtype and m.activations == first.activations
               for m in members)
    return same and indices == list(range(first.provenance.get("num_layers", len(members))))


@dataclass
class Target:
    """What a PyTorch target of `bundle` holds: the state dict, notes, and the module behind each prefix."""

    state: dict = field(default_factory=dict)  # full key -> array
    notes: list = field(default_factory=list)
    modules: list = field(default_factory=list)  # (prefix, constructor call or None when unknown, source names)


def to_state_dict(bundle: Bundle) -> tuple[dict[str, np.ndarray], list[str]]:
    """The flat state dict of `bundle` and notes for the user (constructor calls, skipped layers)."""
    target = build_target(bundle)
    return target.state, target.notes


def build_target(bundle: Bundle) -> Target:
    emissions = plan(bundle)
    out = Target()
    owner: dict[str, str] = {}

    def put(prefix: str, params: dict, who: str):
        for key, array in params.items():
            full = f"{prefix}.{key}" if prefix else key
            if full in out.state:
                raise UnsupportedError(
                    f"Layers {owner[full]!r} and {who!r} would both be written as {full!r} in the state dict; "
                    f"rename one of them or convert them one at a time with --layer.")
            # lazy: read when written; asarray, not ascontiguousarray, which makes a 0-d tensor (BatchNorm's
            # num_batches_tracked) 1-d
            out.state[full] = array if is_lazy(array) else np.asarray(array, order="C")
            owner[full] = who

    def built(prefix: str, call: str | None, sources: list[str]):
        out.modules.append((prefix, call, sources))
        if call:
            out.notes.append(f"{prefix or 'the root module'} = {call}  # from {', '.join(map(repr, sources))}")

    by_layer = {id(l): e for e in emissions for l in e.layers}
    written = set()
    for item in bundle.items:
        if isinstance(item, RecurrentLayer):
            emission = by_layer[id(item)]
            if id(emission) in written:
                continue
            written.add(id(emission))
            put(emission.prefix, emission.params(), item.name)
            built(emission.prefix, emission.constructor(), [l.name for l in emission.layers])
            where = emission.prefix or "the root module"
            if any(l.options.get("go_backwards") for l in emission.layers):
                out.notes.append(f"{where}: the source runs backwards in time (go_backwards=True); feed the "
                                 f"module the time-reversed sequence (x.flip(1)).")
            if any(l.options.get("merge_mode") not in (None, "concat") for l in emission.layers):
                out.notes.append(f"{where}: the source merged its two directions with merge_mode="
                                 f"{item.options['merge_mode']!r}; nn modules concatenate them.")
        else:
            params, call = _opaque_params(item)
            if params is None:
                out.notes.append(f"skipped {item.name!r} ({item.class_name or 'unknown class'}): only Dense and "
                                 f"Embedding layers have a one-to-one PyTorch module.")
                continue
            if not params:
                continue
            torch_origin = item.options.get("format") == "torch"
            prefix = item.options["module"] if torch_origin else identifier(item.name)
            put(prefix, params, item.name)
            built(prefix, call, [item.name])
    return out


def _opaque_params(item: OpaqueLayer) -> tuple[dict | None, str | None]:
    """(state-dict entries, constructor call or None) for a non-recurrent item; (None, None) when skipped."""
    if item.options.get("format") == "torch":
        return dict(item.weights), None
    short = {_short(n): a for n, a in item.weights}
    arrays = [a for _, a in item.weights]
    cls = item.class_name
    # TimeDistributed(Dense) applies the same kernel at every step, as nn.Linear does on the last axis
    is_dense = cls == "Dense" or (cls in (None, "TimeDistributed") and set(short) in ({"kernel"}, {"kernel", "bias"})
                                  and short["kernel"].ndim == 2)
    is_embedding = cls == "Embedding" or (cls is None and set(short) == {"embeddings"})
    if is_dense and arrays and arrays[0].ndim == 2 and len(arrays) <= 2:
        kernel = short.get("kernel", arrays[0])
        params = {"weight": kernel.T}
        bias = short.get("bias", arrays[1] if len(arrays) == 2 else None)
        if bias is not None:
            params["bias"] = bias
        return params, constructor("nn.Linear", kernel.shape[0], kernel.shape[1], bias=bias is not None)
    if is_embedding and len(arrays) == 1 and arrays[0].ndim == 2:
        return {"weight": arrays[0]}, f"nn.Embedding({arrays[0].shape[0]}, {arrays[0].shape[1]})"
    if not arrays:
        return {}, None
    return None, None


def _short(weight_name: str) -> str:
    """'dense_1/kernel:0' -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":")[0]


def _shown(prefix: str) -> str:
    return repr(prefix) if prefix else "at the root"


def _unique(name: str, taken: set) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"
