"""TimeDistributed: layers acting on the last axis take [batch, steps, ...] as it is; any other
supported layer runs on the steps folded into the batch and is unfolded afterwards."""

from __future__ import annotations

from ..program import Program, Value
from ..registry import converter, lookup
from .core import IDENTITY_LAYERS

LAST_AXIS_LAYERS = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", *IDENTITY_LAYERS}


@converter("TimeDistributed")
def time_distributed(prog: Program, call, inputs: list[Value]) -> list[Value]:
    inner = call.inner()
    convert = lookup(inner.class_name, call.name)
    x = inputs[0]
    if inner.class_name in LAST_AXIS_LAYERS:
        (y,) = convert(prog, inner, [x])
        return [Value(y.var, x.rank, x.mask)]
    folded = prog.let(f"{call.scope}_folded", f"{x.var}.flatten(0, 1)")
    (y,) = convert(prog, inner, [Value(folded, None if x.rank is None else x.rank - 1)])
    shape = f"[{x.var}.shape[0], {x.var}.shape[1]] + list({y.var}.shape[1:])"
    unfolded = prog.let(call.scope, f"{y.var}.reshape({shape})")
    return [Value(unfolded, None if y.rank is None else y.rank + 1, x.mask)]
