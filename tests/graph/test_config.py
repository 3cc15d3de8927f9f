"""Keras 2 and Keras 3 model configs parsed into one layer graph (read from real files)."""

import json
import zipfile

import h5py

from rnnx.graph import config as keras_config


def _h5_config(path):
    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _keras_config(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def test_old_sequential_list(corpus):
    """Keras 2.1.5 wrote a Sequential config as a bare list, the input shape on the first layer."""
    model = keras_config.parse_model(_h5_config(corpus / "keras2" / "medaka_bigru_full.hdf5"))
    assert model.sequential
    assert [s.class_name for s in model.layers[1:]] == ["Bidirectional", "Bidirectional", "Dense"]
    (shape,) = model.input_shapes.values()
    assert shape == [None, 1000, 10]
    assert model.outputs[0].layer == model.layers[-1].name


def test_to_json_sequential(corpus):
    config = json.loads((corpus / "keras2" / "lstm_chem_model_arch.json").read_text())
    model = keras_config.parse_model(config)
    assert [s.class_name for s in model.layers[1:]] == ["LSTM", "LSTM", "Dense"]
    assert model.layers[2].calls[0].inputs[0].layer == model.layers[1].name


def test_keras2_functional_with_nested_models(models_dir):
    model = keras_config.parse_model(_h5_config(models_dir / "k2_nested.h5"))
    inner_seq = model.layer("inner_seq")
    assert inner_seq.model is not None and inner_seq.model.sequential
    assert len(inner_seq.calls) == 3 and inner_seq.node_offset == 1  # tf_keras counts the model's own node
    shared = model.layer("shared")
    assert [c.inputs[0].node_index for c in shared.calls] == [2, 3] and shared.node_offset == 0
    assert model.layer("inner_fn").model.layers[-1].class_name == "GRU"


def test_keras3_functional_records_masks_and_ops(models_dir):
    config = _keras_config(models_dir / "k3_text.keras")
    model = keras_config.parse_model(config)
    assert keras_config.keras_major({"format": "keras", "model_config": config}) == 3
    not_equal = model.layer("not_equal")
    assert not_equal.calls[0].operands[1] == 0  # NotEqual(tokens, 0)
    bi_lstm = model.layer("bi_lstm")
    assert bi_lstm.calls[0].masks[0].layer == "not_equal"
    assert model.layer("td_dense").calls[0].inputs[0].layer == "bi_gru"


def test_keras3_nested_models_have_no_offset(models_dir):
    """Keras 3.15 refers to a nested Sequential's and a nested functional model's first call as node 0."""
    model = keras_config.parse_model(_keras_config(models_dir / "k3_nested.keras"))
    inner, inner_fn = model.layer("inner"), model.layer("inner_fn")
    assert inner.model.sequential and inner.node_offset == 0
    assert not inner_fn.model.sequential and inner_fn.node_offset == 0


def test_keras_major_from_version():
    assert keras_config.keras_major({"format": "keras-h5", "keras_version": "2.2.4-tf"}) == 2
    assert keras_config.keras_major({"format": "keras-h5", "keras_version": "3.6.0"}) == 3
