"""A Keras 2 model held in a tensor bundle (SavedModel variables or a `save_weights` checkpoint)
turned into the same Bundle the Keras 2 HDF5 reader gives, so every writer (the whole-model
ONNX exporter, `.keras`, full-model `.h5`) treats it as the Keras model it is.

Layers are found through the object graph: the root's `layer-K` children are `model.layers`
in order (`layer_with_weights-K` when a file has no `layer-K`), each reaching its variables
(`cell/kernel`, `forward_layer/cell/kernel`, `kernel`, ...) whatever key the bundle stored them
under (`trainable_variables/N/...` in SavedModels). Each layer becomes one group of weights named
`<layer>/<object path>:0` (a nested model's: `<inner layer>/<object path>:0`), which is what
the HDF5 reader's recognition (keras2/h5.py, reused as it is) reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...canonical import Bundle
from ...errors import FormatError, UnsupportedError, UsageError
from ..keras2 import config as kc
from ..keras2.h5 import FORMAT as KERAS_H5, _Group, _items_of, _Source
from .bundle import TensorEntry
from .object_graph import ObjectGraph

LAYER_CHILD = re.compile(r"^layer-(\d+)$")
WEIGHTED_CHILD = re.compile(r"^layer_with_weights-(\d+)$")
FLOAT_DTYPES = ("float16", "float32", "float64")


@dataclass
class LayerNode:
    node: int
    object_path: str  # "layer-3" or "layer_with_weights-1"
    name: str  # the Keras layer name, or the object path when nothing names it
    class_name: str | None
    entry: dict | None = None  # the layer's config entry, when a config is known
    names: dict | None = None  # the Keras metadata per node id, for the layers of a nested model


def layer_nodes(graph: ObjectGraph, names: dict[int, dict] | None, model_config: dict | None,
                path: Path, root: int = 0) -> list[LayerNode]:
    """The layers of the model at node `root` in order. `names`: per node id, the Keras metadata of that layer."""
    children = graph.children(root)
    by_index = sorted(((int(m.group(1)), local, node) for local, node in children
                       if (m := LAYER_CHILD.match(local))))
    weighted = sorted(((int(m.group(1)), local, node) for local, node in children
                       if (m := WEIGHTED_CHILD.match(local))))
    names = names or {}
    if model_config is None and not names:
        chosen = weighted or by_index  # nothing names the layers: their object paths do
    else:
        chosen = by_index or weighted
    entries = None
    if model_config is not None and any(node not in names for _, _, node in chosen):
        entries = _config_layers(model_config, len(chosen), chosen is by_index, path)
    out = []
    for position, (_, local, node) in enumerate(chosen):
        meta = names.get(node)
        entry = entries[position] if entries is not None else None
        if meta is not None and isinstance(meta.get("name"), str):
            name, class_name = meta["name"], meta.get("class_name")
            if isinstance(meta.get("config"), (dict, list)) and meta.get("class_name") in kc.MODEL_CLASSES:
                entry = {"class_name": meta["class_name"], "config": meta["config"]}
        elif entry is not None:
            name, class_name = kc.entry_name(entry), entry.get("class_name")
        else:
            name, class_name = local, None
        out.append(LayerNode(node, local, name, class_name, entry, names))
    return out


WEIGHTLESS = {"InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
              "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Activation", "Flatten", "Reshape",
              "Permute", "RepeatVector", "Masking", "Concatenate", "Add", "Subtract", "Multiply", "Average",
              "Maximum", "Minimum", "Dot", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D",
              "GlobalAveragePooling1D", "ReLU", "LeakyReLU", "ELU", "Softmax", "Lambda", "Cropping1D",
              "ZeroPadding1D", "UpSampling1D"}


def _config_layers(model_config: dict, count: int, all_layers: bool, path: Path) -> list[dict]:
    """The config entries that the object graph's `layer-K` (or `layer_with_weights-K`) children are."""
    entries = kc.layer_entries(model_config)
    if not all_layers:
        entries = [e for e in entries if e.get("class_name") not in WEIGHTLESS]
    elif len(entries) != count:
        # Sequential models track model.layers, which leaves out the InputLayer the config lists
        entries = [e for e in entries if e.get("class_name") != "InputLayer"]
    if len(entries) != count:
        raise FormatError(f"{path}: the architecture has {len(entries)} layers {'with weights ' * (not all_layers)}"
                          f"where the checkpoint holds {count}; give the model.to_json() of the model that saved "
                          f"these weights.")
    return entries


