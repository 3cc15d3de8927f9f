"""tf_keras TF op layers: a TF function called on a Keras tensor (TFOpLambda, SlicingOpLambda).

tf_keras records `tf.transpose(x, perm=[1, 0, 2])` as a TFOpLambda layer whose config names the
function ("compat.v1.transpose") and whose call keeps the first argument positional and every
other one as a keyword (config.py parses them into `call.operands` and `call.kwargs`). The common
shape and arithmetic functions are converted here; any other is refused by layer and function name.
Their outputs carry no Keras mask.
"""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ..context import Context, LayerCall, Value
from ..registry import TF2ONNX_HINT, converter

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
_NAMESPACES = ("compat.v1.", "math.", "nn.", "__operators__.", "linalg.")

BINARY = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "truediv": "Div", "divide": "Div"}
UNARY = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "exp": "Exp", "log": "Log", "abs": "Abs",
         "negative": "Neg", "sqrt": "Sqrt"}
REDUCE = {"reduce_mean": "ReduceMean", "reduce_sum": "ReduceSum", "reduce_max": "ReduceMax",
          "reduce_min": "ReduceMin"}


def function_name(call: LayerCall) -> str:
    """The TF function without its namespace: "compat.v1.transpose" -> "transpose"."""
    name = str(call.config.get("function", ""))
    for prefix in _NAMESPACES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


@converter("TFOpLambda", "SlicingOpLambda")
def tf_op(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    fn = function_name(call)
    if fn in BINARY:
        return [_binary(ctx, call, BINARY[fn])]
    if fn in UNARY:
        x = _tensor(call, call.operands[0])
        return [Value(ctx.op(UNARY[fn], [x.name], call.scope), x.rank)]
    if fn in REDUCE:
        return [_reduce(ctx, call, REDUCE[fn])]
    if fn in _FUNCTIONS:
        return [_FUNCTIONS[fn](ctx, call)]
    known = ", ".join(sorted({*_FUNCTIONS, *BINARY, *UNARY, *REDUCE}))
    raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')}, "
                           f"which rnnx's native ONNX export does not convert (it converts the TF functions "
                           f"{known}). {TF2ONNX_HINT}")


def _tensor(call: LayerCall, operand) -> Value:
    if not isinstance(operand, Value):
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')} "
                               f"on {operand!r} where rnnx expected a tensor. {TF2ONNX_HINT}")
    return operand


def _axes(value) -> list[int] | None:
    if value is None:
        return None
    return [int(a) for a in (value if isinstance(value, list) else [value])]


def _operand_name(ctx: Context, call: LayerCall, operand) -> tuple[str, int | None]:
    """(ONNX name, rank) of a tensor or a constant (scalar or nested list, float32 as tf_keras's tensors)."""
    if isinstance(operand, Value):
        return operand.name, operand.rank
    if isinstance(operand, bool) or not isinstance(operand, (int, float, list)):
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) has an argument rnnx cannot read "
                               f"({operand!r}). {TF2ONNX_HINT}")
    array = np.asarray(operand, np.float32)
    if array.ndim == 0:
        return ctx.scalar(float(array)), 0
    return ctx.const(array, f"{call.scope}/constant"), array.ndim


def _binary(ctx: Context, call: LayerCall, op: str) -> Value:
    if "y" not in call.kwargs or not call.operands:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')} "
                               f"without the two arguments rnnx expected. {TF2ONNX_HINT}")
    (a, rank_a), (b, rank_b) = (_operand_name(ctx, call, v) for v in (call.operands[0], call.kwargs["y"]))
    rank = None if None in (rank_a, rank_b) else max(rank_a, rank_b)  # numpy broadcasting, as TF does
    return Value(ctx.op(op, [a, b], call.scope), rank)


def _reduce(ctx: Context, call: LayerCall, op: str) -> Value:
    x = _tensor(call, call.operands[0])
    keep = int(bool(call.kwargs.get("keepdims", False)))
    axes = _axes(call.kwargs.get("axis"))
    if axes is None:
        return Value(ctx.op(op, [x.name], call.scope, keepdims=keep), x.rank if keep else 0)
    rank = None if x.rank is None else (x.rank if keep else x.rank - len(axes))
    return Value(ctx.reduce(op, x.name, axes, call.scope, keepdims=keep), rank)


