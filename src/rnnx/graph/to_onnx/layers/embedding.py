"""Embedding: a Gather of rows; mask_zero makes the Keras mask (token id != 0)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..context import Context, LayerCall, Value
from ..registry import converter


@converter("Embedding")
def embedding(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    (table,) = ctx.layer_weights(call, 1)
    ids = ctx.op("Cast", [x.name], f"{call.scope}_ids", to=TensorProto.INT64)
    y = ctx.op("Gather", [ctx.const(table, f"{call.name}/embeddings", key=(call.name, "embeddings")), ids],
               call.scope, axis=0)
    mask = None
    if call.option("mask_zero", False):
        zero = ctx.const(np.array(0, np.int64), "zero_i64", key=("zero_i64",))
        mask = ctx.op("Not", [ctx.op("Equal", [ids, zero], call.scope)], f"{call.scope}_mask")
    rank = None if x.rank is None else x.rank + 1
    return [Value(y, rank, mask)]
