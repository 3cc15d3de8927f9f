"""The real TF2 files of the shared corpus: rnnx's conversions against TensorFlow's own forward pass of the
stored weights (tf_keras builds the model from the config stored in the file, read with TensorFlow's own
protos, and restores the weights with its own checkpoint reader)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tf_helpers import TOLERANCE, keras_predict, max_error, run_onnx  # noqa: E402

import rnnx  # noqa: E402

SAVEDMODELS = {  # folder -> (recurrent layers as (name, units, input), features)
    "iteam1_lstm_savedmodel_tf26": ([("lstm_5", 64, 1)], 1),
    "osmarluiz_lstm2_savedmodel_tf21_sharded": ([("lstm_1", 100, 61), ("lstm_2", 50, 100)], 61),
}


def stored_model_config(folder: Path) -> str:
    """The model config of a Keras SavedModel, read with TensorFlow's own protos."""
    if (folder / "keras_metadata.pb").is_file():
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata.FromString((folder / "keras_metadata.pb").read_bytes())
        root = next(n for n in metadata.nodes if n.node_path == "root")
        meta = json.loads(root.metadata)
    else:
        from tensorflow.core.protobuf import saved_model_pb2

        saved = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        meta = json.loads(saved.meta_graphs[0].object_graph_def.nodes[0].user_object.metadata)
    return json.dumps({"class_name": meta["class_name"], "config": meta["config"]})


def tf_savedmodel(folder: Path):
    import tf_keras

    model = tf_keras.models.model_from_json(stored_model_config(folder))
    model.load_weights(str(folder / "variables" / "variables")).expect_partial()
    return model


@pytest.mark.parametrize("name", SAVEDMODELS)
def test_savedmodel_inspect_lists_the_layers(name, corpus, cli):
    layers, _ = SAVEDMODELS[name]
    result = cli("inspect", corpus / "tensorflow" / name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    import jsonschema

    schema = Path(__file__).resolve().parents[3] / "schemas" / "inspect.schema.json"
    jsonschema.validate(report, json.loads(schema.read_text()))
    assert report["format"] == "tf-savedmodel"
    assert [(l["name"], l["class_name"], l["units"], l["input_size"]) for l in report["layers"]] == [
        (n, "LSTM", u, i) for n, u, i in layers]


@pytest.mark.parametrize("name", SAVEDMODELS)
def test_savedmodel_conversions_match_tensorflow(name, corpus, tmp_path):
    import keras

    folder = corpus / "tensorflow" / name
    _, features = SAVEDMODELS[name]
    x = np.random.default_rng(1).normal(0, 1, (4, 5 if name.startswith("iteam1") else 1, features)).astype(np.float32)
    expected = keras_predict(tf_savedmodel(folder), x)
    rnnx.convert(folder, tmp_path / "model.onnx")
    assert max_error(run_onnx(tmp_path / "model.onnx", x), expected) <= TOLERANCE
    rnnx.convert(folder, tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert max_error(np.asarray(restored(x, training=False)), expected) <= TOLERANCE


def dinornn_model(return_sequences: bool):
    """The DinoRNN network as its README describes it, built in tf_keras."""
    import tf_keras

    L = tf_keras.layers
    return tf_keras.Sequential([L.Input((None,)), L.Embedding(27, 64), L.GRU(256, return_sequences=return_sequences),
                                L.Dense(27)])


def test_dinornn_checkpoint_matches_tensorflow(corpus, tmp_path, cli):
    import tf_keras

    folder = corpus / "tensorflow" / "dinornn_gru_ckpt_sharded"
    model = dinornn_model(True)
    model.load_weights(str(folder / "ckpt_100")).expect_partial()  # TensorFlow's own checkpoint reader
    tokens = np.random.default_rng(2).integers(0, 27, (3, 9))
    gru = model.layers[1]
    embedded = np.asarray(model.layers[0](tokens))
    expected_gru = np.asarray(gru(embedded))

    result = cli("inspect", folder, "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)["layers"]
    assert [(l["name"], l["class_name"], l["units"], l["input_size"], l["bias_layout"]) for l in layers] == [
        ("layer_with_weights-1", "GRU", 256, 64, "input+recurrent")]

    rnnx.convert(folder, tmp_path / "gru.onnx", layer="layer_with_weights-1")
    assert max_error(run_onnx(tmp_path / "gru.onnx", embedded.astype(np.float32)), expected_gru) <= TOLERANCE

    config = tmp_path / "model.json"
    config.write_text(model.to_json())
    rnnx.convert(folder / "ckpt_100.index", tmp_path / "model.onnx", config=config)
    expected = keras_predict(model, tokens.astype(np.float32))
    assert max_error(run_onnx(tmp_path / "model.onnx", tokens), expected) <= TOLERANCE
    tf_keras.backend.clear_session()


@pytest.mark.parametrize("name", SAVEDMODELS)
def test_savedmodel_to_pytorch_model_matches_tensorflow(name, corpus, tmp_path):
    """A SavedModel is a whole model for the PyTorch target too (issue 13: '... and SavedModels once
    those are read'): the generated module with its state dict computes what TensorFlow computes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "graph"))
    from torch_helpers import import_model, run_torch

    folder = corpus / "tensorflow" / name
    _, features = SAVEDMODELS[name]
    x = np.random.default_rng(2).normal(0, 1, (3, 5 if name.startswith("iteam1") else 1, features)).astype(np.float32)
    expected = keras_predict(tf_savedmodel(folder), x)
    rnnx.convert(folder, tmp_path / "model.py", to="torch-model")
    (got,) = run_torch(import_model(tmp_path / "model.py"), [x])
    assert max_error(got, expected) <= TOLERANCE
