"""Chains of conversions through every format: function (verify at every step, frameworks as the
oracle), metadata (names, cells, activations, reset variant, directions) and the notes for what a
target cannot hold."""

import json

import numpy as np
import onnx
import pytest
import torch

import rnnx
import rnnx.keras
import rnnx.torch
from rnnx import UnsupportedError
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2

RNG = np.random.default_rng(31)


def _meta(path):
    """What must survive a conversion, per recurrent layer (sorted: .safetensors orders keys by name)."""
    return sorted(((l.cell, l.reset_after if l.cell == "gru" else None, l.activations, l.num_directions,
                    l.input_size, l.hidden_size) for l in rnnx.load(path).layers), key=repr)


def _run_chain(original, tmp_path, steps):
    """Convert step by step; every step must verify against the ORIGINAL and keep its metadata."""
    want = _meta(original)
    previous, reports = original, []
    for step in steps:
        dst = tmp_path / step
        rnnx.convert(previous, dst)
        report = rnnx.verify(original, dst)  # the target runs in its own framework
        assert report["ok"], (step, report)
        assert len(report["layers"]) == len(want)
        assert _meta(dst) == want, step
        reports.append(report)
        previous = dst
    return reports


def test_cudnn_bidirectional_keras2_through_every_format(fixtures, tmp_path):
    """CuDNN .h5 -> .pt -> .h5 -> .onnx -> .rnnx -> .weights.h5 -> .safetensors -> .h5."""
    original = fixtures / "keras2" / "cudnn_bidir_weights.h5"
    reports = _run_chain(original, tmp_path, ["a.pt", "b.h5", "c.onnx", "d.rnnx", "e.weights.h5",
                                              "f.safetensors", "g.h5"])
    assert max(l["max_abs_error"] for r in reports for l in r["layers"]) < 1e-5
    # names settle after the first PyTorch step instead of growing (bi_sum.l0, never bi_sum_l0.l0)
    assert sorted(l.name for l in rnnx.load(tmp_path / "g.h5").layers) == ["bi_concat.l0", "bi_mul.l0", "bi_sum.l0"]


def test_torch_stack_comes_back_as_the_same_module(fixtures, tmp_path):
    """nn.LSTM(num_layers=3, bidirectional) -> .h5 -> .safetensors -> .onnx -> .weights.h5 -> .pt."""
    original = fixtures / "torch" / "lstm_stack.pt"
    _run_chain(original, tmp_path, ["a.h5", "b.safetensors", "c.onnx", "d.weights.h5", "e.pt"])
    loaded = torch.nn.LSTM(5, 6, num_layers=3, bidirectional=True, batch_first=True)
    rnnx.torch.load_state_dict(loaded, tmp_path / "d.weights.h5")  # a Keras 3 file of the chain, by order
    source_state = torch.load(original, weights_only=True)
    final_state = torch.load(tmp_path / "e.pt", weights_only=True)
    assert sorted(final_state) == sorted(source_state)
    modules = [loaded]
    for state in (source_state, final_state):
        module = torch.nn.LSTM(5, 6, num_layers=3, bidirectional=True, batch_first=True)
        module.load_state_dict(state)
        modules.append(module)
    x = torch.from_numpy(RNG.standard_normal((3, 9, 5)).astype(np.float32))
    with torch.no_grad():
        (a, (_, ca)), *others = [module(x) for module in modules]
    for b, (_, cb) in others:
        assert float((a - b).abs().max()) < 1e-5 and float((ca - cb).abs().max()) < 1e-5


def test_keras3_archive_to_keras2_and_back(fixtures, tmp_path, cli):
    """.keras -> .h5 -> .weights.h5 -> .onnx; Keras 3 runs the chain's output through rnnx.keras.load_weights."""
    import keras

    original = fixtures / "keras3" / "stack.keras"
    _run_chain(original, tmp_path, ["a.h5", "b.weights.h5", "c.onnx", "d.rnnx"])
    x = RNG.standard_normal((2, 6, keras.models.load_model(original).input_shape[-1])).astype(np.float32)
    want = keras.models.load_model(original).predict(x, verbose=0)
    model = keras.models.load_model(original)
    for layer in model.layers:  # nothing of the original's recurrent weights is left
        if layer.weights and "dense" not in layer.name:
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    rnnx.keras.load_weights(model, tmp_path / "d.rnnx")
    assert np.abs(model.predict(x, verbose=0) - want).max() < 1e-5
    # a Keras 2 weights file has no Keras 3 architecture: refused with what to do
    proc = cli("convert", tmp_path / "a.h5", tmp_path / "e.keras")
    assert proc.returncode == 2 and "no model architecture" in proc.stderr and ".weights.h5" in proc.stderr
    assert not (tmp_path / "e.keras").exists()


