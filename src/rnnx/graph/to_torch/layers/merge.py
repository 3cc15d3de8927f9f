"""Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum; masks merge as Keras merges them
(a step is kept when every input that has a mask keeps it)."""

from __future__ import annotations

from functools import reduce

from ..program import Program, Value
from ..registry import converter


def _merged(prog: Program, call, inputs: list[Value], expr: str) -> list[Value]:
    masks = [v.mask for v in inputs if v.mask is not None]
    mask = None
    if masks:
        mask = masks[0] if len(masks) == 1 else prog.let(f"{call.scope}_mask", " & ".join(masks))
    rank = next((v.rank for v in inputs if v.rank is not None), None)
    return [Value(prog.let(call.scope, expr), rank, mask)]


def _infix(symbol: str):
    def convert(prog: Program, call, inputs: list[Value]) -> list[Value]:
        return _merged(prog, call, inputs, f" {symbol} ".join(v.var for v in inputs))
    return convert


def _pairwise(function: str):
    def convert(prog: Program, call, inputs: list[Value]) -> list[Value]:
        expr = reduce(lambda a, b: f"{function}({a}, {b})", [v.var for v in inputs])
        return _merged(prog, call, inputs, expr)
    return convert


converter("Add")(_infix("+"))
converter("Subtract")(_infix("-"))
converter("Multiply")(_infix("*"))
converter("Maximum")(_pairwise("torch.maximum"))
converter("Minimum")(_pairwise("torch.minimum"))


@converter("Average")
def average(prog: Program, call, inputs: list[Value]) -> list[Value]:
    return _merged(prog, call, inputs, f"({' + '.join(v.var for v in inputs)}) * {1.0 / len(inputs)!r}")


@converter("Concatenate")
def concatenate(prog: Program, call, inputs: list[Value]) -> list[Value]:
    axis = int(call.option("axis", -1))
    return _merged(prog, call, inputs, f"torch.cat([{', '.join(v.var for v in inputs)}], {axis})")
