"""The Keras 3 weights tree and the canonical form, both ways (no keras import).

Keras 3 (`model.save_weights("x.weights.h5")`, and `model.weights.h5` inside a `.keras`
zip) stores one HDF5 group per saveable object, at the object's attribute path:

    layers/<layer>/vars/0 ...           a plain layer's variables, creation order
    layers/<rnn>/cell/vars/0, 1, 2      LSTM / GRU / SimpleRNN: kernel, recurrent_kernel, bias
    layers/<bidi>/forward_layer/cell/vars/...   and .../backward_layer/cell/vars/...
    layers/<td>/layer/vars/...          TimeDistributed (a wrapped LSTM: layers/<td>/layer/cell/vars/...)
    layers/<nested model>/layers/...    a Sequential / Functional inside a model

A model's layers are addressed not by their names but by their class: `<layer>` is the
snake_case class name (`LSTM` -> `lstm`, `SimpleRNN` -> `simple_rnn`) made unique
within its container by a counter (`lstm`, `lstm_1`, `lstm_2`, ...). Every `vars` group
carries the object's own name in its `name` attribute (Keras 3.x writes it even when the
group is otherwise empty). Files written on Windows by early Keras 3 releases joined
paths with backslashes, so a group can be called `layers\\lstm\\cell`; `read_tree`
normalises every name to forward slashes.

Keras variable layouts (same in Keras 2 and 3): LSTM kernel (in, 4u), recurrent_kernel
(u, 4u), bias (4u,), gates i, f, c, o; GRU z, r, h, bias (2, 3u) when reset_after=True
(row 0 input, row 1 recurrent) else (3u,); SimpleRNN kernel (in, u), recurrent (u, u),
bias (u,). Keras computes `x @ kernel`, so each canonical matrix is the transpose.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field, replace as dataclasses_replace
from typing import Any, Callable, Iterator

import numpy as np

from ...canonical import Direction, RecurrentLayer
from ...canonical.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, Activation, from_keras, to_keras
from ... import progress
from ...errors import FormatError, UnsupportedError
from ...lazy import LazyArray, read_once
from ..keras2 import layout as keras2_layout
from ..keras2.h5 import _plain_offset as plain_offset  # contiguous, unfiltered, in the file: mapped
from ..keras2.config import LAYER_OF_CELL  # RNN(LSTMCell) holds an LSTM's variables, ...

# Keras recurrent layer classes and the canonical cell each holds.
RECURRENT_CLASSES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}
KERAS_CLASS = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}
# Containers whose children live under `<path>/layers/`.
MODEL_CLASSES = ("Sequential", "Functional", "Model")

# One variable may not claim more than this (checked before any read).
MAX_TENSOR_BYTES = 4 << 30


# --- names ---------------------------------------------------------------------


def snake_case(class_name: str) -> str:
    """Keras's own rule for the path component of a layer of class `class_name`."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


class PathNamer:
    """Hands out `lstm`, `lstm_1`, `dense`, ... as Keras 3 does inside one container."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._used: dict[str, int] = {}

    def next(self, class_name: str) -> str:
        base = snake_case(class_name)
        if base in self._used:
            self._used[base] += 1
            base = f"{base}_{self._used[base]}"
        else:
            self._used[base] = 0
        return f"{self.prefix}/{base}" if self.prefix else base


# --- recurrent variables <-> canonical ---------------------------------------------


def _variant(cell: str, reset_after: bool) -> str:
    """Keras 3 cells store Keras 2's CPU layouts (keras2_layout): a reset-after GRU keeps a 2-row bias."""
    return "gru-2row" if cell == "gru" and reset_after else "plain"


def direction_from_vars(cell: str, arrays: list[np.ndarray], reset_after: bool, where: str) -> Direction:
    """Canonical weights of one direction from a Keras cell's [kernel, recurrent_kernel, (bias)]."""
    if len(arrays) not in (2, 3):
        raise FormatError(f"{where}: a Keras {KERAS_CLASS[cell]} cell holds 2 or 3 variables, found {len(arrays)}.")
    kernel, recurrent = arrays[0], arrays[1]
    bias = arrays[2] if len(arrays) == 3 else None
    variant = _variant(cell, reset_after)
    if not keras2_layout.fits(cell, "plain", kernel.shape, recurrent.shape, None):  # the kernels alone
        raise FormatError(f"{where}: kernel {kernel.shape} and recurrent kernel {recurrent.shape} do not form a "
                          f"Keras {KERAS_CLASS[cell]} cell.")
    if bias is not None and not keras2_layout.fits(cell, variant, kernel.shape, recurrent.shape, bias.shape):
        expected = (2, kernel.shape[1]) if variant == "gru-2row" else (kernel.shape[1],)
        raise FormatError(f"{where}: bias of shape {bias.shape}, expected {expected}.")
    return keras2_layout.to_direction(cell, variant, kernel, recurrent, bias)


