"""Walk a normalized Keras model (config.py) and let each layer's converter add its ONNX nodes."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from ...canonical import Bundle
from ...errors import FormatError, UsageError
from .. import config as keras_config
from .. import walk
from .context import Context, LayerCall, Value
from .registry import lookup

MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum with axes as inputs, Softmax over one axis
DEFAULT_OPSET = 14
INPUT_DTYPES = {"int32": TensorProto.INT32, "int64": TensorProto.INT64, "float64": TensorProto.DOUBLE,
                "float16": TensorProto.FLOAT16}


def build_model(bundle: Bundle, opset: int | None = None, time_major: bool = False,
                store=None) -> tuple[onnx.ModelProto, list]:
    """The ONNX model computing the whole Keras model of `bundle`, and notes for the user. With a
    `store` (onnx_format.external.WeightStore) large initializers go to it as they are made and the
    model refers to them instead of holding them."""
    opset = DEFAULT_OPSET if opset is None else int(opset)
    latest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= latest:
        raise UsageError(f"A whole-model ONNX export needs opset {MIN_OPSET} to {latest}; {opset} was asked for.")
    source = bundle.source
    if not source.get("model_config"):
        raise UsageError(f"{source.get('path', 'The file')} holds weights only; give the architecture with "
                         f"--config model.json (the output of model.to_json()).")
    try:
        model = keras_config.parse_model(source["model_config"])
        ctx = Context(_weights_by_name(bundle), opset, store=store)
        major = keras_config.keras_major(source)
        output_names = [_output_name(ref) for ref in model.outputs]
        for name in output_names:
            ctx.reserve_output(name)  # so no inner tensor takes an output's name
        feeds = [_graph_input(ctx, ref.layer, model, time_major) for ref in model.inputs]
        outputs = _evaluate(ctx, model, "", feeds, major)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:  # an entry missing or mistyped
        raise FormatError(f"{source.get('path', 'The source')}: its Keras model config is malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    state_outputs = list(ctx.graph_outputs)  # final states of stateful layers, added while converting
    ctx.graph_outputs.clear()
    for name, value in zip(output_names, outputs):
        out = value.name
        if time_major and value.rank == 3:
            out = ctx.op("Transpose", [out], f"{name}_time_major", perm=[1, 0, 2])
        ctx.add_output(out, name)
    ordered = ctx.graph_outputs + state_outputs
    nodes, initializers = _live(ctx.nodes, ctx.initializers, [o.name for o in ordered])
    graph = helper.make_graph(nodes, _graph_name(model.name), ctx.graph_inputs, ordered, initializer=initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rnnx",
                                   doc_string=f"Keras model {model.name} exported by rnnx")
    onnx_model.ir_version = min(onnx_model.ir_version, 10)
    try:
        _type_outputs(onnx_model)
    except onnx.shape_inference.InferenceError as exc:  # e.g. a Concatenate axis the inputs do not have
        raise FormatError(f"{source.get('path', 'The source')}: the graph its Keras model config describes does "
                          f"not type-check ({str(exc).splitlines()[0]}); the config is damaged, or run again with "
                          f"--debug and please report it.") from None
    return onnx_model, ctx.notes


def _type_outputs(model: onnx.ModelProto) -> None:
    """Give every graph output the type and shape ONNX shape inference finds for it.

    Inference runs on a skeleton: large weights become typed inputs instead of data, so the
    weights are not serialized an extra time; small constants (shapes, axes) stay, since
    inference reads their values.
    """
    graph = model.graph
    small = [t for t in graph.initializer if _elements(t) <= 64]
    stand_ins = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in graph.initializer if _elements(t) > 64]
    skeleton_graph = helper.make_graph(graph.node, graph.name, list(graph.input) + stand_ins, graph.output,
                                       initializer=small)
    skeleton = helper.make_model(skeleton_graph, opset_imports=model.opset_import)
    skeleton.ir_version = model.ir_version
    inferred = onnx.shape_inference.infer_shapes(skeleton).graph.output
    del graph.output[:]
    graph.output.extend(inferred)


def _elements(tensor) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def _live(nodes: list, initializers: list, outputs: list[str]) -> tuple[list, list]:
    """The nodes and initializers the outputs depend on (converters may build views nobody reads)."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return kept[::-1], [t for t in initializers if t.name in needed]


