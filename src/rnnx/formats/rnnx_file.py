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
from ..errors import FormatError
from ..io import atomic_output

MANIFEST_KEY = "rnnx_manifest"
MANIFEST_VERSION = 1


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    items = []
    for i, item in enumerate(bundle.items):
        if isinstance(item, RecurrentLayer):
            for k, d in enumerate(item.directions):
                for key, arr in d.tensors().items():
                    tensors[f"items.{i}.{k}.{key}"] = np.ascontiguousarray(arr)
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
                tensors[f"items.{i}.weights.{j}"] = np.ascontiguousarray(arr)
                names.append(wname)
            items.append({"type": "opaque", "name": item.name, "class_name": item.class_name,
                          "weight_names": names, "options": _jsonable(item.options)})
    manifest = {"rnnx_manifest_version": MANIFEST_VERSION, "rnnx_version": __version__,
                "source": _jsonable(bundle.source), "items": items}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={MANIFEST_KEY: json.dumps(manifest)})
    return []


def read(path: Path, **_options) -> Bundle:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if MANIFEST_KEY not in meta:
                raise FormatError(f"{path} is a safetensors file without an rnnx manifest; "
                                  f"name it .safetensors to read it as a PyTorch state dict.")
            manifest = json.loads(meta[MANIFEST_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FormatError:
        raise
    except Exception as exc:  # safetensors raises its own untyped errors on broken headers
        raise FormatError(f"{path} is not a readable .rnnx file ({exc}).") from None
    try:
        return _from_manifest(manifest, tensors)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}: the rnnx manifest is inconsistent ({exc}).") from None


def _from_manifest(manifest: dict, tensors: dict) -> Bundle:
    items = []
    for i, entry in enumerate(manifest["items"]):
        if entry["type"] == "recurrent":
            directions = [
                Direction(**{key: tensors[f"items.{i}.{k}.{key}"] for key in entry["tensors"]})
                for k in range(entry["directions"])]
            items.append(RecurrentLayer(
                name=entry["name"], cell=entry["cell"], directions=directions,
                activations=tuple(Activation.from_json(a) for a in entry["activations"]),
                reset_after=entry["reset_after"], clip=entry["clip"], input_forget=entry["input_forget"],
                provenance=entry["provenance"], options=entry["options"]))
        else:
            weights = [(n, tensors[f"items.{i}.weights.{j}"]) for j, n in enumerate(entry["weight_names"])]
            items.append(OpaqueLayer(entry["name"], entry["class_name"], weights, entry["options"]))
    return Bundle(items, manifest["source"])


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