def direction_to_vars(layer: RecurrentLayer, d: Direction) -> list[np.ndarray]:
    """[kernel, recurrent_kernel, (bias)] of a Keras cell computing canonical direction `d`."""
    return keras2_layout.from_direction(layer.cell, _variant(layer.cell, layer.reset_after), d,
                                        use_bias=layer.has_bias)


def infer_cell(arrays: list[np.ndarray]) -> tuple[str, bool] | None:
    """(cell, reset_after) from the shapes of a Keras cell's variables, or None if they are not one."""
    if len(arrays) not in (2, 3):
        return None
    found = keras2_layout.classify(arrays[0].shape, arrays[1].shape, arrays[2].shape if len(arrays) == 3 else None)
    if found is None or found[1] == "cudnn":
        return None
    cell, variant = found
    # a GRU without bias does not say; Keras 3's default is reset_after=True
    return cell, not (cell == "gru" and variant == "plain" and len(arrays) == 3)


# --- activations and refusals --------------------------------------------------------


def activation_names(layer: RecurrentLayer, accept_activation_change: bool = False) -> dict[str, str]:
    """Keras 3 `activation` / `recurrent_activation` of `layer`; raises UnsupportedError when none is exact."""
    reason = refusal(layer, accept_activation_change)
    if reason:
        raise UnsupportedError(reason)
    if layer.cell == "rnn":
        return {"activation": _keras3_name(layer.activations[0])}
    gate, cell_act = layer.activations[0], layer.activations[1]
    return {"activation": _keras3_name(cell_act), "recurrent_activation": _keras3_name(gate)}


def _keras3_name(act) -> str:
    if act == HARD_SIGMOID_KERAS2:  # only reached when the change was accepted
        return "hard_sigmoid"
    return to_keras(act, 3)


def refusal(layer: RecurrentLayer, accept_activation_change: bool = False) -> str | None:
    """Why a Keras 3 file cannot hold `layer` exactly, or None."""
    name = layer.name
    if layer.has_peepholes:
        return f"layer {name!r} has peephole weights, which Keras 3 LSTM does not have; convert it to ONNX instead."
    if layer.proj_size is not None:
        return (f"layer {name!r} has a projection (proj_size {layer.proj_size}), which Keras 3 LSTM does not have; "
                f"convert it to PyTorch or ONNX instead.")
    if layer.clip is not None:
        return f"layer {name!r} clips its cell at {layer.clip}, which Keras 3 cannot; convert it to ONNX instead."
    if layer.input_forget:
        return f"layer {name!r} couples its input and forget gates, which Keras 3 cannot; convert it to ONNX instead."
    if layer.cell == "lstm" and layer.activations[1] != layer.activations[2]:
        return (f"layer {name!r} uses different cell and output activations "
                f"({layer.describe_activations()}); Keras 3 LSTM has one; convert it to ONNX instead.")
    hard = [a for a in layer.activations if a == HARD_SIGMOID_KERAS2]
    if hard and not accept_activation_change:
        return (f"layer {name!r} uses Keras 2 hard_sigmoid (slope 0.2), and Keras 3 has no equal built-in "
                f"(its hard_sigmoid has slope 1/6); pass --accept-activation-change (accept_activation_change=True) "
                f"to write it with Keras 3's hard_sigmoid and see the deviation, or keep it in .h5 or ONNX.")
    for act in layer.activations:
        if act != HARD_SIGMOID_KERAS2 and to_keras(act, 3) is None:
            return (f"layer {name!r} uses the activation {act.describe()}, which no Keras 3 built-in computes; "
                    f"convert it to ONNX instead.")
    return None


def activation_deviation(layer: RecurrentLayer, seed: int = 0, batch: int = 8, steps: int = 32) -> float:
    """Largest output change of `layer` when Keras 2 hard_sigmoid becomes Keras 3's, on N(0, 1) inputs."""
    from dataclasses import replace

    from ...canonical import reference

    changed = replace(layer, activations=tuple(HARD_SIGMOID_KERAS3 if a == HARD_SIGMOID_KERAS2 else a
                                               for a in layer.activations))
    x = np.random.default_rng(seed).standard_normal((batch, steps, layer.input_size))
    with read_once():  # both runs use the layer as read once
        before, _, _ = reference.run_batch_first(layer, x)
        after, _, _ = reference.run_batch_first(changed, x)
    return float(np.abs(before - after).max())


def deviation_note(layer: RecurrentLayer) -> str:
    return (f"layer {layer.name!r}: Keras 2 hard_sigmoid (slope 0.2) was written as Keras 3 hard_sigmoid (slope 1/6); "
            f"on random N(0,1) inputs (8 sequences of 32 steps) the layer's output moves by up to "
            f"{activation_deviation(layer):.3g} (rnnx reference).")


def activations_from_config(cell: str, config: dict, keras_major: int, where: str) -> tuple:
    """Canonical activation slots of a Keras LSTM / GRU / SimpleRNN config."""
    try:
        act = from_keras(config.get("activation", "tanh"), keras_major)
        if cell == "rnn":
            return (act,)
        gate = from_keras(config.get("recurrent_activation", "sigmoid"), keras_major)
    except ValueError as exc:
        raise UnsupportedError(f"{where}: the activation {exc.args[0]!r} is not one rnnx knows; "
                               f"known: hard_sigmoid, sigmoid, tanh, relu, linear, softsign, softplus, elu.") from None
    return (gate, act, act) if cell == "lstm" else (gate, act)



