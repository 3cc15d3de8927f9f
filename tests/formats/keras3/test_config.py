"""Keras 2 config -> Keras 3 config: every supported layer kind, checked by running both frameworks."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import (FIXTURES, KERAS2, archive_config, max_abs, tf_keras_cpu_model,  # noqa: E402
                            use_keras3_hard_sigmoid)

import rnnx  # noqa: E402
from rnnx.canonical import Direction, RecurrentLayer  # noqa: E402
from rnnx.formats.keras3 import config as keras3_config  # noqa: E402


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        v = rng.uniform(-0.6, 0.6, w.shape)
        if "moving_variance" in w.name:
            v = np.abs(v) + 0.5
        values.append(v.astype(w.dtype.as_numpy_dtype))
    model.set_weights(values)


def _sequential_zoo():
    import tf_keras

    L = tf_keras.layers
    return tf_keras.Sequential([
        L.Conv1D(4, 3, padding="same", activation="relu", kernel_regularizer=tf_keras.regularizers.L2(0.01),
                 kernel_constraint=tf_keras.constraints.MaxNorm(2.0),
                 kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.1), batch_input_shape=(None, 8, 3)),
        L.BatchNormalization(),
        L.MaxPooling1D(2),
        L.AveragePooling1D(1, padding="same"),
        L.Dropout(0.1), L.SpatialDropout1D(0.1), L.GaussianNoise(0.1), L.GaussianDropout(0.1),
        L.LSTM(5, return_sequences=True),
        L.LayerNormalization(),
        L.Permute((2, 1)),
        L.Reshape((4, 5)),
        L.TimeDistributed(L.Dense(3)),
        L.Activation("tanh"),
        L.GRU(3, return_sequences=True),
        L.GlobalAveragePooling1D(),
        L.RepeatVector(2),
        L.SimpleRNN(2, return_sequences=True),
        L.Flatten(),
        L.Dense(2, activation="softmax"),
    ], name="zoo_seq")


def _functional_zoo():
    import tf_keras

    L = tf_keras.layers
    tokens = L.Input((6,), name="tokens")
    e = L.Embedding(10, 4, name="embed")(tokens)
    a = L.LSTM(3, return_sequences=True, name="lstm_masked")(L.Masking(0.0, name="mask")(e))
    b = L.Bidirectional(L.GRU(2, return_sequences=True, reset_after=False, recurrent_activation="sigmoid"),
                        name="bi_gru")(e)
    b = L.Dense(3, name="proj")(b)
    merged = [L.Add(name="add")([a, b]), L.Subtract(name="sub")([a, b]), L.Multiply(name="mul")([a, b]),
              L.Average(name="avg")([a, b]), L.Maximum(name="max")([a, b]), L.Minimum(name="min")([a, b])]
    h = L.Concatenate(name="cat")(merged)
    h = L.GlobalMaxPooling1D(name="gmax")(h)
    return tf_keras.Model(tokens, L.Dense(1, name="out")(h), name="zoo_fun")


@pytest.mark.parametrize("build, inputs", [
    (_sequential_zoo, lambda rng: rng.standard_normal((3, 8, 3)).astype("float32")),
    (_functional_zoo, lambda rng: rng.integers(0, 10, (3, 6)).astype("float32")),
], ids=["sequential", "functional"])
def test_every_layer_kind_translates_and_computes_the_same(build, inputs, tmp_path):
    import keras

    model = build()
    _randomize(model, 21)
    model.save(tmp_path / "zoo.h5")
    notes = rnnx.convert(tmp_path / "zoo.h5", tmp_path / "zoo.keras").notes
    assert not any("dropped" in n for n in notes), notes
    x = inputs(np.random.default_rng(22))
    loaded = keras.models.load_model(tmp_path / "zoo.keras")
    assert max_abs(loaded.predict(x, verbose=0), model.predict(x, verbose=0)) <= 1e-5
    assert [l.name for l in loaded.layers if not isinstance(l, keras.layers.InputLayer)] == \
        [l.name for l in model.layers if type(l).__name__ != "InputLayer"]


def test_initializers_regularizers_and_constraints_are_carried(tmp_path):
    import keras

    model = _sequential_zoo()
    model.save(tmp_path / "zoo.h5")
    rnnx.convert(tmp_path / "zoo.h5", tmp_path / "zoo.keras")
    conv = keras.models.load_model(tmp_path / "zoo.keras").layers[0]
    assert isinstance(conv.kernel_regularizer, keras.regularizers.L2)
    assert conv.kernel_regularizer.l2 == pytest.approx(0.01)
    assert isinstance(conv.kernel_constraint, keras.constraints.MaxNorm) and conv.kernel_constraint.max_value == 2.0
    assert isinstance(conv.kernel_initializer, keras.initializers.RandomNormal)
    assert conv.kernel_initializer.stddev == pytest.approx(0.1)
    layers = archive_config(tmp_path / "zoo.keras")["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer" and layers[0]["config"]["batch_shape"] == [None, 8, 3]


def test_keras3_config_keys_are_what_keras3_writes():
    """The key table rnnx writes from is Keras 3's own get_config, class by class."""
    import keras

    L = keras.layers
    samples = {
        "Embedding": L.Embedding(5, 3), "Masking": L.Masking(), "LSTM": L.LSTM(2), "GRU": L.GRU(2),
        "SimpleRNN": L.SimpleRNN(2), "Bidirectional": L.Bidirectional(L.LSTM(2)),
        "TimeDistributed": L.TimeDistributed(L.Dense(2)), "Dense": L.Dense(2), "Activation": L.Activation("relu"),
        "Dropout": L.Dropout(0.1), "SpatialDropout1D": L.SpatialDropout1D(0.1), "GaussianNoise": L.GaussianNoise(0.1),
        "GaussianDropout": L.GaussianDropout(0.1), "AlphaDropout": L.AlphaDropout(0.1),
        "ActivityRegularization": L.ActivityRegularization(), "Flatten": L.Flatten(), "Reshape": L.Reshape((6,)),
        "Permute": L.Permute((2, 1)), "RepeatVector": L.RepeatVector(2), "Concatenate": L.Concatenate(),
        "Add": L.Add(), "Subtract": L.Subtract(), "Multiply": L.Multiply(), "Average": L.Average(),
        "Maximum": L.Maximum(), "Minimum": L.Minimum(), "Conv1D": L.Conv1D(2, 2), "MaxPooling1D": L.MaxPooling1D(2),
        "AveragePooling1D": L.AveragePooling1D(2), "GlobalMaxPooling1D": L.GlobalMaxPooling1D(),
        "GlobalAveragePooling1D": L.GlobalAveragePooling1D(), "BatchNormalization": L.BatchNormalization(),
        "LayerNormalization": L.LayerNormalization(), "ReLU": L.ReLU(), "LeakyReLU": L.LeakyReLU(), "ELU": L.ELU(),
        "Softmax": L.Softmax(), "PReLU": L.PReLU(),
    }
    assert set(samples) == set(keras3_config.KEYS3)
    for name, layer in samples.items():
        written = set(layer.get_config()) - {"name", "trainable", "dtype", "quantization_config"}
        assert set(keras3_config.KEYS3[name]) == written, name


