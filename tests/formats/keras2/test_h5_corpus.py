"""The real Keras 2 files of the shared corpus: inspect, convert, and tf_keras / Keras 3 as the oracle."""

import json

import h5py
import jsonschema
import numpy as np
import pytest

import rnnx
from tests.conftest import ROOT

TOL = 1e-5
FULL_MODELS = {  # file -> input shape the model's config fixes
    "head_pose_cudnnlstm_functional_full.h5": (1, 6500, 6),
    "stockprice_cudnnlstm4_full.h5": (2, 60, 1),
    "medaka_bigru_full.hdf5": (1, 1000, 10),
    "medaka_lstm_theano_full.h5": (256, 3, 11),
}
WEIGHTS_ONLY = {"textgenrnn_cudnnlstm2_weights.hdf5": None, "lstm_chem_weights.hdf5": "lstm_chem_model_arch.json"}
CPU_SOURCES = ("medaka_bigru_full.hdf5", "medaka_lstm_theano_full.h5", "lstm_chem_weights.hdf5")
CUDNN_SOURCES = ("head_pose_cudnnlstm_functional_full.h5", "stockprice_cudnnlstm4_full.h5",
                 "textgenrnn_cudnnlstm2_weights.hdf5")


@pytest.fixture(scope="module")
def k2(corpus):
    return corpus / "keras2"


@pytest.fixture(scope="module")
def tfk():
    import tf_keras

    return tf_keras