def _transpose(ctx: Context, call: LayerCall) -> Value:
    x = _tensor(call, call.operands[0])
    perm = call.kwargs.get("perm")
    if perm is None:
        if x.rank is None:
            raise UnsupportedError(f"Layer {call.name!r} transposes a tensor of unknown rank without a perm. "
                                   f"{TF2ONNX_HINT}")
        perm = list(range(x.rank))[::-1]
    perm = [int(p) for p in perm]
    return Value(ctx.op("Transpose", [x.name], call.scope, perm=perm), len(perm))


def _reshape(ctx: Context, call: LayerCall) -> Value:
    x = _tensor(call, call.operands[0])
    shape = call.kwargs.get("shape")
    if not isinstance(shape, list) or not all(d is None or isinstance(d, int) for d in shape):
        raise UnsupportedError(f"Layer {call.name!r} reshapes to {shape!r}; rnnx converts constant shapes. "
                               f"{TF2ONNX_HINT}")
    if 0 in shape:  # ONNX would copy the input's dimension there; TF means an empty axis
        raise UnsupportedError(f"Layer {call.name!r} reshapes to {shape!r}, with an empty axis. {TF2ONNX_HINT}")
    dims = [-1 if d is None else d for d in shape]
    return Value(ctx.op("Reshape", [x.name, ctx.ints(dims, "shape")], call.scope), len(dims))


def _expand_dims(ctx: Context, call: LayerCall) -> Value:
    x = _tensor(call, call.operands[0])
    axis = int(call.kwargs.get("axis", 0))
    return Value(ctx.unsqueeze(x.name, [axis], call.scope), None if x.rank is None else x.rank + 1)


def _squeeze(ctx: Context, call: LayerCall) -> Value:
    x = _tensor(call, call.operands[0])
    axes = _axes(call.kwargs.get("axis", call.kwargs.get("squeeze_dims")))
    if not axes:
        return Value(ctx.op("Squeeze", [x.name], call.scope))
    return Value(ctx.squeeze(x.name, axes, call.scope), None if x.rank is None else x.rank - len(axes))


def _concat(ctx: Context, call: LayerCall) -> Value:
    values = call.operands[0] if call.operands and isinstance(call.operands[0], list) else call.operands
    parts = [_tensor(call, v) for v in values]
    axis = int(call.kwargs.get("axis", 0))
    return Value(ctx.op("Concat", [p.name for p in parts], call.scope, axis=axis), parts[0].rank)


def _getitem(ctx: Context, call: LayerCall) -> Value:
    """x[...] with ints and start:stop:step slices, one per leading axis."""
    x = _tensor(call, call.operands[0])
    spec = call.kwargs.get("slice_spec")
    spec = spec if isinstance(spec, list) else [spec]
    starts, ends, axes, steps, dropped = [], [], [], [], []
    for axis, item in enumerate(spec):
        if isinstance(item, bool) or not isinstance(item, (int, dict)):
            raise UnsupportedError(f"Layer {call.name!r} (SlicingOpLambda) indexes with {item!r}; rnnx converts "
                                   f"integer indices and start:stop:step slices. {TF2ONNX_HINT}")
        if isinstance(item, int):
            starts.append(item)
            ends.append(INT64_MAX if item == -1 else item + 1)
            steps.append(1)
            axes.append(axis)
            dropped.append(axis)
            continue
        if set(item) - {"start", "stop", "step"} or not all(v is None or isinstance(v, int) for v in item.values()):
            raise UnsupportedError(f"Layer {call.name!r} (SlicingOpLambda) slices with {item!r}, which rnnx does "
                                   f"not convert. {TF2ONNX_HINT}")
        step = 1 if item.get("step") is None else item["step"]
        if item.get("start") is None and item.get("stop") is None and step == 1:
            continue  # the whole axis
        backwards = step < 0
        starts.append(item["start"] if item.get("start") is not None else (-1 if backwards else 0))
        ends.append(item["stop"] if item.get("stop") is not None else (INT64_MIN if backwards else INT64_MAX))
        steps.append(step)
        axes.append(axis)
    y = x.name
    if axes:
        y = ctx.op("Slice", [y, ctx.ints(starts), ctx.ints(ends), ctx.ints(axes), ctx.ints(steps)], call.scope)
    if dropped:
        y = ctx.squeeze(y, dropped, call.scope)
    return Value(y, None if x.rank is None else x.rank - len(dropped))


_FUNCTIONS = {"transpose": _transpose, "reshape": _reshape, "expand_dims": _expand_dims, "squeeze": _squeeze,
              "concat": _concat, "getitem": _getitem}
