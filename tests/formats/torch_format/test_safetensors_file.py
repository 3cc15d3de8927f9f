"""PyTorch state dicts as .safetensors: read and written without torch; torch is the oracle."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import rnnx
from rnnx.canonical import reference

RNG = np.random.default_rng(1)


def run_module(module, x):
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    return out.numpy()


def test_reader_matches_torch(fixtures):
    path = fixtures / "torch" / "model.safetensors"
    bundle = rnnx.load(path)
    assert bundle.source["format"] == "safetensors"
    (layer,) = bundle.layers
    assert layer.name == "rnn.l0" and layer.provenance["rebuild"] == "nn.GRU(4, 3, bidirectional=True)"
    assert [(o.name, [n for n, _ in o.weights]) for o in bundle.others] == [
        ("embed", ["weight"]), ("out", ["bias", "weight"])]
    module = eval(layer.provenance["rebuild"], {"nn": torch.nn})
    module.batch_first = True
    state = load_file(str(path))
    module.load_state_dict({k[4:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("rnn.")})
    x = RNG.standard_normal((2, 5, 4)).astype(np.float32)
    want, _, _ = reference.run_batch_first(layer, x)
    assert np.abs(run_module(module, x) - want.reshape(2, 5, -1)).max() <= 1e-5


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_no_torch_import(fixtures, tmp_path, command):
    """inspect and conversion of .safetensors never import torch (nor tensorflow)."""
    src = fixtures / "torch" / "model.safetensors"
    call = (f"rnnx.inspect({str(src)!r})" if command == "inspect"
            else f"rnnx.convert({str(src)!r}, {str(tmp_path / 'out.safetensors')!r})")
    code = (f"import sys, rnnx; {call}; "
            "bad = [m for m in ('torch', 'tensorflow', 'tf_keras', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_writer_without_torch_round_trips(fixtures, tmp_path):
    """Every fixture -> .safetensors: the same tensors as torch's own state dict."""
    for name in ("lstm_stack.pt", "lstm_proj.pth", "cells.pt", "gru_fp16.pt", "rnn_nobias.pt"):
        out = tmp_path / f"{name}.safetensors"
        rnnx.save(rnnx.load(fixtures / "torch" / name), out)
        original = torch.load(fixtures / "torch" / name, weights_only=True)
        written = load_file(str(out))
        assert set(written) == set(original)
        for key, tensor in original.items():
            assert np.array_equal(written[key], tensor.numpy()) and written[key].dtype == tensor.numpy().dtype


def test_cli_verify_with_safetensors_target(cli, fixtures, tmp_path):
    out = tmp_path / "out.safetensors"
    done = cli("convert", fixtures / "torch" / "lstm_proj.pth", out, "--verify")
    assert done.returncode == 0, done.stderr
    assert "rnn = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)" in done.stdout
    done = cli("verify", fixtures / "torch" / "lstm_proj.pth", out, "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"]
    assert max(l["max_abs_error"] for l in report["layers"]) <= 1e-5


def test_rnnx_manifest_safetensors_is_read_as_rnnx(fixtures, tmp_path):
    canonical = tmp_path / "model.rnnx"
    rnnx.save(rnnx.load(fixtures / "torch" / "cells.pt"), canonical)
    renamed = tmp_path / "model.safetensors"
    renamed.write_bytes(canonical.read_bytes())
    assert [l.name for l in rnnx.load(renamed).layers] == ["lstm_cell", "gru_cell", "rnn_cell"]


def _gru_state(prefix="rnn", layers=2, reverse=True):
    out = {}
    for k in range(layers):
        for suffix in (f"_l{k}", f"_l{k}_reverse")[: 2 if reverse else 1]:
            inp = 3 if k == 0 else 4 * (2 if reverse else 1)
            out[f"{prefix}.weight_ih{suffix}"] = RNG.standard_normal((12, inp)).astype(np.float32)
            out[f"{prefix}.weight_hh{suffix}"] = RNG.standard_normal((12, 4)).astype(np.float32)
            out[f"{prefix}.bias_ih{suffix}"] = RNG.standard_normal(12).astype(np.float32)
            out[f"{prefix}.bias_hh{suffix}"] = RNG.standard_normal(12).astype(np.float32)
    return out


def _drop(state, pattern):
    return {k: v for k, v in state.items() if pattern not in k}


