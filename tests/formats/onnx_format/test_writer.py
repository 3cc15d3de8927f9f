"""The per-layer ONNX writer: opsets, batch-first / time-major I/O, optional states, PyTorch stacks chained
in one graph (checked against torch itself), names and provenance."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import max_abs, random_layer, session  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle, reference  # noqa: E402
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, TANH  # noqa: E402
from rnnx.errors import UsageError  # noqa: E402

OPSETS = (7, 9, 11, 13, 14, 17, 20, 22)


def _bundle():
    return Bundle([
        random_layer("lstm", directions=2, units=4, inputs=3, name="lstm", seed=1,
                     activations=(HARD_SIGMOID_KERAS2, TANH, TANH)),
        random_layer("gru", units=5, inputs=2, name="gru", seed=2, reset_after=False),
        random_layer("rnn", directions=2, units=3, inputs=4, name="rnn", seed=3),
    ], {"path": "made-in-test", "format": "rnnx"})


@pytest.mark.parametrize("opset", OPSETS)
def test_every_opset_checks_runs_and_gives_equal_outputs(opset, tmp_path):
    bundle = _bundle()
    out = tmp_path / f"m{opset}.onnx"
    notes = rnnx.save(bundle, out, opset=opset)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == opset
    assert (len(notes) == 1 and "initial states" in notes[0]) if opset < 8 else notes == []
    rng = np.random.default_rng(opset)
    feeds = {f"{l.name}_X": rng.uniform(-1, 1, (2, 6, l.input_size)).astype(np.float32) for l in bundle.layers}
    names = [f"{l.name}_{k}" for l in bundle.layers for k in ("Y", "Y_h")]
    got = dict(zip(names, session(model).run(names, feeds)))
    for layer in bundle.layers:
        Y, Y_h, _ = reference.run_batch_first(layer, feeds[f"{layer.name}_X"])
        assert max_abs(got[f"{layer.name}_Y"], Y.reshape(2, 6, -1)) < 1e-5
        assert max_abs(got[f"{layer.name}_Y_h"], Y_h) < 1e-5


def test_batch_first_default_and_time_major_option(tmp_path):
    layer = random_layer("lstm", directions=2, units=4, inputs=3, name="enc")
    rnnx.save(Bundle([layer]), tmp_path / "bf.onnx", layer="enc")
    rnnx.save(Bundle([layer]), tmp_path / "tm.onnx", layer="enc", time_major=True)
    bf, tm = onnx.load(tmp_path / "bf.onnx"), onnx.load(tmp_path / "tm.onnx")

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert dims(bf.graph.input[0]) == ["batch", "seq", 3] and dims(bf.graph.output[0]) == ["batch", "seq", 8]
    assert dims(tm.graph.input[0]) == ["seq", "batch", 3] and dims(tm.graph.output[0]) == ["seq", "batch", 8]
    assert [i.name for i in bf.graph.input] == ["X", "initial_h", "initial_c"]
    assert [o.name for o in bf.graph.output] == ["Y", "Y_h", "Y_c"]
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5, 3)).astype(np.float32)
    (Y_bf,) = session(bf).run(["Y"], {"X": x})
    (Y_tm,) = session(tm).run(["Y"], {"X": np.swapaxes(x, 0, 1)})
    want = reference.run_batch_first(layer, x)[0].reshape(2, 5, 8)
    assert max_abs(Y_bf, want) < 1e-5
    assert max_abs(np.swapaxes(Y_tm, 0, 1), want) < 1e-5
    assert {p.key: p.value for p in tm.metadata_props}["rnnx.io_layout"] == "time_major"


def test_initial_states_are_optional_inputs_for_streaming(tmp_path):
    """Feeding the final states of one chunk as initial states of the next equals one long run."""
    layer = random_layer("lstm", units=4, inputs=3, name="stream")
    rnnx.save(Bundle([layer]), tmp_path / "s.onnx", layer="stream")
    run = session(onnx.load(tmp_path / "s.onnx"))
    x = np.random.default_rng(4).uniform(-1, 1, (2, 10, 3)).astype(np.float32)
    Y_all, h_all, c_all = run.run(None, {"X": x})
    Y1, h1, c1 = run.run(None, {"X": x[:, :6]})
    Y2, h2, c2 = run.run(None, {"X": x[:, 6:], "initial_h": h1, "initial_c": c1})
    assert max_abs(np.concatenate([Y1, Y2], axis=1), Y_all) < 1e-6
    assert max_abs(h2, h_all) < 1e-6 and max_abs(c2, c_all) < 1e-6


def test_pytorch_stack_is_one_chain_computing_what_torch_computes(fixtures, tmp_path):
    """nn.LSTM(5, 6, num_layers=3, bidirectional=True): three chained nodes; Y, h_n, c_n as torch returns them."""
    import torch

    bundle = rnnx.load(fixtures / "torch" / "lstm_stack.pt")
    out = tmp_path / "stack.onnx"
    rnnx.save(bundle, out)
    model = onnx.load(out)
    assert [n.op_type for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")] == ["LSTM"] * 3
    module = torch.nn.LSTM(5, 6, num_layers=3, bidirectional=True, batch_first=True)
    module.load_state_dict(torch.load(fixtures / "torch" / "lstm_stack.pt", weights_only=True))
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 7, 5)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (6, 2, 6)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (6, 2, 6)).astype(np.float32)
    with torch.no_grad():
        y, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    inputs = [i.name for i in model.graph.input]
    prefix = inputs[0][: -len("X")]
    got = session(model).run(None, {inputs[0]: x, f"{prefix}initial_h": h0, f"{prefix}initial_c": c0})
    assert max_abs(got[0], y.numpy()) < 1e-5
    assert max_abs(got[1], h.numpy()) < 1e-5
    assert max_abs(got[2], c.numpy()) < 1e-5


def test_provenance_in_metadata_and_nodes(tmp_path):
    bundle = _bundle()
    rnnx.save(bundle, tmp_path / "m.onnx")
    model = onnx.load(tmp_path / "m.onnx")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnx.version"] == rnnx.__version__ and meta["rnnx.source_file"] == "made-in-test"
    assert [u["layers"] for u in json.loads(meta["rnnx.layers"])] == [["lstm"], ["gru"], ["rnn"]]
    assert model.producer_name == "rnnx"
    recurrent = [n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert [n.name for n in recurrent] == ["lstm", "gru", "rnn"]
    assert all("rnnx: layer" in n.doc_string for n in recurrent)


def test_reading_our_own_output_restores_the_layers_exactly(tmp_path):
    bundle = _bundle()
    rnnx.save(bundle, tmp_path / "m.onnx", opset=11)
    back = rnnx.load(tmp_path / "m.onnx")
    for a, b in zip(bundle.layers, back.layers):
        assert (a.name, a.cell, a.reset_after, a.activations) == (b.name, b.cell, b.reset_after, b.activations)
        for da, db in zip(a.directions, b.directions):
            assert np.array_equal(da.W, db.W) and np.array_equal(da.R, db.R)
            assert np.array_equal(da.b_w, db.b_w) and np.array_equal(da.b_r, db.b_r)


def test_bad_opset_is_a_usage_error_and_leaves_no_file(tmp_path):
    with pytest.raises(UsageError, match="opset"):
        rnnx.save(_bundle(), tmp_path / "m.onnx", opset=5)
    assert list(tmp_path.iterdir()) == []
def test_bundle_with_architecture_goes_to_the_whole_model_exporter(fixtures, tmp_path):
    """A full Keras model file (has_architecture) without --layer is written by rnnx.graph as one model."""
    src = fixtures / "keras2" / "cudnn_stack_full.h5"
    assert rnnx.load(src).source["has_architecture"]
    rnnx.convert(src, tmp_path / "whole.onnx")
    model = onnx.load(tmp_path / "whole.onnx")
    outputs = [o.name for o in model.graph.output]
    assert not any(name.endswith("_Y") for name in outputs)  # not the per-layer model
    rnnx.convert(src, tmp_path / "one.onnx", layer="gru_b")
    assert [o.name for o in onnx.load(tmp_path / "one.onnx").graph.output] == ["Y", "Y_h"]


def test_float16_layers_stay_float16_and_verify(fixtures, tmp_path):
    src = fixtures / "torch" / "gru_fp16.pt"
    rnnx.convert(src, tmp_path / "h.onnx")
    model = onnx.load(tmp_path / "h.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert rnnx.verify(src, tmp_path / "h.onnx")["ok"]


def test_float64_layers_are_written_with_a_note_about_onnxruntime(tmp_path):
    notes = rnnx.save(Bundle([random_layer("lstm", dtype=np.float64, name="d")]), tmp_path / "d.onnx")
    assert any("float64" in n and "onnxruntime" in n for n in notes)
    back = rnnx.load(tmp_path / "d.onnx").layer("d")
    assert back.dtype == np.float64


def test_layer_option_narrows_a_whole_bundle(tmp_path):
    rnnx.save(_bundle(), tmp_path / "g.onnx", layer="gru")
    model = onnx.load(tmp_path / "g.onnx")
    assert [n.name for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN")] == ["gru"]
    assert [i.name for i in model.graph.input] == ["X", "initial_h"]
    with pytest.raises(UsageError, match="no recurrent layer named 'nope'"):
        rnnx.save(_bundle(), tmp_path / "n.onnx", layer="nope")
