"""Every full Keras model of the corpus -> PyTorch source + safetensors, against tf_keras / Keras 3."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE, load_keras2  # noqa: E402
from torch_helpers import import_model, keras_feeds, keras_predict, max_error, run_torch  # noqa: E402

import rnnx  # noqa: E402

# file -> (architecture JSON or None, batch); steps: 11 where the config leaves them free. Fixed by their
# configs: medaka_bigru 1,000 steps (reset-before GRUs, in the step loop), head_pose 6,500 steps,
# medaka_lstm_theano batch 256 x 3 steps.
KERAS2 = {
    "stockprice_cudnnlstm4_full.h5": (None, 3),
    "head_pose_cudnnlstm_functional_full.h5": (None, 2),
    "medaka_bigru_full.hdf5": (None, 2),
    "medaka_lstm_theano_full.h5": (None, 256),
    "lstm_chem_weights.hdf5": ("lstm_chem_model_arch.json", 3),
}


@pytest.mark.parametrize("name", KERAS2)
def test_corpus_model_matches_tf_keras(name, corpus, tmp_path):
    config_name, batch = KERAS2[name]
    src = corpus / "keras2" / name
    config = corpus / "keras2" / config_name if config_name else None
    dst = tmp_path / "model.py"
    rnnx.convert(src, dst, to="torch-model", config=config)
    model = import_model(dst)
    keras_model = load_keras2(src, config)
    feeds = keras_feeds(keras_model, batch=batch, steps=11, pad=False)
    error = max_error(keras_predict(keras_model, feeds), run_torch(model, feeds))
    assert error <= TOLERANCE, f"{name}: max error {error:.3g}"


def test_dino_lstm_keras3(corpus, tmp_path):
    import keras

    src = corpus / "keras3" / "dino_lstm.keras"
    rnnx.convert(src, tmp_path / "dino.py", to="torch-model")
    model = import_model(tmp_path / "dino.py")
    keras_model = keras.models.load_model(src)
    feeds = keras_feeds(keras_model, tokens=True, vocab=28, seed=3)
    error = max_error(keras_predict(keras_model, feeds), run_torch(model, feeds))
    assert error <= TOLERANCE, f"dino_lstm: max error {error:.3g}"
