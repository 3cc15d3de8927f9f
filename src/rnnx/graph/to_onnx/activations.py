"""Keras activations (both generations) as ONNX nodes.

Where the two generations differ the Keras major version decides: hard_sigmoid is
clip(0.2x + 0.5) in Keras 2 and relu6(x + 3) / 6 in Keras 3; hard_silu / hard_swish use the
Keras 3 form (Keras 2 has none). Softmax and log_softmax act on the last axis. gelu is the
exact (erf) form, the default of both generations' `activation="gelu"`.
"""

from __future__ import annotations

import math
from typing import Callable

from ...canonical.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3
from ...errors import UnsupportedError
from .context import Context

Emit = Callable[[Context, str, str], str]  # (ctx, x, hint) -> y
_ACTIVATIONS: dict[str, Emit] = {}


def _register(*names: str):
    def add(fn: Emit) -> Emit:
        for name in names:
            _ACTIVATIONS[name] = fn
        return fn
    return add


def _unary(op: str, **attrs) -> Emit:
    return lambda ctx, x, hint: ctx.op(op, [x], hint, **attrs)


_ACTIVATIONS.update({
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "relu": _unary("Relu"),
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=1.6732632423543772, gamma=1.0507009873554805),
    "softplus": _unary("Softplus"),
    "softsign": _unary("Softsign"),
    "exponential": _unary("Exp"),
    "softmax": _unary("Softmax", axis=-1),
    "log_softmax": _unary("LogSoftmax", axis=-1),
    "celu": _unary("Celu", alpha=1.0),
})


@_register("linear", None)
def _linear(ctx: Context, x: str, hint: str) -> str:
    return x


@_register("swish", "silu")
def _swish(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Mul", [x, ctx.op("Sigmoid", [x], hint)], hint)


@_register("gelu")
def _gelu(ctx: Context, x: str, hint: str) -> str:
    scaled = ctx.op("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0))], hint)
    one_plus = ctx.op("Add", [ctx.op("Erf", [scaled], hint), ctx.scalar(1.0)], hint)
    return ctx.op("Mul", [ctx.op("Mul", [x, ctx.scalar(0.5)], hint), one_plus], hint)


@_register("relu6")
def _relu6(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Clip", [x, ctx.scalar(0.0), ctx.scalar(6.0)], hint)


@_register("mish")
def _mish(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Mul", [x, ctx.op("Tanh", [ctx.op("Softplus", [x], hint)], hint)], hint)


@_register("log_sigmoid")
def _log_sigmoid(ctx: Context, x: str, hint: str) -> str:  # -softplus(-x)
    return ctx.op("Neg", [ctx.op("Softplus", [ctx.op("Neg", [x], hint)], hint)], hint)


@_register("hard_silu", "hard_swish")
def _hard_silu(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Mul", [x, hard_sigmoid(ctx, x, hint, keras_major=3)], hint)


@_register("hard_tanh")
def _hard_tanh(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Clip", [x, ctx.scalar(-1.0), ctx.scalar(1.0)], hint)


@_register("tanh_shrink")
def _tanh_shrink(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Sub", [x, ctx.op("Tanh", [x], hint)], hint)


@_register("squareplus")
def _squareplus(ctx: Context, x: str, hint: str) -> str:  # (x + sqrt(x^2 + 4)) / 2
    root = ctx.op("Sqrt", [ctx.op("Add", [ctx.op("Mul", [x, x], hint), ctx.scalar(4.0)], hint)], hint)
    return ctx.op("Mul", [ctx.op("Add", [x, root], hint), ctx.scalar(0.5)], hint)


@_register("sparse_plus")
def _sparse_plus(ctx: Context, x: str, hint: str) -> str:  # 0 below -1, (x + 1)^2 / 4 inside, x above 1
    shifted = ctx.op("Add", [x, ctx.scalar(1.0)], hint)
    inside = ctx.op("Mul", [ctx.op("Mul", [shifted, shifted], hint), ctx.scalar(0.25)], hint)
    upper = ctx.op("Where", [ctx.op("Less", [x, ctx.scalar(1.0)], hint), inside, x], hint)
    low = ctx.op("LessOrEqual", [x, ctx.scalar(-1.0)], hint)
    return ctx.op("Where", [low, ctx.op("Mul", [x, ctx.scalar(0.0)], hint), upper], hint)


@_register("soft_shrink")
def _soft_shrink(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Shrink", [x], hint, lambd=0.5, bias=0.5)


@_register("hard_shrink")
def _hard_shrink(ctx: Context, x: str, hint: str) -> str:
    return ctx.op("Shrink", [x], hint, lambd=0.5, bias=0.0)


@_register("glu")
def _glu(ctx: Context, x: str, hint: str) -> str:  # first half * sigmoid(second half) of the last axis
    extra = {"num_outputs": 2} if ctx.opset >= 18 else {}
    first, second = ctx.node("Split", [x], hint, 2, axis=-1, **extra)
    return ctx.op("Mul", [first, ctx.op("Sigmoid", [second], hint)], hint)


def hard_sigmoid(ctx: Context, x: str, hint: str, keras_major: int) -> str:
    act = HARD_SIGMOID_KERAS2 if keras_major < 3 else HARD_SIGMOID_KERAS3
    return ctx.op("HardSigmoid", [x], hint, alpha=act.alpha, beta=act.beta)


def leaky_relu(ctx: Context, x: str, hint: str, alpha: float) -> str:
    return ctx.op("LeakyRelu", [x], hint, alpha=float(alpha))


def names() -> list[str]:
    return sorted(n for n in [*_ACTIVATIONS, "hard_sigmoid", "leaky_relu"] if n)


def apply(ctx: Context, name, x: str, hint: str, keras_major: int, layer: str = "") -> str:
    """The ONNX value of Keras activation `name` (a string, or a Keras 3 serialized dict) of `x`."""
    if isinstance(name, dict):  # Keras 3 may serialize a built-in activation as an object
        name = name.get("config", name.get("class_name"))
        if isinstance(name, dict):
            name = name.get("name")
    if name == "hard_sigmoid":
        return hard_sigmoid(ctx, x, hint, keras_major)
    if name == "leaky_relu":  # the function's default slope (0.2 in both generations)
        return leaky_relu(ctx, x, hint, 0.2)
    try:
        emit = _ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise UnsupportedError(
            f"Layer {layer!r} uses the activation {name!r}, which rnnx's native ONNX export does not know; "
            f"known: {', '.join(names())}. The tf2onnx engine may convert it: --engine tf2onnx.") from None
    return emit(ctx, x, hint)
