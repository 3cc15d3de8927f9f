"""Keras 2 HDF5 files (format "keras-h5"): `save_weights(".h5")` and `model.save(".h5")` of every era.

Covers standalone Keras 2.0-2.3 (theano / cntk / tensorflow backends, weight names with and
without `:0`), tf.keras and tf_keras; weights-only files and full-model files (`model_config`,
weights under /model_weights); CuDNNLSTM, CuDNNGRU, LSTM, GRU (both reset variants),
SimpleRNN, RNN(LSTMCell / GRUCell / SimpleRNNCell); Bidirectional, TimeDistributed, nested
models and recurrent sublayers of custom layers; `layer_names` split over `layer_names0`, `layer_names1`, ....

Reading: with a config (the file's own `model_config`, or `read(path, config="model.json")`
for a weights-only file) layer classes and activations come from it. Without one, the
layout is recognised from shapes (units from recurrent_kernel, never from the bias length)
and the recurrent activation defaults from `keras_version` (keras2_config.py).

Bundle conventions (the ONNX graph exporter and the Keras 3 writer rely on them):

- bundle.source: "format": "keras-h5", "keras_version", "backend", "model_config" (the
  parsed dict or None), "has_architecture" (bool), "full_model" (the file itself held a
  model_config), "layer_names" (every top-level layer in file order, weightless ones too),
  "groups" ({top-level name: its weight_names in stored order}), "foreign_root_entries"
  (HDF5 entries that are not Keras', not carried over).
- bundle.items in file order. Each recurrent layer is one RecurrentLayer: name = the Keras
  layer name; a layer inside a nested model or custom layer gets "outer/inner". A
  Bidirectional layer is one RecurrentLayer with 2 directions (forward first).
  provenance: "format", "class_name" (the cell's Keras class: CuDNNLSTM, LSTM, GRU, ...,
  also under a wrapper), "keras_version", "group" (top-level h5 group), "weight_names"
  (stored names, forward then backward), "variant" (plain | gru-2row | cudnn), "wrapper"
  (Bidirectional / TimeDistributed, when wrapped), "activations_from" (config | class |
  rnnx | keras_version default). options: the Keras layer semantics from the config
  (return_sequences, return_state, go_backwards, stateful, time_major, unroll, use_bias,
  dropout, ...) plus "merge_mode" for Bidirectional.
- Every other top-level layer is an OpaqueLayer(name, class_name from the config or None,
  weights in weight_names order under their stored names, options {"group": name});
  weightless layers (Dropout, InputLayer) too. Weights of a group that also holds
  recurrent sublayers (a nested model's Dense) form an OpaqueLayer named after the group
  (or "group/rest" when a recurrent layer already has that name).
- Tensors: kernels by the CuDNN rule for CuDNN layers (per gate reshape, not transpose,
  keras2_layout.py); CuDNN biases keep both halves (b_w input, b_r recurrent); GRU
  reset_after=True keeps bias[0] as b_w and bias[1] as b_r; LSTM, SimpleRNN and reset-before
  GRU have b_w only. Keras 2 hard_sigmoid is HARD_SIGMOID_KERAS2.

Writing: a bundle read from a Keras 2 file is written back with its own structure (every
group, name and non-recurrent tensor as stored; recurrent layers in CPU layout: CuDNNLSTM ->
LSTM, CuDNNGRU -> GRU(reset_after=True)); a full-model source also gets its model_config
with those classes rewritten (training_config and optimizer weights are left out). Other
bundles become one top-level layer per recurrent layer, named after it, with tf_keras-style
weight names. `cudnn=True` writes CuDNNLSTM / CuDNNGRU layouts instead. Each recurrent
group carries an attribute "rnnx_layer" (JSON: class, activations) that Keras ignores and
this reader uses when the file has no config.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...canonical import Bundle, OpaqueLayer, RecurrentLayer
from ...canonical.activations import SIGMOID, TANH, Activation, from_keras, to_keras
from ...errors import FormatError, UnsupportedError
from ... import progress
from ...io import atomic_output
from ...lazy import LazyArray
from ...mapped import map_range
from . import config as kc
from . import layout
from .. import unheld_call_options

FORMAT = "keras-h5"
RNNX_ATTR = "rnnx_layer"
DEFAULT_KERAS_VERSION = "2.15.0"  # written into files made from non-Keras sources
HDF5_ATTR_LIMIT = 64512  # bytes per attribute before Keras splits it into name0, name1, ...
CELL_CLASS = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}
CUDNN_CLASS = {"lstm": "CuDNNLSTM", "gru": "CuDNNGRU"}
CELL_SUBLAYER = {"lstm": "lstm_cell", "gru": "gru_cell", "rnn": "simple_rnn_cell"}


# ============================================================================ reading

@dataclass
class _Group:
    """One top-level layer group as stored."""

    name: str
    weight_names: list[str]
    arrays: list[np.ndarray]
    rnnx: dict | None = None  # the rnnx_layer attribute, when rnnx wrote the file


@dataclass
class _Unit:
    """One direction of one recurrent layer: positions of kernel, recurrent_kernel[, bias]."""

    key: str
    direction: int | None  # 0 forward_, 1 backward_, None when the names do not say
    positions: list[int]


@dataclass
class _Source:
    path: Path
    keras_version: str | None
    backend: str | None
    model_config: dict | None
    top: dict = field(default_factory=dict)  # top-level layer entries by name


def read(path, config=None, **_options) -> Bundle:
    path = Path(path)
    with _open(path) as f:
        root = f["model_weights"] if isinstance(f.get("model_weights"), _h5().Group) else f
        layer_names = _list_attr(root, "layer_names")
        if layer_names is None:
            raise FormatError(
                f"{path} is an HDF5 file but not a Keras 2 file: it has no layer_names attribute "
                f"(found entries: {', '.join(_decode(k) for k in list(f.keys())[:8]) or 'none'}).")
        keras_version = _text_attr(root, "keras_version") or _text_attr(f, "keras_version")
        if keras_version is None or keras_version.startswith("1"):
            raise UnsupportedError(
                f"{path} was written by Keras 1 (keras_version {keras_version or 'missing'}), whose layouts rnnx "
                f"does not read; load it in Keras 2.0-2.2 and save it again.")
        backend = _text_attr(root, "backend") or _text_attr(f, "backend")
        full_model = "model_config" in f.attrs
        model_config = _file_config(f, path) if full_model else None
        groups = [_read_group(root, name, path) for name in layer_names]
        known = set(layer_names) | {"model_weights", "optimizer_weights", "top_level_model_weights"}
        foreign = sorted(_decode(k) for k in f.keys() if k not in known)
    if config is not None:
        model_config = _config_file(Path(config))
    src = _Source(path, keras_version, backend, model_config,
                  kc.top_level(model_config) if model_config else {})
    if model_config is not None:
        missing = [g.name for g in groups if g.weight_names and g.name not in src.top]
        if missing:
            where = f"the architecture {config}" if config is not None else "the file's model_config"
            raise FormatError(
                f"{path}: {where} has no layer named {missing[0]!r} (it names "
                f"{', '.join(list(src.top)[:6]) or 'no layers'}); give the model.to_json() of the model "
                f"that saved these weights.")
    items: list = []
    for group in groups:
        items.extend(_items_of(group, src, {it.name for it in items}))
    source = {
        "format": FORMAT, "keras_version": keras_version, "backend": backend, "model_config": model_config,
        "has_architecture": model_config is not None, "full_model": full_model,
        "layer_names": list(layer_names), "groups": {g.name: list(g.weight_names) for g in groups},
        "foreign_root_entries": foreign,
    }
    try:
        return Bundle(items, source)
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}.") from None


def _h5():
    import h5py

    return h5py


@contextmanager
def _open(path: Path):
    h5py = _h5()
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path} cannot be read as HDF5 ({exc}); it may be truncated or not a Keras file.") from None
    try:
        yield f
    except (OSError, RuntimeError, KeyError, ValueError, UnicodeError, TypeError) as exc:  # h5py on damage
        # (TypeError: an attribute whose stored type h5py does not know, e.g. "Unknown string encoding")
        raise FormatError(f"{path}: reading failed ({exc}); the file is truncated or damaged.") from None
    finally:
        f.close()


def _decode(value) -> str:
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    text.encode("utf-8")  # h5py hands undecodable names over with surrogates: refuse them here
    return text


def _text_attr(obj, name: str) -> str | None:
    if name not in obj.attrs:
        return None
    value = obj.attrs[name]
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value
    return _decode(value)


def _list_attr(obj, name: str) -> list[str] | None:
    """A string-list attribute, also when Keras split it into name0, name1, ..."""
    if name in obj.attrs:
        return [_decode(v) for v in np.atleast_1d(obj.attrs[name])]
    if f"{name}0" not in obj.attrs:
        return None
    out, k = [], 0
    while f"{name}{k}" in obj.attrs:
        out.extend(_decode(v) for v in np.atleast_1d(obj.attrs[f"{name}{k}"]))
        k += 1
    return out


def _file_config(f, path: Path) -> dict:
    try:
        return kc.parse(f.attrs["model_config"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: the model_config attribute is not a Keras model config ({exc}).") from None


def _config_file(config: Path) -> dict:
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as exc:
        raise FormatError(f"Cannot read the architecture file {config} ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise FormatError(f"{config} is not text (not UTF-8), so not the JSON model.to_json() writes; "
                          f"give the architecture file of the model that saved these weights.") from None
    try:
        return kc.parse(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(
            f"{config} is not a Keras model config as model.to_json() writes it ({exc}).") from None


def _read_group(root, name: str, path: Path) -> _Group:
    h5py = _h5()
    group = root.get(name)
    if not isinstance(group, h5py.Group):
        raise FormatError(f"{path}: layer_names lists {name!r} but the file has no group of that name.")
    names = _list_attr(group, "weight_names") or []
    arrays = []
    file_size = path.stat().st_size
    for wname in names:
        ds = group.get(wname)
        if not isinstance(ds, h5py.Dataset):
            raise FormatError(f"{path}: layer {name!r} lists weight {wname!r}, which the file does not hold.")
        # Check what the header claims before allocating it: plain datasets cannot outgrow the file.
        claimed = math.prod(int(d) for d in ds.shape) * ds.dtype.itemsize  # Python ints: no int64 wrap
        if claimed > file_size * (1 if ds.compression is None else 1000):
            raise FormatError(
                f"{path}: weight {wname!r} of layer {name!r} claims {claimed} bytes, more than the file holds; "
                f"the file is truncated or damaged.")
        arrays.append(_lazy_dataset(path, root.name, name, wname, ds))
    rnnx = None
    if RNNX_ATTR in group.attrs:
        try:
            rnnx = json.loads(_decode(group.attrs[RNNX_ATTR]))
        except ValueError:
            rnnx = None
        if not isinstance(rnnx, dict) or not isinstance(rnnx.get("layers", []), list):
            rnnx = None  # not what rnnx writes: ignored, as Keras ignores it
    return _Group(name, names, arrays, rnnx)


def _lazy_dataset(path: Path, root: str, group: str, wname: str, ds):
    """A numeric dataset as a LazyArray that reopens the file by path when read (so the Bundle outlives
    the reader and `inspect` reads no tensor); anything else (strings, scalars) is read now."""
    if ds.dtype.kind not in "fiub" or ds.ndim == 0 or ds.dtype.byteorder not in "=|<":
        return np.asarray(ds[()])

    def load():
        with _open(path) as f:
            return _values(path, f[root][group][wname])

    return LazyArray(ds.shape, ds.dtype, load, f"{path.name}:{group}/{wname}")


def _values(path: Path, ds) -> np.ndarray:
    """A dataset's values: a read-only view of the mapped file where they are stored as plain bytes (one
    copy fewer for the layout change that follows), else read by h5py."""
    offset = _plain_offset(ds)
    values = None if offset is None else map_range(path, offset, ds.shape, ds.dtype)
    return np.asarray(ds[()]) if values is None else values


def _plain_offset(ds) -> int | None:
    """Where a dataset's values lie in the file as plain row-major bytes (contiguous, no filters, not in an
    external file), or None: such a dataset is mapped rather than copied out by h5py."""
    h5py = _h5()
    plist = ds.id.get_create_plist()
    if (ds.dtype.kind not in "fiu" or plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters()
            or plist.get_external_count()):
        return None
    return ds.id.get_offset()


def _split_name(weight_name: str) -> tuple[list[str], str]:
    parts = re.sub(r":\d+$", "", weight_name).split("/")
    return parts[:-1], parts[-1]


def _units(group: _Group, src: _Source) -> list[_Unit]:
    """Every kernel, recurrent_kernel[, bias] run in the group's weight list."""
    split = [_split_name(n) for n in group.weight_names]
    units = []
    for j, (owner, base) in enumerate(split):
        if base != "recurrent_kernel":
            continue
        if j == 0 or split[j - 1] != (owner, "kernel"):
            raise FormatError(
                f"{src.path}: layer {group.name!r} holds a recurrent_kernel {group.arrays[j].shape} without "
                f"the kernel that should precede it; rnnx does not know this layer's layout.")
        positions = [j - 1, j]
        if j + 1 < len(split) and split[j + 1] == (owner, "bias"):
            positions.append(j + 1)
        key = owner[0] if owner else ""
        if len(owner) > 2 and owner[1].startswith("stacked_rnn_cells"):  # RNN(StackedRNNCells): one per cell
            key = owner[2]
        direction = None
        if len(owner) > 1 and owner[1].startswith(("forward_", "backward_")):
            direction = 0 if owner[1].startswith("forward_") else 1
        elif owner and owner[0].startswith(("forward_", "backward_")):  # names relative to the wrapper
            direction = 0 if owner[0].startswith("forward_") else 1
            key = ""
        units.append(_Unit(key, direction, positions))
    return units


