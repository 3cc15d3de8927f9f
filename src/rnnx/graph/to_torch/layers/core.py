"""Identities at inference, activation layers, Masking."""

from __future__ import annotations

from ....errors import UnsupportedError
from .. import activations
from ..program import Program, Value
from ..registry import converter

IDENTITY_LAYERS = ("Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
                   "ActivityRegularization", "InputLayer")


@converter(*IDENTITY_LAYERS)
def identity(prog: Program, call, inputs: list[Value]) -> list[Value]:
    return [inputs[0]]


@converter("Activation")
def activation(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    return [x.derive(activations.apply(prog, call.config.get("activation"), x.var, call.scope, call.keras_major,
                                       call.name))]


@converter("ReLU")
def relu(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    max_value = call.config.get("max_value")
    slope = float(call.option("negative_slope", 0.0))
    threshold = float(call.option("threshold", 0.0))
    if threshold == 0.0 and slope == 0.0:
        expr = f"torch.relu({x.var})"
    else:
        expr = f"torch.where({x.var} >= {threshold!r}, {x.var}, ({x.var} - {threshold!r}) * {slope!r})"
    if max_value is not None:
        expr = f"torch.clamp({expr}, max={float(max_value)!r})"
    return [x.derive(prog.let(call.scope, expr))]


@converter("LeakyReLU")
def leaky_relu(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    slope = float(call.config.get("negative_slope", call.config.get("alpha", 0.3)))
    return [x.derive(prog.let(call.scope, f"F.leaky_relu({x.var}, {slope!r})"))]


@converter("ELU")
def elu(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    return [x.derive(prog.let(call.scope, f"F.elu({x.var}, {float(call.option('alpha', 1.0))!r})"))]


@converter("Softmax")
def softmax(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    axis = call.option("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise UnsupportedError(f"Layer {call.name!r} (Softmax) normalizes over several axes {axis}; "
                                   f"rnnx's PyTorch model export handles one axis.")
        axis = axis[0]
    return [x.derive(prog.let(call.scope, f"torch.softmax({x.var}, {int(axis)})"))]


@converter("Masking")
def masking(prog: Program, call, inputs: list[Value]) -> list[Value]:
    """Keras: a step is masked when every feature equals mask_value; masked steps become zeros."""
    x = inputs[0]
    value = float(call.option("mask_value", 0.0))
    mask = prog.let(f"{call.scope}_mask", f"({x.var} != {value!r}).any(-1)")
    y = prog.let(call.scope, f"{x.var} * {mask}.unsqueeze(-1).to({x.var}.dtype)")
    return [x.derive(y, mask=mask)]
