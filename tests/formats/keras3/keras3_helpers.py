"""Helpers shared by the Keras 3 tests: HDF5 trees, zips, the tf_keras oracle of the keras2 fixtures."""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
KERAS2 = FIXTURES / "keras2"
KERAS3 = FIXTURES / "keras3"


def h5_datasets(source) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (path or bytes), keyed by its path with backslashes made slashes."""
    import h5py

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    out = {}
    with h5py.File(handle, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n.replace("\\", "/"), o[...]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def same_arrays(a: dict, b: dict, skip_prefix: str = "optimizer") -> bool:
    """Same paths, dtypes, shapes and bytes (optimizer state left aside)."""
    a = {k: v for k, v in a.items() if not k.startswith(skip_prefix)}
    b = {k: v for k, v in b.items() if not k.startswith(skip_prefix)}
    return sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def archive_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def archive_config(path: Path) -> dict:
    return json.loads(archive_member(path, "config.json"))


def tf_keras_cpu_twin(name: str):
    """The tf_keras CPU model of keras2 fixture `name`, holding the CuDNN weights via tf_keras's own converting
    load_weights: the oracle for every conversion of a CuDNN fixture."""
    import tf_keras

    model = tf_keras.models.model_from_json((KERAS2 / f"{name}_cpu.json").read_text())
    model.load_weights(str(KERAS2 / f"{name}_weights.h5"))
    return model


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def _cpu_config(config):
    """The model config with CuDNNLSTM / CuDNNGRU replaced by the CPU layers that compute the same."""
    config = copy.deepcopy(config)

    def rewrite(layer):
        if layer.get("class_name") == "CuDNNLSTM":
            layer["class_name"] = "LSTM"
            layer["config"].update(activation="tanh", recurrent_activation="sigmoid")
        elif layer.get("class_name") == "CuDNNGRU":
            layer["class_name"] = "GRU"
            layer["config"].update(activation="tanh", recurrent_activation="sigmoid", reset_after=True)
        inner = layer.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("layer"), dict):
            rewrite(inner["layer"])
        if layer.get("class_name") in ("Sequential", "Model", "Functional"):
            for sub in inner if isinstance(inner, list) else inner.get("layers", []):
                rewrite(sub)

    rewrite(config)
    return config


def tf_keras_cpu_model(path, config_path=None):
    """A Keras 2 file's model in tf_keras with CPU layers, filled by tf_keras's own (converting) load_weights."""
    import h5py
    import tf_keras

    if config_path is None:
        with h5py.File(path) as f:
            config = json.loads(f.attrs["model_config"])
    else:
        config = json.loads(Path(config_path).read_text())
    model = tf_keras.models.model_from_json(json.dumps(_cpu_config(config)))
    model.load_weights(str(path))  # tf_keras converts CuDNN weights itself
    return model


def _keras3_hard_sigmoid(x):
    import tensorflow as tf

    return tf.clip_by_value(x / 6.0 + 0.5, 0.0, 1.0)


def use_keras3_hard_sigmoid(model) -> None:
    """Make every hard_sigmoid of a tf_keras model (layers, cells, wrapped layers) Keras 3's: slope 1/6.
    Call it before the model's first predict: tf_keras traces the call once."""
    def visit(obj):
        for attr in ("activation", "recurrent_activation"):
            if getattr(getattr(obj, attr, None), "__name__", "") == "hard_sigmoid" and \
                    not isinstance(getattr(type(obj), attr, None), property):  # an RNN forwards to its cell
                setattr(obj, attr, _keras3_hard_sigmoid)
        for child in ("cell", "layer", "forward_layer", "backward_layer"):
            if getattr(obj, child, None) is not None:
                visit(getattr(obj, child))
        for layer in getattr(obj, "layers", []):
            visit(layer)
    visit(model)