def _layers_of_units(group: _Group, units: list[_Unit], top_entry: dict | None) -> list[tuple[str, list[_Unit]]]:
    """Group the directions of each layer: [(key, [forward unit, backward unit?]), ...] in order."""
    if top_entry is not None and top_entry.get("class_name") == "Bidirectional" and len(units) == 2:
        return [(group.name, units)]
    by_key: dict[str, list[_Unit]] = {}
    order: list[str] = []
    for unit in units:
        key = unit.key or group.name
        current = by_key.get(key)
        fits = current is not None and len(current) == 1 and unit.direction == 1 and current[0].direction == 0
        if current is not None and not fits:
            n = 1
            while f"{key}_{n}" in by_key:
                n += 1
            key = f"{key}_{n}"
            current = None
        if current is None:
            by_key[key] = [unit]
            order.append(key)
        else:
            current.append(unit)
    return [(key, by_key[key]) for key in order]


def _items_of(group: _Group, src: _Source, taken: set[str]) -> list:
    top_entry = src.top.get(group.name)
    class_name = top_entry.get("class_name") if top_entry else None
    units = _units(group, src)
    if not units:
        return [OpaqueLayer(group.name, class_name, list(zip(group.weight_names, group.arrays)),
                            {"group": group.name})]
    out: list = []
    used: set[int] = set()
    for index, (key, dirs) in enumerate(_layers_of_units(group, units, top_entry)):
        name = group.name if key == group.name else f"{group.name}/{key}"
        layer = _recurrent(group, src, top_entry, name, key, index, dirs)
        out.append(layer)
        used.update(p for d in dirs for p in d.positions)
    rest = [(n, a) for j, (n, a) in enumerate(zip(group.weight_names, group.arrays)) if j not in used]
    if rest:
        names = taken | {it.name for it in out}
        rest_name = group.name if group.name not in names else f"{group.name}/rest"
        out.append(OpaqueLayer(rest_name, class_name, rest, {"group": group.name}))
    return out


