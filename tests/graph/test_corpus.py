"""Every full Keras 2 model of the shared corpus (and lstm_chem's weights with its JSON) -> one ONNX graph,
checked against tf_keras (CuDNN layers through tf_keras's own converting load_weights)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import (TOLERANCE, check_graph, keras_outputs, load_keras2, max_error,  # noqa: E402
                           random_inputs, run_onnx)

import rnnx  # noqa: E402

# file -> (architecture JSON or None, batch)
KERAS2 = {
    "stockprice_cudnnlstm4_full.h5": (None, 3),
    "head_pose_cudnnlstm_functional_full.h5": (None, 2),
    "medaka_bigru_full.hdf5": (None, 2),
    "medaka_lstm_theano_full.h5": (None, 256),  # its batch size is fixed in the config
    "lstm_chem_weights.hdf5": ("lstm_chem_model_arch.json", 3),
}


@pytest.mark.parametrize("name", KERAS2)
def test_corpus_model_matches_tf_keras(name, corpus, tmp_path):
    config_name, batch = KERAS2[name]
    src = corpus / "keras2" / name
    config = corpus / "keras2" / config_name if config_name else None
    dst = tmp_path / "model.onnx"
    rnnx.convert(src, dst, config=config)
    graph = check_graph(dst)
    model = load_keras2(src, config)
    feeds = random_inputs(graph, model.inputs, batch=batch, steps=11, pad=False)
    expected = keras_outputs(model, feeds, [i.name for i in graph.graph.input if i.name in feeds])
    error = max_error(expected, run_onnx(dst, feeds))
    assert error <= TOLERANCE, f"{name}: max error {error:.3g}"
    assert any(n.op_type in ("LSTM", "GRU") for n in graph.graph.node)
