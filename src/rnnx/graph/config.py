"""Keras 2 and Keras 3 model configs parsed into one normalized layer graph.

Both generations describe a model as layers plus, per layer, the calls made to it
("inbound nodes"). They spell it differently:

- Keras 2: `{"class_name": "Model"|"Functional"|"Sequential", "config": ...}`; a Sequential
  config is a list of layers (old) or `{"name", "layers"}`; an inbound node is a list of
  `[layer_name, node_index, tensor_index, kwargs]`. The TF op layers tf_keras records when a
  TF function is called on a Keras tensor (TFOpLambda, SlicingOpLambda) write a node as one
  flat entry `["input_1", 0, 0, {"perm": [1, 0, 2]}]`, a constant first argument as
  `["_CONSTANT_VALUE", -1, value, kwargs]`, and tensors inside kwargs as
  `[layer_name, node_index, tensor_index]` triples.
- Keras 3: every object is `{"module", "class_name", "config", ...}`; an inbound node is
  `{"args": [...], "kwargs": {...}}` whose tensors are `{"class_name": "__keras_tensor__",
  "config": {"keras_history": [layer_name, node_index, tensor_index]}}`.

The result is a `ModelSpec`: layers (class, config, calls) and the model's input and output
tensor references. Nested models stay nested here (a layer whose `model` is a ModelSpec);
the builder inlines them, naming inner layers "outer/inner" like the Keras readers do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError

MODEL_CLASSES = ("Model", "Functional", "Sequential")
TF_OP_CLASSES = ("TFOpLambda", "SlicingOpLambda")  # tf_keras: a TF function called on Keras tensors
CONSTANT_VALUE = "_CONSTANT_VALUE"  # tf_keras's name for a constant positional argument of a TF op layer


@dataclass(frozen=True)
class TensorRef:
    """Output `tensor_index` of call `node_index` of the layer named `layer`."""

    layer: str
    node_index: int = 0
    tensor_index: int = 0


@dataclass
class Call:
    """One call of a layer: its positional tensor inputs, its initial_state tensors, the masks
    passed explicitly (Keras 3 records them; None where an input has none) and the positional
    arguments in order, constants included (Keras 3 ops such as NotEqual(x, 0); a tf_keras TF
    op layer's `tf.concat([a, b])` has one operand, the list [a, b]).

    `kwargs` (tf_keras TF op layers only): the keyword arguments of the call as recorded, with
    TensorRefs in place of tensors (`{"perm": [1, 0, 2]}`, `{"y": TensorRef("lstm")}`)."""

    inputs: list[TensorRef]
    initial_state: list[TensorRef] = field(default_factory=list)
    masks: list[TensorRef | None] = field(default_factory=list)
    operands: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)

    @property
    def tensors(self) -> list[TensorRef]:
        """Every tensor this call needs before it can run."""
        return self.inputs + self.initial_state + [m for m in self.masks if m is not None] + \
            [r for r in _refs_in(self.kwargs) if r not in self.inputs]


@dataclass
class LayerSpec:
    name: str  # as written in the config (no nesting prefix)
    class_name: str
    config: dict[str, Any]
    calls: list[Call] = field(default_factory=list)
    model: "ModelSpec | None" = None  # set for a nested model
    node_offset: int = 0  # node index (in references) of calls[0]; 1 for most nested models


@dataclass
class ModelSpec:
    name: str
    layers: list[LayerSpec]
    inputs: list[TensorRef]
    outputs: list[TensorRef]
    input_shapes: dict[str, list | None]  # input layer name -> batch shape (None = unknown)
    input_dtypes: dict[str, str]
    sequential: bool = False

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise FormatError(f"The model config refers to a layer {name!r} that it does not define.")


def keras_major(source: dict) -> int:
    """Which Keras generation wrote the model: decides hard_sigmoid and a few defaults."""
    if source.get("format") == "keras":
        return 3
    version = str(source.get("keras_version") or "")
    if version[:1].isdigit():
        return int(version.split(".")[0]) if version.split(".")[0].isdigit() else 2
    config = source.get("model_config") or {}
    return 3 if isinstance(config, dict) and "module" in config else 2


def parse_model(config: dict) -> ModelSpec:
    """A model config (Keras 2 model_config / to_json, or Keras 3 config.json) as a ModelSpec."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise FormatError("The model config is not a Keras model description (no class_name at its top).")
    class_name = config["class_name"]
    if class_name not in MODEL_CLASSES:
        raise FormatError(f"The model config describes a {class_name}, not a Sequential or functional model.")
    body = config.get("config")
    if class_name == "Sequential":
        return _parse_sequential(body, config)
    return _parse_functional(body)


def is_model(layer_config: dict) -> bool:
    return layer_config.get("class_name") in MODEL_CLASSES


def _parse_sequential(body, outer: dict) -> ModelSpec:
    if isinstance(body, list):  # Keras 2.0 - 2.2: the layer list itself
        name, layer_configs, build_shape = "sequential", body, None
    else:
        name = body.get("name", "sequential")
        layer_configs = body.get("layers", [])
        build_shape = body.get("build_input_shape") or (outer.get("build_config") or {}).get("input_shape")
    layers: list[LayerSpec] = []
    input_shape, input_dtype = build_shape, "float32"
    input_layer_name = None
    for k, entry in enumerate(layer_configs):
        spec = _layer_spec(entry)
        if spec.class_name == "InputLayer":
            input_layer_name = spec.name
            input_shape = _batch_shape(spec.config) or input_shape
            input_dtype = _dtype_name(spec.config.get("dtype")) or input_dtype
            continue
        if not layers:
            shape = _batch_shape(spec.config)
            if shape is not None:
                input_shape = shape
            dtype = _dtype_name(spec.config.get("dtype"))
            if dtype and spec.class_name != "Embedding":
                input_dtype = dtype
        layers.append(spec)
    if input_shape is None and layers:
        input_shape = _guess_input_shape(layers[0])
    # Keras names the input after the InputLayer (tf_keras "<first layer>_input" when it made one itself)
    input_name = input_layer_name or (f"{layers[0].name}_input" if layers else f"{name}_input")
    previous = TensorRef(input_name)
    for spec in layers:
        spec.calls = [Call([previous])]
        previous = TensorRef(spec.name)
    input_layer = LayerSpec(input_name, "InputLayer", {"name": input_name})
    return ModelSpec(name, [input_layer, *layers], [TensorRef(input_name)], [previous],
                     {input_name: _as_list(input_shape)}, {input_name: input_dtype}, sequential=True)


# Rank of the input a layer takes, for a Sequential model saved without an input shape.
_INPUT_RANK = {"LSTM": 3, "GRU": 3, "SimpleRNN": 3, "CuDNNLSTM": 3, "CuDNNGRU": 3, "Bidirectional": 3,
               "Conv1D": 3, "Masking": 3, "TimeDistributed": 3, "Embedding": 2, "Dense": 2}


def _guess_input_shape(first: LayerSpec) -> list | None:
    if first.model is not None:
        return next(iter(first.model.input_shapes.values()), None)
    rank = _INPUT_RANK.get(first.class_name)
    return None if rank is None else [None] * rank


def _parse_functional(body: dict) -> ModelSpec:
    if not isinstance(body, dict) or "layers" not in body:
        raise FormatError("The functional model config has no 'layers' list.")
    layers = [_layer_spec(entry) for entry in body["layers"]]
    for spec, entry in zip(layers, body["layers"]):
        spec.calls = [_parse_call(node, spec.class_name) for node in entry.get("inbound_nodes", [])]
    output_refs = _refs(body.get("output_layers", []))
    for spec, entry in zip(layers, body["layers"]):
        if spec.model is not None:
            spec.node_offset = _node_offset(spec, entry, layers, output_refs)
    shapes, dtypes = {}, {}
    for spec in layers:
        if spec.class_name == "InputLayer":
            shapes[spec.name] = _as_list(_batch_shape(spec.config))
            dtypes[spec.name] = _dtype_name(spec.config.get("dtype")) or "float32"
    return ModelSpec(body.get("name", "model"), layers, _refs(body.get("input_layers", [])), output_refs,
                     shapes, dtypes)


def _layer_spec(entry: dict) -> LayerSpec:
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise FormatError("A layer in the model config has no class_name.")
    config = entry.get("config") or {}
    name = entry.get("name") or config.get("name")
    if not name:
        raise FormatError(f"A {entry['class_name']} layer in the model config has no name.")
    spec = LayerSpec(name, entry["class_name"], config)
    if is_model(entry):
        spec.model = parse_model(entry)
    return spec


def _node_offset(spec: LayerSpec, entry: dict, layers: list[LayerSpec], output_refs: list[TensorRef]) -> int:
    """Where a nested model's calls start in node indices.

    tf_keras and Keras 2 count a functional model's own internal node first (offset 1; a
    Sequential is functional there when it knows its input shape); Keras 3.15 does not. Where
    the references to the model do not fit that rule, the other offset is taken.
    """
    keras3 = "module" in entry or any(isinstance(n, dict) for n in entry.get("inbound_nodes", []))
    if keras3:
        rule = 0
    elif spec.class_name != "Sequential":
        rule = 1
    else:
        rule = 1 if spec.model.input_shapes.get(spec.model.inputs[0].layer) is not None else 0
    refs = [r for layer in layers for call in layer.calls for r in call.tensors if r.layer == spec.name]
    refs += [r for r in output_refs if r.layer == spec.name]
    for offset in (rule, 1 - rule):
        if all(0 <= r.node_index - offset < len(spec.calls) for r in refs):
            return offset
    raise FormatError(f"The model config calls the nested model {spec.name!r} {len(spec.calls)} time(s) but refers "
                      f"to node {max(r.node_index for r in refs)} of it.")


def _refs(raw) -> list[TensorRef]:
    """Model inputs / outputs in order; nested lists (a stacked RNN's state lists) are flattened, as
    Keras flattens them when it returns the outputs."""
    if raw and isinstance(raw[0], str):  # Keras 3 writes a single tensor as one flat triple
        return [TensorRef(raw[0], int(raw[1]), int(raw[2]))]
    return [ref for r in raw for ref in _refs(r)]


def _parse_call(node, class_name: str = "") -> Call:
    if isinstance(node, dict):  # Keras 3
        args = node.get("args", [])
        inputs = _keras3_tensors(args)
        kwargs = node.get("kwargs") or {}
        mask = kwargs.get("mask")
        masks = [(_keras3_tensors(m) or [None])[0] for m in (mask if isinstance(mask, list) else [mask])]
        operands = [(_keras3_tensors(a) or [None])[0] if isinstance(a, dict) else a for a in args]
        return Call(inputs, _keras3_tensors(kwargs.get("initial_state") or []),
                    masks if any(masks) else [], operands)
    if class_name in TF_OP_CLASSES:
        return _tf_op_call(node)
    # Keras 2: [[name, node_index, tensor_index, kwargs], ...]; extra tensors of a recurrent call
    # are its initial states (tf_keras appends them to the call's inputs; an RNN(StackedRNNCells)'s
    # are nested, one list per cell).
    return Call([TensorRef(item[0], int(item[1]), int(item[2])) for item in _flat_entries(node)])


def _flat_entries(node) -> list:
    """The [name, node_index, tensor_index, kwargs] entries of a Keras 2 inbound node, nested lists flattened."""
    flat = []
    for item in node:
        if isinstance(item, list) and item and isinstance(item[0], list):
            flat.extend(_flat_entries(item))
        else:
            flat.append(item)
    return flat


def _tf_op_call(node) -> Call:
    """A tf_keras TF op layer's node: one flat entry (one positional argument) or a list of entries
    (one positional argument that is a list, as in tf.concat([a, b], axis))."""
    single = bool(node) and isinstance(node[0], str)
    entries = [node] if single else list(node)
    args = []
    for item in entries:
        args.append(item[2] if item[0] == CONSTANT_VALUE else TensorRef(item[0], int(item[1]), int(item[2])))
    kwargs = entries[-1][3] if entries and len(entries[-1]) > 3 and isinstance(entries[-1][3], dict) else {}
    kwargs = {k: _kwarg_value(v) for k, v in kwargs.items() if k != "name"}
    inputs = [a for a in args if isinstance(a, TensorRef)]
    return Call(inputs, operands=args if single else [args], kwargs=kwargs)


def _kwarg_value(value):
    """A recorded keyword argument with its [layer, node, tensor] triples as TensorRefs."""
    if isinstance(value, list):
        if len(value) == 3 and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:]):
            return TensorRef(value[0], value[1], value[2])
        return [_kwarg_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _kwarg_value(v) for k, v in value.items()}
    return value


def _refs_in(value) -> list[TensorRef]:
    if isinstance(value, TensorRef):
        return [value]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs_in(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs_in(v)]
    return []


def _keras3_tensors(value) -> list[TensorRef]:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = value["config"]["keras_history"]
            return [TensorRef(history[0], int(history[1]), int(history[2]))]
        return []
    if isinstance(value, (list, tuple)):
        return [ref for item in value for ref in _keras3_tensors(item)]
    return []


def _batch_shape(config: dict):
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key) is not None:
            return config[key]
    if config.get("input_shape") is not None:
        return [None, *config["input_shape"]]
    return None


def _as_list(shape):
    return None if shape is None else list(shape)


def _dtype_name(dtype) -> str | None:
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict):  # Keras 3 DTypePolicy
        return (dtype.get("config") or {}).get("name")
    return None