@dataclass
class _Resolved:
    class_name: str | None  # the cell's Keras class, None when only shapes tell
    config: dict  # that layer's config ({} without one)
    wrapper: str | None = None
    merge_mode: str | None = None


def _resolve(entry: dict | None, key: str, index: int, group: str, src: _Source, shapes: str) -> _Resolved:
    """What the config says about the recurrent layer `key` found in top-level layer `group`."""
    if entry is None:
        return _Resolved(None, {})
    cls = entry.get("class_name")
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    if cls in kc.RECURRENT_CLASSES:
        return _Resolved(cls, config)
    cell = config.get("cell") if cls == "RNN" else None
    if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":  # the cell named `key`
        cells = [c for c in (cell.get("config") or {}).get("cells") or [] if isinstance(c, dict)]
        named = [c for c in cells if (c.get("config") or {}).get("name") == key]
        cell = named[0] if named else None
    if isinstance(cell, dict) and cell.get("class_name") in kc.LAYER_OF_CELL:  # RNN(LSTMCell(...))
        cell_config = {**(cell.get("config") or {}), **kc.options_of(config)}
        return _Resolved(kc.LAYER_OF_CELL[cell["class_name"]], cell_config)
    if cls in kc.WRAPPERS:
        inner = config.get("layer") or {}
        inner_resolved = _resolve(inner, key, 0, group, src, shapes)
        return _Resolved(inner_resolved.class_name, inner_resolved.config, cls,
                         config.get("merge_mode", "concat") if cls == "Bidirectional" else None)
    found = kc.find(entry, key) if key and key != group else None
    if found is None and cls in kc.MODEL_CLASSES:
        recurrent = list(_recurrent_entries(entry))
        found = recurrent[index] if index < len(recurrent) else None
    if found is not None:
        return _resolve(found, key, 0, group, src, shapes)
    if key in ("", group):
        raise FormatError(
            f"{src.path}: layer {group!r} is of class {cls!r}, which rnnx does not know, and it holds recurrent "
            f"weights ({shapes}); rnnx cannot tell how it computes. Only LSTM, GRU, SimpleRNN, CuDNNLSTM and "
            f"CuDNNGRU layers (also wrapped or nested) are converted.")
    return _Resolved(None, {})  # a sublayer of a custom layer: the shapes tell


