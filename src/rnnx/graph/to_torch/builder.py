"""Walk the Keras model graph (graph/config.py) in call order and let each converter write its code."""

from __future__ import annotations

from ...canonical import Bundle
from ...errors import FormatError, UsageError
from .. import config as keras_config
from ..to_onnx.builder import _MASK_CONSUMERS as MASK_CONSUMERS  # noqa: PLC2701  (the same layers read masks)
from ..to_onnx.builder import _resolved  # noqa: PLC2701  (TensorRefs in operands / kwargs -> values)
from ..to_onnx.builder import _weights_by_name  # noqa: PLC2701  (one weight lookup for both backends)
from ..to_onnx.context import Context, LayerCall
from .layers.core import IDENTITY_LAYERS
from .program import Program, Value, literal
from .registry import lookup


def build_program(bundle: Bundle) -> tuple[Program, keras_config.ModelSpec, list[str], list[Value]]:
    """The Program of the whole Keras model of `bundle`, the model spec, the forward() argument names
    and the output values in Keras order."""
    source = bundle.source
    if not source.get("model_config"):
        raise UsageError(f"{source.get('path', 'The file')} holds weights only; give the architecture with "
                         f"--config model.json (the output of model.to_json()).")
    try:
        model = keras_config.parse_model(source["model_config"])
        prog = Program(Context(_weights_by_name(bundle), 14))
        major = keras_config.keras_major(source)
        args = [prog.identifier(ref.layer) for ref in model.inputs]
        feeds = [Value(arg, _rank(model.input_shapes.get(ref.layer))) for arg, ref in zip(args, model.inputs)]
        outputs = _evaluate(prog, model, "", feeds, major)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:
        raise FormatError(f"{source.get('path', 'The source')}: its Keras model config is malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    return prog, model, args, outputs


def _rank(shape) -> int | None:
    return None if shape is None else len(shape)


def _evaluate(prog: Program, model: keras_config.ModelSpec, prefix: str, feeds: list[Value],
              keras_major: int) -> list[Value]:
    if len(feeds) != len(model.inputs):
        raise FormatError(f"Model {model.name!r} takes {len(model.inputs)} inputs but is called with {len(feeds)}.")
    tensors = {_key(ref): value for ref, value in zip(model.inputs, feeds)}
    pending = [(spec, k) for spec in model.layers if spec.class_name != "InputLayer"
               for k in range(len(spec.calls))]
    while pending:
        ready = [(spec, k) for spec, k in pending if all(_key(r) in tensors for r in spec.calls[k].tensors)]
        if not ready:
            spec, k = pending[0]
            missing = [r.layer for r in spec.calls[k].inputs if _key(r) not in tensors]
            raise FormatError(f"Layer {prefix}{spec.name!r} of model {model.name!r} takes tensors no layer "
                              f"produces ({', '.join(missing)}).")
        for spec, k in ready:
            call = spec.calls[k]
            inputs = [tensors[_key(r)] for r in call.inputs + call.initial_state]
            for j, mask in enumerate(call.masks[:len(call.inputs)]):
                if mask is not None:  # a mask Keras 3 passed explicitly wins over the propagated one
                    inputs[j] = inputs[j].derive(inputs[j].var, mask=tensors[_key(mask)].var)
            operands = _resolved(call.operands, tensors)
            for i, value in enumerate(_convert_call(prog, spec, k, prefix, inputs, keras_major, operands,
                                                    _resolved(call.kwargs, tensors))):
                tensors[(spec.name, k + spec.node_offset, i)] = value
            pending.remove((spec, k))
    missing = [r for r in model.outputs if _key(r) not in tensors]
    if missing:
        raise FormatError(f"Model {model.name!r} names outputs no layer produces: {missing}.")
    return [tensors[_key(r)] for r in model.outputs]


def _convert_call(prog: Program, spec, node_index: int, prefix: str, inputs: list[Value], keras_major: int,
                  operands: list, kwargs: dict) -> list[Value]:
    if spec.model is not None:
        return _evaluate(prog, spec.model, f"{prefix}{spec.name}/", inputs, keras_major)
    call = LayerCall(f"{prefix}{spec.name}", spec.class_name, spec.config, keras_major, node_index, operands,
                     kwargs)
    recorded = spec.calls[node_index] if node_index < len(spec.calls) else None
    if keras_major == 3 and recorded is not None and recorded.initial_state and not recorded.masks \
            and inputs[0].mask is not None and spec.class_name in MASK_CONSUMERS:
        note = (f"Layer {call.name!r} is masked and called with initial_state=: Keras 3 (3.15) ignores the mask "
                f"there and predicts as if there were none; the PyTorch model keeps the mask, as tf_keras does "
                f"(pass mask= explicitly in Keras 3 to get the same numbers).")
        if note not in prog.notes:
            prog.notes.append(note)
    convert = lookup(spec.class_name, call.name)
    prog.comment(f"{literal(call.name)} ({spec.class_name})" + (" is an identity at inference"
                                                               if spec.class_name in IDENTITY_LAYERS else ""))
    try:
        outputs = convert(prog, call, inputs)
    except (KeyError, TypeError, IndexError) as exc:
        raise FormatError(f"Layer {call.name!r} ({spec.class_name}): its Keras config is incomplete or malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    if any(v.mask is not None for v in inputs) and spec.class_name in MASK_CONSUMERS:
        note = ("A Keras mask reaches a recurrent layer; it becomes per-row sequence lengths (the count of kept "
                "steps), which is exact for right-padded batches.")
        if note not in prog.notes:
            prog.notes.append(note)
    return outputs


def _key(ref) -> tuple:
    return (ref.layer, ref.node_index, ref.tensor_index)
