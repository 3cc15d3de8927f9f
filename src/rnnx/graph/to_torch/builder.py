"""Walk the Keras model graph (graph/config.py) in call order and let each converter write its code."""

from __future__ import annotations

from ...canonical import Bundle
from ...errors import FormatError, UsageError
from .. import config as keras_config
from .. import walk
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
    """Convert every call of every layer of `model` once its inputs exist; returns the model's outputs."""
    def convert_call(spec, node_index, prefix, inputs, operands, kwargs):
        return _convert_call(prog, spec, node_index, prefix, inputs, keras_major, operands, kwargs)

    def masked(value: Value, mask: Value) -> Value:
        return value.derive(value.var, mask=mask.var)

    return walk.evaluate(model, feeds, convert_call, masked, prefix)


def _convert_call(prog: Program, spec, node_index: int, prefix: str, inputs: list[Value], keras_major: int,
                  operands: list, kwargs: dict) -> list[Value]:
    if spec.model is not None:
        return _evaluate(prog, spec.model, f"{prefix}{spec.name}/", inputs, keras_major)
    call = LayerCall(f"{prefix}{spec.name}", spec.class_name, spec.config, keras_major, node_index, operands,
                     kwargs)
    note = walk.ignored_mask_note(spec, node_index, inputs, keras_major, call.name, "the PyTorch model")
    if note is not None and note not in prog.notes:
        prog.notes.append(note)
    convert = lookup(spec.class_name, call.name)
    prog.comment(f"{literal(call.name)} ({spec.class_name})" + (" is an identity at inference"
                                                               if spec.class_name in IDENTITY_LAYERS else ""))
    try:
        outputs = convert(prog, call, inputs)
    except (KeyError, TypeError, IndexError) as exc:
        raise FormatError(f"Layer {call.name!r} ({spec.class_name}): its Keras config is incomplete or malformed "
                          f"({type(exc).__name__}: {exc}); the file is damaged or not written by Keras.") from None
    if any(v.mask is not None for v in inputs) and spec.class_name in walk.MASK_CONSUMERS:
        note = ("A Keras mask reaches a recurrent layer; it becomes per-row sequence lengths (the count of kept "
                "steps), which is exact for right-padded batches.")
        if note not in prog.notes:
            prog.notes.append(note)
    return outputs

