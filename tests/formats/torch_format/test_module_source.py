"""--to torch-module: the nn.Module source loads the matching .pt strictly; names never become code."""

import importlib.util
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

import rnnx


def load_source(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_keras_source_loads_strictly(fixtures, tmp_path, cli):
    src = fixtures / "keras2" / "cudnn_nested_weights.h5"
    done = cli("convert", src, tmp_path / "modules.py", "--to", "torch-module")
    assert done.returncode == 0, done.stderr
    rnnx.convert(src, tmp_path / "model.pt")
    model = load_source(tmp_path / "modules.py").Model()
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    model.load_state_dict(state, strict=True)
    assert isinstance(model.encoder_inner_lstm, torch.nn.LSTM) and model.encoder_inner_lstm.batch_first
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_torch_checkpoint_keeps_module_paths(fixtures, tmp_path):
    src = fixtures / "torch" / "checkpoint.ckpt"
    notes = rnnx.save(rnnx.load(src), tmp_path / "net.py")
    assert any("not built" in n and "encoder.norm, head" in n for n in notes)
    rnnx.convert(src, tmp_path / "net.pt")
    model = load_source(tmp_path / "net.py").Model()
    result = model.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["encoder.norm.bias", "encoder.norm.weight", "head.bias", "head.weight"]
    assert model.encoder.rnn.num_layers == 2


def test_bare_module_at_the_root(fixtures, tmp_path):
    rnnx.convert(fixtures / "torch" / "lstm_stack.pt", tmp_path / "stack.py")
    module = load_source(tmp_path / "stack.py").Model()
    assert isinstance(module, torch.nn.LSTM)
    module.load_state_dict(torch.load(fixtures / "torch" / "lstm_stack.pt", weights_only=True), strict=True)


def test_hostile_names_stay_strings(tmp_path):
    """A module path that is Python code in disguise is written as a string literal, never run."""
    hostile = 'x"""\n__import__("pathlib").Path("pwned").touch()\n#'
    rng = np.random.default_rng(0)
    state = {f"{hostile}.weight_ih_l0": rng.standard_normal((4, 2)).astype(np.float32),
             f"{hostile}.weight_hh_l0": rng.standard_normal((4, 4)).astype(np.float32)}
    save_file(state, str(tmp_path / "evil.safetensors"))
    rnnx.convert(tmp_path / "evil.safetensors", tmp_path / "evil.py")
    run = tmp_path / "run"
    run.mkdir()
    code = ("import sys; sys.path.insert(0, '..'); import evil; m = evil.Model(); "
            "print(sorted(k for k, _ in m.named_parameters()))")
    done = subprocess.run([sys.executable, "-c", code], cwd=run, capture_output=True, text=True, check=True)
    assert not (run / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert "weight_hh_l0" in done.stdout and "\\n__import__" in done.stdout


def test_torch_module_is_not_a_source(cli, tmp_path):
    (tmp_path / "m.py").write_text("print('hi')\n")
    done = cli("inspect", tmp_path / "m.py")
    assert done.returncode == 2 and "cannot read torch-module files" in done.stderr
