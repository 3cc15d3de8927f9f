"""The object graph of a TF2 checkpoint (`_CHECKPOINTABLE_OBJECT_GRAPH`, a TrackableObjectGraph).

Node 0 is the root (the Keras model). `ObjectGraph.variables_under(node)` gives every
variable reachable from a node as (path relative to it, checkpoint key), in the order the
children were tracked; optimizer slots are not children, so they never appear there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import FormatError
from . import protos
from .bundle import OBJECT_GRAPH_KEY, TensorEntry

VARIABLE_ATTRIBUTE = "VARIABLE_VALUE"
MAX_DEPTH = 64
# Children that list again what the layer's own attributes reach (or hold no weights of the layer)
NOT_WEIGHTS = {"keras_api", "variables", "trainable_variables", "non_trainable_variables", "regularization_losses",
               "trainable_weights", "non_trainable_weights", "state_spec"}


@dataclass
class ObjectGraph:
    nodes: list[dict]
    path: Path  # the file it came from, for messages

    def children(self, node: int) -> list[tuple[str, int]]:
        return [(c.get("local_name", ""), c.get("node_id", 0)) for c in self.nodes[node].get("children", [])]

    def child(self, node: int, name: str) -> int | None:
        return next((n for local, n in self.children(node) if local == name), None)

    def variable_key(self, node: int) -> str | None:
        for attribute in self.nodes[node].get("attributes", []):
            if attribute.get("name") == VARIABLE_ATTRIBUTE:
                return attribute.get("checkpoint_key")
        return None

    def walk(self, dotted: str) -> int | None:
        """The node reached from the root by a path such as `root.layer_with_weights-0.cell`."""
        node = 0
        for part in dotted.split(".")[1:] if dotted.startswith("root") else dotted.split("."):
            node = self.child(node, part)
            if node is None:
                return None
        return node

    def variables_under(self, node: int) -> list[tuple[str, str]]:
        """(relative path, checkpoint key) of every variable below `node`, each node once, depth first."""
        out, seen = [], {node}

        def visit(current: int, prefix: str, depth: int) -> None:
            if depth > MAX_DEPTH:
                raise FormatError(f"{self.path}: the object graph nests deeper than {MAX_DEPTH} levels.")
            for local, child in self.children(current):
                if child in seen or local in NOT_WEIGHTS or local.startswith("_"):
                    continue
                seen.add(child)
                path = f"{prefix}{local}"
                key = self.variable_key(child)
                if key is not None:
                    out.append((path, key))
                visit(child, path + "/", depth + 1)

        visit(node, "", 0)
        return out


def read_object_graph(entries: dict[str, TensorEntry], path: Path) -> ObjectGraph | None:
    entry = entries.get(OBJECT_GRAPH_KEY)
    if entry is None:
        return None
    values = entry.read()
    if not isinstance(values, list) or len(values) != 1:
        raise FormatError(f"{path}: {OBJECT_GRAPH_KEY} is not one serialized object graph.")
    try:
        nodes = protos.decode(values[0], protos.TRACKABLE_OBJECT_GRAPH).get("nodes", [])
    except protos.ProtoError as exc:
        raise FormatError(f"{path}: the checkpoint's object graph is malformed ({exc}).") from None
    graph = ObjectGraph(nodes, path)
    for index, node in enumerate(nodes):
        for child in node.get("children", []):
            if not 0 <= child.get("node_id", 0) < len(nodes):
                raise FormatError(f"{path}: the object graph's node {index} names a child node "
                                  f"{child.get('node_id')} that does not exist.")
    if not nodes:
        raise FormatError(f"{path}: the checkpoint's object graph is empty.")
    return graph
