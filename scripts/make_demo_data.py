"""Build the example `rnnx demo` ships: src/rnnx/data/demo_cudnnlstm.h5 and demo_expected.npz.

The model is the situation rnnx exists for: two CuDNNLSTM layers and a Dense head, saved
with tf_keras (full model, model_config included). The expected outputs are what tf_keras
itself computes for it, using its own converting `load_weights` into the CPU LSTM model.

    python scripts/make_demo_data.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

DATA = Path(__file__).resolve().parent.parent / "src" / "rnnx" / "data"
SEQ, FEATURES, UNITS, CLASSES, BATCH = 12, 6, 16, 3, 4


def build(k, lstm):
    inp = k.Input((SEQ, FEATURES), name="features")
    h = lstm(UNITS, return_sequences=True, name="lstm_1")(inp)
    h = lstm(UNITS, name="lstm_2")(h)
    out = k.layers.Dense(CLASSES, activation="softmax", name="head")(h)
    return k.Model(inp, out, name="demo")


def main():
    import tf_keras as k
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    rng = np.random.default_rng(2018)
    cudnn = build(k, CuDNNLSTM)
    cudnn.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in cudnn.get_weights()])
    DATA.mkdir(parents=True, exist_ok=True)
    cudnn.save(DATA / "demo_cudnnlstm.h5", include_optimizer=False)

    cpu = build(k, k.layers.LSTM)
    with tempfile.TemporaryDirectory() as tmp:
        cudnn.save_weights(Path(tmp) / "w.h5")
        cpu.load_weights(Path(tmp) / "w.h5")  # tf_keras converts CuDNN weights itself: the oracle
    x = rng.standard_normal((BATCH, SEQ, FEATURES)).astype(np.float32)
    probe = k.Model(cpu.input, [cpu.get_layer("lstm_1").output, cpu.get_layer("lstm_2").output, cpu.output])
    lstm_1, lstm_2, probs = probe.predict(x, verbose=0)
    np.savez(DATA / "demo_expected.npz", x=x, lstm_1=lstm_1, lstm_2=lstm_2, output=probs)
    print(f"wrote {DATA / 'demo_cudnnlstm.h5'} and {DATA / 'demo_expected.npz'}")


if __name__ == "__main__":
    main()