def _lstm(name="rnn"):
    rng = np.random.default_rng(0)
    d = Direction(W=rng.standard_normal((8, 3)).astype("float32"), R=rng.standard_normal((8, 2)).astype("float32"),
                  b_w=rng.standard_normal(8).astype("float32"))
    return RecurrentLayer(name, "lstm", [d])


def _config(**lstm_config):
    return {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "LSTM", "config": {"name": "rnn", "units": 2, "batch_input_shape": [None, 4, 3],
                                          **lstm_config}}]}}


def test_unknown_initializer_is_dropped_with_a_note():
    config, notes = keras3_config.translate(_config(kernel_initializer={"class_name": "Mystery", "config": {}}),
                                            {"rnn": _lstm()})
    assert config["config"]["layers"][1]["config"]["kernel_initializer"] is None
    assert any("Mystery" in n for n in notes)


def test_options_without_keras3_counterpart_are_noted_or_refused():
    _, notes = keras3_config.translate(_config(fancy_option=3), {"rnn": _lstm()})
    assert any("fancy_option" in n for n in notes)
    with pytest.raises(rnnx.UnsupportedError, match="time_major"):
        keras3_config.translate(_config(time_major=True), {"rnn": _lstm()})
    with pytest.raises(rnnx.UnsupportedError, match="input shape"):
        keras3_config.translate({"class_name": "Sequential", "config": {"layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}, {})


MODELS = FIXTURES / "models"  # the graph exporter's whole-model fixtures, made by tf_keras


@pytest.mark.parametrize("name", ["k2_seed_cudnn", "k2_cudnn_mix", "k2_layers", "k2_masking", "k2_merges",
                                  "k2_merges_masked", "k2_nested", "k2_stateful", "k2_states", "k2_activations"])
def test_whole_keras2_models_become_keras3_models(name, tmp_path):
    """Nested models, shared layers, masks, initial states, return_state, stateful layers, every activation."""
    import keras

    src, out = MODELS / f"{name}.h5", tmp_path / f"{name}.keras"
    accept = name == "k2_activations"
    if accept:
        with pytest.raises(rnnx.UnsupportedError, match="hard_sigmoid"):
            rnnx.convert(src, out)
    rnnx.convert(src, out, accept_activation_change=accept)
    model = keras.models.load_model(out)
    oracle = tf_keras_cpu_model(src)
    use_keras3_hard_sigmoid(oracle)
    rng = np.random.default_rng(23)
    xs = []
    for inp in oracle.inputs:
        shape = [inp.shape[0] or 3] + [d or 7 for d in inp.shape[1:]]
        xs.append(rng.integers(1, 5, shape).astype("int32") if "int" in str(inp.dtype)
                  else rng.standard_normal(shape).astype("float32"))
    want, got = oracle.predict(xs, verbose=0), model.predict(xs, verbose=0)
    want, got = (want, got) if isinstance(want, list) else ([want], [got])
    assert len(want) == len(got)
    assert max(max_abs(a, b) for a, b in zip(got, want)) <= 1e-5


def test_cudnn_nested_model_becomes_a_keras3_model(tmp_path):
    import keras

    from keras3_helpers import tf_keras_cpu_twin

    rnnx.convert(KERAS2 / "cudnn_nested_full.h5", tmp_path / "nested.keras")
    model = keras.models.load_model(tmp_path / "nested.keras")
    assert type(model.get_layer("encoder")).__name__ == "Sequential"
    x = np.random.default_rng(24).standard_normal((2, 6, 4)).astype("float32")
    assert max_abs(model.predict(x, verbose=0), tf_keras_cpu_twin("cudnn_nested").predict(x, verbose=0)) <= 1e-5


@pytest.mark.parametrize("name, layer", [("k2_lambda", "times_two"), ("k2_custom", "my_scale")])
def test_layers_rnnx_cannot_translate_are_refused(name, layer, tmp_path, cli):
    out = tmp_path / "x.keras"
    result = cli("convert", MODELS / f"{name}.h5", out)
    assert result.returncode == 2 and layer in result.stderr and ".weights.h5" in result.stderr
    assert not out.exists()


def test_keras_2_0_gru_without_reset_after_becomes_a_reset_before_keras3_gru(tmp_path):
    """A Keras 2.0 config has no reset_after (only reset-before GRUs existed); Keras 3 reads a missing key as
    True. The translation states reset_after=False, so Keras 3 computes what tf_keras computed for the saved
    model. The file is a tf_keras model whose config is stripped of the key and stamped 2.0.8."""
    import json

    import h5py
    import keras
    import tf_keras

    L = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((6, 3)),
                                 L.Bidirectional(L.GRU(4, reset_after=False, return_sequences=True)),
                                 L.GRU(2, reset_after=False)])
    _randomize(model, 11)
    src = tmp_path / "keras20.h5"
    model.save(str(src))
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"]
        for gru in (layers[1]["config"]["layer"]["config"], layers[2]["config"]):
            del gru["reset_after"]
        f.attrs["model_config"] = json.dumps(config).encode()
        for attrs in (f.attrs, f["model_weights"].attrs):
            attrs["keras_version"] = b"2.0.8"
    out = tmp_path / "out.keras"
    rnnx.convert(src, out)
    written = archive_config(out)["config"]["layers"]
    assert written[1]["config"]["layer"]["config"]["reset_after"] is False and \
        written[2]["config"]["reset_after"] is False
    x = np.random.default_rng(12).standard_normal((2, 6, 3)).astype(np.float32)
    assert max_abs(keras.models.load_model(out)(x), model(x)) <= 1e-5
