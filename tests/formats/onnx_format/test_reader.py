"""The ONNX reader on graphs the corpus does not cover: weights in Constant nodes, recurrent nodes inside If
branches (weights from the branch and from the outer graph), nameless and same-named nodes, reverse nodes.
What the reader returns is checked by running the original graph in onnxruntime."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import make_model, max_abs, random_layer, session  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle, reference  # noqa: E402
from rnnx.errors import UsageError  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model, nodes as onnx_nodes  # noqa: E402

SEQ, BATCH, IN = 6, 2, 3


def _constant(name, array):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _if_model():
    """then: LSTM (no node name) with weights in Constant nodes of the branch;
    else: bidirectional GRU named 'gru' reading initializers of the outer graph."""
    lstm = random_layer("lstm", units=4, inputs=IN, seed=11)
    gru = random_layer("gru", directions=2, units=2, inputs=IN, seed=12, reset_after=False)
    lw, gw = onnx_nodes.onnx_weights(lstm), onnx_nodes.onnx_weights(gru)
    then_nodes = [_constant("lW", lw.W), _constant("lR", lw.R), _constant("lB", lw.B),
                  helper.make_node("LSTM", ["X", "lW", "lR", "lB"], ["lY"], hidden_size=4),
                  helper.make_node("Reshape", ["lY", "flat"], ["out_then"])]
    else_nodes = [helper.make_node("GRU", ["X", "gW", "gR", "gB"], ["gY"], name="gru", hidden_size=2,
                                   direction="bidirectional", linear_before_reset=0),
                  helper.make_node("Reshape", ["gY", "flat"], ["out_else"])]
    out = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [None])  # noqa: E731
    then_graph = helper.make_graph(then_nodes, "then", [], [out("out_then")])
    else_graph = helper.make_graph(else_nodes, "else", [], [out("out_else")])
    node = helper.make_node("If", ["cond"], ["out"], name="branch", then_branch=then_graph, else_branch=else_graph)
    inits = [numpy_helper.from_array(gw.W, "gW"), numpy_helper.from_array(gw.R, "gR"),
             numpy_helper.from_array(gw.B, "gB"), numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    model = make_model([node], [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                                helper.make_tensor_value_info("X", TensorProto.FLOAT, [SEQ, BATCH, IN])],
                       [out("out")], inits)
    return model


def test_nodes_inside_if_branches_with_constant_and_outer_weights(tmp_path):
    path = tmp_path / "if.onnx"
    model = _if_model()
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    bundle = rnnx.load(path)
    # attributes are visited in stored order (else_branch, then_branch); a nameless node is op type + index
    assert [l.name for l in bundle.layers] == ["gru", "LSTM_1"]
    gru, lstm = bundle.layers
    assert lstm.provenance["graph"].endswith("branch.then_branch")
    assert gru.kind == "gru-reset-before" and gru.num_directions == 2
    x = np.random.default_rng(0).uniform(-1, 1, (SEQ, BATCH, IN)).astype(np.float32)
    run = session(model)
    for cond, layer in ((True, lstm), (False, gru)):
        (flat,) = run.run(None, {"cond": np.array(cond), "X": x})
        Y, _, _ = reference.run(layer, x)
        assert max_abs(flat, Y.reshape(-1)) < 1e-5
        # verify's runner finds the node inside the branch and runs it alone
        got = onnx_model.run_layer(path, layer, np.swapaxes(x, 0, 1))
        assert max_abs(got, np.transpose(Y, (2, 0, 1, 3))) < 1e-5


def test_same_named_nodes_get_unique_layer_names(tmp_path):
    layers = [random_layer("rnn", name=f"r{k}", seed=k) for k in range(3)]
    nodes, inits = [], []
    for k, layer in enumerate(layers):
        emitted = onnx_nodes.emit_layer(layer, "X", f"p{k}", node_name="rnn")
        nodes += emitted.nodes
        inits += emitted.initializers
    outputs = [helper.make_tensor_value_info(f"p{k}_Y", TensorProto.FLOAT, [None] * 4) for k in range(3)]
    model = make_model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, 3])], outputs,
                       inits)
    onnx.save(model, tmp_path / "m.onnx")
    bundle = rnnx.load(tmp_path / "m.onnx")
    assert [l.name for l in bundle.layers] == ["rnn", "rnn_2", "rnn_3"]
    for got, want in zip(bundle.layers, layers):
        assert np.array_equal(got.directions[0].W, want.directions[0].W)


def test_reverse_node_reads_as_go_backwards_and_writes_back_as_reverse(tmp_path):
    layer = random_layer("gru", units=3, inputs=IN, name="back", seed=4)
    layer.options["go_backwards"] = True
    notes = rnnx.save(Bundle([layer]), tmp_path / "r.onnx", layer="back")
    assert any("go_backwards" in n for n in notes)
    model = onnx.load(tmp_path / "r.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "GRU"]
    assert onnx_model.node_attributes(node)["direction"] == "reverse"
    x = np.random.default_rng(1).uniform(-1, 1, (BATCH, SEQ, IN)).astype(np.float32)
    (Y,) = session(model).run(["Y"], {"X": x})
    # ONNX reverse == the forward cell over the reversed sequence, stored back at the input's time steps
    forward, _, _ = reference.run_batch_first(layer, x[:, ::-1])
    assert max_abs(Y, forward[:, ::-1].reshape(BATCH, SEQ, 3)) < 1e-5
    back = rnnx.load(tmp_path / "r.onnx").layer("back")
    assert back.options["go_backwards"] and back.num_directions == 1
    assert np.array_equal(back.directions[0].W, layer.directions[0].W)
    rnnx.save(rnnx.load(tmp_path / "r.onnx"), tmp_path / "r2.onnx")
    (node2,) = [n for n in onnx.load(tmp_path / "r2.onnx").graph.node if n.op_type == "GRU"]
    assert onnx_model.node_attributes(node2)["direction"] == "reverse"
    # verify checks the cell: run forward against the forward reference
    report = rnnx.verify(tmp_path / "r.onnx", tmp_path / "r2.onnx")
    assert report["ok"]


def test_model_without_recurrent_nodes_reads_as_empty_and_refuses_to_write(tmp_path):
    model = make_model([helper.make_node("Relu", ["X"], ["Y"])],
                       [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
                       [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])], [])
    onnx.save(model, tmp_path / "relu.onnx")
    assert rnnx.load(tmp_path / "relu.onnx").layers == []
    with pytest.raises(UsageError, match="no recurrent layer"):
        rnnx.convert(tmp_path / "relu.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