def _recurrent_entries(entry: dict):
    for child in kc.children(entry):
        cls = child.get("class_name")
        if cls in kc.RECURRENT_CLASSES:
            yield child
        elif cls in kc.WRAPPERS and (child.get("config") or {}).get("layer", {}).get("class_name") \
                in kc.RECURRENT_CLASSES:
            yield child
        else:
            yield from _recurrent_entries(child)


def _variant_of(cls: str, config: dict) -> tuple[str, str]:
    cell = kc.CELL_OF_CLASS[cls]
    if cls in kc.CUDNN_CLASSES:
        return cell, "cudnn"
    if cls == "GRU" and config.get("reset_after", False):
        return cell, "gru-2row"
    return cell, "plain"


def _recurrent(group: _Group, src: _Source, top_entry, name: str, key: str, index: int,
               dirs: list[_Unit]) -> RecurrentLayer:
    arrays = [[group.arrays[p] for p in d.positions] for d in dirs]
    shapes = ", ".join(f"{_split_name(group.weight_names[p])[1]} {tuple(group.arrays[p].shape)}"
                       for p in dirs[0].positions)
    resolved = _resolve(top_entry, key, index, group.name, src, shapes)
    first = arrays[0]
    bias_shape = first[2].shape if len(first) == 3 else None
    if resolved.class_name is not None:
        cell, variant = _variant_of(resolved.class_name, resolved.config)
        if not layout.fits(cell, variant, first[0].shape, first[1].shape, bias_shape):
            raise FormatError(
                f"{src.path}: layer {name!r} is a {resolved.class_name} in the model config, but its weights "
                f"({shapes}) do not have that layer's shapes; is the config the one these weights were saved with?")
        class_name = resolved.class_name
    else:
        found = layout.classify(first[0].shape, first[1].shape, bias_shape)
        if found is None:
            raise FormatError(
                f"{src.path}: layer {name!r} holds recurrent weights whose shapes ({shapes}) fit no Keras 2 "
                f"LSTM, GRU, SimpleRNN, CuDNNLSTM or CuDNNGRU layout.")
        cell, variant = found
        class_name = CUDNN_CLASS[cell] if variant == "cudnn" else CELL_CLASS[cell]
    for other in arrays[1:]:
        if [a.shape for a in other] != [a.shape for a in first]:
            raise FormatError(f"{src.path}: the two directions of layer {name!r} have different shapes.")
    activations, origin = _activations(cell, variant, resolved, group.rnnx, src.keras_version, name, key)
    directions = [layout.to_direction(cell, variant, a[0], a[1], a[2] if len(a) == 3 else None) for a in arrays]
    options = kc.options_of(resolved.config)
    if resolved.class_name is None and group.rnnx:  # no config: what rnnx recorded when it wrote the file
        for entry in group.rnnx.get("layers", []):
            if isinstance(entry, dict) and entry.get("key") in (key, None):
                options.update({k: entry[k] for k in ("go_backwards", "merge_mode")
                                if isinstance(entry.get(k), (bool, str))})
    provenance = {"format": FORMAT, "class_name": class_name, "keras_version": src.keras_version,
                  "group": group.name, "weight_names": [group.weight_names[p] for d in dirs for p in d.positions],
                  "variant": variant, "activations_from": origin}
    if resolved.wrapper:
        provenance["wrapper"] = resolved.wrapper
    elif len(dirs) == 2:
        provenance["wrapper"] = "Bidirectional"
    if resolved.merge_mode is not None:
        options["merge_mode"] = resolved.merge_mode
    try:
        return RecurrentLayer(name=name, cell=cell, directions=directions, activations=activations,
                              reset_after=(variant != "plain"), provenance=provenance, options=options)
    except ValueError as exc:
        raise FormatError(f"{src.path}: {exc}.") from None


