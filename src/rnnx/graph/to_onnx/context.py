"""The state a layer converter writes into: ONNX nodes, initializers, unique names, weights.

A converter sees values (`Value`: an ONNX tensor name plus the Keras mask riding on it)
and adds nodes through `Context.node`; it never builds NodeProtos itself, so every name is
unique and every constant lands in the initializer list once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ...canonical import OpaqueLayer, RecurrentLayer
from ...errors import FormatError


@dataclass(frozen=True)
class Value:
    """One Keras tensor in the graph: the ONNX name, its rank when known (batch axis included),
    and the name of the bool [batch, seq] Keras mask riding on it. Recurrent layers also publish their
    sequence time-major, so that a following recurrent layer reads it without two Transposes."""

    name: str
    rank: int | None = None
    mask: str | None = None
    time_major: str | None = None  # the same rank-3 tensor as [seq, batch, features], where one exists

    def derive(self, name: str, rank: int | None = -1, mask: str | None = "same") -> "Value":
        """A value computed from this one: same rank and mask unless told otherwise."""
        return Value(name, self.rank if rank == -1 else rank, self.mask if mask == "same" else mask)


@dataclass
class LayerCall:
    """What a converter is asked to convert: one call of one Keras layer."""

    name: str  # the layer's full name ("outer/inner" inside nested models): the key of its weights
    class_name: str
    config: dict[str, Any]
    keras_major: int
    node_index: int = 0
    operands: list = field(default_factory=list)  # positional arguments: Values and constants (Keras 3 ops)
    kwargs: dict = field(default_factory=dict)  # keyword arguments, Values in place of tensors (tf_keras TF ops)

    @property
    def scope(self) -> str:
        return self.name if self.node_index == 0 else f"{self.name}_call{self.node_index}"

    def option(self, key: str, default=None):
        value = self.config.get(key, default)
        return default if value is None else value

    def inner(self) -> "LayerCall":
        """The layer wrapped by TimeDistributed / Bidirectional (same weights key as the wrapper)."""
        inner = self.config.get("layer")
        if not isinstance(inner, dict) or "class_name" not in inner:
            raise FormatError(f"Layer {self.name!r} ({self.class_name}) has no wrapped layer in its config.")
        return LayerCall(self.name, inner["class_name"], inner.get("config") or {}, self.keras_major,
                         self.node_index)


@dataclass
class Context:
    """Collects the graph while converters run."""

    weights: dict[str, RecurrentLayer | OpaqueLayer]
    opset: int
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    graph_inputs: list = field(default_factory=list)
    graph_outputs: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    store: Any = None  # onnx_format.external.WeightStore: large initializers go there as they are made
    _names: set[str] = field(default_factory=set)
    _consts: dict[tuple, str] = field(default_factory=dict)
    _reserved: set[str] = field(default_factory=set)
    _node_names: set[str] = field(default_factory=set)

    # --- names -----------------------------------------------------------------
    def unique(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_./:-]", "_", hint) or "t"
        name, k = base, 1
        while name in self._names:
            name, k = f"{base}_{k}", k + 1
        self._names.add(name)
        return name

    def unique_node(self, hint: str) -> str:
        """A node name: `hint` unless another node has it. Nodes and tensors have separate namespaces
        in ONNX, so a graph output named after a layer leaves the name free for the layer's node."""
        taken = {node.name for node in self.nodes}
        name, k = hint, 1
        while name in taken or name in self._node_names:
            name, k = f"{hint}_{k}", k + 1
        self._node_names.add(name)
        self._names.add(name)  # unique() never hands it out again
        return name

    def reserve(self, name: str) -> str:
        if name in self._names:
            raise FormatError(f"Two graph tensors would be named {name!r}.")
        self._names.add(name)
        return name

    def reserve_output(self, name: str) -> None:
        """Keep `name` free for a graph output added later with add_output."""
        self.reserve(name)
        self._reserved.add(name)

    # --- nodes and constants -----------------------------------------------------
    def node(self, op: str, inputs: list[str], hint: str, outputs: int | list[str] = 1, **attrs) -> list[str]:
        """Add one node; returns its output names (unique, derived from `hint`)."""
        if isinstance(outputs, int):
            outputs = [self.unique(hint if outputs == 1 else f"{hint}:{k}") for k in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=self.unique(f"{hint}/{op}"), **attrs))
        return outputs

    def adopt(self, nodes: list, initializers: list) -> None:
        """Add nodes and initializers made elsewhere (onnx_nodes), claiming their names."""
        for node in nodes:
            self._names.update(n for n in node.output if n)
            self._names.add(node.name)
        for tensor in initializers:
            if tensor.name in self._names and not any(t.name == tensor.name for t in self.graph_inputs):
                raise FormatError(f"Two graph tensors would be named {tensor.name!r}.")
            self._names.add(tensor.name)
        if self.store is not None:
            initializers = [self.store.keep(t) for t in initializers]
        self.nodes.extend(nodes)
        self.initializers.extend(initializers)

    def op(self, op: str, inputs: list[str], hint: str, **attrs) -> str:
        """A one-output node; returns the output name."""
        return self.node(op, inputs, hint, 1, **attrs)[0]

    def const(self, array, hint: str, key: tuple | None = None) -> str:
        """An initializer holding `array`; `key` shares it (a weight used by several calls)."""
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.unique(hint)
        if self.store is not None:
            self.initializers.append(self.store.tensor(array, name))
        else:
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        if key is not None:
            self._consts[key] = name
        return name

    def tensor(self, array, name: str) -> TensorProto:
        """An initializer named `name` for a converter that builds its own (onnx_nodes.emit_layer): with a
        store, its data goes there now, so no TensorProto ever holds a large tensor's bytes (a cleared
        raw_data field keeps its memory until the message is freed)."""
        if self.store is not None:
            return self.store.tensor(array, name)
        return numpy_helper.from_array(np.asarray(array), name)

    def ints(self, values, hint: str = "const") -> str:
        values = tuple(int(v) for v in values)
        return self.const(np.array(values, np.int64), f"{hint}_i64", key=("ints", values))

    def reduce(self, op: str, x: str, axes: list[int], hint: str, keepdims: int = 1) -> str:
        """ReduceSum/Mean/Max with `axes` as an input or an attribute, as the opset wants."""
        axes_as_input = self.opset >= (13 if op == "ReduceSum" else 18)
        if axes_as_input:
            return self.op(op, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op, [x], hint, axes=list(axes), keepdims=keepdims)

    def squeeze(self, x: str, axes: list[int], hint: str) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes, "axes")], hint)
        return self.op("Squeeze", [x], hint, axes=list(axes))

    def unsqueeze(self, x: str, axes: list[int], hint: str) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes, "axes")], hint)
        return self.op("Unsqueeze", [x], hint, axes=list(axes))

    def scalar(self, value: float, dtype=np.float32) -> str:
        return self.const(np.array(value, dtype), "scalar", key=("scalar", np.dtype(dtype).str, float(value)))

    # --- graph inputs / outputs ------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape) -> str:
        self.reserve(name)
        self.graph_inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def add_output(self, source: str, name: str, elem_type: int = TensorProto.FLOAT) -> None:
        """A graph output `name` (reserved beforehand, or made unique here) holding `source`."""
        if name in self._reserved:
            self._reserved.discard(name)
        else:
            name = self.unique(name)
        self.nodes.append(helper.make_node("Identity", [source], [name], name=self.unique(f"{name}/Identity")))
        self.graph_outputs.append(helper.make_tensor_value_info(name, elem_type, None))

    # --- weights ---------------------------------------------------------------------
    def layer_weights(self, call: LayerCall, count: int | None = None, lazy: bool = False) -> list[np.ndarray]:
        """The stored tensors of a non-recurrent layer, in the order Keras stored them; with `lazy` as the
        reader gave them (rnnx.lazy arrays stay unread, for a writer that reads them one at a time)."""
        item = self._item(call)
        if not isinstance(item, OpaqueLayer):
            raise FormatError(f"Layer {call.name!r} ({call.class_name}) was read as a recurrent layer.")
        arrays = [w if lazy else np.asarray(w) for _, w in item.weights]
        if count is not None and len(arrays) != count:
            raise FormatError(
                f"Layer {call.name!r} ({call.class_name}) holds {len(arrays)} weight tensors; its config "
                f"needs {count}.")
        return arrays

    def recurrent(self, call: LayerCall) -> RecurrentLayer:
        item = self._item(call)
        if not isinstance(item, RecurrentLayer):
            raise FormatError(f"Layer {call.name!r} ({call.class_name}) was not read as a recurrent layer.")
        return item

    def _item(self, call: LayerCall):
        item = self.weights.get(call.name) or self._nested_weights(call.name)
        if item is None:
            raise FormatError(
                f"The model config names a layer {call.name!r} ({call.class_name}) whose weights are not in "
                f"the file.")
        return item

    def _nested_weights(self, name: str) -> OpaqueLayer | None:
        """The weights of layer "outer/.../inner" of a nested model kept in the outer group.

        A Keras 2 file stores a nested model as one group; the reader keeps its non-recurrent
        weights together (named "outer" or "outer/rest") under their stored names
        ("inner/kernel:0"), so the layer's own are the ones whose name starts with "inner/".
        """
        parts = name.split("/")
        if len(parts) < 2:
            return None
        inner = parts[-1]
        for group in (f"{parts[0]}/rest", parts[0]):
            item = self.weights.get(group)
            if isinstance(item, OpaqueLayer):
                mine = [(n, w) for n, w in item.weights if n.split("/")[0] == inner]
                if mine:
                    return OpaqueLayer(name, None, mine)
        return None
