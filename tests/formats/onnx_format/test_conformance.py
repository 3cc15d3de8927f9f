"""The ONNX standard's own node conformance tests for LSTM and GRU (shared corpus, onnx-node-tests/).

Each test directory holds model.onnx (one node whose W, R, B, P are graph inputs) and
test_data_set_0/input_N.pb, output_N.pb. `bake_weights` turns the weight inputs into
initializers so that rnnx's reader, which reads only constant weights, can read the node.
Then: (1) the reader + numpy reference reproduces every expected output; (2) the writer's
re-export of the canonical layer, run in onnxruntime, reproduces them too.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import make_model, max_abs, session  # noqa: E402

from rnnx.canonical import reference  # noqa: E402
from rnnx.errors import UnsupportedError  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model, nodes as onnx_nodes  # noqa: E402

CASES = ("test_gru_batchwise", "test_gru_defaults", "test_gru_seq_length", "test_gru_with_initial_bias",
         "test_lstm_batchwise", "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes")
WEIGHT_INPUTS = ("W", "R", "B", "P")  # the node's constant inputs; X, sequence_lens and states stay runtime


def load_case(corpus, case):
    folder = corpus / "onnx-node-tests" / case
    model = onnx.load(folder / "model.onnx")
    data = folder / "test_data_set_0"
    inputs = [onnx.load_tensor(str(p)) for p in sorted(data.glob("input_*.pb"))]
    outputs = [onnx.load_tensor(str(p)) for p in sorted(data.glob("output_*.pb"))]
    named_inputs = dict(zip([i.name for i in model.graph.input], inputs))
    named_outputs = dict(zip([o.name for o in model.graph.output], outputs))
    return model, {k: numpy_helper.to_array(v) for k, v in named_inputs.items()}, \
        {k: numpy_helper.to_array(v) for k, v in named_outputs.items()}


def bake_weights(model: onnx.ModelProto, values: dict) -> onnx.ModelProto:
    """A copy of `model` whose weight graph inputs are initializers holding the test's values."""
    baked = onnx.ModelProto()
    baked.CopyFrom(model)
    node = baked.graph.node[0]
    weight_names = {node.input[i] for i, role in zip((1, 2, 3, 7), WEIGHT_INPUTS) if len(node.input) > i}
    kept = [i for i in baked.graph.input if i.name not in weight_names]
    del baked.graph.input[:]
    baked.graph.input.extend(kept)
    baked.graph.initializer.extend(numpy_helper.from_array(values[n], n) for n in sorted(weight_names) if n)
    return baked


def _runtime_inputs(node, values):
    def get(index):
        return values[node.input[index]] if len(node.input) > index and node.input[index] else None

    return get(0), get(4), get(5), get(6)  # X, sequence_lens, initial_h, initial_c


@pytest.mark.parametrize("case", CASES)
def test_reader_and_reference_reproduce_the_standard(corpus, tmp_path, case):
    model, values, expected = load_case(corpus, case)
    baked = bake_weights(model, values)
    onnx.save(baked, tmp_path / "model.onnx")
    bundle = onnx_model.read(tmp_path / "model.onnx")
    (layer,) = bundle.layers
    node = model.graph.node[0]
    assert layer.name == node.name or layer.name == f"{node.op_type}_0"
    X, lens, h0, c0 = _runtime_inputs(node, values)
    batchwise = layer.options.get("layout") == 1
    if batchwise:  # layout 1: X [batch, seq, in], states [batch, D, hidden]
        X = np.swapaxes(X, 0, 1)
        h0 = None if h0 is None else np.swapaxes(h0, 0, 1)
        c0 = None if c0 is None else np.swapaxes(c0, 0, 1)
    Y, Y_h, _ = reference.run(layer, X, initial_h=h0, initial_c=c0, sequence_lens=lens)
    if batchwise:
        Y, Y_h = np.transpose(Y, (2, 0, 1, 3)), np.swapaxes(Y_h, 0, 1)
    outputs = dict(zip([o for o in node.output], [Y, Y_h]))
    assert set(expected) <= {k for k in outputs if k}
    for name, want in expected.items():
        assert max_abs(outputs[name], want) < 1e-6, name