def _output_name(ref) -> str:
    return ref.layer if (ref.node_index, ref.tensor_index) == (0, 0) else \
        f"{ref.layer}:{ref.node_index}:{ref.tensor_index}"


def _graph_name(name: str) -> str:
    return name or "keras_model"


def _weights_by_name(bundle: Bundle) -> dict:
    return _WeightLookup({item.name: item for item in bundle.items})


class _WeightLookup(dict):
    """name -> item; an "outer/inner" name falls back to "inner" when the reader did not nest names."""

    def get(self, name, default=None):
        if name in self:
            return self[name]
        short = name.rsplit("/", 1)[-1]
        matches = [item for key, item in self.items() if key.rsplit("/", 1)[-1] == short]
        return matches[0] if len(matches) == 1 else default


def _graph_input(ctx: Context, name: str, model: keras_config.ModelSpec, time_major: bool) -> Value:
    shape = model.input_shapes.get(name)
    dtype = INPUT_DTYPES.get(model.input_dtypes.get(name, "float32"), TensorProto.FLOAT)
    if shape is None:
        ctx.add_input(name, dtype, None)
        return Value(name)
    dims = [d if d is not None else ("batch" if k == 0 else f"{name}_dim{k}") for k, d in enumerate(shape)]
    if time_major and len(dims) == 3:
        ctx.add_input(name, dtype, [dims[1], dims[0], dims[2]])
        return Value(ctx.op("Transpose", [name], f"{name}_batch_major", perm=[1, 0, 2]), 3)
    ctx.add_input(name, dtype, dims)
    return Value(name, len(dims))


def _evaluate(ctx: Context, model: keras_config.ModelSpec, prefix: str, feeds: list[Value],
              keras_major: int) -> list[Value]:
    """Convert every call of every layer of `model` once its inputs exist; returns the model's outputs."""
    def convert_call(spec, node_index, prefix, inputs, operands, kwargs):
        return _convert_call(ctx, spec, node_index, prefix, inputs, keras_major, operands, kwargs)

    def masked(value: Value, mask: Value) -> Value:
        return value.derive(value.name, mask=mask.name)

    return walk.evaluate(model, feeds, convert_call, masked, prefix)


def _convert_call(ctx: Context, spec, node_index: int, prefix: str, inputs: list[Value],
                  keras_major: int, operands: list, kwargs: dict | None = None) -> list[Value]:
    if spec.model is not None:
        return _evaluate(ctx, spec.model, f"{prefix}{spec.name}/", inputs, keras_major)
    call = LayerCall(f"{prefix}{spec.name}", spec.class_name, spec.config, keras_major, node_index, operands,
                     kwargs or {})
    note = walk.ignored_mask_note(spec, node_index, inputs, keras_major, call.name, "the ONNX graph")
    if note is not None and note not in ctx.notes:
        ctx.notes.append(note)
    convert = lookup(spec.class_name, call.name)
    try:
        outputs = convert(ctx, call, inputs)
    except (KeyError, TypeError, IndexError) as exc:  # a config entry missing or of the wrong kind
        raise FormatError(f"Layer {call.name!r} ({spec.class_name}): its Keras config is incomplete or malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    if any(v.mask is not None for v in inputs) and spec.class_name in walk.MASK_CONSUMERS:
        note = ("A Keras mask reaches a recurrent layer; it becomes the ONNX sequence_lens (the count of kept "
                "steps), which is exact for right-padded batches.")
        if note not in ctx.notes:
            ctx.notes.append(note)
    return outputs