def weights_of(graph: ObjectGraph, layer: LayerNode, depth: int = 0) -> list[tuple[str, str]]:
    """(weight path, checkpoint key) of the layer's variables in Keras's order: as tracked, with a
    Bidirectional's forward layer before its backward layer. Paths start with the layer's name
    (`lstm/cell/kernel`); in a nested model with the inner layer's (`inner_lstm/cell/kernel`), as
    an HDF5 file names the weights of a nested model's group."""
    inner = _nested_layers(graph, layer, depth)
    if inner is None:
        found = graph.variables_under(layer.node)
        return [(f"{layer.name}/{rel}", key)
                for rel, key in sorted(found, key=lambda item: item[0].startswith("backward_layer"))]
    out = []
    for sub in inner:
        for rel, key in weights_of(graph, sub, depth + 1):
            out.append((rel, key) if depth == 0 else (f"{layer.name}/{rel}", key))
    return out


def _nested_layers(graph: ObjectGraph, layer: LayerNode, depth: int) -> list[LayerNode] | None:
    """The layers of a model nested in the model (a node with `layer-K` children), or None."""
    if not any(LAYER_CHILD.match(local) or WEIGHTED_CHILD.match(local) for local, _ in graph.children(layer.node)):
        return None
    if depth > 16:
        raise FormatError(f"{graph.path}: models nest deeper than 16 levels.")
    config = layer.entry if layer.entry and layer.entry.get("class_name") in kc.MODEL_CLASSES else None
    return layer_nodes(graph, layer.names, config, graph.path, root=layer.node)


def build(entries: dict[str, TensorEntry], graph: ObjectGraph, layers: list[LayerNode], path: Path,
          model_config: dict | None, full_model: bool, container: str, shapes_only: bool = False) -> Bundle:
    """Weights are lazy (rnnx.lazy): read one by one when used; with `shapes_only` (inspect) never read."""
    groups = []
    for layer in layers:
        names, arrays = [], []
        for name, key in weights_of(graph, layer):
            entry = entries.get(key)
            if entry is None:
                raise FormatError(f"{path}: the object graph says layer {layer.name!r} holds {name!r} under the key "
                                  f"{key!r}, which the checkpoint does not have; it is damaged or incomplete.")
            if entry.dtype not in FLOAT_DTYPES:  # refused from the index, before any tensor is read
                kind = "strings" if entry.dtype == "string" else entry.dtype
                raise UnsupportedError(f"{path}: layer {layer.name!r} holds {name!r} as {kind} where a weight is "
                                       f"expected; rnnx reads floating-point weights only.")
            names.append(f"{name}:0")
            arrays.append(entry.lazy(shapes_only))
        groups.append((layer.name, list(zip(names, arrays))))
    return build_groups(path, groups, model_config=model_config, full_model=full_model, container=container)


def build_groups(path: Path, weights: list[tuple[str, list]], model_config: dict | None = None,
                 full_model: bool = False, keras_version: str | None = None, container: str = "") -> Bundle:
    """The Keras 2 bundle of layers given as (layer name, [(weight name, array), ...]) in model order."""
    groups = [_Group(name, [n for n, _ in pairs], [a for _, a in pairs]) for name, pairs in weights]
    src = _Source(path, keras_version, "tensorflow", model_config, kc.top_level(model_config) if model_config else {})
    if model_config is not None:
        missing = [g.name for g in groups if g.weight_names and g.name not in src.top]
        if missing:
            raise FormatError(f"{path}: the architecture has no layer named {missing[0]!r} (it names "
                              f"{', '.join(list(src.top)[:6]) or 'no layers'}); give the model.to_json() of the "
                              f"model that saved these weights.")
    items: list = []
    for group in groups:
        items.extend(_items_of(group, src, {it.name for it in items}))
    source = {
        "format": KERAS_H5, "container": container, "backend": "tensorflow",
        "model_config": model_config, "has_architecture": model_config is not None, "full_model": full_model,
        "layer_names": [g.name for g in groups], "groups": {g.name: list(g.weight_names) for g in groups},
        "foreign_root_entries": [],
    }
    if keras_version is not None:
        source["keras_version"] = keras_version
    try:
        return Bundle(items, source)
    except ValueError as exc:
        raise FormatError(f"{path}: {exc}.") from None


def refuse_forget_bias(forget_bias: float | None, where: Path) -> None:
    if forget_bias is not None:
        raise UsageError(f"{where} holds a Keras model, whose LSTM bias already includes the forget gate's "
                         f"(--forget-bias is for TF1 cells); leave --forget-bias out.")


def ignored_note(entries: dict[str, TensorEntry]) -> list[str]:
    skipped = [k for k in entries if ".OPTIMIZER_SLOT" in k or k.startswith(("optimizer/", "save_counter/",
                                                                               "keras_api/"))]
    if not skipped:
        return []
    return [f"{len(skipped)} optimizer, metric and counter variables of the checkpoint are not carried over "
            f"(compile the model again to train)."]
