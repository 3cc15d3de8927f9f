"""Keras activations (both generations) as torch expressions; hard_sigmoid follows the generation."""

from __future__ import annotations

from ...errors import UnsupportedError

# name -> expression of {x}
EXPRESSIONS = {
    None: "{x}", "linear": "{x}", "tanh": "torch.tanh({x})", "sigmoid": "torch.sigmoid({x})",
    "relu": "torch.relu({x})", "elu": "F.elu({x})", "selu": "F.selu({x})", "softplus": "F.softplus({x})",
    "softsign": "F.softsign({x})", "exponential": "torch.exp({x})", "softmax": "torch.softmax({x}, -1)",
    "log_softmax": "torch.log_softmax({x}, -1)", "celu": "F.celu({x})", "swish": "F.silu({x})",
    "silu": "F.silu({x})", "gelu": "F.gelu({x})", "relu6": "F.relu6({x})", "mish": "F.mish({x})",
    "log_sigmoid": "F.logsigmoid({x})", "hard_silu": "F.hardswish({x})", "hard_swish": "F.hardswish({x})",
    "hard_tanh": "F.hardtanh({x})", "tanh_shrink": "F.tanhshrink({x})",
    "squareplus": "({x} + torch.sqrt({x} * {x} + 4.0)) * 0.5",
    "sparse_plus": "torch.where({x} <= -1.0, {x} * 0.0, torch.where({x} < 1.0, ({x} + 1.0) ** 2 * 0.25, {x}))",
    "soft_shrink": "F.softshrink({x}, 0.5)", "hard_shrink": "F.hardshrink({x}, 0.5)", "glu": "F.glu({x}, -1)",
    "leaky_relu": "F.leaky_relu({x}, 0.2)",
}
HARD_SIGMOID = {2: "torch.clamp(0.2 * {x} + 0.5, 0.0, 1.0)", 3: "F.relu6({x} + 3.0) / 6.0"}


def expression(name, x: str, keras_major: int, layer: str = "") -> str:
    """The torch expression of Keras activation `name` (a string or Keras 3 serialized dict) of `x`."""
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
        if isinstance(name, dict):
            name = name.get("name")
    if name == "hard_sigmoid":
        return HARD_SIGMOID[3 if keras_major >= 3 else 2].format(x=x)
    try:
        return EXPRESSIONS[name].format(x=x)
    except (KeyError, TypeError):
        known = ", ".join(sorted(n for n in [*EXPRESSIONS, "hard_sigmoid"] if n))
        raise UnsupportedError(f"Layer {layer!r} uses the activation {name!r}, which rnnx's PyTorch model export "
                               f"does not know; known: {known}.") from None


def apply(prog, name, x: str, hint: str, keras_major: int, layer: str = "") -> str:
    """A forward() variable holding the activation of `x` (x itself for linear)."""
    expr = expression(name, x, keras_major, layer)
    return x if expr == x else prog.let(hint, expr)
