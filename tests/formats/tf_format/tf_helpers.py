"""Oracles of the TensorFlow-format tests: tf_keras running the model with the weights as stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOLERANCE = 1e-5


def tf_model(fixtures: Path, name: str, tmp_path: Path):
    """The fixture model NAME built from its JSON with the checkpoint's weights loaded by tf_keras.
    CuDNN layers cannot run on a CPU: their weights go to the CPU twin through tf_keras's own
    converting HDF5 load_weights."""
    import tf_keras
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    L = tf_keras.layers
    folder = fixtures / "tensorflow"
    # tf_keras's model_from_json cannot locate the CuDNN classes by module: built as the fixture was
    cudnn = {"cudnn": (CuDNNLSTM(4, name="cudnn_lstm"), L.LSTM(4, recurrent_activation="sigmoid", name="cudnn_lstm")),
             "cudnn_gru": (CuDNNGRU(4, name="cudnn_gru"),
                           L.GRU(4, reset_after=True, recurrent_activation="sigmoid", name="cudnn_gru"))}
    if name in cudnn:
        model = tf_keras.Sequential([L.Input((None, 3)), cudnn[name][0], L.Dense(2, name="head")])
    else:
        model = tf_keras.models.model_from_json((folder / f"{name}.json").read_text())
    model.load_weights(str(folder / f"{name}_ckpt" / "ckpt")).expect_partial()
    if name not in cudnn:
        return model
    h5 = tmp_path / "cudnn_weights.h5"
    model.save_weights(str(h5))
    twin = tf_keras.Sequential([L.Input((None, 3)), cudnn[name][1], L.Dense(2, name="head")])
    twin.load_weights(str(h5))
    return twin


def inputs_for(name: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "masked":  # token ids, right-padded with zeros (one row full length)
        tokens = rng.integers(1, 10, (3, 7)).astype(np.float32)
        tokens[1, 5:] = 0
        tokens[2, 3:] = 0
        return tokens
    return rng.normal(0.0, 1.0, (3, 7, 3)).astype(np.float32)


def keras_predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    dtype = np.int64 if "int64" in feed.type else np.int32 if "int32" in feed.type else np.float32
    return session.run(None, {feed.name: x.astype(dtype)})[0]


def max_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)))


def model_config(path: Path) -> dict:
    return json.loads(Path(path).read_text())
