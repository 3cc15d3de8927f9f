"""RNN(cell) files written back by rnnx, and TF op layers rnnx refuses (test_families.py has the conversions)."""

import re

import numpy as np


def test_stacked_cells_keras_archive_round_trips_through_rnnx(tmp_path):
    """The Keras 3 reader gives RNN(cell) and each stacked cell its canonical layer ("rnn/<cell>"); writing
    the bundle back as .keras puts every cell's variables where Keras 3 loads them."""
    import keras

    import rnnx

    L = keras.layers
    x = keras.Input((5, 4))
    cells = [L.LSTMCell(3, name="first"), L.GRUCell(2, name="second"), L.LSTMCell(2, name="third")]
    stacked = L.RNN(L.StackedRNNCells(cells), return_sequences=True, name="stack")(x)
    single = L.Bidirectional(L.RNN(L.SimpleRNNCell(3)), name="bi")(x)
    model = keras.Model(x, [stacked, single])
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(0.0, 0.5, tuple(variable.shape)).astype(np.float32))
    src, dst = tmp_path / "cells.keras", tmp_path / "copy.keras"
    model.save(src)
    bundle = rnnx.load(src)
    found = {item.name: item.cell for item in bundle.items if isinstance(item, rnnx.RecurrentLayer)}
    assert found == {"stack/first": "lstm", "stack/second": "gru", "stack/third": "lstm", "bi": "rnn"}, found
    rnnx.convert(src, dst)
    copy = keras.models.load_model(dst)
    data = rng.normal(size=(2, 5, 4)).astype(np.float32)
    for want, got in zip(model(data), copy(data)):
        np.testing.assert_array_equal(np.asarray(want), np.asarray(got))


def test_unconverted_tf_op_is_refused_by_layer_and_function(tmp_path, cli):
    import tensorflow as tf
    import tf_keras

    x = tf_keras.Input((5, 4))
    y = tf.math.cumsum(tf_keras.layers.LSTM(3, return_sequences=True)(x), axis=1)
    src, dst = tmp_path / "cumsum.h5", tmp_path / "cumsum.onnx"
    tf_keras.Model(x, y).save(src)
    result = cli("convert", src, dst)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message and message.count("\n") == 0, message
    # tf_keras names the layer tf.math.cumsum, or tf.math.cumsum_N after earlier models in the same process
    assert re.search(r"'tf\.math\.cumsum(_\d+)?' \(TFOpLambda\)", message) and "calls tf.math.cumsum" in message, message
    assert "--engine tf2onnx" in message and not dst.exists()


def test_tf_keras_stacked_cells_with_nested_initial_states(tmp_path):
    """tf_keras records the initial states of an RNN(StackedRNNCells) as nested inbound entries, one list
    per cell; both whole-model backends read them and compute what tf_keras computes."""
    import sys
    from pathlib import Path

    import onnxruntime as ort
    import tf_keras

    import rnnx

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from torch_helpers import import_model, run_torch

    L = tf_keras.layers
    x, h0, c0, h1 = L.Input((5, 3)), L.Input((4,)), L.Input((4,)), L.Input((2,))
    y = L.RNN([L.LSTMCell(4), L.GRUCell(2)], return_sequences=True)(x, initial_state=[[h0, c0], h1])
    model = tf_keras.Model([x, h0, c0, h1], y)
    model.save(tmp_path / "stacked.h5")
    rng = np.random.default_rng(0)
    feeds = [rng.normal(size=(3, *i.shape[1:])).astype(np.float32) for i in model.inputs]
    want = np.asarray(model(feeds, training=False))
    zero_states = np.asarray(model([feeds[0]] + [np.zeros_like(f) for f in feeds[1:]], training=False))
    assert np.abs(zero_states - want).max() > 1e-2  # the states change the output: a dropped state would show

    rnnx.convert(tmp_path / "stacked.h5", tmp_path / "stacked.onnx")
    session = ort.InferenceSession(str(tmp_path / "stacked.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: f for i, f in zip(session.get_inputs(), feeds)})[0]
    assert np.abs(got - want).max() <= 1e-5
    rnnx.convert(tmp_path / "stacked.h5", tmp_path / "stacked.py", to="torch-model")
    (got,) = run_torch(import_model(tmp_path / "stacked.py"), feeds)
    assert np.abs(got - want).max() <= 1e-5
