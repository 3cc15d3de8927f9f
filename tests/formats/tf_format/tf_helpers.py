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
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    folder = fixtures / "tensorflow"
    if name == "cudnn":  # tf_keras's model_from_json cannot locate CuDNNLSTM by module: built as the fixture was
        model = tf_keras.Sequential([tf_keras.layers.Input((None, 3)), CuDNNLSTM(4, name="cudnn_lstm"),
                                     tf_keras.layers.Dense(2, name="head")])
    else:
        model = tf_keras.models.model_from_json((folder / f"{name}.json").read_text())
    model.load_weights(str(folder / f"{name}_ckpt" / "ckpt")).expect_partial()
    if name != "cudnn":
        return model
    h5 = tmp_path / "cudnn_weights.h5"
    model.save_weights(str(h5))
    twin = tf_keras.models.model_from_json((folder / "cudnn_cpu.json").read_text())
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