def _activations(cell, variant, resolved: _Resolved, rnnx: dict | None, keras_version, name, key):
    """(activations, where they came from)."""
    if variant == "cudnn":
        return _cell_activations(cell, SIGMOID, TANH), "class"
    if resolved.class_name is not None:
        cfg = resolved.config
        rec = kc.activation_name(cfg.get("recurrent_activation")) or kc.default_recurrent_activation(keras_version)
        act = kc.activation_name(cfg.get("activation")) or "tanh"
        return _cell_activations(cell, _keras_act(rec, name), _keras_act(act, name)), "config"
    if rnnx:
        for entry in rnnx.get("layers", []):
            if entry.get("key") in (key, None) and entry.get("activations"):
                try:
                    acts = tuple(Activation.from_json(a) for a in entry["activations"])
                except (KeyError, TypeError, ValueError):
                    break
                if len(acts) == {"lstm": 3, "gru": 2, "rnn": 1}[cell]:
                    return acts, "rnnx"
    rec = kc.default_recurrent_activation(keras_version)
    return _cell_activations(cell, _keras_act(rec, name), TANH), "keras_version default"


def _cell_activations(cell: str, gate: Activation, act: Activation) -> tuple:
    return {"lstm": (gate, act, act), "gru": (gate, act), "rnn": (act,)}[cell]


def _keras_act(keras_name: str, layer: str) -> Activation:
    try:
        return from_keras(keras_name, 2)
    except ValueError:
        raise UnsupportedError(
            f"Layer {layer!r} uses the activation {keras_name!r}, which rnnx does not know; only sigmoid, "
            f"hard_sigmoid, tanh, relu, linear, softsign, softplus and elu are supported.") from None


