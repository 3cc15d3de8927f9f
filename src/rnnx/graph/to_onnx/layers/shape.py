"""Flatten, Reshape, Permute, RepeatVector: shape changes that keep the batch axis.

None of them carries a Keras mask forward (Keras drops it there too).
"""

from __future__ import annotations

from ..context import Context, LayerCall, Value
from ..registry import converter


@converter("Flatten")
def flatten(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    if call.option("data_format", "channels_last") == "channels_first" and (x.rank or 0) > 2:
        x = Value(ctx.op("Transpose", [x.name], call.scope, perm=[0, *range(2, x.rank), 1]), x.rank)
    return [Value(ctx.op("Flatten", [x.name], call.scope, axis=1), 2)]


@converter("Reshape")
def reshape(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    target = [int(d) for d in call.config["target_shape"]]
    y = ctx.op("Reshape", [inputs[0].name, ctx.ints([0, *target], "shape")], call.scope)
    return [Value(y, 1 + len(target))]


@converter("Permute")
def permute(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    dims = [int(d) for d in call.config["dims"]]
    return [Value(ctx.op("Transpose", [inputs[0].name], call.scope, perm=[0, *dims]), 1 + len(dims))]


@converter("RepeatVector")
def repeat_vector(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = ctx.unsqueeze(inputs[0].name, [1], call.scope)
    y = ctx.op("Expand", [x, ctx.ints([1, int(call.config["n"]), 1], "shape")], call.scope)
    return [Value(y, 3)]
