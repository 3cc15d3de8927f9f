"""Small helpers shared by the ONNX tests: random canonical layers, one-node models, onnxruntime runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from rnnx.canonical import Direction, RecurrentLayer
from rnnx.canonical.gates import gate_count


def random_layer(cell="lstm", directions=1, units=4, inputs=3, name="layer", seed=0, bias="both", peepholes=False,
                 dtype=np.float32, **kwargs) -> RecurrentLayer:
    rng = np.random.default_rng(seed)
    n = gate_count(cell) * units

    def arr(*shape):
        return rng.uniform(-0.8, 0.8, shape).astype(dtype)

    dirs = [Direction(W=arr(n, inputs), R=arr(n, units),
                      b_w=arr(n) if bias in ("both", "single") else None,
                      b_r=arr(n) if bias == "both" else None,
                      P=arr(3 * units) if peepholes else None) for _ in range(directions)]
    return RecurrentLayer(name, cell, dirs, **kwargs)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def make_model(nodes, inputs, outputs, initializers, opset=14) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = max(4, helper.find_min_ir_version_for(opsets))
    return model


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())
