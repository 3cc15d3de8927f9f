"""Layers that are identities at inference, activation layers, Masking."""

from __future__ import annotations

from .. import activations
from ..context import Context, LayerCall, Value
from ..registry import converter

# Training-only layers: identities when the model predicts.
IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                   "ActivityRegularization", "InputLayer")


@converter(*IDENTITY_LAYERS)
def identity(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    return [inputs[0]]


@converter("Activation")
def activation(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    y = activations.apply(ctx, call.config.get("activation"), x.name, call.scope, call.keras_major, call.name)
    return [x.derive(y)]


@converter("ReLU")
def relu(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    max_value = call.config.get("max_value")
    slope = float(call.option("negative_slope", 0.0))
    threshold = float(call.option("threshold", 0.0))
    if threshold == 0.0 and slope == 0.0:
        y = ctx.op("Relu", [x.name], call.scope)
    else:  # x if x >= threshold else slope * (x - threshold)
        below = ctx.op("Mul", [ctx.op("Sub", [x.name, ctx.scalar(threshold)], call.scope), ctx.scalar(slope)],
                       call.scope)
        keep = ctx.op("GreaterOrEqual", [x.name, ctx.scalar(threshold)], call.scope)
        y = ctx.op("Where", [keep, x.name, below], call.scope)
    if max_value is not None:
        y = ctx.op("Min", [y, ctx.scalar(float(max_value))], call.scope)
    return [x.derive(y)]


@converter("LeakyReLU")
def leaky_relu(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    slope = call.config.get("negative_slope", call.config.get("alpha", 0.3))
    return [x.derive(activations.leaky_relu(ctx, x.name, call.scope, slope))]


@converter("ELU")
def elu(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    return [x.derive(ctx.op("Elu", [x.name], call.scope, alpha=float(call.option("alpha", 1.0))))]


@converter("Softmax")
def softmax(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    axis = call.option("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            from ....errors import UnsupportedError
            raise UnsupportedError(f"Layer {call.name!r} (Softmax) normalizes over several axes {axis}; "
                                   f"rnnx's native export handles one axis. Try --engine tf2onnx.")
        axis = axis[0]
    return [x.derive(ctx.op("Softmax", [x.name], call.scope, axis=int(axis)))]


@converter("Masking")
def masking(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    """Keras: a step is masked when every feature equals mask_value; masked steps become zeros."""
    x = inputs[0]
    hint = call.scope
    differs = ctx.op("Not", [ctx.op("Equal", [x.name, ctx.scalar(float(call.option("mask_value", 0.0)))], hint)],
                     hint)
    keep = ctx.op("Cast", [ctx.reduce("ReduceMax", ctx.op("Cast", [differs], hint, to=1), [-1], hint)], hint, to=9)
    y = ctx.op("Mul", [x.name, ctx.op("Cast", [keep], hint, to=1)], hint)
    mask = ctx.squeeze(keep, [-1], f"{hint}_mask")
    return [x.derive(y, mask=mask)]
