"""BatchNormalization (inference: moving statistics) and LayerNormalization."""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ..context import Context, LayerCall, Value
from ..registry import converter


def _axes(call: LayerCall, default) -> list[int]:
    axis = call.config.get("axis", default)
    return [int(a) for a in (axis if isinstance(axis, (list, tuple)) else [axis])]


def _is_last(axis: int, rank: int | None) -> bool:
    return axis == -1 or (rank is not None and axis == rank - 1)


def _param_shape(call: LayerCall, axis: int, rank: int | None, size: int) -> tuple[int, ...]:
    """The shape that broadcasts a per-channel vector along `axis`."""
    if _is_last(axis, rank):
        return (size,)
    if rank is None or axis < 0:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) normalizes axis {axis} of an input whose "
                               f"rank rnnx could not tell. Try --engine tf2onnx.")
    return (size,) + (1,) * (rank - 1 - axis)


@converter("BatchNormalization")
def batch_normalization(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    axes = _axes(call, -1)
    if len(axes) != 1:
        raise UnsupportedError(f"Layer {call.name!r} (BatchNormalization) normalizes the axes {axes}; rnnx's "
                               f"native export handles one. Try --engine tf2onnx.")
    axis = axes[0]
    scale, center = call.option("scale", True), call.option("center", True)
    weights = ctx.layer_weights(call, 2 + int(scale) + int(center))
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, variance = weights
    # y = x * inv + (beta - mean * inv), inv = gamma / sqrt(var + eps): TensorFlow's own arrangement
    inv = 1.0 / np.sqrt(variance.astype(np.float64) + float(call.option("epsilon", 1e-3)))
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv + (beta if beta is not None else 0.0)
    shape = _param_shape(call, axis, x.rank, inv.size)
    y = ctx.op("Mul", [x.name, ctx.const(inv.astype(np.float32).reshape(shape), f"{call.name}/scale",
                                         key=(call.name, "scale"))], call.scope)
    y = ctx.op("Add", [y, ctx.const(shift.astype(np.float32).reshape(shape), f"{call.name}/shift",
                                    key=(call.name, "shift"))], call.scope)
    return [x.derive(y)]


@converter("LayerNormalization")
def layer_normalization(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x, hint = inputs[0], call.scope
    if call.option("rms_scaling", False):
        raise UnsupportedError(f"Layer {call.name!r} (LayerNormalization) uses rms_scaling, which rnnx's native "
                               f"export does not handle. Try --engine tf2onnx.")
    axes = _axes(call, -1)
    scale, center = call.option("scale", True), call.option("center", True)
    weights = ctx.layer_weights(call, int(scale) + int(center))
    mean = ctx.reduce("ReduceMean", x.name, axes, hint)
    centered = ctx.op("Sub", [x.name, mean], hint)
    variance = ctx.reduce("ReduceMean", ctx.op("Mul", [centered, centered], hint), axes, hint)
    denom = ctx.op("Sqrt", [ctx.op("Add", [variance, ctx.scalar(float(call.option("epsilon", 1e-3)))], hint)], hint)
    y = ctx.op("Div", [centered, denom], hint)
    if len(axes) == 1 and not _is_last(axes[0], x.rank) and weights:
        shape = _param_shape(call, axes[0], x.rank, weights[0].size)
        weights = [w.reshape(shape) for w in weights]
    if scale:
        y = ctx.op("Mul", [y, ctx.const(weights.pop(0), f"{call.name}/gamma", key=(call.name, "gamma"))], hint)
    if center:
        y = ctx.op("Add", [y, ctx.const(weights.pop(0), f"{call.name}/beta", key=(call.name, "beta"))], hint)
    return [x.derive(y)]
