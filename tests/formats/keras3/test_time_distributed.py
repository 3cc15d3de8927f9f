"""TimeDistributed(LSTM / GRU / SimpleRNN / Bidirectional(...)) in Keras 3 files: read where Keras 3 keeps
the wrapped layer (`layers/time_distributed/layer/cell/vars/0..2`), written back there, and translated
from a tf_keras model; Keras 3 and tf_keras themselves are the oracles."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import max_abs  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import reference  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
TOL = 1e-5
INPUT = (4, 6, 3)  # TimeDistributed over 4 frames of 6-step sequences with 3 features


def _randomised(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in model.get_weights()])
    return model


def _x(seed=0, batch=2):
    return np.random.default_rng(seed).standard_normal((batch,) + INPUT).astype(np.float32)


@pytest.fixture(scope="module")
def keras3_model(tmp_path_factory):
    import keras

    L = keras.layers
    inp = keras.Input(INPUT)
    a = L.TimeDistributed(L.LSTM(5))(inp)
    b = L.TimeDistributed(L.GRU(4, return_sequences=True))(inp)
    b = L.TimeDistributed(L.SimpleRNN(2))(b)
    c = L.TimeDistributed(L.Bidirectional(L.GRU(3, reset_after=False)))(inp)
    out = L.Dense(2)(L.Concatenate()([a, b, c]))
    model = _randomised(keras.Model(inp, out), seed=1)
    folder = tmp_path_factory.mktemp("td")
    model.save(folder / "td.keras")
    model.save_weights(folder / "td.weights.h5")
    return model, folder


@pytest.mark.parametrize("name", ["td.keras", "td.weights.h5"])
def test_wrapped_recurrent_layers_are_read_where_keras_3_keeps_them(keras3_model, name):
    """rnnx's reference of each layer read equals the wrapped Keras 3 layer run on one sequence."""
    model, folder = keras3_model
    bundle = rnnx.load(folder / name)
    names = [layer.name for layer in model.layers if layer.__class__.__name__ == "TimeDistributed"]
    assert sorted(l.name for l in bundle.layers) == sorted(names)
    for rec in bundle.layers:
        assert rec.provenance["wrapper"] == "TimeDistributed"
        inner = model.get_layer(rec.name).layer
        x = np.random.default_rng(2).standard_normal((3, 6, rec.input_size)).astype(np.float32)
        Y, _, _ = reference.run_batch_first(rec, x)
        if inner.return_sequences:
            want = np.concatenate([Y[:, :, d] for d in range(rec.num_directions)], -1)
        else:  # the last step each direction computed: t = -1 forward, t = 0 backward
            want = np.concatenate([Y[:, -1, 0]] + ([Y[:, 0, 1]] if rec.num_directions == 2 else []), -1)
        assert max_abs(np.asarray(inner(x)), want) <= TOL, rec.name


def test_keras_archive_round_trip_loads_and_predicts_as_the_source(keras3_model, tmp_path):
    import keras

    model, folder = keras3_model
    out = tmp_path / "out.keras"
    rnnx.convert(folder / "td.keras", out)
    x = _x(3)
    assert max_abs(keras.models.load_model(out)(x), model(x)) <= TOL


def test_weights_file_written_from_either_source_loads_into_the_model(keras3_model, tmp_path):
    """Paths layers/time_distributed[_n]/layer/cell/vars/..., so model.load_weights fills the wrapped cells."""
    import keras

    model, folder = keras3_model
    x = _x(4)
    for source in ("td.keras", "td.weights.h5"):
        out = tmp_path / f"from_{source.split('.')[1]}.weights.h5"
        rnnx.convert(folder / source, out)
        fresh = _randomised(keras.models.clone_model(model), seed=9)
        fresh.load_weights(out)
        assert max_abs(fresh(x), model(x)) <= TOL, source


def test_whole_keras_3_model_to_onnx(keras3_model, tmp_path):
    import onnxruntime as ort

    model, folder = keras3_model
    out = tmp_path / "td.onnx"
    rnnx.convert(folder / "td.keras", out)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _x(5, batch=3)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert max_abs(got, model(x)) <= TOL


def test_tf_keras_time_distributed_model_becomes_a_keras_archive(tmp_path):
    """The same model as a tf_keras .h5 (CuDNN-free) is translated to Keras 3, wrapped layers included."""
    import keras
    import tf_keras

    L = tf_keras.layers
    inp = tf_keras.Input(INPUT)
    a = L.TimeDistributed(L.LSTM(5))(inp)
    b = L.TimeDistributed(L.GRU(4, return_sequences=True))(inp)
    b = L.TimeDistributed(L.SimpleRNN(2))(b)
    c = L.TimeDistributed(L.Bidirectional(L.LSTM(3)))(inp)
    model = _randomised(tf_keras.Model(inp, L.Concatenate()([a, b, c])), seed=7)
    model.save(str(tmp_path / "k2.h5"))
    out = tmp_path / "k3.keras"
    rnnx.convert(tmp_path / "k2.h5", out)
    x = _x(6)
    assert max_abs(keras.models.load_model(out)(x), model(x)) <= TOL
