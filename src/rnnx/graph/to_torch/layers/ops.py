"""Keras 3 operations a functional model records as layers to compute masks (NotEqual, Equal, Any,
All). Comparisons run in float32, as in the ONNX export (token ids below 2**24 compare exactly)."""

from __future__ import annotations

from ....errors import UnsupportedError
from ..program import Program, Value
from ..registry import converter


def _operands(prog: Program, call) -> list[str]:
    names = []
    for operand in call.operands:
        if isinstance(operand, Value):
            names.append(f"{operand.var}.float()")
        elif isinstance(operand, (int, float)) and not isinstance(operand, bool):
            names.append(repr(float(operand)))
        else:
            raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) has an argument rnnx cannot read.")
    if len(names) != 2:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) takes {len(names)} arguments; rnnx "
                               f"expected two.")
    return names


def _rank(call) -> int | None:
    return next((o.rank for o in call.operands if isinstance(o, Value)), None)


@converter("NotEqual")
def not_equal(prog: Program, call, inputs: list[Value]) -> list[Value]:
    a, b = _operands(prog, call)
    return [Value(prog.let(call.scope, f"{a} != {b}"), _rank(call))]


@converter("Equal")
def equal(prog: Program, call, inputs: list[Value]) -> list[Value]:
    a, b = _operands(prog, call)
    return [Value(prog.let(call.scope, f"{a} == {b}"), _rank(call))]


def _bool_reduce(function: str):
    def convert(prog: Program, call, inputs: list[Value]) -> list[Value]:
        x = inputs[0]
        axis = call.config.get("axis")
        keep = bool(call.config.get("keepdims", False))
        if axis is None:
            return [Value(prog.let(call.scope, f"{x.var}.float().{function}() > 0.5"), 0)]
        axes = [int(a) for a in (axis if isinstance(axis, list) else [axis])]
        rank = None if x.rank is None else (x.rank if keep else x.rank - len(axes))
        expr = f"{x.var}.float().{function}({axes}, keepdim={keep}) > 0.5"
        return [Value(prog.let(call.scope, expr), rank)]
    return convert


converter("Any")(_bool_reduce("amax"))
converter("All")(_bool_reduce("amin"))
