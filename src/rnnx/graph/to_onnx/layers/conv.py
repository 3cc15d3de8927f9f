"""Conv1D and the 1-D poolings. Keras is channels-last ([batch, steps, channels]); ONNX
convolutions and poolings are channels-first, so the converters transpose around them."""

from __future__ import annotations

import numpy as np

from .. import activations
from ....errors import UnsupportedError
from ..context import Context, LayerCall, Value
from ..registry import converter


def _single(value, default=None) -> int:
    if value is None:
        return default
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _channels_first(ctx: Context, call: LayerCall, x: Value) -> tuple[str, bool]:
    if call.option("data_format", "channels_last") == "channels_first":
        return x.name, False
    return ctx.op("Transpose", [x.name], call.scope, perm=[0, 2, 1]), True


def _back(ctx: Context, call: LayerCall, y: str, transposed: bool) -> str:
    return ctx.op("Transpose", [y], call.scope, perm=[0, 2, 1]) if transposed else y


def _padding(call: LayerCall, kernel: int, stride: int, dilation: int) -> dict:
    padding = call.option("padding", "valid")
    total = dilation * (kernel - 1)
    if padding == "valid":
        return {"pads": [0, 0]}
    if padding == "causal":
        return {"pads": [total, 0]}
    if padding == "same":  # TensorFlow puts the odd pad at the end, as SAME_UPPER does
        return {"pads": [total // 2, total - total // 2]} if stride == 1 else {"auto_pad": "SAME_UPPER"}
    raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) uses padding {padding!r}, which rnnx does not "
                           f"know. Try --engine tf2onnx.")


@converter("Conv1D")
def conv1d(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    use_bias = call.option("use_bias", True)
    weights = ctx.layer_weights(call, 2 if use_bias else 1)
    kernel = weights[0]  # (k, in / groups, out)
    k, stride, dilation = kernel.shape[0], _single(call.config.get("strides"), 1), \
        _single(call.config.get("dilation_rate"), 1)
    w = ctx.const(np.ascontiguousarray(np.transpose(kernel, (2, 1, 0))), f"{call.name}/kernel",
                  key=(call.name, "kernel"))
    operands = [w] + ([ctx.const(weights[1], f"{call.name}/bias", key=(call.name, "bias"))] if use_bias else [])
    xin, transposed = _channels_first(ctx, call, x)
    y = ctx.op("Conv", [xin, *operands], call.scope, kernel_shape=[k], strides=[stride], dilations=[dilation],
               group=int(call.option("groups", 1)), **_padding(call, k, stride, dilation))
    y = _back(ctx, call, y, transposed)
    y = activations.apply(ctx, call.config.get("activation"), y, call.scope, call.keras_major, call.name)
    return [Value(y, 3)]


def _pool(op: str):
    def convert(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
        size = _single(call.config.get("pool_size"), 2)
        stride = _single(call.config.get("strides"), size)
        xin, transposed = _channels_first(ctx, call, inputs[0])
        padding = call.option("padding", "valid")
        pads = {"auto_pad": "SAME_UPPER"} if padding == "same" else {"pads": [0, 0]}
        y = ctx.op(op, [xin], call.scope, kernel_shape=[size], strides=[stride], **pads)
        return [Value(_back(ctx, call, y, transposed), 3)]
    return convert


converter("MaxPooling1D", "MaxPool1D")(_pool("MaxPool"))
converter("AveragePooling1D", "AvgPool1D")(_pool("AveragePool"))


def _steps_axis(call: LayerCall) -> int:
    return 2 if call.option("data_format", "channels_last") == "channels_first" else 1


@converter("GlobalMaxPooling1D", "GlobalMaxPool1D")
def global_max(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    keep = int(bool(call.option("keepdims", False)))
    y = ctx.reduce("ReduceMax", inputs[0].name, [_steps_axis(call)], call.scope, keepdims=keep)
    return [Value(y, 3 if keep else 2)]


@converter("GlobalAveragePooling1D", "GlobalAvgPool1D")
def global_average(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    """With a mask Keras averages over the kept steps only."""
    x, axis, hint = inputs[0], _steps_axis(call), call.scope
    keep = int(bool(call.option("keepdims", False)))
    if x.mask is None or axis != 1:
        return [Value(ctx.reduce("ReduceMean", x.name, [axis], hint, keepdims=keep), 3 if keep else 2)]
    weight = ctx.unsqueeze(ctx.op("Cast", [x.mask], hint, to=1), [2], hint)
    total = ctx.reduce("ReduceSum", ctx.op("Mul", [x.name, weight], hint), [1], hint, keepdims=keep)
    count = ctx.reduce("ReduceSum", weight, [1], hint, keepdims=keep)
    return [Value(ctx.op("Div", [total, count], hint), 3 if keep else 2)]