# --- the HDF5 tree ---------------------------------------------------------------


@dataclass
class VarGroup:
    """The variables Keras stored for one object (its `vars` group), in creation order."""

    path: str  # normalised owner path, e.g. "layers/lstm/cell"
    name: str | None  # the object's own name (the `name` attribute), when written
    arrays: list[np.ndarray] = field(default_factory=list)
    offset: float = float("inf")  # where its first variable's data sits in the file: Keras writes in layer order
    rnnx: dict | None = None  # RNNX_ATTR of a recurrent layer rnnx wrote: what the variables cannot say
    layer: Any = field(default=None, repr=False, compare=False)  # writing: the RecurrentLayer it comes from


# Group attribute rnnx writes on a recurrent layer's `vars` (Keras ignores it): its activations and
# go_backwards / merge_mode, so that a bare .weights.h5 read back keeps them instead of assuming defaults.
RNNX_ATTR = "rnnx_layer"


def read_tree(h5, where: str, reopen: Callable, file_bytes: int, map_plain: Callable | None = None) -> dict[str, VarGroup]:
    """Every `vars` group of an open Keras 3 HDF5 file, keyed by its owner's normalised path. Variables are
    LazyArrays read through `reopen()` (a context manager giving the file opened again) when used, so the
    tree is usable after `h5` closes; `file_bytes`: the HDF5 file's size, which no plain variable outgrows.
    `map_plain(offset, shape, dtype)`: the HDF5 file's bytes at `offset` as a read-only mapped array (None
    when it cannot map them), for variables stored as plain bytes (see _values)."""
    import h5py

    groups: dict[str, VarGroup] = {}

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Group):
            return
        path = name.replace("\\", "/")
        if path != "vars" and not path.endswith("/vars"):
            return
        owner = path[: -len("vars")].rstrip("/")
        if owner in groups:
            raise FormatError(f"{where}: two HDF5 groups both normalise to {path!r}; the file is inconsistent.")
        label = obj.attrs.get("name")
        if isinstance(label, bytes):
            label = label.decode("utf-8", "replace")
        arrays, offset = _read_vars(obj, where, path, reopen, file_bytes, map_plain)
        groups[owner] = VarGroup(owner, str(label) if label is not None else None, arrays, offset,
                                 _rnnx_attr(obj.attrs.get(RNNX_ATTR)))

    h5.visititems(visit)
    return groups


def _rnnx_attr(raw) -> dict | None:
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_vars(group, where: str, path: str, reopen: Callable, file_bytes: int,
               map_plain: Callable | None) -> tuple[list[LazyArray], float]:
    import h5py

    keys = [k for k in group.keys() if isinstance(group[k], h5py.Dataset)]
    if any(not k.isdigit() for k in keys):
        return [], float("inf")  # not numbered variables (a lookup table's vocabulary, ...): not weights rnnx moves
    keys.sort(key=int)
    if keys != [str(i) for i in range(len(keys))]:
        raise FormatError(f"{where}: the variables of {path} are numbered {keys}, not 0..{len(keys) - 1}.")
    out = []
    offsets = [float("inf")]
    for k in keys:
        ds = group[k]
        offset = ds.id.get_offset()
        if offset is not None:
            offsets.append(float(offset))
        out.append(_lazy_variable(ds, where, f"{path}/{k}", reopen, file_bytes, map_plain))
    return out, min(offsets)


def _lazy_variable(ds, where: str, label: str, reopen: Callable, file_bytes: int,
                   map_plain: Callable | None) -> LazyArray:
    """A variable as a LazyArray, after checking what its header claims (nothing is allocated or read)."""
    if ds.dtype.kind not in "fiub":
        raise FormatError(f"{where}: {label} holds {ds.dtype} data, not numbers.")
    if ds.external or ds.is_virtual:
        raise FormatError(f"{where}: {label} keeps its data in another file, which rnnx does not read.")
    nbytes = math.prod(int(d) for d in ds.shape) * ds.dtype.itemsize  # Python ints: no int64 wrap
    filtered = ds.id.get_create_plist().get_nfilters() > 0  # compressed: at most ~1000:1
    if nbytes > MAX_TENSOR_BYTES or nbytes > file_bytes * (1000 if filtered else 1):
        raise FormatError(f"{where}: {label} claims {nbytes} bytes, more than rnnx reads for one tensor or "
                          f"than the file holds; the file is truncated or damaged.")
    name = ds.name  # the stored path, backslashes and all

    def load():
        with reopen() as h5:
            return _values(h5[name], map_plain)

    return LazyArray(ds.shape, ds.dtype, load, f"{where}:{label}")


