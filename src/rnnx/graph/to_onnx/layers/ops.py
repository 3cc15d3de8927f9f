"""Keras 3 operations a functional model records as layers (module keras.src.ops.*).

Keras 3 writes the mask computations of Embedding(mask_zero) and Masking into the config as
NotEqual / Any nodes and passes their results as `mask=`; these converters rebuild them.
Comparisons run in float32 (token ids below 2**24 compare exactly).
"""

from __future__ import annotations

from onnx import TensorProto

from ....errors import UnsupportedError
from ..context import Context, LayerCall, Value
from ..registry import TF2ONNX_HINT, converter


def _float_operands(ctx: Context, call: LayerCall) -> list[str]:
    names = []
    for operand in call.operands:
        if isinstance(operand, Value):
            names.append(ctx.op("Cast", [operand.name], call.scope, to=TensorProto.FLOAT))
        elif isinstance(operand, (int, float)) and not isinstance(operand, bool):
            names.append(ctx.scalar(float(operand)))
        else:
            raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) has an argument rnnx cannot read "
                                   f"({operand!r}). {TF2ONNX_HINT}")
    if len(names) != 2:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) takes {len(names)} arguments; rnnx "
                               f"expected two. {TF2ONNX_HINT}")
    return names


def _rank(call: LayerCall) -> int | None:
    return next((o.rank for o in call.operands if isinstance(o, Value)), None)


@converter("NotEqual")
def not_equal(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    equal = ctx.op("Equal", _float_operands(ctx, call), call.scope)
    return [Value(ctx.op("Not", [equal], call.scope), _rank(call))]


@converter("Equal")
def equal(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    return [Value(ctx.op("Equal", _float_operands(ctx, call), call.scope), _rank(call))]


def _bool_reduce(op: str):
    def convert(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
        x = inputs[0]
        axis = call.config.get("axis")
        keep = int(bool(call.config.get("keepdims", False)))
        as_float = ctx.op("Cast", [x.name], call.scope, to=TensorProto.FLOAT)
        if axis is None:
            reduced = ctx.op(op, [as_float], call.scope, keepdims=keep)
            rank = 0 if not keep else x.rank
        else:
            axes = axis if isinstance(axis, list) else [axis]
            reduced = ctx.reduce(op, as_float, [int(a) for a in axes], call.scope, keepdims=keep)
            rank = None if x.rank is None else (x.rank if keep else x.rank - len(axes))
        return [Value(ctx.op("Cast", [reduced], call.scope, to=TensorProto.BOOL), rank)]
    return convert


converter("Any")(_bool_reduce("ReduceMax"))
converter("All")(_bool_reduce("ReduceMin"))