# ============================================================================ writing

def refusal(layer: RecurrentLayer, cudnn: bool = False) -> str | None:
    """Why a Keras 2 HDF5 file cannot hold `layer` (None when it can)."""
    if layer.has_peepholes:
        return "Keras layers have no peephole connections; write ONNX, which keeps them"
    if layer.proj_size is not None:
        return "Keras layers have no LSTM projection (PyTorch proj_size); write PyTorch or ONNX"
    if layer.clip is not None:
        return "Keras layers have no cell clip; write ONNX, which keeps it"
    if layer.input_forget:
        return "Keras layers have no coupled input-forget gate; write ONNX, which keeps it"
    names = [to_keras(a, 2) for a in layer.activations]
    for act, kname in zip(layer.activations, names):
        if kname is None:
            return f"the activation {act.describe()} has no Keras 2 equivalent; write ONNX, which keeps it"
    if layer.cell == "lstm" and names[1] != names[2]:
        return (f"a Keras LSTM uses one activation for the candidate and the output, this layer uses "
                f"{names[1]} and {names[2]}; write ONNX, which keeps them")
    if cudnn:
        if layer.cell == "rnn":
            return "Keras 2 has no CuDNN SimpleRNN; write without --cudnn"
        if not layer.reset_after:
            return ("a reset-before GRU (reset_after=False) has no CuDNNGRU form (cuDNN applies the reset gate "
                    "after the matmul); write without --cudnn")
        if not layer.uses_only(SIGMOID, TANH):
            return (f"CuDNN layers always compute sigmoid gates and tanh, this layer uses "
                    f"{layer.describe_activations()}; write without --cudnn")
    return None


def write(bundle: Bundle, path, layer: str | None = None, cudnn: bool = False, **_options) -> list[str]:
    path = Path(path)
    for rec in bundle.layers:
        reason = refusal(rec, cudnn=cudnn)
        if reason:
            target = "CuDNN Keras 2 HDF5" if cudnn else "Keras 2 HDF5"
            raise UnsupportedError(f"Cannot write layer {rec.name!r} to {target} ({path.name}): {reason}.")
    if layer is None and _is_keras_structured(bundle):
        plan = _structured_plan(bundle, path, cudnn)
    else:
        plan = _fresh_plan(bundle, cudnn)
    with atomic_output(path) as tmp:
        _write_plan(plan, tmp)
    return plan.notes


@dataclass
class _Plan:
    keras_version: str
    backend: str
    layer_names: list[str]
    groups: dict[str, list[tuple[str, np.ndarray]]]
    group_attrs: dict[str, dict]
    model_config: dict | None = None
    notes: list[str] = field(default_factory=list)


def _is_keras_structured(bundle: Bundle) -> bool:
    src = bundle.source
    if src.get("format") != FORMAT or not isinstance(src.get("groups"), dict) or not src.get("layer_names"):
        return False
    return all(it.provenance.get("group") in src["groups"] for it in bundle.layers) and all(
        it.options.get("group") in src["groups"] for it in bundle.others)


def _target_variant(rec: RecurrentLayer, cudnn: bool) -> tuple[str, str]:
    """(Keras class, layout variant) a recurrent layer is written as."""
    if cudnn:
        return CUDNN_CLASS[rec.cell], "cudnn"
    if rec.cell == "gru":
        return ("GRU", "gru-2row") if rec.reset_after else ("GRU", "plain")
    return CELL_CLASS[rec.cell], "plain"


def _described(cls: str, variant: str) -> str:
    return "GRU(reset_after=True)" if variant == "gru-2row" else cls


def _keras_arrays(rec: RecurrentLayer, variant: str, use_bias: bool) -> list[list[np.ndarray]]:
    return [layout.from_direction(rec.cell, variant, d, use_bias=use_bias) for d in rec.directions]


def _rnnx_attr(rec: RecurrentLayer, cls: str, key: str | None = None) -> dict:
    # go_backwards / merge_mode too: a weights file without model_config has no other place for them
    kept = {k: rec.options[k] for k in ("go_backwards", "merge_mode") if rec.options.get(k)}
    return {"key": key, "class_name": cls, "activations": [a.to_json() for a in rec.activations], **kept}


