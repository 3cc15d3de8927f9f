"""Whole Keras models -> PyTorch source + safetensors (--to torch-model); tf_keras / Keras 3 are the oracle."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE, load_keras2  # noqa: E402
from torch_helpers import import_model, keras_feeds, keras_predict, max_error, run_torch  # noqa: E402

import rnnx  # noqa: E402

# fixture -> whether its inputs are token ids
KERAS2 = {
    "k2_seed_cudnn.h5": False,
    "k2_cudnn_mix.h5": False,
    "k2_merges_masked.h5": True,
    "k2_merges.h5": True,
    "k2_masking.h5": False,
    "k2_states.h5": False,
    "k2_layers.h5": False,
    "k2_activations.h5": False,
    "k2_nested.h5": False,
    "k2_time_distributed.h5": False,
}
KERAS3 = {"k3_text.keras": 20, "k3_activations.keras": None, "k3_nested.keras": None}


def _export(src, tmp_path, standalone=False, config=None):
    dst = tmp_path / "model.py"
    rnnx.convert(src, dst, to="torch-model", config=config, standalone=standalone)
    return dst, import_model(dst)


@pytest.mark.parametrize("name", KERAS2)
def test_keras2_model_matches_tf_keras(name, models_dir, tmp_path):
    _, model = _export(models_dir / name, tmp_path)
    keras_model = load_keras2(models_dir / name)
    feeds = keras_feeds(keras_model, tokens=KERAS2[name], vocab=20)
    error = max_error(keras_predict(keras_model, feeds), run_torch(model, feeds))
    assert error <= TOLERANCE, f"{name}: max error {error:.3g}"


@pytest.mark.parametrize("name", KERAS3)
def test_keras3_model_matches_keras3(name, models_dir, tmp_path):
    import keras

    _, model = _export(models_dir / name, tmp_path)
    keras_model = keras.models.load_model(models_dir / name)
    vocab = KERAS3[name]
    feeds = keras_feeds(keras_model, seed=3, tokens=vocab is not None and len(keras_model.inputs) == 1,
                        vocab=vocab or 10)
    error = max_error(keras_predict(keras_model, feeds), run_torch(model, feeds))
    assert error <= TOLERANCE, f"{name}: max error {error:.3g}"


def test_stateful_states_carry_over_two_calls_and_reset(models_dir, tmp_path):
    _, model = _export(models_dir / "k2_stateful.h5", tmp_path)
    keras_model = load_keras2(models_dir / "k2_stateful.h5")
    keras_model.reset_states()
    first, second = keras_feeds(keras_model, seed=1), keras_feeds(keras_model, seed=2)
    expected = [keras_predict(keras_model, first)[0], keras_predict(keras_model, second)[0]]
    got = [run_torch(model, first)[0], run_torch(model, second)[0]]
    assert max_error(expected, got) <= TOLERANCE
    model.reset_states()
    keras_model.reset_states()
    assert max_error(keras_predict(keras_model, second), run_torch(model, second)) <= TOLERANCE
    assert np.max(np.abs(run_torch(model, second)[0] - got[1])) > 1e-4  # the states did carry over
    import torch

    scripted = torch.jit.script(model)  # the carried states work scripted too
    scripted.reset_states()
    assert max_error(expected, [run_torch(scripted, first)[0], run_torch(scripted, second)[0]]) <= TOLERANCE


def test_damaged_weight_fails_the_comparison(models_dir, tmp_path):
    import safetensors.torch
    import torch

    dst, model = _export(models_dir / "k2_cudnn_mix.h5", tmp_path)
    keras_model = load_keras2(models_dir / "k2_cudnn_mix.h5")
    feeds = keras_feeds(keras_model)
    assert max_error(keras_predict(keras_model, feeds), run_torch(model, feeds)) <= TOLERANCE
    state = safetensors.torch.load_file(str(dst.with_suffix(".safetensors")))
    key = next(k for k in state if "weight_hh" in k)
    state[key].view(-1)[3] += 0.5
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert max_error(keras_predict(keras_model, feeds), run_torch(model, feeds)) > 1e-3


def test_standalone_file_needs_no_rnnx(models_dir, tmp_path, cli):
    """--standalone: the file runs in a process where rnnx cannot be imported, and computes the same."""
    import subprocess

    dst = tmp_path / "masking.py"
    result = cli("convert", models_dir / "k2_masking.h5", dst, "--to", "torch-model", "--standalone")
    assert result.returncode == 0, result.stderr
    text = dst.read_text()
    assert "rnnx_nn" not in text and "import rnnx" not in text and "from rnnx" not in text
    keras_model = load_keras2(models_dir / "k2_masking.h5")
    feeds = keras_feeds(keras_model, seed=4)
    np.save(tmp_path / "x.npy", feeds[0])
    script = ("import sys, numpy as np, torch, safetensors.torch\n"
              "sys.modules['rnnx'] = None\n"  # importing rnnx now fails
              "sys.path.insert(0, sys.argv[1])\n"
              "from masking import Model\n"
              "m = Model(); m.load_state_dict(safetensors.torch.load_file(sys.argv[1] + '/masking.safetensors'))\n"
              "m.eval()\n"
              "out = m(torch.from_numpy(np.load(sys.argv[1] + '/x.npy')))\n"
              "np.savez(sys.argv[1] + '/out.npz', *[o.detach().numpy() for o in out])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    with np.load(tmp_path / "out.npz") as data:
        got = [data[f"arr_{k}"] for k in range(len(data.files))]
    assert max_error(keras_predict(keras_model, feeds), got) <= TOLERANCE