def _values(ds, map_plain: Callable | None) -> np.ndarray:
    """A variable's values: a read-only view of the mapped file where they are stored as plain bytes (one
    copy fewer for the layout change that follows, as the Keras 2 reader does), else read by h5py."""
    offset = plain_offset(ds) if map_plain is not None else None
    values = None if offset is None else map_plain(offset, ds.shape, ds.dtype)
    return np.asarray(ds[()]) if values is None else values


def write_tree(h5, entries: list[VarGroup], model_name: str | None = None, measured=()) -> dict[int, str]:
    """Write `entries` (owner path -> variables) the way Keras 3 does, root `vars` included, one variable in
    memory at a time. The layers in `measured` (their Keras 2 hard_sigmoid becomes Keras 3's) get their
    `deviation_note`, computed while the layer's entries are written so that its tensors are read once for
    both; returns those notes by id(layer)."""
    root = h5.create_group("vars")
    if model_name:
        root.attrs["name"] = model_name
    notes = {}
    for _, run in itertools.groupby(entries, key=lambda e: id(e.layer)):  # a layer's entries are consecutive
        run = list(run)
        layer = run[0].layer
        if layer is None or not any(layer is m for m in measured):
            _write_entries(h5, run)
            continue
        with read_once():  # the layer as read for the note stays held until its variables are written
            notes[id(layer)] = deviation_note(layer)
            _write_entries(h5, run)
    return notes


def _write_entries(h5, entries: list[VarGroup]) -> None:
    for entry in entries:
        group = h5.require_group(entry.path).create_group("vars")
        if entry.name is not None:
            group.attrs["name"] = entry.name
        if entry.rnnx is not None:
            group.attrs[RNNX_ATTR] = json.dumps(entry.rnnx)
        for i, arr in enumerate(entry.arrays):
            data = np.ascontiguousarray(arr)  # a lazy array is read (or computed) here
            group.create_dataset(str(i), data=data)
            progress.wrote(data.nbytes, f"{entry.path}/vars/{i}")
            del data


# --- walking a Keras 3 model config ------------------------------------------------


@dataclass
class ConfigLayer:
    """One layer of a Keras 3 config and the path where Keras 3 keeps its variables."""

    path: str
    class_name: str
    config: dict
    entry: dict  # the whole serialized layer (module, class_name, config, ...)
    scope: tuple[str, ...] = ()  # names of the models it is nested in, outermost first

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.rsplit("/", 1)[-1]

    @property
    def qualified_name(self) -> str:
        """"outer/inner" inside nested models, as the Keras 2 reader names such layers too."""
        return "/".join(self.scope + (self.name,))


def walk_config(model: dict, prefix: str = "", scope: tuple[str, ...] = ()) -> Iterator[ConfigLayer]:
    """The layers of a serialized Keras 3 model, nested models flattened, in Keras's saving order."""
    config = model.get("config", {})
    layers = config.get("layers", []) if isinstance(config, dict) else []
    namer = PathNamer(f"{prefix}layers")
    sequential = model.get("class_name") == "Sequential"
    for entry in layers:
        class_name = entry.get("class_name")
        if sequential and class_name == "InputLayer":
            continue  # Sequential.layers leaves its InputLayer out
        path = namer.next(_python_class(entry))
        layer = ConfigLayer(path, class_name, entry.get("config", {}), entry, scope)
        yield layer
        if class_name in MODEL_CLASSES:
            yield from walk_config(entry, prefix=path + "/", scope=scope + (layer.name,))


def _python_class(entry: dict) -> str:
    """The Python class name Keras will instantiate (a registered 'package>Name' gives 'Name')."""
    class_name = entry.get("class_name", "")
    if class_name == "Model":
        return "Functional"
    return class_name.split(">")[-1]


# --- a whole tree <-> bundle items ---------------------------------------------------

# Keras 3 classes whose variables live under a sub-object rather than in their own `vars`.
SUBOBJECT = {"TimeDistributed": "layer"}
SKIPPED_ROOTS = ("optimizer", "metrics", "compile_metrics", "loss_tracker")
RNN_OPTIONS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask",
               "dropout", "recurrent_dropout")


def items_from_tree(tree: dict[str, VarGroup], model_config: dict | None, where: str,
                    provenance: dict) -> tuple[list, list[str]]:
    """Bundle items (recurrent layers and the rest) of a Keras 3 weights tree, plus notes.

    With a config, layers are found where Keras 3 puts them and described by their config;
    without one (a bare .weights.h5), recurrent cells are recognised from their paths and
    shapes, and their activations are Keras 3's defaults.
    """
    items: list = []
    notes: list[str] = []
    claimed: set[str] = set()
    if model_config is not None:
        for cl in walk_config(model_config):
            if cl.class_name in MODEL_CLASSES:
                claimed.add(cl.path)
                continue
            item = _item_from_config(cl, tree, claimed, where, provenance)
            if isinstance(item, list):  # the cells of RNN(StackedRNNCells)
                items.extend(item)
            elif item is not None:
                items.append(item)
    leftovers = {p: g for p, g in tree.items() if p not in claimed and p and not p.startswith(SKIPPED_ROOTS)}
    inferred = _items_without_config(leftovers, where, provenance)
    if inferred and model_config is not None:
        notes.append(f"{where}: variables at {', '.join(_item_path(i) for i in inferred)} belong to no layer of "
                     f"the config; they were read by their shapes.")
    if inferred and model_config is None and any(isinstance(i, RecurrentLayer) and "activations_from" not in
                                                 i.provenance for i in inferred):
        notes.append(f"{where}: a weights file does not say its activations; Keras 3 defaults were assumed "
                     f"(sigmoid gates, tanh; GRU reset_after from the bias shape).")
    items.extend(inferred)
    return _unique_names(items), notes


