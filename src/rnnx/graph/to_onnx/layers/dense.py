"""Dense: x @ kernel + bias, then the activation (any rank: the kernel acts on the last axis)."""

from __future__ import annotations

from .. import activations
from ..context import Context, LayerCall, Value
from ..registry import converter


@converter("Dense")
def dense(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    use_bias = call.option("use_bias", True)
    weights = ctx.layer_weights(call, 2 if use_bias else 1)
    kernel = ctx.const(weights[0], f"{call.name}/kernel", key=(call.name, "kernel"))
    y = ctx.op("MatMul", [x.name, kernel], call.scope)
    if use_bias:
        y = ctx.op("Add", [y, ctx.const(weights[1], f"{call.name}/bias", key=(call.name, "bias"))], call.scope)
    y = activations.apply(ctx, call.config.get("activation"), y, call.scope, call.keras_major, call.name)
    return [x.derive(y)]
