"""Real ONNX models (shared corpus): DTLN's stateful LSTMs and GTCRN's 14 GRUs are read, inspected, and
round-trip ONNX -> canonical -> ONNX to models whose nodes compute what the originals compute in onnxruntime."""

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import helper

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import make_model, max_abs, session  # noqa: E402

import rnnx  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model  # noqa: E402

MODELS = ("dtln_lstm_stateful.onnx", "gtcrn_gru.onnx")
ROOT = Path(__file__).resolve().parents[3]


def _recurrent(model):
    return [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]


def original_node_model(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.ModelProto:
    """The original node alone, as written (attributes, initializers), fed from X [seq, batch, in] and h0 (c0)."""
    inits = {t.name: t for t in model.graph.initializer}
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[0] = "X"
    if len(copy.input) > 4:
        copy.input[4] = ""  # sequence_lens
    copy.input[5] = "h0"
    if node.op_type == "LSTM":
        copy.input[6] = "c0"
    del copy.output[:]
    copy.output.extend(["Y", "Y_h"] + (["Y_c"] if node.op_type == "LSTM" else []))
    weights = [inits[name] for name in list(node.input)[1:4] if name]
    inputs = [helper.make_tensor_value_info("X", 1, [None] * 3), helper.make_tensor_value_info("h0", 1, [None] * 3)]
    if node.op_type == "LSTM":
        inputs.append(helper.make_tensor_value_info("c0", 1, [None] * 3))
    outputs = [helper.make_tensor_value_info(n, 1, None) for n in copy.output]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return make_model([copy], inputs, outputs, weights, opset=opset)


@pytest.fixture(scope="module", params=MODELS)
def case(request, corpus, tmp_path_factory):
    path = corpus / "onnx" / request.param
    out = tmp_path_factory.mktemp("onnx") / "rewritten.onnx"
    rnnx.convert(path, out)
    return path, onnx.load(path), out


def test_every_recurrent_node_is_read_with_its_shape(case):
    path, model, _ = case
    bundle = rnnx.load(path)
    nodes = _recurrent(model)
    assert [l.name for l in bundle.layers] == [n.name for n in nodes]
    inits = {t.name: t for t in model.graph.initializer}
    for layer, node in zip(bundle.layers, nodes):
        attrs = onnx_model.node_attributes(node)
        W = inits[node.input[1]]
        assert layer.cell == node.op_type.lower()
        assert layer.units == attrs["hidden_size"]
        assert layer.num_directions == W.dims[0] == (2 if attrs.get("direction") == "bidirectional" else 1)
        assert layer.input_size == W.dims[2]
        assert layer.bias_layout == "input+recurrent"
        if layer.cell == "gru":
            assert layer.reset_after == bool(attrs["linear_before_reset"])


def test_inspect_json_names_producer_and_opset(case, cli):
    path, model, _ = case
    proc = cli("inspect", path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, json.loads((ROOT / "schemas" / "inspect.schema.json").read_text()))
    assert report["format"] == "onnx"
    assert report["source"]["opset"] == model.opset_import[0].version
    assert model.producer_name in report["source"]["producer"]
    assert len(report["layers"]) == len(_recurrent(model))
    assert all(layer["targets"]["onnx"] == "ok" for layer in report["layers"])


def test_round_trip_is_exact_in_the_weights(case):
    path, _, out = case
    for a, b in zip(rnnx.load(path).layers, rnnx.load(out).layers):
        assert (a.name, a.cell, a.reset_after, a.activations) == (b.name, b.cell, b.reset_after, b.activations)
        for da, db in zip(a.directions, b.directions):
            for key, value in da.tensors().items():
                assert np.array_equal(value, db.tensors()[key]), (a.name, key)


def test_rewritten_model_computes_what_each_original_node_computes(case):
    """Original node (one-node model, time-major) vs the rewritten per-layer model (batch-first, named I/O)."""
    path, model, out = case
    bundle = rnnx.load(path)
    rewritten = session(onnx.load(out))
    rng = np.random.default_rng(5)
    batch, seq = 3, 9
    ours, zero_feeds, wanted, expected, expected_from_zero = {}, {}, [], [], []
    for node in _recurrent(model):
        layer = bundle.layer(node.name)
        name, D, H, lstm = layer.name, layer.num_directions, layer.hidden_size, layer.cell == "lstm"
        x = rng.uniform(-1, 1, (batch, seq, layer.input_size)).astype(np.float32)
        h0 = rng.uniform(-1, 1, (D, batch, H)).astype(np.float32)
        c0 = rng.uniform(-1, 1, (D, batch, H)).astype(np.float32)
        original = session(original_node_model(model, node))
        feeds = {"X": np.swapaxes(x, 0, 1), "h0": h0, **({"c0": c0} if lstm else {})}
        want = original.run(None, feeds)
        want[0] = np.transpose(want[0], (2, 0, 1, 3)).reshape(batch, seq, D * H)
        expected += want
        zero = original.run(None, {k: (v if k == "X" else np.zeros_like(v)) for k, v in feeds.items()})
        expected_from_zero.append(np.transpose(zero[0], (2, 0, 1, 3)).reshape(batch, seq, D * H))
        ours.update({f"{name}_X": x, f"{name}_initial_h": h0, **({f"{name}_initial_c": c0} if lstm else {})})
        zero_feeds[f"{name}_X"] = x
        wanted += [f"{name}_Y", f"{name}_Y_h"] + ([f"{name}_Y_c"] if lstm else [])
    for name, got, want in zip(wanted, rewritten.run(wanted, ours), expected):
        assert max_abs(got, want) < 1e-5, name
    # without initial states the model starts from zeros, as the ONNX operator does
    Y_names = [n for n in wanted if n.endswith("_Y")]
    for name, got, want in zip(Y_names, rewritten.run(Y_names, zero_feeds), expected_from_zero):
        assert max_abs(got, want) < 1e-5, name


def test_written_model_carries_provenance(case):
    path, _, out = case
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnx.version"] == rnnx.__version__
    assert meta["rnnx.source_file"] == str(path)
    layers = json.loads(meta["rnnx.layers"])
    assert [u["layers"][0] for u in layers] == [n.name for n in _recurrent(onnx.load(path))]
    assert all(n.op_type != "Loop" for n in model.graph.node)
