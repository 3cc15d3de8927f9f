"""Every Keras activation rnnx knows, as ONNX nodes, against the framework's own function.

Keras 2 names run against tf_keras, Keras 3 names against Keras 3; hard_sigmoid differs between them.
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from rnnx.graph.to_onnx import activations
from rnnx.graph.to_onnx.context import Context

KERAS2 = ["relu", "elu", "selu", "softmax", "softplus", "softsign", "swish", "silu", "gelu", "exponential", "linear",
          "tanh", "sigmoid", "hard_sigmoid", "relu6", "mish", "log_softmax", "leaky_relu"]
KERAS3 = KERAS2 + ["hard_silu", "hard_swish", "celu", "log_sigmoid", "hard_tanh", "tanh_shrink", "squareplus",
                   "sparse_plus", "soft_shrink", "hard_shrink", "glu"]
X = np.linspace(-4.5, 4.5, 48, dtype=np.float32).reshape(4, 12)


def _onnx_activation(name, keras_major, opset=14):
    ctx = Context({}, opset)
    ctx.add_input("x", TensorProto.FLOAT, list(X.shape))
    ctx.add_output(activations.apply(ctx, name, "x", "act", keras_major), "y")
    graph = helper.make_graph(ctx.nodes, "act", ctx.graph_inputs, ctx.graph_outputs, ctx.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]


@pytest.mark.parametrize("name", KERAS2)
def test_keras2_activation(name):
    import tensorflow as tf
    import tf_keras

    expected = np.asarray(tf_keras.activations.get(name)(tf.constant(X)))
    assert np.max(np.abs(_onnx_activation(name, 2) - expected)) <= 1e-5


@pytest.mark.parametrize("name", KERAS3)
def test_keras3_activation(name):
    import keras

    expected = np.asarray(keras.activations.get(name)(X))
    assert np.max(np.abs(_onnx_activation(name, 3) - expected)) <= 1e-5


def test_hard_sigmoid_differs_between_generations():
    assert np.max(np.abs(_onnx_activation("hard_sigmoid", 2) - _onnx_activation("hard_sigmoid", 3))) > 0.05


def test_glu_at_opset_18():
    import keras

    assert np.max(np.abs(_onnx_activation("glu", 3, opset=18) - np.asarray(keras.activations.glu(X)))) <= 1e-5