def keras_major(version) -> int:
    """3 unless the file says an earlier Keras wrote it (tf.keras 2.13+ also writes .keras archives)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 3


def _item_path(item) -> str:
    return item.provenance.get("keras3_path") if isinstance(item, RecurrentLayer) else item.options["keras3_path"]


@dataclass
class RecurrentPart:
    """One recurrent layer a config layer holds: its canonical name, the Keras layer class it computes as,
    the config that says how (an RNN's cell config plus the RNN's options), and its cells' variable paths
    (two in a Bidirectional). `stacked`: a cell of RNN(StackedRNNCells), named "<rnn>/<cell name>"."""

    name: str
    class_name: str
    config: dict
    cells: list[str]
    stacked: bool = False
    wrappers: tuple[str, ...] = ()  # TimeDistributed / Bidirectional around it, outermost first
    merge_mode: str | None = None  # a Bidirectional's


def recurrent_parts(cl: ConfigLayer) -> list[RecurrentPart]:
    """The recurrent layers of config layer `cl`: LSTM / GRU / SimpleRNN / RNN(cell), also in a Bidirectional
    and inside TimeDistributed (whose wrapped layer Keras 3 keeps under `<path>/layer`), and one per cell of
    RNN(StackedRNNCells); [] for any other layer."""
    layer_class, config, path, wrappers, merge_mode = cl.class_name, cl.config, cl.path, [], None
    if layer_class == "TimeDistributed":
        inner = config.get("layer") if isinstance(config.get("layer"), dict) else {}
        layer_class, config, path = inner.get("class_name"), inner.get("config") or {}, f"{path}/layer"
        wrappers.append("TimeDistributed")
    owners = [path]
    if layer_class == "Bidirectional":
        merge_mode = config.get("merge_mode", "concat")
        inner = config.get("layer") or {}
        layer_class, config = inner.get("class_name"), inner.get("config") or {}
        owners = [f"{path}/forward_layer", f"{path}/backward_layer"]
        wrappers.append("Bidirectional")
    found = dict(wrappers=tuple(wrappers), merge_mode=merge_mode)
    if layer_class in RECURRENT_CLASSES:
        return [RecurrentPart(cl.qualified_name, layer_class, config, [f"{o}/cell" for o in owners], **found)]
    cell = config.get("cell") if layer_class == "RNN" else None
    if not isinstance(cell, dict):
        return []
    options = {k: v for k, v in config.items() if k not in ("cell", "name")}
    if cell.get("class_name") in LAYER_OF_CELL:
        return [RecurrentPart(cl.qualified_name, LAYER_OF_CELL[cell["class_name"]],
                              {**(cell.get("config") or {}), **options}, [f"{o}/cell" for o in owners], **found)]
    if cell.get("class_name") != "StackedRNNCells" or wrappers:
        return []
    cells = (cell.get("config") or {}).get("cells") or []
    if not cells or not all(isinstance(c, dict) and c.get("class_name") in LAYER_OF_CELL for c in cells):
        return []
    namer = PathNamer(f"{cl.path}/cell/cells")
    return [RecurrentPart(f"{cl.qualified_name}/{(c.get('config') or {}).get('name', k)}",
                          LAYER_OF_CELL[c["class_name"]], {**(c.get("config") or {}), **options},
                          [namer.next(c["class_name"])], stacked=True) for k, c in enumerate(cells)]


def _item_from_config(cl: ConfigLayer, tree: dict, claimed: set, where: str, provenance: dict):
    from ...canonical import OpaqueLayer

    parts = recurrent_parts(cl)
    if parts:
        items = [_recurrent_item(cl, part, tree, claimed, where, provenance) for part in parts]
        return items if parts[0].stacked else items[0]
    name = cl.qualified_name
    owned = [p for p in tree if p == cl.path or p.startswith(cl.path + "/")]
    claimed.update(owned)
    weights = [(f"{p[len(cl.path) + 1:] + '/' if p != cl.path else ''}vars/{i}", arr)
               for p in sorted(owned) for i, arr in enumerate(tree[p].arrays)]
    if not weights:
        return None
    return OpaqueLayer(name, cl.class_name, weights, {"keras3_path": cl.path})


def _recurrent_item(cl: ConfigLayer, part: RecurrentPart, tree: dict, claimed: set, where: str,
                    provenance: dict) -> RecurrentLayer:
    name, rnn_config, cells = part.name, part.config, part.cells
    cell = RECURRENT_CLASSES[part.class_name]
    missing = [c for c in cells if c not in tree or not tree[c].arrays]
    if missing:
        raise FormatError(f"{where}: layer {name!r} ({cl.class_name}) has no variables at {missing[0]}; "
                          f"the archive is incomplete.")
    reset_after = bool(rnn_config.get("reset_after", True))
    where_layer = f"{where}: layer {name!r}"
    directions = [direction_from_vars(cell, tree[c].arrays, reset_after, where_layer) for c in cells]
    owners = {cl.path}
    for c in cells:  # every group between the layer and its cells
        parts = c.split("/")
        owners.update("/".join(parts[:k]) for k in range(len(cl.path.split("/")), len(parts)))
    claimed.update(cells + sorted(owners))
    options = {k: rnn_config[k] for k in RNN_OPTIONS if k in rnn_config}
    if part.merge_mode is not None:
        options["merge_mode"] = part.merge_mode
    prov = dict(provenance, class_name=part.class_name, keras3_path=cl.path)
    if part.stacked:
        prov["keras3_cell_path"] = cells[0]
    if part.wrappers:
        prov["wrapper"] = part.wrappers[0]
    return RecurrentLayer(
        name=name, cell=cell, directions=directions,
        activations=activations_from_config(cell, rnn_config, keras_major(provenance.get("keras_version")),
                                            where_layer),
        reset_after=reset_after if cell == "gru" else True, provenance=prov, options=options)


def _layer_path(path: str) -> str:
    """The path of the layer that owns the object at `path` (`layers/x/cell` -> `layers/x`)."""
    parts = path.split("/")
    starts = [i for i, p in enumerate(parts[:-1]) if p == "layers"]
    return "/".join(parts[: starts[-1] + 2]) if starts else parts[0]


def _items_without_config(groups: dict[str, VarGroup], where: str, provenance: dict) -> list:
    from ...canonical import OpaqueLayer

    by_layer: dict[str, list[str]] = {}
    for path, group in groups.items():
        if group.arrays:
            by_layer.setdefault(_layer_path(path), []).append(path)
    items = []
    # HDF5 lists groups alphabetically; the data offsets keep the order Keras wrote the layers in.
    in_file_order = sorted(by_layer.items(), key=lambda kv: (min(groups[p].offset for p in kv[1]), kv[0]))
    for layer_path, paths in in_file_order:
        label = groups[layer_path].name if layer_path in groups and groups[layer_path].name else \
            layer_path.rsplit("/", 1)[-1]
        kind = "|".join(sorted(p[len(layer_path):] for p in paths))
        wrapped = kind.startswith("/layer/")  # TimeDistributed keeps its layer's variables under `layer`
        inner = layer_path + "/layer" if wrapped else layer_path
        if wrapped:
            kind = "|".join(k[len("/layer"):] for k in kind.split("|"))
        cells = {"/cell": [inner + "/cell"],
                 "/backward_layer/cell|/forward_layer/cell": [inner + "/forward_layer/cell",
                                                              inner + "/backward_layer/cell"]}.get(kind)
        found = [infer_cell(groups[c].arrays) for c in cells] if cells else []
        if found and all(found) and len(set(found)) == 1:
            cell, reset_after = found[0]
            where_layer = f"{where}: layer {label!r}"
            directions = [direction_from_vars(cell, groups[c].arrays, reset_after, where_layer) for c in cells]
            prov = dict(provenance, class_name=KERAS_CLASS[cell], keras3_path=layer_path)
            if len(cells) == 2:
                prov["wrapper"] = "Bidirectional"
            if wrapped:
                prov["wrapper"] = "TimeDistributed"
            recorded = groups[layer_path].rnnx if layer_path in groups else None
            activations, options = _recorded(recorded, cell)
            if activations:
                prov["activations_from"] = "rnnx"
            items.append(RecurrentLayer(name=label, cell=cell, directions=directions,
                                        reset_after=reset_after if cell == "gru" else True, provenance=prov,
                                        options=options, **({"activations": activations} if activations else {})))
            continue
        weights = [(f"{p[len(layer_path) + 1:] + '/' if p != layer_path else ''}vars/{i}", arr)
                   for p in sorted(paths) for i, arr in enumerate(groups[p].arrays)]
        items.append(OpaqueLayer(label, None, weights, {"keras3_path": layer_path}))
    return items


def _recorded(recorded: dict | None, cell: str) -> tuple[tuple | None, dict]:
    """(activations, options) from a layer's RNNX_ATTR; (None, {}) when absent or unusable."""
    if not recorded:
        return None, {}
    options = {k: recorded[k] for k in ("go_backwards", "merge_mode") if k in recorded}
    try:
        activations = tuple(Activation.from_json(a) for a in recorded.get("activations", []))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, options
    return (activations if len(activations) == {"lstm": 3, "gru": 2, "rnn": 1}[cell] else None), options


