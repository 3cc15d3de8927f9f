"""Real-world files to and from Keras 3, checked against the framework that made them.

Oracle for the Keras 2 files: tf_keras. CuDNN layers cannot run on CPU, so the CPU model is
built in tf_keras from the file's own config with CuDNNLSTM rewritten as LSTM(sigmoid) here,
and tf_keras's own converting load_weights fills it from the original file. For hard_sigmoid-era
files, the oracle is tf_keras with the layers' recurrent activation swapped for Keras 3's
hard_sigmoid (slope 1/6), which is what the accepted conversion promises.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import (archive_member, h5_datasets, max_abs, same_arrays, tf_keras_cpu_model,  # noqa: E402
                            use_keras3_hard_sigmoid)

import rnnx  # noqa: E402


CASES = [
    # file, --config, input (batch, steps) where the file leaves them open, hard_sigmoid era
    ("stockprice_cudnnlstm4_full.h5", None, (3, None), False),
    ("head_pose_cudnnlstm_functional_full.h5", None, (2, None), False),
    ("lstm_chem_weights.hdf5", "lstm_chem_model_arch.json", (2, 12), False),
    ("medaka_bigru_full.hdf5", None, (2, None), True),
    ("medaka_lstm_theano_full.h5", None, (None, None), True),
]


@pytest.mark.parametrize("name, config, size, hard", CASES, ids=[c[0].split("_")[0] + "_" + c[0].split("_")[1]
                                                                  for c in CASES])
def test_keras2_corpus_model_becomes_a_keras3_model(name, config, size, hard, corpus, tmp_path, cli):
    import keras

    src = corpus / "keras2" / name
    cfg = corpus / "keras2" / config if config else None
    out = tmp_path / "model.keras"
    args = ["convert", src, out] + (["--config", cfg] if cfg else [])
    if hard:
        refused = cli(*args)
        assert refused.returncode == 2 and "hard_sigmoid" in refused.stderr and not out.exists()
        args.append("--accept-activation-change")
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    if hard:
        assert "moves by up to" in result.stdout
    model = keras.models.load_model(out)  # no custom objects
    oracle = tf_keras_cpu_model(src, cfg)
    if hard:
        use_keras3_hard_sigmoid(oracle)
    batch, steps = size
    fixed = oracle.inputs[0].shape  # some files fix the batch size or the sequence length
    x = np.random.default_rng(11).standard_normal((fixed[0] or batch, fixed[1] or steps, fixed[2])).astype("float32")
    want = oracle.predict(x, verbose=0, batch_size=batch)
    assert max_abs(model.predict(x, verbose=0, batch_size=batch), want) <= 1e-5


def test_dino_reads_with_its_config(corpus):
    bundle = rnnx.load(corpus / "keras3" / "dino_lstm.keras")
    assert bundle.source["keras_version"] == "3.6.0"
    (lstm,) = bundle.layers
    assert (lstm.name, lstm.units, lstm.input_size, lstm.provenance["class_name"]) == ("lstm", 128, 13, "LSTM")
    assert [(o.name, o.class_name) for o in bundle.others] == [("embedding", "Embedding"), ("dense", "Dense")]


@pytest.mark.parametrize("via", [None, ".rnnx"])
def test_dino_back_to_keras(via, corpus, tmp_path):
    import keras

    src = corpus / "keras3" / "dino_lstm.keras"
    bundle = rnnx.load(src)
    if via:
        rnnx.save(bundle, tmp_path / f"mid{via}")
        bundle = rnnx.load(tmp_path / f"mid{via}")
    notes = rnnx.save(bundle, tmp_path / "dino.keras")
    assert any("optimizer" in n for n in notes)
    assert same_arrays(h5_datasets(archive_member(src, "model.weights.h5")),
                       h5_datasets(archive_member(tmp_path / "dino.keras", "model.weights.h5")))
    original, written = keras.models.load_model(src), keras.models.load_model(tmp_path / "dino.keras")
    x = np.random.default_rng(12).integers(0, 28, (4, 26))
    assert np.array_equal(original.predict(x, verbose=0), written.predict(x, verbose=0))


@pytest.mark.parametrize("target, extra", [("dino.onnx", ["--layer", "lstm"]), ("dino.safetensors", [])])
def test_dino_to_onnx_and_pytorch(target, extra, corpus, tmp_path, cli):
    out = tmp_path / target
    result = cli("convert", corpus / "keras3" / "dino_lstm.keras", out, "--verify", *extra)
    assert result.returncode == 0, result.stderr
    assert "matches its source" in result.stdout


def test_dino_lstm_in_torch_matches_keras3(corpus, tmp_path):
    """The safetensors LSTM, loaded in torch, computes the Keras 3 model's LSTM layer."""
    import keras
    import torch
    from safetensors.torch import load_file

    rnnx.convert(corpus / "keras3" / "dino_lstm.keras", tmp_path / "dino.safetensors")
    state = load_file(tmp_path / "dino.safetensors")
    net = torch.nn.LSTM(13, 128, batch_first=True)
    net.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("lstm.")})
    model = keras.models.load_model(corpus / "keras3" / "dino_lstm.keras")
    layer = model.get_layer("lstm")
    x = np.random.default_rng(13).standard_normal((3, 26, 13)).astype("float32")
    sub = keras.Sequential([keras.Input((26, 13)), keras.layers.LSTM(128, return_sequences=True)])
    sub.layers[0].set_weights(layer.get_weights())
    with torch.no_grad():
        got = net(torch.from_numpy(x))[0].numpy()
    assert max_abs(got, sub.predict(x, verbose=0)) <= 1e-5


def test_dino_weights_load_into_the_keras3_model(corpus, tmp_path):
    """A .weights.h5 written from the archive has the paths Keras 3 load_weights looks for."""
    import keras

    src = corpus / "keras3" / "dino_lstm.keras"
    rnnx.convert(src, tmp_path / "dino.weights.h5")
    original = keras.models.load_model(src)
    rebuilt = keras.models.load_model(src)
    for variable in rebuilt.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    rebuilt.load_weights(tmp_path / "dino.weights.h5")
    x = np.random.default_rng(15).integers(0, 28, (4, 26))
    assert np.array_equal(original.predict(x, verbose=0), rebuilt.predict(x, verbose=0))
