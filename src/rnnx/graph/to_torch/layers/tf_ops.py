"""tf_keras TF op layers (TFOpLambda, SlicingOpLambda): a TF function called on a Keras tensor.

The same functions as the ONNX backend (to_onnx/layers/tf_ops.py, whose tables of TF names this module
maps to torch, so the two cannot drift apart) with the same semantics; any other is refused by layer and
function name. Constant arguments are float32, as tf_keras's tensors are: scalars as literals, arrays as
non-trainable parameters. Their outputs carry no Keras mask.
"""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ...to_onnx.layers import tf_ops as onnx_tf_ops
from ..program import Program, Value
from ..registry import converter

TORCH_OF_ONNX = {"Add": "+", "Sub": "-", "Mul": "*", "Div": "/",
                 "Tanh": "torch.tanh", "Sigmoid": "torch.sigmoid", "Relu": "torch.relu", "Exp": "torch.exp",
                 "Log": "torch.log", "Abs": "torch.abs", "Neg": "torch.neg", "Sqrt": "torch.sqrt",
                 "ReduceMean": "torch.mean", "ReduceSum": "torch.sum", "ReduceMax": "torch.amax",
                 "ReduceMin": "torch.amin"}
BINARY = {name: TORCH_OF_ONNX[op] for name, op in onnx_tf_ops.BINARY.items()}  # infix operators
UNARY = {name: TORCH_OF_ONNX[op] for name, op in onnx_tf_ops.UNARY.items()}
REDUCE = {name: TORCH_OF_ONNX[op] for name, op in onnx_tf_ops.REDUCE.items()}


@converter("TFOpLambda", "SlicingOpLambda")
def tf_op(prog: Program, call, inputs: list[Value]) -> list[Value]:
    fn = onnx_tf_ops.function_name(call)
    if fn in BINARY:
        return [_binary(prog, call, BINARY[fn])]
    if fn in UNARY:
        x = _tensor(call, call.operands[0])
        return [Value(prog.let(call.scope, f"{UNARY[fn]}({x.var})"), x.rank)]
    if fn in REDUCE:
        return [_reduce(prog, call, REDUCE[fn])]
    if fn in FUNCTIONS:
        return [FUNCTIONS[fn](prog, call)]
    known = ", ".join(sorted({*FUNCTIONS, *BINARY, *UNARY, *REDUCE}))
    raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')}, "
                           f"which rnnx's PyTorch model export does not convert (it converts the TF functions "
                           f"{known}).")


def _tensor(call, operand) -> Value:
    if not isinstance(operand, Value):
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')} "
                               f"on {operand!r} where rnnx expected a tensor.")
    return operand


def _axes(value) -> list[int] | None:
    if value is None:
        return None
    return [int(a) for a in (value if isinstance(value, list) else [value])]


def _operand(prog: Program, call, operand) -> tuple[str, int | None]:
    """(expression, rank) of a tensor or a constant (a scalar literal, or an array parameter)."""
    if isinstance(operand, Value):
        return operand.var, operand.rank
    if isinstance(operand, bool) or not isinstance(operand, (int, float, list)):
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) has an argument rnnx cannot read "
                               f"({operand!r}).")
    array = np.asarray(operand, np.float32)
    if array.ndim == 0:
        if not np.isfinite(array):  # inf, nan: no literal
            return f"float({str(float(array))!r})", 0
        text = str(np.float32(array))  # the shortest text of the float32 value, which torch computes with
        return (text if any(c in text for c in ".en") else f"{text}.0"), 0
    return f"self.{prog.constant(call, array)}", array.ndim


def _binary(prog: Program, call, symbol: str) -> Value:
    if "y" not in call.kwargs or not call.operands:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) calls tf.{call.config.get('function')} "
                               f"without the two arguments rnnx expected.")
    (a, rank_a), (b, rank_b) = (_operand(prog, call, v) for v in (call.operands[0], call.kwargs["y"]))
    if rank_a == 0 and rank_b == 0:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) combines two constants; rnnx expected a "
                               f"tensor.")
    rank = None if None in (rank_a, rank_b) else max(rank_a, rank_b)  # broadcasting, as TF does
    return Value(prog.let(call.scope, f"{a} {symbol} {b}"), rank)


def _reduce(prog: Program, call, function: str) -> Value:
    x = _tensor(call, call.operands[0])
    keep = bool(call.kwargs.get("keepdims", False))
    axes = _axes(call.kwargs.get("axis"))
    if axes is None:  # every axis
        dims = f"list(range({x.var}.dim()))" if x.rank is None else str(list(range(x.rank)))
        rank = x.rank if keep else 0
    else:
        dims = str(axes)
        rank = None if x.rank is None else (x.rank if keep else x.rank - len(axes))
    return Value(prog.let(call.scope, f"{function}({x.var}, {dims}, keepdim={keep})"), rank)


