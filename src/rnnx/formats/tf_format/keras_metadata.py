"""The Keras metadata of a SavedModel: `keras_metadata.pb` (TF >= 2.5), or before it the
same JSON inside `saved_model.pb`'s object graph (SavedUserObject.metadata).

Both give, per object path (`root`, `root.layer_with_weights-0`, ...), the layer's JSON:
class_name, name, config; the root's is the whole model config. Paths are resolved in the
checkpoint's object graph, so each layer node gets its metadata whatever id it has there.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ...errors import FormatError
from . import protos
from .object_graph import ObjectGraph

KERAS_METADATA = "keras_metadata.pb"
SAVED_MODEL = "saved_model.pb"
MODEL_IDENTIFIERS = ("_tf_keras_sequential", "_tf_keras_network", "_tf_keras_model")
MAX_FILE = 1 << 30


@dataclass
class KerasMetadata:
    model: dict | None  # the root's metadata (class_name, config, ...); None when not a Keras model
    by_path: dict[str, dict]  # "root.layer-0" -> that layer's metadata


def read(folder: Path) -> KerasMetadata:
    """The Keras metadata of the SavedModel in `folder` (empty when it has none)."""
    keras_file = folder / KERAS_METADATA
    if keras_file.is_file():
        objects = _decode(keras_file, protos.KERAS_SAVED_METADATA).get("nodes", [])
        found = [(o.get("node_path", ""), o.get("identifier", ""), o.get("metadata", "")) for o in objects]
    else:
        found = _from_saved_model(folder / SAVED_MODEL)
    by_path, model = {}, None
    for node_path, identifier, text in found:
        if not identifier.startswith("_tf_keras") or not text:
            continue
        try:
            meta = json.loads(text)
        except ValueError:
            raise FormatError(f"{folder}: the Keras metadata of {node_path!r} is not JSON.") from None
        if not isinstance(meta, dict):
            continue
        by_path[node_path] = meta
        if node_path == "root" and identifier in MODEL_IDENTIFIERS:
            model = meta
    return KerasMetadata(model, by_path)


def model_config(metadata: KerasMetadata) -> dict | None:
    """The Keras model config ({"class_name", "config"}) the HDF5 reader and the graph exporter take."""
    meta = metadata.model
    if meta is None or not isinstance(meta.get("config"), (dict, list)):
        return None
    return {"class_name": meta.get("class_name"), "config": _plain(meta["config"])}


def _plain(value, depth: int = 0):
    """The config as model.to_json() writes it: SavedModel metadata spells tuples
    {"class_name": "__tuple__", "items": [...]}, to_json() as lists."""
    if depth > 200:
        raise FormatError("The Keras metadata nests deeper than 200 levels.")
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and isinstance(value.get("items"), list):
            return [_plain(v, depth + 1) for v in value["items"]]
        return {k: _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value]
    return value


def by_node(metadata: KerasMetadata, graph: ObjectGraph) -> dict[int, dict]:
    out = {}
    for node_path, meta in metadata.by_path.items():
        node = graph.walk(node_path)
        if node is not None:
            out.setdefault(node, meta)
    return out


def _decode(path: Path, schema: protos.Message) -> dict:
    size = path.stat().st_size
    if size > MAX_FILE:
        raise FormatError(f"{path} is {size} bytes, more than rnnx reads for model metadata.")
    try:
        return protos.decode(path.read_bytes(), schema)
    except protos.ProtoError as exc:
        raise FormatError(f"{path} is not a well-formed {schema.name} ({exc}); it is truncated or damaged.") from None


def variable_names(folder: Path) -> dict[str, str]:
    """Object path -> the name a variable was created with (SavedVariable.name), from saved_model.pb."""
    nodes, paths = _saved_objects(folder / SAVED_MODEL)
    return {p: nodes[n]["variable"]["name"] for n, p in paths.items() if nodes[n].get("variable", {}).get("name")}


def _from_saved_model(path: Path) -> list[tuple[str, str, str]]:
    """(object path, identifier, metadata) of every user object in saved_model.pb's object graph."""
    nodes, paths = _saved_objects(path)
    out = []
    for node, node_path in paths.items():
        user = nodes[node].get("user_object")
        if user:
            out.append((node_path, user.get("identifier", ""), user.get("metadata", "")))
    return out


def _saved_objects(path: Path) -> tuple[list[dict], dict[int, str]]:
    """saved_model.pb's SavedObject nodes and the object path of each node reachable from the root."""
    if not path.is_file():
        return [], {}
    saved = _decode(path, protos.SAVED_MODEL)
    graphs = saved.get("meta_graphs", [])
    if not graphs:
        raise FormatError(f"{path} holds no MetaGraphDef; it is not a SavedModel.")
    nodes = graphs[0].get("object_graph_def", {}).get("nodes", [])
    paths = {0: "root"} if nodes else {}
    queue = deque([0] if nodes else [])
    while queue:  # breadth first: each node gets its shortest path, as TensorFlow names them
        current = queue.popleft()
        for child in nodes[current].get("children", []):
            node = child.get("node_id", 0)
            if 0 <= node < len(nodes) and node not in paths:
                paths[node] = f"{paths[current]}.{child.get('local_name', '')}"
                queue.append(node)
    return nodes, paths