def _structured_plan(bundle: Bundle, path: Path, cudnn: bool) -> _Plan:
    src = bundle.source
    values: dict[str, dict[str, np.ndarray]] = {g: {} for g in src["groups"]}
    attrs: dict[str, dict] = {}
    notes: list[str] = []
    for item in bundle.others:
        values[item.options["group"]].update(item.weights)
    for rec in bundle.layers:
        cls, variant = _target_variant(rec, cudnn)
        group = rec.provenance["group"]
        names = list(rec.provenance.get("weight_names") or [])
        per_dir = len(names) // rec.num_directions if names else 0
        use_bias = per_dir == 3
        if per_dir not in (2, 3) or per_dir * rec.num_directions != len(names):
            raise FormatError(f"Layer {rec.name!r}: its recorded Keras weight names {names} do not fit a "
                              f"{rec.num_directions}-direction {rec.cell} layer.")
        if not use_bias and (cudnn or rec.has_bias):
            raise UnsupportedError(
                f"Cannot write layer {rec.name!r} to {path.name}: the source layer has no bias (use_bias=False) "
                f"and {'CuDNN layers always have one' if cudnn else 'the bundle now holds one'}.")
        arrays = [a for direction in _keras_arrays(rec, variant, use_bias) for a in direction]
        values[group].update(zip(names, arrays))
        key = rec.name.split("/", 1)[1] if "/" in rec.name else None
        attrs.setdefault(group, {"layers": []})["layers"].append(_rnnx_attr(rec, cls, key))
        old = rec.provenance.get("class_name") or CELL_CLASS[rec.cell]
        new = _described(cls, variant)
        if old != new and not (old == "GRU" and new == "GRU(reset_after=True)"):
            notes.append(f"{rec.name}: {old} -> {new}")
    groups = {}
    for g in src["layer_names"]:
        stored = src["groups"].get(g, [])
        missing = [n for n in stored if n not in values.get(g, {})]
        if missing:
            raise FormatError(f"Cannot rebuild layer {g!r}: the bundle has no tensor for {missing[0]!r}.")
        groups[g] = [(n, values[g][n]) for n in stored]
    model_config = None
    if src.get("full_model") and src.get("model_config"):
        explicit = kc.with_era_defaults(src["model_config"], src.get("keras_version"))
        model_config, config_notes = (kc.to_cudnn if cudnn else kc.to_cpu)(explicit)
        noted = {n.split(":", 1)[0].rsplit("/", 1)[-1] for n in notes}
        notes.extend(n for n in config_notes if n.split(":", 1)[0] not in noted)
        if config_notes:
            notes.append("model_config: CuDNN and CPU layer classes rewritten to match the weights")
    foreign = src.get("foreign_root_entries") or []
    if foreign:
        notes.append(f"not copied: entries at the file root that are not Keras layers ({', '.join(foreign)})")
    if src.get("full_model"):
        notes.append("training_config and optimizer weights are not copied; compile the model again to train it")
    return _Plan(src.get("keras_version") or DEFAULT_KERAS_VERSION, src.get("backend") or "tensorflow",
                 list(src["layer_names"]), groups, attrs, model_config, notes)


def _fresh_plan(bundle: Bundle, cudnn: bool) -> _Plan:
    src = bundle.source
    groups: dict[str, list[tuple[str, np.ndarray]]] = {}
    attrs: dict[str, dict] = {}
    notes: list[str] = []
    for rec in bundle.layers:
        cls, variant = _target_variant(rec, cudnn)
        g = _unique(re.sub(r"[/\\]", "_", rec.name) or "rnn", groups)
        use_bias = cudnn or rec.has_bias
        base = ["kernel:0", "recurrent_kernel:0", "bias:0"][: 3 if use_bias else 2]
        sub = "" if cudnn else f"{CELL_SUBLAYER[rec.cell]}/"
        prefixes = [f"{g}/{sub}"] if rec.num_directions == 1 else \
            [f"{g}/forward_{g}/{sub}", f"{g}/backward_{g}/{sub}"]
        arrays = _keras_arrays(rec, variant, use_bias)
        groups[g] = [(p + b, a) for p, direction in zip(prefixes, arrays) for b, a in zip(base, direction)]
        attrs[g] = {"layers": [_rnnx_attr(rec, cls)]}
        what = _described(cls, variant)
        if rec.num_directions == 2:
            what = f"Bidirectional({what})"
        origin = " ".join(str(v) for v in (rec.provenance.get("format"), rec.provenance.get("class_name") or rec.kind)
                          if v)
        note = f"{rec.name}: {origin} -> Keras {what}" + (f" named {g!r}" if g != rec.name else "")
        if variant == "gru-2row" and any(d.b_r is None for d in rec.directions) and rec.has_bias:
            note += " (no recurrent bias in the source: bias row 1 is zeros)"
        notes.append(note)
    dropped = [o.name for o in bundle.others if o.weights]
    if dropped:
        notes.append(f"not written: {len(dropped)} non-recurrent layer{'s' * (len(dropped) != 1)} "
                     f"({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}); this file holds the "
                     f"recurrent layers only")
    notes += unheld_call_options(bundle.layers, "a weights file without model_config", "build the Keras layer "
                                 "with it")
    keras_version = src.get("keras_version") if src.get("format") == FORMAT else None
    return _Plan(keras_version or DEFAULT_KERAS_VERSION, "tensorflow", list(groups), groups, attrs, None, notes)


