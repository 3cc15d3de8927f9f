"""Dense (nn.Linear on the last axis, then the activation) and Embedding (mask_zero: ids != 0)."""

from __future__ import annotations

import numpy as np

from ....lazy import derived
from .. import activations
from ..program import Program, Value
from ..registry import converter


@converter("Dense")
def dense(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    use_bias = bool(call.option("use_bias", True))
    weights = prog.ctx.layer_weights(call, 2 if use_bias else 1, lazy=True)
    kernel = weights[0]  # Keras (in, out); nn.Linear holds (out, in)
    weight = derived(kernel, kernel.shape[::-1], kernel.dtype, lambda k: np.ascontiguousarray(k.T))
    params = {"weight": weight} | ({"bias": weights[1]} if use_bias else {})
    attr = prog.module(call, f"nn.Linear({kernel.shape[0]}, {kernel.shape[1]}, bias={use_bias})", params)
    y = prog.let(call.scope, f"self.{attr}({x.var})")
    return [x.derive(activations.apply(prog, call.config.get("activation"), y, call.scope, call.keras_major,
                                       call.name))]


@converter("Embedding")
def embedding(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    (table,) = prog.ctx.layer_weights(call, 1, lazy=True)
    attr = prog.module(call, f"nn.Embedding({table.shape[0]}, {table.shape[1]})", {"weight": table})
    ids = prog.let(f"{call.scope}_ids", f"{x.var}.long()")
    y = prog.let(call.scope, f"self.{attr}({ids})")
    mask = prog.let(f"{call.scope}_mask", f"{ids} != 0") if call.option("mask_zero", False) else None
    return [Value(y, None if x.rank is None else x.rank + 1, mask)]