def config_args(name, k2):
    cfg = WEIGHTS_ONLY.get(name)
    return ["--config", k2 / cfg] if cfg else []


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        root.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def x_of(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", sorted({**FULL_MODELS, **WEIGHTS_ONLY}))
def test_inspect_and_convert_every_corpus_file(cli, k2, tmp_path, name):
    schema = json.loads((ROOT / "schemas" / "inspect.schema.json").read_text())
    text = cli("inspect", k2 / name, *config_args(name, k2))
    assert text.returncode == 0, text.stderr
    assert "recurrent layer" in text.stdout
    js = cli("inspect", k2 / name, "--json", *config_args(name, k2))
    assert js.returncode == 0, js.stderr
    report = json.loads(js.stdout)
    jsonschema.validate(report, schema)
    assert report["format"] == "keras-h5" and report["layers"]
    assert all(layer["targets"]["keras-h5"] == "ok" for layer in report["layers"])
    done = cli("convert", k2 / name, tmp_path / "out.h5", *config_args(name, k2))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


@pytest.mark.parametrize("name", sorted(FULL_MODELS))
def test_converted_full_models_match_tf_keras_loading_the_original(tfk, k2, tmp_path, name):
    """Oracle: the rewritten config built by tf_keras, with the ORIGINAL file loaded by tf_keras
    (its loader converts CuDNN weights). rnnx's output must load with load_model alone."""
    out = tmp_path / "out.h5"
    rnnx.convert(k2 / name, out)
    with h5py.File(out) as f:
        config = f.attrs["model_config"]
    oracle = tfk.models.model_from_json(config.decode() if isinstance(config, bytes) else config)
    oracle.load_weights(str(k2 / name))
    x = x_of(FULL_MODELS[name])
    got = tfk.models.load_model(str(out)).predict(x, verbose=0)
    err = float(np.abs(got - oracle.predict(x, verbose=0)).max())
    assert err <= TOL
    assert "CuDNN" not in json.dumps(json.loads(config))


def test_textgenrnn_weights_convert_and_custom_layer_passes_through(tfk, k2, tmp_path):
    """Weights only, CuDNN recognised from shapes; tf_keras's own CuDNN conversion is the oracle,
    Keras 3 runs rnnx's output; the custom attention layer's tensor is copied bit for bit."""
    import keras
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    src = k2 / "textgenrnn_cudnnlstm2_weights.hdf5"
    out = tmp_path / "out.h5"
    rnnx.convert(src, out)
    a, b = datasets(src), datasets(out)
    assert a.keys() == b.keys()
    for key in ("attention/attention/attention_W:0", "embedding/embedding/embeddings:0", "output/output/kernel:0"):
        assert np.array_equal(a[key], b[key])
    # read back without a config: keras_version 2.1.5 would say hard_sigmoid, the rnnx_layer attribute says sigmoid
    back = rnnx.load(out)
    assert all(r.provenance["activations_from"] == "rnnx" and r.activations[0].name == "Sigmoid" for r in back.layers)
    for layer, n_in in (("rnn_1", 100), ("rnn_2", 128)):
        names = [f"{layer}/{layer}/{w}:0" for w in ("kernel", "recurrent_kernel", "bias")]
        reference = tfk.layers.LSTM(128, return_sequences=True)
        reference.build((None, None, n_in))
        reference.set_weights(preprocess_weights_for_loading(reference, [a[n] for n in names], "2.1.5", "tensorflow"))
        mine = keras.layers.LSTM(128, return_sequences=True)
        mine.build((None, None, n_in))
        mine.set_weights([b[n] for n in names])
        x = x_of((2, 9, n_in), seed=1)
        assert float(np.abs(np.asarray(mine(x)) - np.asarray(reference(x))).max()) <= TOL


def test_lstm_chem_with_config(tfk, k2, tmp_path, cli):
    src, arch = k2 / "lstm_chem_weights.hdf5", k2 / "lstm_chem_model_arch.json"
    assert cli("convert", src, tmp_path / "out.h5", "--config", arch).returncode == 0
    bundle = rnnx.load(src, config=arch)
    assert [(r.name, r.units, r.options["return_sequences"]) for r in bundle.layers] == \
        [("lstm", 256, True), ("lstm_1", 256, True)]
    assert bundle.others[0].class_name == "Dense" and bundle.source["has_architecture"]
    original = tfk.models.model_from_json(arch.read_text())
    original.load_weights(str(src))
    converted = tfk.models.model_from_json(arch.read_text())
    converted.load_weights(str(tmp_path / "out.h5"))
    x = x_of((2, 5, 52))
    assert float(np.abs(converted.predict(x, verbose=0) - original.predict(x, verbose=0)).max()) <= TOL


@pytest.mark.parametrize("name", CPU_SOURCES)
def test_cpu_corpus_round_trip_through_rnnx_is_exact(k2, tmp_path, name):
    cfg = WEIGHTS_ONLY.get(name)
    rnnx.convert(k2 / name, tmp_path / "b.rnnx", config=k2 / cfg if cfg else None)
    rnnx.convert(tmp_path / "b.rnnx", tmp_path / "back.h5")
    a, b = datasets(k2 / name), datasets(tmp_path / "back.h5")
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", CUDNN_SOURCES)
def test_cudnn_corpus_round_trip_to_cudnn_is_exact(k2, tmp_path, name):
    rnnx.convert(k2 / name, tmp_path / "b.rnnx")
    rnnx.convert(tmp_path / "b.rnnx", tmp_path / "back.h5", cudnn=True)
    a, b = datasets(k2 / name), datasets(tmp_path / "back.h5")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["medaka_bigru_full.hdf5", "medaka_lstm_theano_full.h5"])
def test_reader_matches_tf_keras_on_old_cpu_files(tfk, k2, name):
    """Keras 2.0.4 (theano) and 2.1.5 files with hard_sigmoid: rnnx's reference on the read layers
    against the layers of the original model loaded by tf_keras."""
    from rnnx.canonical import reference
    from rnnx.canonical.activations import HARD_SIGMOID_KERAS2

    model = tfk.models.load_model(str(k2 / name), compile=False)
    bundle = rnnx.load(k2 / name)
    for rec in bundle.layers:
        assert rec.activations[0] == HARD_SIGMOID_KERAS2
        layer = model.get_layer(rec.name)
        x = x_of((2, 6, rec.input_size), seed=2)
        Y, _, _ = reference.run_batch_first(rec, x)
        if rec.num_directions == 2:
            want = np.concatenate([Y[:, :, 0], Y[:, :, 1]], -1)
        else:
            want = Y[:, :, 0] if layer.return_sequences else Y[:, -1, 0]
        assert float(np.abs(np.asarray(layer(x)) - want).max()) <= TOL


