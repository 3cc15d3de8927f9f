"""`.rnnx`: the canonical form on disk, one safetensors file whose metadata holds a JSON manifest.

Tensor names: `items.<i>.<direction>.<W|R|b_w|b_r|P|proj>` for recurrent layers and
`items.<i>.weights.<j>` for the layers carried along. The manifest validates against
schemas/rnnx-manifest.schema.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..canonical import Activation, Bundle, Direction, OpaqueLayer, RecurrentLayer
from ..errors import FormatError, UnsupportedError
from ..io import atomic_output

MANIFEST_KEY = "rnnx_manifest"
MANIFEST_VERSION = 1
STORABLE_KINDS = "biufc"  # bool, integers, floats, complex: what safetensors stores (not bytes, str, records)


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    from .safetensors_stream import save_file

    tensors: dict[str, np.ndarray] = {}
    items = []
    for i, item in enumerate(bundle.items):
        if isinstance(item, RecurrentLayer):
            for k, d in enumerate(item.directions):
                for key, arr in d.tensors().items():
                    tensors[f"items.{i}.{k}.{key}"] = arr  # read when written
            items.append({
                "type": "recurrent", "name": item.name, "cell": item.cell, "units": item.units,
                "input_size": item.input_size, "directions": item.num_directions,
                "reset_after": item.reset_after, "clip": item.clip, "input_forget": item.input_forget,
                "activations": [a.to_json() for a in item.activations],
                "tensors": sorted(item.directions[0].tensors()),
                "dtype": str(item.dtype), "provenance": _jsonable(item.provenance),
                "options": _jsonable(item.options),
            })
        else:
            names = []
            for j, (wname, arr) in enumerate(item.weights):
                if arr.dtype.kind not in STORABLE_KINDS:
                    raise UnsupportedError(
                        f"Cannot write {path}: weight {wname!r} of layer {item.name!r} holds {arr.dtype} "
                        f"values, which a .rnnx (safetensors) file cannot store; convert to the source's own "
                        f"format, or pick a recurrent layer with --layer.")
                tensors[f"items.{i}.weights.{j}"] = arr
                names.append(wname)
            items.append({"type": "opaque", "name": item.name, "class_name": item.class_name,
                          "weight_names": names, "options": _jsonable(item.options)})
    manifest = {"rnnx_manifest_version": MANIFEST_VERSION, "rnnx_version": __version__,
                "source": _jsonable(bundle.source), "items": items}
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata={MANIFEST_KEY: json.dumps(manifest)})  # tensor by tensor
    return []


def read(path: Path, **_options) -> Bundle:
    from safetensors import safe_open

    from .safetensors_stream import lazy_tensor

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if MANIFEST_KEY not in meta:
                raise FormatError(f"{path} is a safetensors file without an rnnx manifest; "
                                  f"name it .safetensors to read it as a PyTorch state dict.")
            manifest = json.loads(meta[MANIFEST_KEY])
            tensors = {k: lazy_tensor(f, path, k) for k in f.keys()}  # read when used
            tensors.update({k: f.get_tensor(k) for k, v in tensors.items() if v is None})
    except FormatError:
        raise
    except Exception as exc:  # safetensors raises its own untyped errors on broken headers
        raise FormatError(f"{path} is not a readable .rnnx file ({exc}).") from None
    try:
        return _from_manifest(manifest, tensors)
    except (_ManifestError, KeyError, TypeError, ValueError) as exc:
        problem = exc if isinstance(exc, _ManifestError) else f"does not fit its tensors ({exc})"
        raise FormatError(f"{path}: the rnnx manifest {problem}. The file is damaged or was not written by "
                          f"rnnx; write it again with rnnx convert.") from None


class _ManifestError(Exception):
    """What is wrong with a manifest, as the end of a sentence starting "the rnnx manifest"."""


TENSOR_KEYS = ("W", "R", "b_w", "b_r", "P", "proj")


def _field(entry: dict, key: str, kinds, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise _ManifestError(f"has no {key!r} for {where}")
    value = entry[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        raise _ManifestError(f"gives {key!r} of {where} as {type(value).__name__} {value!r:.40}")
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _tensor(tensors: dict, name: str, where: str) -> np.ndarray:
    if name not in tensors:
        raise _ManifestError(f"names tensor {name} for {where}, which the file does not hold")
    return tensors[name]


def _from_manifest(manifest: dict, tensors: dict) -> Bundle:
    if not isinstance(manifest, dict):
        raise _ManifestError(f"is a JSON {type(manifest).__name__}, not an object")
    entries = _field(manifest, "items", list, "the file")
    source = _field(manifest, "source", dict, "the file")
    items = []
    for i, entry in enumerate(entries):
        where = f"item {i}"
        kind = _field(entry, "type", str, where)
        name = _field(entry, "name", str, where)
        where = f"item {i} ({name!r})"
        options = _field(entry, "options", dict, where)
        if kind == "recurrent":
            keys = _field(entry, "tensors", list, where)
            if not set(keys) <= set(TENSOR_KEYS) or "W" not in keys:
                raise _ManifestError(f"lists tensors {keys!r:.60} for {where}; expected W, R and some of "
                                     f"{', '.join(TENSOR_KEYS[2:])}")
            count = _field(entry, "directions", int, where)
            if count not in (1, 2):
                raise _ManifestError(f"gives {where} {count} directions (a layer has 1 or 2)")
            directions = [Direction(**{key: _tensor(tensors, f"items.{i}.{k}.{key}", where) for key in keys})
                          for k in range(count)]
            activations = [Activation.from_json(_field({"a": a}, "a", dict, f"the activations of {where}"))
                           for a in _field(entry, "activations", list, where)]
            clip = entry.get("clip")
            if clip is not None:
                clip = float(_field(entry, "clip", (int, float), where))
            layer = RecurrentLayer(
                name=name, cell=_field(entry, "cell", str, where), directions=directions,
                activations=tuple(activations), reset_after=_field(entry, "reset_after", bool, where), clip=clip,
                input_forget=_field(entry, "input_forget", bool, where),
                provenance=_field(entry, "provenance", dict, where), options=options)
            claimed = {"units": layer.units, "input_size": layer.input_size, "dtype": str(layer.dtype)}
            for key, actual in claimed.items():
                if key in entry and entry[key] != actual:
                    raise _ManifestError(f"says {key} {entry[key]!r:.40} for {where} but its tensors hold {actual}")
            items.append(layer)
        elif kind == "opaque":
            names = _field(entry, "weight_names", list, where)
            weights = [(str(n), _tensor(tensors, f"items.{i}.weights.{j}", where)) for j, n in enumerate(names)]
            class_name = entry.get("class_name")
            items.append(OpaqueLayer(name, None if class_name is None else str(class_name), weights, options))
        else:
            raise _ManifestError(f"gives {where} the type {kind!r:.40}, neither 'recurrent' nor 'opaque'")
    return Bundle(items, source)


def _jsonable(value):
    """Plain JSON types only (numpy scalars and tuples become numbers and lists)."""
    return json.loads(json.dumps(value, default=_default))


def _default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in an rnnx manifest")


def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """`.rnnx` has no runtime of its own: the stored layer runs in rnnx's reference, in the file's dtype."""
    from ..canonical import reference

    stored = {item.name: item for item in read(path).layers}
    if layer.name not in stored:
        raise FormatError(f"{path} has no recurrent layer named {layer.name!r}; "
                          f"it holds: {', '.join(stored) or 'none'}.")
    found = stored[layer.name]
    Y, _, _ = reference.run_batch_first(found, x, dtype=found.dtype)
    return Y
