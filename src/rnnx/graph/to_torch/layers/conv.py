"""Conv1D and the 1-D poolings. Keras is channels-last ([batch, steps, channels]) and torch
channels-first, so the code transposes around them; padding is TensorFlow's (odd pad at the end)."""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ....lazy import derived
from .. import activations
from ..program import Program, Value
from ..registry import converter


def _single(value, default=None) -> int:
    if value is None:
        return default
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _channels_first(prog: Program, call, x: Value) -> tuple[str, bool]:
    if call.option("data_format", "channels_last") == "channels_first":
        return x.var, False
    return prog.let(f"{call.scope}_in", f"{x.var}.transpose(1, 2)"), True


def _back(prog: Program, call, y: str, transposed: bool) -> str:
    return prog.let(call.scope, f"{y}.transpose(1, 2)") if transposed else y


def _padded(prog: Program, call, x: str, kernel: int, stride: int, dilation: int) -> str:
    padding = call.option("padding", "valid")
    total = dilation * (kernel - 1)
    if padding == "valid" or total == 0 and padding != "same":
        return x
    if padding == "causal":
        return prog.let(f"{call.scope}_padded", f"F.pad({x}, [{total}, 0])")
    if padding == "same":
        if stride == 1:
            return prog.let(f"{call.scope}_padded", f"F.pad({x}, [{total // 2}, {total - total // 2}])")
        return prog.let(f"{call.scope}_padded", f"rnnx_nn.pad_same({x}, {kernel}, {stride}, {dilation})")
    raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) uses padding {padding!r}, which rnnx does not "
                           f"know.")


@converter("Conv1D")
def conv1d(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    use_bias = bool(call.option("use_bias", True))
    weights = prog.ctx.layer_weights(call, 2 if use_bias else 1, lazy=True)
    kernel = weights[0]  # Keras (k, in / groups, out); torch (out, in / groups, k)
    k, stride = kernel.shape[0], _single(call.config.get("strides"), 1)
    dilation, groups = _single(call.config.get("dilation_rate"), 1), int(call.option("groups", 1))
    weight = derived(kernel, kernel.shape[::-1], kernel.dtype, lambda k: np.ascontiguousarray(k.transpose(2, 1, 0)))
    params = {"weight": weight} | ({"bias": weights[1]} if use_bias else {})
    attr = prog.module(call, f"nn.Conv1d({kernel.shape[1] * groups}, {kernel.shape[2]}, {k}, stride={stride}, "
                             f"dilation={dilation}, groups={groups}, bias={use_bias})", params)
    xin, transposed = _channels_first(prog, call, x)
    y = prog.let(call.scope, f"self.{attr}({_padded(prog, call, xin, k, stride, dilation)})")
    y = activations.apply(prog, call.config.get("activation"), _back(prog, call, y, transposed), call.scope,
                          call.keras_major, call.name)
    return [Value(y, 3)]


def _pool(kind: str):
    def convert(prog: Program, call, inputs: list[Value]) -> list[Value]:
        size = _single(call.config.get("pool_size"), 2)
        stride = _single(call.config.get("strides"), size)
        xin, transposed = _channels_first(prog, call, inputs[0])
        if call.option("padding", "valid") == "same":
            expr = f"rnnx_nn.{kind}_pool_same({xin}, {size}, {stride})"
        else:
            expr = f"F.{kind}_pool1d({xin}, {size}, {stride})"
        return [Value(_back(prog, call, prog.let(call.scope, expr), transposed), 3)]
    return convert


converter("MaxPooling1D", "MaxPool1D")(_pool("max"))
converter("AveragePooling1D", "AvgPool1D")(_pool("avg"))


def _steps_axis(call) -> int:
    return 2 if call.option("data_format", "channels_last") == "channels_first" else 1


@converter("GlobalMaxPooling1D", "GlobalMaxPool1D")
def global_max(prog: Program, call, inputs: list[Value]) -> list[Value]:
    keep = bool(call.option("keepdims", False))
    y = prog.let(call.scope, f"{inputs[0].var}.amax({_steps_axis(call)}, keepdim={keep})")
    return [Value(y, 3 if keep else 2)]


@converter("GlobalAveragePooling1D", "GlobalAvgPool1D")
def global_average(prog: Program, call, inputs: list[Value]) -> list[Value]:
    """With a mask Keras averages over the kept steps only."""
    x, axis = inputs[0], _steps_axis(call)
    keep = bool(call.option("keepdims", False))
    if x.mask is None or axis != 1:
        return [Value(prog.let(call.scope, f"{x.var}.mean({axis}, keepdim={keep})"), 3 if keep else 2)]
    y = prog.let(call.scope, f"rnnx_nn.masked_mean({x.var}, {x.mask})")
    if keep:
        y = prog.let(call.scope, f"{y}.unsqueeze(1)")
    return [Value(y, 3 if keep else 2)]