def test_hard_sigmoid_and_reset_before_never_change_silently(fixtures, tmp_path, cli):
    """Keras 2 hard_sigmoid and reset_after=False survive ONNX / .h5 / .rnnx; other targets refuse them."""
    original = fixtures / "keras2" / "cpu_mix_full.h5"
    _run_chain(original, tmp_path, ["a.onnx", "b.h5", "c.rnnx", "d.onnx", "e.h5"])
    layers = {l.name: l for l in rnnx.load(tmp_path / "e.h5").layers}
    assert layers["lstm_hard"].activations[0] == HARD_SIGMOID_KERAS2
    assert layers["gru_before"].reset_after is False and layers["gru_before"].activations[0] == HARD_SIGMOID_KERAS2
    inspected = json.loads(cli("inspect", tmp_path / "e.h5", "--json").stdout)
    gru = next(l for l in inspected["layers"] if l["name"] == "gru_before")
    assert gru["kind"] == "gru-reset-before" and gru["activations"][0]["name"] == "HardSigmoid"
    for target, words in (("x.pt", "'lstm_hard' uses gate activation HardSigmoid"),
                          ("x.safetensors", "HardSigmoid"), ("x.weights.h5", "hard_sigmoid")):
        proc = cli("convert", tmp_path / "e.h5", tmp_path / target)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / target).exists()
    with pytest.raises(UnsupportedError, match="reset-before GRU"):
        rnnx.convert(tmp_path / "c.rnnx", tmp_path / "y.pt", layer="gru_before")


def test_go_backwards_and_merge_modes_are_kept_or_noted(fixtures, tmp_path):
    backwards = tmp_path / "back.onnx"
    rnnx.convert(fixtures / "models" / "k2_masking.h5", backwards, layer="lstm_back")
    assert rnnx.load(backwards).layers[0].options["go_backwards"]  # direction="reverse" keeps it
    for target in ("back.h5", "back.weights.h5", "back.pt", "back.rnnx"):
        notes = rnnx.convert(backwards, tmp_path / target).notes
        kept = rnnx.load(tmp_path / target).layers[0].options.get("go_backwards")
        assert kept or any("go_backwards=True" in n for n in notes), (target, notes)
        assert bool(kept) == (target != "back.pt"), target  # rnnx's own attributes keep it in Keras files
    # and so the next step still runs backwards
    rnnx.convert(tmp_path / "back.h5", tmp_path / "again.onnx")
    node = next(n for n in onnx.load(tmp_path / "again.onnx").graph.node if n.op_type == "LSTM")
    assert [a.s for a in node.attribute if a.name == "direction"] == [b"reverse"]
    summed_h5 = tmp_path / "sum_back.h5"
    rnnx.convert(fixtures / "keras2" / "cudnn_bidir_full.h5", summed_h5, layer="bi_sum")
    assert rnnx.load(summed_h5).layers[0].options["merge_mode"] == "sum"
    summed = fixtures / "keras2" / "cudnn_bidir_full.h5"
    for target in ("sum.onnx", "sum.h5", "sum.weights.h5", "sum.pt"):
        notes = rnnx.convert(summed, tmp_path / target, layer="bi_sum").notes
        assert any("merge_mode='sum'" in n for n in notes), (target, notes)


def test_cli_contract_paths_and_repeated_conversions(fixtures, tmp_path, cli):
    source = fixtures / "keras2" / "cudnn_stack_weights.h5"
    folder = tmp_path / "out dir" / "ünïcödé"
    folder.mkdir(parents=True)
    dst = folder / "gru b.bin"  # --to overrides the suffix
    for _ in range(2):  # the second run replaces the first file
        proc = cli("convert", source, dst, "--to", "onnx", "--layer", "gru_b", "--verify")
        assert proc.returncode == 0 and "matches its source" in proc.stdout, proc.stdout + proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["gru b.bin"]  # no temporary file left behind
    proc = cli("verify", source, dst, "--to", "onnx", "--layer", "gru_b")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("to, name", [("onnx", "model.bin"), ("rnnx", "model.safetensors"),
                                      ("safetensors", "model.pt"), ("torch", "model.onnx")])
def test_files_written_with_to_are_read_back_whatever_their_suffix(fixtures, tmp_path, cli, to, name):
    source = fixtures / "keras2" / "cudnn_stack_weights.h5"
    dst = tmp_path / name
    rnnx.convert(source, dst, to=to)
    proc = cli("inspect", dst, "--json")  # the format comes from the content, as for .h5 / zip files
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["format"] == to and report["path"] == str(dst)  # the file inspected, not its origin
    assert rnnx.verify(source, dst)["ok"]  # no --to needed either