@pytest.mark.parametrize("name", ["medaka_bigru_full.hdf5", "medaka_lstm_theano_full.h5"])
def test_old_era_full_models_load_and_predict_as_the_source(tfk, k2, tmp_path, name):
    """Keras 2.1.5 (reset-before GRU, hard_sigmoid) and 2.0.4 (theano) full models: the .h5 rnnx writes
    loads with load_model alone and predicts what tf_keras predicts on the source file itself, and its
    config states the era's defaults."""
    out = tmp_path / "out.h5"
    rnnx.convert(k2 / name, out)
    x = x_of(FULL_MODELS[name])
    want = tfk.models.load_model(str(k2 / name), compile=False).predict(x, verbose=0)
    got = tfk.models.load_model(str(out), compile=False).predict(x, verbose=0)
    assert float(np.abs(got - want).max()) <= TOL
    with h5py.File(out) as f:
        written = json.loads(f.attrs["model_config"])
    recurrent = [e for e in _entries(written) if e["class_name"] in ("GRU", "LSTM")]
    assert recurrent and all(e["config"]["recurrent_activation"] == "hard_sigmoid" and "implementation" in e["config"]
                             for e in recurrent)
    assert all(e["config"]["reset_after"] is False for e in recurrent if e["class_name"] == "GRU")

def _entries(value):
    """Every serialized layer inside a config, depth first."""
    if isinstance(value, dict):
        if isinstance(value.get("class_name"), str) and isinstance(value.get("config"), dict):
            yield value
        for v in value.values():
            yield from _entries(v)
    elif isinstance(value, list):
        for v in value:
            yield from _entries(v)


def test_keras_2_0_config_without_era_keys_loads_as_it_was_saved(tfk, tmp_path):
    """A Keras 2.0 config has no `reset_after` (2.0 had only the reset-before GRU) and may leave out
    `recurrent_activation` / `implementation`, which then meant hard_sigmoid and 0. tf_keras reads a
    missing reset_after as True and a missing recurrent_activation as sigmoid, so such a file does not
    load (or computes other numbers); rnnx's .h5 states them and loads as the model that was saved.
    Keras 2.0 itself cannot run here: the file is a tf_keras model whose config is stripped of those keys
    and stamped keras_version 2.0.8, as Keras 2.0 wrote it."""
    L = tfk.layers
    model = tfk.Sequential([
        tfk.Input((6, 3)),
        L.Bidirectional(L.GRU(4, reset_after=False, recurrent_activation="hard_sigmoid", return_sequences=True)),
        L.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True),
        L.GRU(2, reset_after=False, recurrent_activation="hard_sigmoid"),
    ])
    rng = np.random.default_rng(3)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in model.get_weights()])
    src = tmp_path / "keras20.h5"
    model.save(str(src))
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for entry in _entries(config):
            if entry["class_name"] in ("GRU", "LSTM"):
                for key in ("reset_after", "recurrent_activation", "implementation"):
                    entry["config"].pop(key, None)
        f.attrs["model_config"] = json.dumps(config).encode()
        for attrs in (f.attrs, f["model_weights"].attrs):
            attrs["keras_version"] = b"2.0.8"
    with pytest.raises(ValueError):
        tfk.models.load_model(str(src), compile=False)  # what a user of the stripped file meets today
    out = tmp_path / "out.h5"
    rnnx.convert(src, out)
    x = x_of((2, 6, 3), seed=4)
    got = np.asarray(tfk.models.load_model(str(out), compile=False)(x))
    assert float(np.abs(got - np.asarray(model(x))).max()) <= TOL
