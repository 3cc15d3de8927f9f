"""Flatten, Reshape, Permute, RepeatVector: shape changes that keep the batch axis (no mask carried)."""

from __future__ import annotations

from ..program import Program, Value
from ..registry import converter


@converter("Flatten")
def flatten(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    var = x.var
    if call.option("data_format", "channels_last") == "channels_first" and (x.rank or 0) > 2:
        var = prog.let(call.scope, f"{var}.permute({', '.join(map(str, [0, *range(2, x.rank), 1]))})")
    return [Value(prog.let(call.scope, f"{var}.flatten(1)"), 2)]


@converter("Reshape")
def reshape(prog: Program, call, inputs: list[Value]) -> list[Value]:
    target = [int(d) for d in call.config["target_shape"]]
    x = inputs[0]
    dims = ", ".join(str(d) for d in target)
    return [Value(prog.let(call.scope, f"{x.var}.reshape([{x.var}.shape[0], {dims}])"), 1 + len(target))]


@converter("Permute")
def permute(prog: Program, call, inputs: list[Value]) -> list[Value]:
    dims = [int(d) for d in call.config["dims"]]
    return [Value(prog.let(call.scope, f"{inputs[0].var}.permute(0, {', '.join(map(str, dims))})"), 1 + len(dims))]


@converter("RepeatVector")
def repeat_vector(prog: Program, call, inputs: list[Value]) -> list[Value]:
    n = int(call.config["n"])
    return [Value(prog.let(call.scope, f"{inputs[0].var}.unsqueeze(1).expand(-1, {n}, -1)"), 3)]
