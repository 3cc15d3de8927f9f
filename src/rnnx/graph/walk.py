"""A parsed Keras model graph (config.ModelSpec) walked in call order, for every whole-model backend.

Each backend keeps its own values (ONNX tensor names, PyTorch variables) and its own converter per
layer call; the order of the calls, the wiring of their tensors and Keras 3's explicit masks are the
same for all of them.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import FormatError
from .config import ModelSpec, TensorRef

# the Keras layers that consume a mask (and so turn it into sequence lengths)
MASK_CONSUMERS = {"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "Bidirectional", "RNN"}
# convert_call(spec, node_index, prefix, inputs, operands, kwargs) -> the call's output values
ConvertCall = Callable[[Any, int, str, list, list, dict], list]
# masked(value, mask_value) -> value carrying the mask that mask_value holds
Masked = Callable[[Any, Any], Any]


def evaluate(model: ModelSpec, feeds: list, convert_call: ConvertCall, masked: Masked, prefix: str = "") -> list:
    """Convert every call of every layer of `model` once the tensors it takes exist; returns the values of
    the model's outputs. `feeds` are the values of its inputs, in order."""
    if len(feeds) != len(model.inputs):
        raise FormatError(f"Model {model.name!r} takes {len(model.inputs)} inputs but is called with {len(feeds)}.")
    tensors = {key(ref): value for ref, value in zip(model.inputs, feeds)}
    pending = [(spec, k) for spec in model.layers if spec.class_name != "InputLayer"
               for k in range(len(spec.calls))]
    while pending:
        ready = [(spec, k) for spec, k in pending if all(key(r) in tensors for r in spec.calls[k].tensors)]
        if not ready:
            spec, k = pending[0]
            missing = [r.layer for r in spec.calls[k].inputs if key(r) not in tensors]
            raise FormatError(f"Layer {prefix}{spec.name!r} of model {model.name!r} takes tensors no layer "
                              f"produces ({', '.join(missing)}).")
        for spec, k in ready:
            call = spec.calls[k]
            inputs = [tensors[key(r)] for r in call.inputs + call.initial_state]
            for j, mask in enumerate(call.masks[:len(call.inputs)]):
                if mask is not None:  # a mask Keras 3 passed explicitly wins over the propagated one
                    inputs[j] = masked(inputs[j], tensors[key(mask)])
            outputs = convert_call(spec, k, prefix, inputs, resolved(call.operands, tensors),
                                   resolved(call.kwargs, tensors))
            for i, value in enumerate(outputs):
                tensors[(spec.name, k + spec.node_offset, i)] = value
            pending.remove((spec, k))
    missing = [r for r in model.outputs if key(r) not in tensors]
    if missing:
        raise FormatError(f"Model {model.name!r} names outputs no layer produces: {missing}.")
    return [tensors[key(r)] for r in model.outputs]


def ignored_mask_note(spec, node_index: int, inputs: list, keras_major: int, name: str, kept_by: str) -> str | None:
    """The note for a Keras 3 call of a masked recurrent layer with initial_state= (and no explicit mask=):
    Keras 3 ignores the mask there, the exported model (`kept_by`) keeps it, as tf_keras does; else None."""
    recorded = spec.calls[node_index] if node_index < len(spec.calls) else None
    if keras_major != 3 or recorded is None or not recorded.initial_state or recorded.masks \
            or inputs[0].mask is None or spec.class_name not in MASK_CONSUMERS:
        return None
    return (f"Layer {name!r} is masked and called with initial_state=: Keras 3 (3.15) ignores the mask there and "
            f"predicts as if there were none; {kept_by} keeps the mask, as tf_keras does (pass mask= explicitly "
            f"in Keras 3 to get the same numbers).")


def resolved(value, tensors: dict):
    """Operands or kwargs with each TensorRef (also inside lists and dicts) replaced by its value."""
    if isinstance(value, TensorRef):
        return tensors[key(value)]
    if isinstance(value, list):
        return [resolved(v, tensors) for v in value]
    if isinstance(value, dict):
        return {k: resolved(v, tensors) for k, v in value.items()}
    return value


def key(ref: TensorRef) -> tuple:
    return (ref.layer, ref.node_index, ref.tensor_index)
