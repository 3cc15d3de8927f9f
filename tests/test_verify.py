"""`verify` on a real trained model: float32 rounding is measured, real mistakes still fail."""

import json

import jsonschema
import numpy as np
import pytest

import rnnx
from rnnx.canonical import Bundle, Direction, RecurrentLayer
from rnnx.canonical.gates import gate_count
from tests.conftest import ROOT

TEXTGENRNN = "keras2/textgenrnn_cudnnlstm2_weights.hdf5"


def _transposed_gates(layer):
    """The web recipe's mistake: CuDNN gate blocks transposed instead of reshaped."""
    n, u = gate_count(layer.cell), layer.units

    def wrong(M):
        return np.concatenate([blk.reshape(M.shape[1], u).T for blk in np.split(M, n)])

    d = layer.directions[0]
    return RecurrentLayer(layer.name, layer.cell, [Direction(wrong(d.W), wrong(d.R), d.b_w, d.b_r)])


def test_trained_cudnn_model_verifies_with_its_noise_floor(corpus, tmp_path, cli):
    out = tmp_path / "textgenrnn.onnx"
    proc = cli("convert", corpus / TEXTGENRNN, out, "--verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = rnnx.verify(corpus / TEXTGENRNN, out)
    jsonschema.validate(report, json.loads((ROOT / "schemas" / "verify.schema.json").read_text()))
    for layer in report["layers"]:
        assert layer["ok"]
        assert 0 < layer["noise_floor"] <= layer["tolerance"] / 4 + 1e-12
        assert layer["max_abs_error"] <= layer["tolerance"]


def test_a_wrong_conversion_of_the_same_model_fails(corpus, tmp_path, cli):
    source = rnnx.load(corpus / TEXTGENRNN)
    wrong = Bundle([_transposed_gates(layer) for layer in source.layers])
    rnnx.save(wrong, tmp_path / "wrong.onnx")
    proc = cli("verify", corpus / TEXTGENRNN, tmp_path / "wrong.onnx")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout


def test_explicit_tolerance_is_used_as_given(corpus, tmp_path):
    out = tmp_path / "textgenrnn.onnx"
    rnnx.convert(corpus / TEXTGENRNN, out)
    report = rnnx.verify(corpus / TEXTGENRNN, out, tolerance=1e-9)
    assert not report["ok"] and all(l["tolerance"] == 1e-9 for l in report["layers"])


def _small_lstm(seed=0):
    rng = np.random.default_rng(seed)
    d = Direction(*(rng.standard_normal(s).astype(np.float32) for s in ((8, 3), (8, 2), (8,))))
    return RecurrentLayer("lstm", "lstm", [d])


def test_a_target_computing_nan_fails(tmp_path, cli):
    source = Bundle([_small_lstm()])
    rnnx.save(source, tmp_path / "source.rnnx")
    broken = _small_lstm()
    broken.directions[0].W[0, 0] = np.nan
    rnnx.save(Bundle([broken]), tmp_path / "broken.pt")
    report = rnnx.verify(tmp_path / "source.rnnx", tmp_path / "broken.pt")
    assert not report["ok"] and report["layers"][0]["max_abs_error"] == np.inf
    proc = cli("verify", tmp_path / "source.rnnx", tmp_path / "broken.pt")
    assert proc.returncode == 1 and "FAILED" in proc.stdout, proc.stdout + proc.stderr


def test_nan_weights_are_carried_and_agree_where_both_sides_compute_nan(tmp_path):
    layer = _small_lstm()
    layer.directions[0].R[1, 1] = np.inf
    layer.directions[0].W[0, 0] = np.nan
    rnnx.save(Bundle([layer]), tmp_path / "source.rnnx")
    rnnx.convert(tmp_path / "source.rnnx", tmp_path / "copy.pt")
    report = rnnx.verify(tmp_path / "source.rnnx", tmp_path / "copy.pt")
    assert report["ok"] and report["layers"][0]["max_abs_error"] == 0


def _gru(name, inputs, units, seed):
    rng = np.random.default_rng(seed)
    shapes = ((3 * units, inputs), (3 * units, units), (3 * units,), (3 * units,))
    return RecurrentLayer(name, "gru", [Direction(*(rng.standard_normal(s).astype(np.float32) for s in shapes))])


def test_layers_renamed_along_a_chain_are_paired_by_position(fixtures, tmp_path, cli):
    """Keras -> PyTorch -> Keras renames `bi_sum` to `bi_sum.l0`; verify against the original still runs."""
    original = fixtures / "keras2" / "cudnn_bidir_weights.h5"
    rnnx.convert(original, tmp_path / "step.pt")
    rnnx.convert(tmp_path / "step.pt", tmp_path / "back.h5")
    assert [l.name for l in rnnx.load(tmp_path / "back.h5").layers] == ["bi_concat.l0", "bi_sum.l0", "bi_mul.l0"]
    report = rnnx.verify(original, tmp_path / "back.h5")  # runs back.h5 in tf_keras
    jsonschema.validate(report, json.loads((ROOT / "schemas" / "verify.schema.json").read_text()))
    assert report["ok"]
    assert [(r["layer"], r["target_layer"]) for r in report["layers"]] == [
        ("bi_concat", "bi_concat.l0"), ("bi_sum", "bi_sum.l0"), ("bi_mul", "bi_mul.l0")]
    proc = cli("verify", original, tmp_path / "back.h5")
    assert proc.returncode == 0 and "bi_sum -> bi_sum.l0" in proc.stdout, proc.stdout + proc.stderr


def test_pairing_by_position_never_pairs_different_layers(tmp_path, cli):
    rnnx.save(Bundle([_gru("a", 3, 4, 1), _gru("b", 4, 2, 2)]), tmp_path / "source.rnnx")
    rnnx.save(Bundle([_gru("y", 4, 2, 2), _gru("x", 3, 4, 1)]), tmp_path / "swapped.rnnx")
    proc = cli("verify", tmp_path / "source.rnnx", tmp_path / "swapped.rnnx")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "has no layer named 'a', and the layer at its position, 'y', is a GRU of 2 units" in proc.stderr
    rnnx.save(Bundle([_gru("b.l0", 4, 2, 2), _gru("a.l0", 3, 4, 1)]), tmp_path / "swapped.pt")
    report = rnnx.verify(tmp_path / "source.rnnx", tmp_path / "swapped.pt")  # torch's own lookup: a -> a.l0
    assert report["ok"] and [r.get("target_layer") for r in report["layers"]] == [None, None]


def test_whole_model_onnx_layers_are_found_by_name_not_position(fixtures, tmp_path):
    """A node whose layer name a graph output took is found by its outputs, not paired by position."""
    for name, count in (("k2_masking", 5), ("k2_states", 5)):  # recurrent layers whose outputs are model outputs
        source = fixtures / "models" / f"{name}.h5"
        rnnx.convert(source, tmp_path / f"{name}.onnx")
        report = rnnx.verify(source, tmp_path / f"{name}.onnx")  # onnxruntime runs each node
        assert report["ok"] and len(report["layers"]) == count
        assert all("target_layer" not in r for r in report["layers"])


def test_an_rnnx_target_is_verified_in_the_reference_at_its_own_dtype(fixtures, tmp_path, cli):
    source = fixtures / "keras2" / "cpu_mix_weights.h5"
    proc = cli("convert", source, tmp_path / "copy.rnnx", "--verify")
    assert proc.returncode == 0 and "matches its source" in proc.stdout, proc.stdout + proc.stderr
    wrong = rnnx.load(tmp_path / "copy.rnnx")
    wrong.layers[1].directions[0].R[:4] *= 1.5  # one GRU gate block scaled
    rnnx.save(wrong, tmp_path / "wrong.rnnx")
    report = rnnx.verify(source, tmp_path / "wrong.rnnx")
    assert [r["ok"] for r in report["layers"]][:3] == [True, False, True]


def test_convert_verify_to_a_target_that_cannot_run_writes_nothing(fixtures, tmp_path, cli):
    proc = cli("convert", fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / "modules.py", "--verify")
    assert proc.returncode == 2 and "cannot run for verification torch-module" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tolerance", ["-1", "nan"])
def test_a_tolerance_that_bounds_nothing_is_a_usage_error(tmp_path, cli, tolerance):
    rnnx.save(Bundle([_small_lstm()]), tmp_path / "source.rnnx")
    rnnx.convert(tmp_path / "source.rnnx", tmp_path / "copy.onnx")
    proc = cli("verify", tmp_path / "source.rnnx", tmp_path / "copy.onnx", "--tolerance", tolerance)
    assert proc.returncode == 2 and "--tolerance" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_source_without_recurrent_layers_is_not_declared_verified(tmp_path, cli):
    from rnnx.canonical import OpaqueLayer

    src = tmp_path / "dense.rnnx"
    rnnx.save(Bundle([OpaqueLayer("dense", "Dense", [("kernel", np.ones((2, 2), np.float32))])]), src)
    rnnx.save(Bundle([_small_lstm()]), tmp_path / "other.pt")
    proc = cli("verify", src, tmp_path / "other.pt")
    assert proc.returncode == 2 and "nothing to verify" in proc.stderr, proc.stdout + proc.stderr
    proc = cli("convert", src, tmp_path / "out.pt", "--verify")
    assert proc.returncode == 2 and "without --verify" in proc.stderr
    assert not (tmp_path / "out.pt").exists()


def _nan_weight_rnnx(path):
    """A layer with one NaN recurrent weight: numpy spreads it through the reference, onnxruntime
    computes something else, so a faithful copy still fails verification - a real failing case."""
    rng = np.random.default_rng(11)
    d = Direction(W=rng.standard_normal((8, 3)).astype(np.float32), R=rng.standard_normal((8, 2)).astype(np.float32),
                  b_w=rng.standard_normal(8).astype(np.float32))
    d.R[0, 0] = np.nan
    rnnx.save(Bundle([RecurrentLayer("lstm", "lstm", [d])]), path)
    return path


def test_failed_convert_verify_still_says_what_was_written(cli, tmp_path):
    src = _nan_weight_rnnx(tmp_path / "nan.rnnx")
    proc = cli("convert", src, tmp_path / "nan.onnx", "--verify")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"wrote {tmp_path / 'nan.onnx'}") and "FAILED" in proc.stdout
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_verify_json_is_strict_json_when_errors_are_not_finite(cli, tmp_path):
    src = _nan_weight_rnnx(tmp_path / "nan.rnnx")
    rnnx.convert(src, tmp_path / "nan.onnx")
    proc = cli("verify", src, tmp_path / "nan.onnx", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    report = json.loads(proc.stdout, parse_constant=refuse)
    jsonschema.validate(report, json.loads((ROOT / "schemas" / "verify.schema.json").read_text()))
    assert report["ok"] is False