def _unique(name: str, taken) -> str:
    out, n = name, 1
    while out in taken:
        out = f"{name}_{n}"
        n += 1
    return out


def _write_plan(plan: _Plan, tmp: Path) -> None:
    h5py = _h5()
    with h5py.File(tmp, "w") as f:
        if plan.model_config is not None:
            f.attrs["keras_version"] = plan.keras_version.encode("utf-8")
            f.attrs["backend"] = plan.backend.encode("utf-8")
            f.attrs["model_config"] = json.dumps(plan.model_config).encode("utf-8")
            root = f.create_group("model_weights")
        else:
            root = f
        _save_list_attr(root, "layer_names", plan.layer_names)
        root.attrs["backend"] = plan.backend.encode("utf-8")
        root.attrs["keras_version"] = plan.keras_version.encode("utf-8")
        # Keras writes groups sorted by name so that no name is created below a prefix of another.
        for g in sorted(plan.groups):
            group = root.create_group(g)
            weights = plan.groups[g]
            _save_list_attr(group, "weight_names", [n for n, _ in weights])
            for wname, array in weights:
                data = np.asarray(array)  # lazy arrays are read one at a time
                group.create_dataset(wname, data=data)
                progress.wrote(data.nbytes, wname)
                del data
            if g in plan.group_attrs:
                group.attrs[RNNX_ATTR] = json.dumps(plan.group_attrs[g])


def _save_list_attr(obj, name: str, values: list[str]) -> None:
    """Store a list of names the way Keras does, split into name0, name1, ... when too large."""
    data = np.array([v.encode("utf-8") for v in values], dtype=bytes) if values else np.array([], dtype="S1")
    chunks = 1
    while any(c.nbytes > HDF5_ATTR_LIMIT for c in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
    else:
        for k, chunk in enumerate(np.array_split(data, chunks)):
            obj.attrs[f"{name}{k}"] = chunk


# ============================================================================ verification

def run_layer(path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """Run the layer called like `layer` from the Keras 2 file at `path` in tf_keras.

    The stored tensors go through tf_keras's own loader conversion (CuDNN -> CPU included),
    so this checks the file, not rnnx's reading of it. Y: [batch, seq, directions, hidden].
    """
    try:
        import tf_keras
        from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading
    except ImportError:
        raise UnsupportedError(
            "Verifying a .h5 target runs it in tf_keras, which is not installed; install rnnx with the tf extra "
            "(pip install 'rnnx[tf]').") from None
    path = Path(path)
    bundle = read(path)
    found = _match(bundle, layer.name)
    with _open(path) as f:
        root = f["model_weights"] if "model_weights" in f else f
        group = root[found.provenance["group"]]
        raw = [np.asarray(group[n][()]) for n in found.provenance["weight_names"]]
    acts = [to_keras(a, 2) for a in found.activations]
    common = dict(units=found.units, return_sequences=True, dtype=str(found.dtype),
                  use_bias=len(raw) // found.num_directions == 3)
    if found.cell == "lstm":
        cell = tf_keras.layers.LSTM(activation=acts[1], recurrent_activation=acts[0], **common)
    elif found.cell == "gru":
        cell = tf_keras.layers.GRU(activation=acts[1], recurrent_activation=acts[0],
                                   reset_after=found.reset_after, **common)
    else:
        cell = tf_keras.layers.SimpleRNN(activation=acts[0], **common)
    keras_layer = tf_keras.layers.Bidirectional(cell, merge_mode=None, dtype=str(found.dtype)) \
        if found.num_directions == 2 else cell
    inputs = tf_keras.Input((None, found.input_size), dtype=str(found.dtype))
    model = tf_keras.Model(inputs, keras_layer(inputs))
    keras_layer.set_weights(preprocess_weights_for_loading(
        keras_layer, raw, bundle.source.get("keras_version"), bundle.source.get("backend")))
    out = model(np.asarray(x, found.dtype))
    outs = out if isinstance(out, (list, tuple)) else [out]
    return np.stack([np.asarray(o) for o in outs], axis=2)


def _match(bundle: Bundle, name: str) -> RecurrentLayer:
    for rec in bundle.layers:
        if rec.name == name:
            return rec
    flat = re.sub(r"[/\\]", "_", name)
    for rec in bundle.layers:
        if rec.name == flat or rec.provenance.get("group") == flat:
            return rec
    return bundle.layer(name)  # raises UsageError listing the layers