def _transpose(prog: Program, call) -> Value:
    x = _tensor(call, call.operands[0])
    perm = call.kwargs.get("perm")
    if perm is None:
        if x.rank is None:
            raise UnsupportedError(f"Layer {call.name!r} transposes a tensor of unknown rank without a perm.")
        perm = list(range(x.rank))[::-1]
    perm = [int(p) for p in perm]
    return Value(prog.let(call.scope, f"{x.var}.permute({perm})"), len(perm))


def _reshape(prog: Program, call) -> Value:
    x = _tensor(call, call.operands[0])
    shape = call.kwargs.get("shape")
    if not isinstance(shape, list) or not all(d is None or isinstance(d, int) for d in shape):
        raise UnsupportedError(f"Layer {call.name!r} reshapes to {shape!r}; rnnx converts constant shapes.")
    if 0 in shape:  # as the ONNX backend refuses it
        raise UnsupportedError(f"Layer {call.name!r} reshapes to {shape!r}, with an empty axis.")
    dims = [-1 if d is None else int(d) for d in shape]
    return Value(prog.let(call.scope, f"{x.var}.reshape({dims})"), len(dims))


def _expand_dims(prog: Program, call) -> Value:
    x = _tensor(call, call.operands[0])
    axis = int(call.kwargs.get("axis", 0))
    return Value(prog.let(call.scope, f"{x.var}.unsqueeze({axis})"), None if x.rank is None else x.rank + 1)


def _squeeze(prog: Program, call) -> Value:
    x = _tensor(call, call.operands[0])
    axes = _axes(call.kwargs.get("axis", call.kwargs.get("squeeze_dims")))
    if not axes:
        return Value(prog.let(call.scope, f"{x.var}.squeeze()"))
    return Value(prog.let(call.scope, f"torch.squeeze({x.var}, {axes})"),
                 None if x.rank is None else x.rank - len(axes))


def _concat(prog: Program, call) -> Value:
    values = call.operands[0] if call.operands and isinstance(call.operands[0], list) else call.operands
    parts = [_tensor(call, v) for v in values]
    axis = int(call.kwargs.get("axis", 0))
    return Value(prog.let(call.scope, f"torch.cat([{', '.join(p.var for p in parts)}], {axis})"), parts[0].rank)


def _getitem(prog: Program, call) -> Value:
    """x[...] with ints and start:stop:step slices, one per leading axis. torch slices take no negative
    step: such an axis is flipped first and sliced forward (element i of the axis is n - 1 - i of the
    flipped one, so start s becomes -1 - s and stop e becomes -1 - e)."""
    x = _tensor(call, call.operands[0])
    spec = call.kwargs.get("slice_spec")
    spec = spec if isinstance(spec, list) else [spec]
    index, flipped, dropped = [], [], 0
    for axis, item in enumerate(spec):
        if isinstance(item, bool) or not isinstance(item, (int, dict)):
            raise UnsupportedError(f"Layer {call.name!r} (SlicingOpLambda) indexes with {item!r}; rnnx converts "
                                   f"integer indices and start:stop:step slices.")
        if isinstance(item, int):
            index.append(str(item))
            dropped += 1
            continue
        if set(item) - {"start", "stop", "step"} or not all(v is None or isinstance(v, int) for v in item.values()):
            raise UnsupportedError(f"Layer {call.name!r} (SlicingOpLambda) slices with {item!r}, which rnnx does "
                                   f"not convert.")
        start, stop, step = (None if item.get(k) is None else int(item[k]) for k in ("start", "stop", "step"))
        step = 1 if step is None else step
        if step == 0:
            raise UnsupportedError(f"Layer {call.name!r} (SlicingOpLambda) slices with step 0.")
        if step < 0:
            flipped.append(axis)
            start = None if start is None else -1 - start
            stop = None if stop is None else -1 - stop
            step = -step
        text = f"{'' if start is None else start}:{'' if stop is None else stop}"
        index.append(text + (f":{step}" if step != 1 else ""))
    source = f"{x.var}.flip({flipped})" if flipped else x.var
    while index and index[-1] == ":":  # trailing whole axes
        index.pop()
    expr = f"{source}[{', '.join(index)}]" if index else source
    return Value(prog.let(call.scope, expr), None if x.rank is None else x.rank - dropped)


FUNCTIONS = {"transpose": _transpose, "reshape": _reshape, "expand_dims": _expand_dims, "squeeze": _squeeze,
             "concat": _concat, "getitem": _getitem}