def _recorded_of(layer: RecurrentLayer) -> dict:
    # what Keras 3 computes: a Keras 2 hard_sigmoid is written as Keras 3's (accept_activation_change)
    written = [HARD_SIGMOID_KERAS3 if a == HARD_SIGMOID_KERAS2 else a for a in layer.activations]
    out = {"activations": [a.to_json() for a in written]}
    out.update({k: layer.options[k] for k in ("go_backwards", "merge_mode") if layer.options.get(k)})
    return out


def _unique_names(items: list) -> list:
    seen: dict[str, int] = {}
    for item in items:
        seen[item.name] = seen.get(item.name, 0) + 1
    for item in items:
        if seen[item.name] > 1:
            item.name = _item_path(item)
    return items


def entries_from_bundle(bundle, model_config: dict | None, accept_activation_change: bool = False,
                        where: str = "") -> tuple[list[VarGroup], list[str]]:
    """The Keras 3 weights tree of `bundle`: where each layer's variables go, and notes.

    With a Keras 3 config, each layer goes where Keras 3 will look for the config's layer
    of the same name. Without one, layers keep the path they were read from (a Keras 3
    source), or take the path Keras 3 gives the same layers in a Sequential or
    Functional model: `layers/<snake_case class>[_<n>]` in bundle order.
    """
    if model_config is not None:
        return _entries_from_config(bundle, model_config, accept_activation_change, where)
    notes: list[str] = []
    entries: list[VarGroup] = []
    namer = PathNamer("layers")
    skipped = []
    for item in bundle.items:
        if isinstance(item, RecurrentLayer) and item.provenance.get("keras3_cell_path"):
            entries.append(_stacked_cell_entry(item, item.provenance["keras3_cell_path"], accept_activation_change))
            continue
        if isinstance(item, RecurrentLayer):
            class_name = "Bidirectional" if item.num_directions == 2 else KERAS_CLASS[item.cell]
            if item.provenance.get("wrapper") == "TimeDistributed":
                class_name = "TimeDistributed"
            path = item.provenance.get("keras3_path") or namer.next(class_name)
            entries.extend(_recurrent_entries(item, path, accept_activation_change))
            continue
        if not item.weights:
            continue
        path = item.options.get("keras3_path")
        class_name = item.class_name
        if path is None:
            if class_name is None and bundle.source.get("format") == "keras-h5":
                class_name = guess_keras_class(item)
                if class_name:
                    notes.append(f"layer {item.name!r} has no class in the source; its weight names say "
                                 f"{class_name}, so it was written where Keras 3 keeps a {class_name}.")
            keras_class = _keras3_class(class_name)
            if keras_class is None:
                skipped.append(item.name)
                continue
            path = namer.next(keras_class)
        entries.extend(_opaque_entries(item, path, class_name))
    if skipped:
        notes.append(f"left out {len(skipped)} non-recurrent layer(s) with no Keras class "
                     f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}).")
    return entries, notes


