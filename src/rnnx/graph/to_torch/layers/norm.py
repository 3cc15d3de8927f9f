"""BatchNormalization (inference: moving statistics folded into a scale and a shift, as TensorFlow
arranges it) and LayerNormalization."""

from __future__ import annotations

import numpy as np

from ....errors import UnsupportedError
from ...to_onnx.layers.norm import _axes, _is_last, _param_shape  # noqa: PLC2701  (same axis rules)
from ..program import Program, Value, py
from ..registry import converter


@converter("BatchNormalization")
def batch_normalization(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    axes = _axes(call, -1)
    if len(axes) != 1:
        raise UnsupportedError(f"Layer {call.name!r} (BatchNormalization) normalizes the axes {axes}; rnnx's "
                               f"PyTorch model export handles one.")
    scale, center = call.option("scale", True), call.option("center", True)
    weights = prog.ctx.layer_weights(call, 2 + int(scale) + int(center))
    gamma = weights.pop(0) if scale else None
    beta = weights.pop(0) if center else None
    mean, variance = weights
    inv = 1.0 / np.sqrt(variance.astype(np.float64) + float(call.option("epsilon", 1e-3)))
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv + (beta if beta is not None else 0.0)
    shape = list(_param_shape(call, axes[0], x.rank, inv.size))
    params = {"scale": inv.astype(np.float32).reshape(shape), "shift": shift.astype(np.float32).reshape(shape)}
    attr = prog.module(call, f"rnnx_nn.Affine({py(shape)})", params)
    return [x.derive(prog.let(call.scope, f"self.{attr}({x.var})"))]


@converter("LayerNormalization")
def layer_normalization(prog: Program, call, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    if call.option("rms_scaling", False):
        raise UnsupportedError(f"Layer {call.name!r} (LayerNormalization) uses rms_scaling, which rnnx's PyTorch "
                               f"model export does not handle.")
    axes = _axes(call, -1)
    scale, center = bool(call.option("scale", True)), bool(call.option("center", True))
    weights = prog.ctx.layer_weights(call, int(scale) + int(center))
    shape = list(weights[0].shape) if weights else [0]
    if len(axes) == 1 and not _is_last(axes[0], x.rank) and weights:
        shape = list(_param_shape(call, axes[0], x.rank, weights[0].size))
    params = {}
    if scale:
        params["gamma"] = weights.pop(0).reshape(shape)
    if center:
        params["beta"] = weights.pop(0).reshape(shape)
    epsilon = float(call.option("epsilon", 1e-3))
    attr = prog.module(call, f"rnnx_nn.LayerNorm({py(axes)}, {epsilon!r}, {py(shape)}, scale={scale}, "
                             f"center={center})", params)
    return [x.derive(prog.let(call.scope, f"self.{attr}({x.var})"))]
