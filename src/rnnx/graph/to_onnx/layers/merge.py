"""Merge layers: Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum.

Masks merge as Keras merges them: a step is kept when every input that has a mask keeps it.
"""

from __future__ import annotations

from functools import reduce

from ..context import Context, LayerCall, Value
from ..registry import converter


def _merged_mask(ctx: Context, call: LayerCall, inputs: list[Value]) -> str | None:
    masks = [v.mask for v in inputs if v.mask is not None]
    if not masks:
        return None
    return reduce(lambda a, b: ctx.op("And", [a, b], f"{call.scope}_mask"), masks)


def _rank(inputs: list[Value]) -> int | None:
    return next((v.rank for v in inputs if v.rank is not None), None)


def _elementwise(op: str):
    def convert(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
        y = reduce(lambda a, b: ctx.op(op, [a, b], call.scope), [v.name for v in inputs])
        return [Value(y, _rank(inputs), _merged_mask(ctx, call, inputs))]
    return convert


converter("Add")(_elementwise("Add"))
converter("Multiply")(_elementwise("Mul"))
converter("Maximum")(_elementwise("Max"))
converter("Minimum")(_elementwise("Min"))


@converter("Subtract")
def subtract(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    a, b = inputs
    return [Value(ctx.op("Sub", [a.name, b.name], call.scope), _rank(inputs), _merged_mask(ctx, call, inputs))]


@converter("Average")
def average(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    total = reduce(lambda a, b: ctx.op("Add", [a, b], call.scope), [v.name for v in inputs])
    y = ctx.op("Mul", [total, ctx.scalar(1.0 / len(inputs))], call.scope)
    return [Value(y, _rank(inputs), _merged_mask(ctx, call, inputs))]


@converter("Concatenate")
def concatenate(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    y = ctx.op("Concat", [v.name for v in inputs], call.scope, axis=int(call.option("axis", -1)))
    return [Value(y, _rank(inputs), _merged_mask(ctx, call, inputs))]