@pytest.mark.parametrize("case", CASES)
def test_writer_re_export_reproduces_the_standard_in_onnxruntime(corpus, tmp_path, case):
    model, values, expected = load_case(corpus, case)
    onnx.save(bake_weights(model, values), tmp_path / "model.onnx")
    (layer,) = onnx_model.read(tmp_path / "model.onnx").layers
    node = model.graph.node[0]
    X, lens, h0, c0 = _runtime_inputs(node, values)
    batchwise = layer.options.get("layout") == 1
    feeds, inputs = {"X": X}, [helper.make_tensor_value_info("X", 1, list(X.shape))]
    for name, value in (("lens", lens), ("h0", h0), ("c0", c0)):
        if value is not None:
            feeds[name] = value
            inputs.append(helper.make_tensor_value_info(name, numpy_helper.from_array(value).data_type,
                                                        list(value.shape)))
    emitted = onnx_nodes.emit_layer(layer, "X", "re", opset=14, batch_first=batchwise,
                                    sequence_lens="lens" if lens is not None else None,
                                    initial_h="h0" if h0 is not None else None,
                                    initial_c="c0" if c0 is not None else None)
    assert all(n.op_type != "Loop" for n in emitted.nodes)
    nodes, Y_h = list(emitted.nodes), emitted.Y_h
    if batchwise:  # the standard's layout-1 outputs: Y [batch, seq, D, hidden], Y_h [batch, D, hidden]
        nodes += [helper.make_node("Transpose", [emitted.Y], ["Y_bw"], perm=[2, 0, 1, 3]),
                  helper.make_node("Transpose", [emitted.Y_h], ["Y_h_bw"], perm=[1, 0, 2])]
        Y, Y_h = "Y_bw", "Y_h_bw"
    else:
        Y = emitted.Y
    names = {node.output[0]: Y, node.output[1]: Y_h}
    wanted = [names[k] for k in expected]
    rebuilt = make_model(nodes, inputs, [helper.make_tensor_value_info(n, 1, list(expected[k].shape))
                                         for k, n in zip(expected, wanted)],
                         emitted.initializers)
    onnx.checker.check_model(rebuilt, full_check=True)
    got = session(rebuilt).run(wanted, feeds)
    for (name, want), value in zip(expected.items(), got):
        assert max_abs(value, want) < 1e-6, name


def test_weights_fed_at_run_time_are_reported_by_name(corpus, tmp_path):
    """The standard's own model gives W, R as graph inputs: rnnx names them instead of guessing."""
    with pytest.raises(UnsupportedError, match="W is the graph input 'W'.*only constant weights"):
        onnx_model.read(corpus / "onnx-node-tests" / "test_lstm_defaults" / "model.onnx")


def test_weights_computed_by_another_node_are_reported_by_name(tmp_path):
    W = np.ones((1, 12, 2), np.float32)
    R = np.ones((1, 12, 3), np.float32)
    nodes = [helper.make_node("Mul", ["W0", "two"], ["W"], name="scale_weights"),
             helper.make_node("LSTM", ["X", "W", "R"], ["Y"], name="lstm", hidden_size=3)]
    model = make_model(nodes, [helper.make_tensor_value_info("X", 1, [1, 1, 2])],
                       [helper.make_tensor_value_info("Y", 1, None)],
                       [numpy_helper.from_array(W, "W0"), numpy_helper.from_array(np.float32(2.0), "two"),
                        numpy_helper.from_array(R, "R")])
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedError, match="node 'lstm': W is computed at run time by node 'scale_weights'"):
        onnx_model.read(tmp_path / "m.onnx")


@pytest.mark.parametrize("case", CASES)
def test_verify_runner_runs_each_standard_node_as_written(corpus, tmp_path, case):
    """run_layer (rnnx verify's runner) copies the node (layout 1 included) into a one-node model."""
    model, values, _ = load_case(corpus, case)
    path = tmp_path / "model.onnx"
    onnx.save(bake_weights(model, values), path)
    (layer,) = onnx_model.read(path).layers
    x = np.random.default_rng(0).uniform(-1, 1, (2, 4, layer.input_size)).astype(np.float32)
    want, _, _ = reference.run_batch_first(layer, x)
    assert max_abs(onnx_model.run_layer(path, layer, x), want) < 1e-5
