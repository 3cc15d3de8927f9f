"""Whole Keras 3 models (.keras fixtures and the corpus's dino_lstm.keras) -> ONNX; Keras 3 is the oracle."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE, check_graph, keras_outputs, max_error, random_inputs, run_onnx  # noqa: E402

import rnnx  # noqa: E402

# path (relative to tests/fixtures/models or the corpus) -> token vocabulary of its first input, or None
MODELS = {"k3_text.keras": 20, "k3_activations.keras": None, "k3_nested.keras": None}


def _check(path: Path, dst: Path, vocab):
    import keras

    rnnx.convert(path, dst)
    graph = check_graph(dst)
    model = keras.models.load_model(path)
    feeds = random_inputs(graph, model.inputs, tokens=vocab is not None and len(model.inputs) == 1,
                          vocab=vocab or 10, seed=3)
    expected = keras_outputs(model, feeds, [i.name for i in graph.graph.input if i.name in feeds])
    error = max_error(expected, run_onnx(dst, feeds))
    assert error <= TOLERANCE, f"{path.name}: max error {error:.3g}"
    return graph


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_keras3(name, models_dir, tmp_path):
    _check(models_dir / name, tmp_path / "model.onnx", MODELS[name])


def test_dino_lstm_corpus(corpus, tmp_path):
    """Keras 3.6 archive: token ids (stored as float32 input) -> Embedding(28) -> LSTM(128) -> Dense(28)."""
    graph = _check(corpus / "keras3" / "dino_lstm.keras", tmp_path / "dino.onnx", 28)
    assert [n.op_type for n in graph.graph.node].count("LSTM") == 1
