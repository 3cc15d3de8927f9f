"""`rnnx convert ... .onnx` and `rnnx verify` from the command line: exit codes, --json against its schema,
a deliberately wrong target caught, CLI options reaching the writer."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "schemas" / "verify.schema.json").read_text())


def _perturb_first_weight(src: Path, dst: Path) -> None:
    """A copy of an ONNX model with one weight of its first recurrent node moved by 0.05."""
    model = onnx.load(src)
    node = next(n for n in model.graph.node if n.op_type in ("LSTM", "GRU", "RNN"))
    for k, tensor in enumerate(model.graph.initializer):
        if tensor.name == node.input[1]:
            W = numpy_helper.to_array(tensor).copy()
            W.flat[0] += np.float32(0.05)
            model.graph.initializer[k].CopyFrom(numpy_helper.from_array(W, tensor.name))
    onnx.save(model, dst)


def test_convert_verify_then_verify_json(cli, fixtures, tmp_path):
    src = fixtures / "keras2" / "cudnn_bidir_weights.h5"
    dst = tmp_path / "bidir.onnx"
    proc = cli("convert", src, dst, "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "matches its source" in proc.stdout
    proc = cli("verify", src, dst, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["ok"] and report["target_format"] == "onnx"
    assert [r["layer"] for r in report["layers"]] == ["bi_concat", "bi_sum", "bi_mul"]
    assert all(r["max_abs_error"] < 1e-5 for r in report["layers"])


def test_verify_catches_a_perturbed_weight(cli, fixtures, tmp_path):
    src = fixtures / "keras2" / "cudnn_stack_weights.h5"
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    assert cli("convert", src, good).returncode == 0
    _perturb_first_weight(good, bad)
    proc = cli("verify", src, bad, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    jsonschema.validate(report, SCHEMA)
    assert not report["ok"]
    assert [r["ok"] for r in report["layers"]] == [False, True, True]
    proc = cli("verify", src, bad)
    assert proc.returncode == 1 and "FAILED" in proc.stdout and "does NOT match" in proc.stdout


def test_cli_options_reach_the_writer(cli, fixtures, tmp_path):
    src = fixtures / "torch" / "gru_stack.pt"
    dst = tmp_path / "gru.onnx"
    proc = cli("convert", src, dst, "--layer", "gru.l1", "--opset", "11", "--time-major", "--verify")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(dst)
    assert model.opset_import[0].version == 11
    assert [i.name for i in model.graph.input] == ["X", "initial_h"]
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim][:2] == ["seq", "batch"]
    assert cli("verify", src, dst, "--layer", "gru.l1").returncode == 0


def test_bad_opset_on_the_command_line(cli, fixtures, tmp_path):
    proc = cli("convert", fixtures / "torch" / "gru_stack.pt", tmp_path / "x.onnx", "--opset", "3")
    assert proc.returncode == 2
    assert "opset" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_of_a_whole_model_graph_finds_each_layer_node(cli, fixtures, tmp_path):
    """A full Keras model goes to the whole-model exporter; verify still finds every layer by its node."""
    src = fixtures / "keras2" / "cudnn_stack_full.h5"
    dst = tmp_path / "whole.onnx"
    proc = cli("convert", src, dst, "--verify")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    proc = cli("verify", src, dst, "--json")
    report = json.loads(proc.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["ok"] and [r["layer"] for r in report["layers"]] == ["lstm_a", "gru_b", "lstm_c"]