def _only_reverse(state):
    return {k: v for k, v in state.items() if k.endswith("_reverse")}


def _reshape(state, key, shape):
    return {**state, key: np.zeros(shape, np.float32)}


@pytest.mark.parametrize("make, words", [
    (lambda: _only_reverse(_gru_state()), "only *_reverse keys"),
    (lambda: _drop(_gru_state(layers=3), "_l1"), "no layer 1"),
    (lambda: _drop(_gru_state(), "_l1_reverse"), "layer 1 has 1 direction"),
    (lambda: _reshape(_gru_state(), "rnn.weight_hh_l0", (10, 4)), "does not form an nn.LSTM"),
    (lambda: _reshape(_gru_state(), "rnn.weight_ih_l1", (12, 5)), "reads the 8 outputs of layer 0"),
    (lambda: _reshape(_gru_state(), "rnn.weight_hh_l1", (12, 3)), "do not form one module"),
    (lambda: _reshape(_gru_state(), "rnn.bias_hh_l0", (11,)), "the shapes do not form a PyTorch GRU"),
    (lambda: _drop(_gru_state(), "bias_hh"), "only one of bias_ih / bias_hh"),
    (lambda: {**_gru_state(), "rnn.bias_ih_l0": np.zeros(12, np.float64)}, "mixes dtypes"),
    (lambda: {**_gru_state(reverse=False, layers=1), "rnn.weight_ih": np.zeros((12, 3), np.float32)},
     "mixes cell keys"),
])
def test_inconsistent_state_dicts_are_refused(cli, tmp_path, make, words):
    src = tmp_path / "bad.safetensors"
    save_file(make(), str(src))
    done = cli("convert", src, tmp_path / "out.pt")
    assert done.returncode == 2, done.stdout
    assert words in done.stderr and str(src) in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]  # no partial file


def test_broken_safetensors(cli, tmp_path):
    src = tmp_path / "cut.safetensors"
    save_file(_gru_state(), str(src))
    src.write_bytes(src.read_bytes()[:300])
    done = cli("inspect", src)
    assert done.returncode == 2 and "not a readable safetensors file" in done.stderr


def _torch_state_with(dtype_of, **extra):
    """A torch GRU state dict (plus `extra`) saved by safetensors.torch, recurrent weights in `dtype_of`."""
    torch.manual_seed(0)
    state = {f"rnn.{k}": v.to(dtype_of) for k, v in torch.nn.GRU(3, 4).state_dict().items()}
    return {**state, **extra}


def test_bfloat16_recurrent_weights_are_refused_with_what_to_do(cli, tmp_path):
    from safetensors.torch import save_file as save_torch

    src = tmp_path / "bf16.safetensors"
    save_torch(_torch_state_with(torch.bfloat16), str(src))
    done = cli("convert", src, tmp_path / "out.pt")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert "is bfloat16" in done.stderr and "model.float()" in done.stderr and str(src) in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.safetensors"]


def test_other_bfloat16_tensors_ride_along_as_float32(cli, tmp_path):
    from safetensors.torch import save_file as save_torch

    head = torch.randn(2, 4).to(torch.bfloat16)
    src = tmp_path / "head.safetensors"
    save_torch(_torch_state_with(torch.float32, **{"head.weight": head}), str(src))
    bundle = rnnx.load(src)
    assert "head.weight: bfloat16 read as float32" in bundle.source["notes"]
    done = cli("convert", src, tmp_path / "out.pt")
    assert done.returncode == 0, done.stderr
    written = torch.load(tmp_path / "out.pt", weights_only=True)
    assert written["head.weight"].dtype == torch.float32
    assert torch.equal(written["head.weight"], head.float())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_integer_recurrent_weights_are_refused(cli, tmp_path, dtype):
    from safetensors.torch import save_file as save_torch

    src = tmp_path / "int.safetensors"
    save_torch(_torch_state_with(dtype), str(src))
    done = cli("inspect", src)
    assert done.returncode == 2 and f"holds {str(dtype)[6:]} weights" in done.stderr, done.stderr


def test_a_header_too_large_says_so_without_blaming_bfloat16(cli, tmp_path):
    src = tmp_path / "huge.safetensors"
    src.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    done = cli("inspect", src)
    assert done.returncode == 2 and "not a readable safetensors file" in done.stderr
    assert "bfloat16" not in done.stderr and "Traceback" not in done.stderr
