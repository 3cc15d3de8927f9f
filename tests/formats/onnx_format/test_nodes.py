"""The node-emission API (rnnx.formats.onnx_format.nodes): every cell variant run in onnxruntime against the
numpy reference, and the canonical <-> ONNX array conversion exact both ways."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import make_model, max_abs, random_layer, session  # noqa: E402

from rnnx.canonical import reference  # noqa: E402
from rnnx.canonical.activations import (HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, RELU, TANH,  # noqa: E402
                                        Activation)
from rnnx.errors import UnsupportedError, UsageError  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model, nodes as onnx_nodes  # noqa: E402

VARIANTS = {
    "lstm": dict(cell="lstm"),
    "lstm_bidirectional": dict(cell="lstm", directions=2),
    "lstm_hard_sigmoid_keras2": dict(cell="lstm", activations=(HARD_SIGMOID_KERAS2, TANH, TANH)),
    "lstm_hard_sigmoid_keras3_bidirectional": dict(cell="lstm", directions=2,
                                                   activations=(HARD_SIGMOID_KERAS3, TANH, TANH)),
    "lstm_peepholes": dict(cell="lstm", peepholes=True),
    "lstm_clip": dict(cell="lstm", clip=0.7),
    "lstm_input_forget": dict(cell="lstm", input_forget=True),
    "lstm_no_bias": dict(cell="lstm", bias="none"),
    "lstm_single_bias": dict(cell="lstm", bias="single"),
    "gru_reset_after": dict(cell="gru"),
    "gru_reset_before": dict(cell="gru", reset_after=False),
    "gru_bidirectional_hard_sigmoid": dict(cell="gru", directions=2, activations=(HARD_SIGMOID_KERAS2, TANH)),
    "gru_leaky_relu_candidate": dict(cell="gru", activations=(HARD_SIGMOID_KERAS3, Activation("LeakyRelu", 0.3))),
    "rnn_tanh": dict(cell="rnn"),
    "rnn_relu_bidirectional": dict(cell="rnn", directions=2, activations=(RELU,)),
}


def _attributes(node):
    return onnx_model.node_attributes(node)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_emitted_node_computes_the_reference(variant):
    layer = random_layer(units=5, inputs=3, seed=len(variant), **VARIANTS[variant])
    emitted = onnx_nodes.emit_layer(layer, "X", "p", batch_first=True, initial_h="h0",
                                    initial_c="c0" if layer.cell == "lstm" else None)
    assert [n.op_type for n in emitted.nodes] == ["Transpose", onnx_nodes.OP_TYPE[layer.cell]]
    D = layer.num_directions
    inputs = [helper.make_tensor_value_info("X", 1, ["b", "s", 3]),
              helper.make_tensor_value_info("h0", 1, [D, "b", 5])]
    if layer.cell == "lstm":
        inputs.append(helper.make_tensor_value_info("c0", 1, [D, "b", 5]))
    outputs = [helper.make_tensor_value_info(emitted.Y, 1, [None] * 4),
               helper.make_tensor_value_info(emitted.Y_h, 1, [None] * 3)]
    model = make_model(emitted.nodes, inputs, outputs, emitted.initializers)
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (3, 6, 3)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (D, 3, 5)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (D, 3, 5)).astype(np.float32)
    feeds = {"X": x, "h0": h0, **({"c0": c0} if layer.cell == "lstm" else {})}
    Y, Y_h = session(model).run(None, feeds)
    want_Y, want_h, _ = reference.run(layer, np.swapaxes(x, 0, 1), initial_h=h0,
                                      initial_c=c0 if layer.cell == "lstm" else None)
    assert max_abs(Y, want_Y) < 1e-5
    assert max_abs(Y_h, want_h) < 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_canonical_onnx_canonical_is_exact(variant):
    layer = random_layer(seed=3, **VARIANTS[variant])
    weights = onnx_nodes.onnx_weights(layer)
    node = helper.make_node(onnx_nodes.OP_TYPE[layer.cell], ["X", "W", "R"], ["Y"],
                            **onnx_nodes.onnx_attributes(layer))
    back = onnx_nodes.layer_from_onnx("layer", node.op_type, weights.W, weights.R, weights.B, weights.P,
                                      _attributes(node))
    assert back.activations == layer.activations
    assert (back.reset_after, back.clip, back.input_forget) == (layer.reset_after, layer.clip, layer.input_forget)
    for got, want in zip(back.directions, layer.directions):
        assert np.array_equal(got.W, want.W) and np.array_equal(got.R, want.R)
        assert np.array_equal(got.fused_bias(), want.fused_bias())
        if want.b_r is not None:
            assert np.array_equal(got.b_w, want.b_w) and np.array_equal(got.b_r, want.b_r)
        if want.P is not None:
            assert np.array_equal(got.P, want.P)


def test_onnx_layout_of_weights_follows_the_spec():
    """Gate blocks in ONNX order i, o, f, c; B = [Wb ‖ Rb]; P in order i, o, f."""
    layer = random_layer("lstm", units=2, inputs=3, peepholes=True)
    d = layer.directions[0]
    w = onnx_nodes.onnx_weights(layer)
    i, f, c, o = np.split(d.W, 4)
    assert np.array_equal(w.W[0], np.concatenate([i, o, f, c]))
    bi, bf, bc, bo = np.split(d.b_r, 4)
    assert np.array_equal(w.B[0, 8:], np.concatenate([bi, bo, bf, bc]))
    pi, pf, po = np.split(d.P, 3)
    assert np.array_equal(w.P[0], np.concatenate([pi, po, pf]))
    gru = random_layer("gru", units=2)
    r, z, n = np.split(gru.directions[0].W, 3)
    assert np.array_equal(onnx_nodes.onnx_weights(gru).W[0], np.concatenate([z, r, n]))


def test_hard_sigmoid_attributes_for_keras2_and_keras3():
    for act, alpha in ((HARD_SIGMOID_KERAS2, 0.2), (HARD_SIGMOID_KERAS3, 1 / 6)):
        attrs = onnx_nodes.onnx_attributes(random_layer("lstm", directions=2, activations=(act, TANH, TANH)))
        assert attrs["activations"] == ["HardSigmoid", "Tanh", "Tanh"] * 2
        assert attrs["activation_alpha"] == [alpha, alpha] and attrs["activation_beta"] == [0.5, 0.5]
    assert "activations" not in onnx_nodes.onnx_attributes(random_layer("lstm"))


def test_float32_attribute_values_read_back_as_the_exact_constants():
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=4,
                            activations=["HardSigmoid", "Tanh", "Tanh"], activation_alpha=[1 / 6],
                            activation_beta=[0.5])
    stored = onnx.NodeProto.FromString(node.SerializeToString())  # through float32 attributes
    layer = random_layer("lstm")
    w = onnx_nodes.onnx_weights(layer)
    back = onnx_nodes.layer_from_onnx("n", "LSTM", w.W, w.R, w.B, None, _attributes(stored))
    assert back.activations[0] == HARD_SIGMOID_KERAS3


def test_projection_is_refused_with_a_pointer_to_a_target_that_holds_it():
    layer = random_layer("lstm")
    d = layer.directions[0]
    from rnnx.canonical import Direction, RecurrentLayer
    proj = RecurrentLayer("proj", "lstm", [Direction(W=d.W, R=d.R[:, :2], b_w=d.b_w,
                                                     proj=np.ones((2, 4), np.float32))])
    with pytest.raises(UnsupportedError, match="proj.*PyTorch"):
        onnx_nodes.emit_layer(proj, "X", "p")
    assert "projection" in onnx_model.refusal(proj)
    assert onnx_model.refusal(layer) is None


@pytest.mark.parametrize("opset", [0, 6, 10_000])
def test_opsets_outside_the_range_are_a_usage_error(opset):
    with pytest.raises(UsageError, match="opset"):
        onnx_nodes.emit_layer(random_layer(), "X", "p", opset=opset)


def test_time_major_input_needs_no_transpose_and_sequence_output_merges_directions():
    layer = random_layer("gru", directions=2, units=3, inputs=2)
    emitted = onnx_nodes.emit_layer(layer, "X", "p", sequence_lens="lens")
    merged = onnx_nodes.sequence_output(emitted.Y, "p", batch_first=True, output="out")
    assert emitted.nodes[0].op_type == "GRU"
    model = make_model(emitted.nodes + merged.nodes,
                       [helper.make_tensor_value_info("X", 1, ["s", "b", 2]),
                        helper.make_tensor_value_info("lens", onnx.TensorProto.INT32, ["b"])],
                       [helper.make_tensor_value_info("out", 1, ["b", "s", 6])],
                       emitted.initializers + merged.initializers)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((5, 2, 2)).astype(np.float32)
    lens = np.array([5, 3], np.int32)
    (out,) = session(model).run(None, {"X": x, "lens": lens})
    Y, _, _ = reference.run(layer, x, sequence_lens=lens)
    want = np.transpose(Y, (2, 0, 1, 3)).reshape(2, 5, 6)  # forward block then backward block
    assert max_abs(out, want) < 1e-5
