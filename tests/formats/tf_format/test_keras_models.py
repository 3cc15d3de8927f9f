"""Keras 2 SavedModels and save_weights checkpoints made by real TensorFlow 2.21 (scripts/fixtures/tensorflow.py)
-> ONNX, .keras, .h5, .pt, checked against tf_keras running the same model with the same stored weights."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tf_helpers import TOLERANCE, inputs_for, keras_predict, max_error, run_onnx, tf_model  # noqa: E402

import rnnx  # noqa: E402

MODELS = ["lstm", "gru_after", "gru_before", "simple", "bidir", "stacked", "masked", "nested", "cudnn"]


@pytest.mark.parametrize("name", MODELS)
def test_savedmodel_to_onnx_and_keras3(name, fixtures, tmp_path):
    import keras

    src = fixtures / "tensorflow" / f"{name}_savedmodel"
    x = inputs_for(name)
    expected = keras_predict(tf_model(fixtures, name, tmp_path), x)
    rnnx.convert(src, tmp_path / "model.onnx")
    assert max_error(run_onnx(tmp_path / "model.onnx", x), expected) <= TOLERANCE
    rnnx.convert(src, tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert max_error(np.asarray(restored(x, training=False)), expected) <= TOLERANCE


@pytest.mark.parametrize("name", ["lstm", "bidir", "masked", "cudnn"])
def test_savedmodel_to_full_model_h5(name, fixtures, tmp_path):
    import tf_keras

    src = fixtures / "tensorflow" / f"{name}_savedmodel"
    x = inputs_for(name)
    expected = keras_predict(tf_model(fixtures, name, tmp_path), x)
    rnnx.convert(src, tmp_path / "model.h5")
    restored = tf_keras.models.load_model(tmp_path / "model.h5", compile=False)
    assert max_error(keras_predict(restored, x), expected) <= TOLERANCE


def test_savedmodel_loaded_by_tf_keras_agrees(fixtures, tmp_path):
    """The SavedModel itself, loaded by tf_keras, is the same model rnnx reads (traces saved too)."""
    import tf_keras

    src = fixtures / "tensorflow" / "lstm_savedmodel"
    x = inputs_for("lstm")
    expected = keras_predict(tf_keras.models.load_model(src, compile=False), x)
    rnnx.convert(src, tmp_path / "model.onnx")
    assert max_error(run_onnx(tmp_path / "model.onnx", x), expected) <= TOLERANCE


@pytest.mark.parametrize("name", ["lstm", "gru_after", "simple", "stacked", "masked", "nested", "cudnn", "cudnn_gru",
                                  "bidir"])
def test_checkpoint_with_config_is_the_full_model(name, fixtures, tmp_path):
    folder = fixtures / "tensorflow"
    x = inputs_for(name)
    expected = keras_predict(tf_model(fixtures, name, tmp_path), x)
    rnnx.convert(folder / f"{name}_ckpt", tmp_path / "model.onnx", config=folder / f"{name}.json")
    assert max_error(run_onnx(tmp_path / "model.onnx", x), expected) <= TOLERANCE


def test_nested_model_layers_are_named_outer_inner(fixtures):
    bundle = rnnx.load(fixtures / "tensorflow" / "nested_savedmodel")
    assert [l.name for l in bundle.layers] == ["encoder/inner_lstm", "outer_gru"]


def test_checkpoint_without_config_names_layers_by_object_path(fixtures):
    bundle = rnnx.load(fixtures / "tensorflow" / "bidir_ckpt" / "ckpt.index")
    assert [(l.name, l.cell, l.num_directions, l.units) for l in bundle.layers] == [
        ("layer_with_weights-0", "lstm", 2, 3), ("layer_with_weights-1", "gru", 2, 2)]
    assert bundle.source["has_architecture"] is False
    cudnn = rnnx.load(fixtures / "tensorflow" / "cudnn_gru_ckpt").layers
    assert [(l.name, l.provenance["class_name"], l.units) for l in cudnn] == [("layer_with_weights-0", "CuDNNGRU", 4)]


@pytest.mark.parametrize("name", ["lstm", "gru_after", "simple"])
def test_checkpoint_recurrent_layer_to_torch(name, fixtures, tmp_path):
    """The recurrent layer of a bare checkpoint in torch equals tf_keras's own layer output."""
    import tf_keras
    import torch

    model = tf_model(fixtures, name, tmp_path)
    layer = next(l for l in model.layers if l.__class__.__name__ in ("LSTM", "GRU", "SimpleRNN"))
    x = inputs_for(name)
    expected = np.asarray(tf_keras.Model(model.inputs, layer.output)(x))
    rnnx.convert(fixtures / "tensorflow" / f"{name}_ckpt", tmp_path / "layer.pt")
    state = torch.load(tmp_path / "layer.pt")
    module_name = next(k.split(".")[0] for k in state if k.endswith("weight_hh_l0"))
    hidden = state[f"{module_name}.weight_hh_l0"].shape[1]
    cls = {"lstm": torch.nn.LSTM, "gru_after": torch.nn.GRU, "simple": torch.nn.RNN}[name]
    module = cls(3, hidden, batch_first=True)
    module.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(module_name + ".")})
    with torch.no_grad():
        y, _ = module(torch.from_numpy(x))
    got = y.numpy() if expected.ndim == 3 else y.numpy()[:, -1]
    assert max_error(got, expected) <= TOLERANCE


def test_keras3_export_read_from_variable_names_matches_tensorflow(fixtures, tmp_path):
    """Keras 3 model.export() keeps no layer structure; the variable names and shapes tell the LSTM.
    TensorFlow running the exported function is the oracle."""
    import tensorflow as tf

    src = fixtures / "tensorflow" / "keras3_export"
    x = inputs_for("lstm")
    exported = tf.saved_model.load(str(src))  # kept alive: the function reads its variables
    expected = exported.serve(tf.constant(x)).numpy()
    bundle = rnnx.load(src)
    assert [(l.name, l.cell, l.units, l.input_size) for l in bundle.layers] == [("lstm", "lstm", 4, 3)]
    rnnx.convert(src, tmp_path / "lstm.onnx", layer="lstm")
    assert max_error(run_onnx(tmp_path / "lstm.onnx", x), expected) <= TOLERANCE


def test_savedmodel_without_any_layer_structure_is_refused(fixtures, cli, tmp_path):
    result = cli("convert", fixtures / "tensorflow" / "tf_module", tmp_path / "m.onnx")
    assert result.returncode == 2
    assert "without Keras layer structure" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_convert_notes_the_optimizer_state_left_out(corpus, cli, tmp_path):
    result = cli("convert", corpus / "tensorflow" / "dinornn_gru_ckpt_sharded", tmp_path / "m.safetensors")
    assert result.returncode == 0, result.stderr
    assert "optimizer" in result.stdout and "not carried over" in result.stdout


def test_checkpoint_with_config_to_keras3_archive(fixtures, tmp_path):
    import keras

    folder = fixtures / "tensorflow"
    x = inputs_for("bidir")
    expected = keras_predict(tf_model(fixtures, "bidir", tmp_path), x)
    rnnx.convert(folder / "bidir_ckpt", tmp_path / "model.keras", config=folder / "bidir.json")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert [l.name for l in restored.layers if "bi" in l.name] == ["bi_lstm", "bi_gru"]
    assert max_error(np.asarray(restored(x, training=False)), expected) <= TOLERANCE
