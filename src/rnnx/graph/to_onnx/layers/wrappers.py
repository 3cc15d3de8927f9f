"""TimeDistributed: the wrapped layer applied to every time step.

Layers that act on the last axis alone (Dense, activations, identities) take the
[batch, steps, ...] tensor as it is. Any other supported layer runs on the steps folded into
the batch ([batch * steps, ...]) and is unfolded afterwards, so its converter needs no change.
"""

from __future__ import annotations

from ..context import Context, LayerCall, Value
from ..registry import converter, lookup
from .core import IDENTITY_LAYERS

LAST_AXIS_LAYERS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", *IDENTITY_LAYERS}


@converter("TimeDistributed")
def time_distributed(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    inner = call.inner()
    convert = lookup(inner.class_name, call.name)
    x = inputs[0]
    if inner.class_name in LAST_AXIS_LAYERS:
        (y,) = convert(ctx, inner, [x])
        return [Value(y.name, x.rank, x.mask)]
    hint = call.scope
    shape = ctx.op("Shape", [x.name], hint)
    leading = ctx.op("Slice", [shape, ctx.ints([0]), ctx.ints([2])], hint)
    rest = ctx.op("Slice", [shape, ctx.ints([2]), ctx.ints([64])], hint)
    folded_shape = ctx.op("Concat", [ctx.ints([-1]), rest], hint, axis=0)
    folded = Value(ctx.op("Reshape", [x.name, folded_shape], hint), None if x.rank is None else x.rank - 1)
    (y,) = convert(ctx, inner, [folded])
    y_rest = ctx.op("Slice", [ctx.op("Shape", [y.name], hint), ctx.ints([1]), ctx.ints([64])], hint)
    unfolded = ctx.op("Reshape", [y.name, ctx.op("Concat", [leading, y_rest], hint, axis=0)], hint)
    return [Value(unfolded, None if y.rank is None else y.rank + 1, x.mask)]