def guess_keras_class(item) -> str | None:
    """The Keras class of a layer of a Keras 2 weights file, from its weight names and shapes."""
    names = tuple(n.rsplit("/", 1)[-1].split(":")[0] for n, _ in item.weights)
    ndim = item.weights[0][1].ndim if item.weights else 0
    if names == ("embeddings",):
        return "Embedding"
    if "moving_mean" in names and "moving_variance" in names:
        return "BatchNormalization"
    if names in (("kernel", "bias"), ("kernel",)):
        return {2: "Dense", 3: "Conv1D"}.get(ndim)
    if names == ("gamma", "beta"):
        return "LayerNormalization"
    return None


def _keras3_class(class_name: str | None) -> str | None:
    """The Keras 3 class a Keras 2 (or 3) layer class becomes, None for non-Keras layers."""
    if not class_name or "." in class_name or class_name.startswith("torch") or class_name[:1].islower():
        return None
    return {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU", "Model": "Functional"}.get(class_name, class_name)


def _recurrent_entries(layer: RecurrentLayer, path: str, accept_activation_change: bool) -> list[VarGroup]:
    entries = _untagged_recurrent_entries(layer, path, accept_activation_change)
    for entry in entries:
        entry.layer = layer
    return entries


def _untagged_recurrent_entries(layer: RecurrentLayer, path: str, accept_activation_change: bool) -> list[VarGroup]:
    reason = refusal(layer, accept_activation_change)
    if reason:
        raise UnsupportedError(reason)
    if layer.provenance.get("wrapper") == "TimeDistributed":
        # Keras 3 keeps the wrapped layer under `<path>/layer`; the rnnx record stays on the layer's own group
        inner = dataclasses_replace(layer, provenance={k: v for k, v in layer.provenance.items() if k != "wrapper"})
        head, *rest = _recurrent_entries(inner, f"{path}/layer", accept_activation_change)
        inner_name = snake_case(KERAS_CLASS[layer.cell]) if layer.num_directions == 1 else "bidirectional"
        return [VarGroup(path, layer.name, rnnx=head.rnnx), dataclasses_replace(head, name=inner_name, rnnx=None)] + rest
    cell_name = f"{snake_case(KERAS_CLASS[layer.cell])}_cell"
    if layer.num_directions == 1:
        return [VarGroup(path, layer.name, rnnx=_recorded_of(layer)),
                VarGroup(f"{path}/cell", cell_name, direction_to_vars(layer, layer.directions[0]))]
    out = [VarGroup(path, layer.name, rnnx=_recorded_of(layer))]
    for side, d in zip(("forward", "backward"), layer.directions):
        out += [VarGroup(f"{path}/{side}_layer", f"{side}_{layer.name}"),
                VarGroup(f"{path}/{side}_layer/cell", cell_name, direction_to_vars(layer, d))]
    return out


def _stacked_cell_entry(layer: RecurrentLayer, cell_path: str, accept_activation_change: bool) -> VarGroup:
    """The variables of one cell of an RNN(StackedRNNCells), at `cell_path` (.../cell/cells/lstm_cell)."""
    reason = refusal(layer, accept_activation_change)
    if reason:
        raise UnsupportedError(reason)
    return VarGroup(cell_path, layer.name.rsplit("/", 1)[-1], direction_to_vars(layer, layer.directions[0]),
                    rnnx=_recorded_of(layer), layer=layer)


def _opaque_entries(item, path: str, class_name: str | None) -> list[VarGroup]:
    """An opaque layer's weights at `path`: Keras 3 relative names kept, Keras 2 ones placed in order."""
    groups: dict[str, list] = {}
    relative = all(re.fullmatch(r"([\w/]+/)?vars/\d+", n) for n, _ in item.weights) and "keras3_path" in item.options
    for i, (wname, arr) in enumerate(item.weights):
        if relative:
            owner = wname.rsplit("vars/", 1)[0].rstrip("/")
        else:
            owner = SUBOBJECT.get(_keras3_class(class_name) or "", "")
        groups.setdefault(f"{path}/{owner}" if owner else path, []).append(arr)
    out = [VarGroup(path, item.name)] if path not in groups else []
    out += [VarGroup(p, item.name if p == path else None, arrs) for p, arrs in groups.items()]
    return out


def _entries_from_config(bundle, model_config: dict, accept_activation_change: bool,
                         where: str) -> tuple[list[VarGroup], list[str]]:
    by_name = {item.name: item for item in bundle.items}
    used: set[str] = set()
    entries: list[VarGroup] = []
    for cl in walk_config(model_config):
        name = cl.qualified_name
        item = by_name.get(name)
        if item is None and cl.scope:
            item = _nested_part(by_name, cl, used)
        if cl.class_name in MODEL_CLASSES:
            entries.append(VarGroup(cl.path, name))
            continue
        parts = recurrent_parts(cl)
        if parts and parts[0].stacked:
            entries.append(VarGroup(cl.path, name))
            for part in parts:
                cell_item = by_name.get(part.name)
                if not isinstance(cell_item, RecurrentLayer):
                    raise UnsupportedError(f"{where}: the model's layer {part.name!r} (a cell of {name!r}) has no "
                                           f"recurrent weights in the source; write .weights.h5 instead.")
                entries.append(_stacked_cell_entry(cell_item, part.cells[0], accept_activation_change))
                used.add(part.name)
        elif parts:
            if not isinstance(item, RecurrentLayer):
                raise UnsupportedError(f"{where}: the model's layer {name!r} ({cl.class_name}) has no recurrent "
                                       f"weights in the source (was it left out with --layer?); write .weights.h5 "
                                       f"instead.")
            entries.extend(_recurrent_entries(item, cl.path, accept_activation_change))
        elif item is not None and getattr(item, "weights", None):
            entries.extend(_opaque_entries(item, cl.path, cl.class_name))
        else:
            if cl.class_name in WEIGHTED_CLASSES:
                raise UnsupportedError(f"{where}: the model's layer {name!r} ({cl.class_name}) has no weights in "
                                       f"the source; the .keras file would be incomplete.")
            entries.append(VarGroup(cl.path, name))
        used.add(name)
    notes = []
    extra = [it.name for it in bundle.items if it.name not in used and (isinstance(it, RecurrentLayer) or it.weights)]
    if extra:
        notes.append(f"weights of {', '.join(extra)} belong to no layer of the model config and were left out.")
    return entries, notes


def _nested_part(by_name: dict, cl: ConfigLayer, used: set):
    """A nested model's layer read from a Keras 2 file: its weights sit in the outer group's OpaqueLayer,
    named `<inner>/<weight>` (the Keras 2 reader's convention)."""
    from ...canonical import OpaqueLayer

    outer = cl.scope[0]
    inner = "/".join(cl.scope[1:] + (cl.name,)) + "/"
    for candidate in (outer, f"{outer}/rest"):
        group = by_name.get(candidate)
        if isinstance(group, OpaqueLayer):
            weights = [(n, a) for n, a in group.weights if n.startswith(inner)]
            if weights:
                used.add(candidate)
                return OpaqueLayer(cl.qualified_name, cl.class_name, weights)
    return None


WEIGHTED_CLASSES = {"Dense", "Embedding", "Conv1D", "BatchNormalization", "LayerNormalization", "PReLU",
                    "LSTM", "GRU", "SimpleRNN", "Bidirectional"}
