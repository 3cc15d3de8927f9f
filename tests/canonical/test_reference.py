"""The numpy reference against the real frameworks' own layers (tf_keras, Keras 3, torch)."""

import numpy as np
import pytest

from rnnx.canonical import Direction, RecurrentLayer, gates, reference
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, RELU, TANH

RNG = np.random.default_rng(7)
IN, U, BATCH, SEQ = 5, 4, 3, 6


def _randomize(layer):
    layer.set_weights([RNG.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in layer.get_weights()])


def _keras_direction(weights, cell, reset_after=False) -> Direction:
    """Keras (kernel, recurrent_kernel, bias) -> canonical, per rnn-conventions.md."""
    kernel, recurrent, bias = weights
    order = {"lstm": gates.LSTM_KERAS, "gru": gates.GRU_KERAS, "rnn": gates.RNN_CANONICAL}[cell]
    to_canon = lambda a: gates.reorder(a, order, gates.CANONICAL_ORDER[cell])  # noqa: E731
    b_w, b_r = (bias[0], bias[1]) if bias.ndim == 2 else (bias, None)
    return Direction(W=to_canon(kernel.T), R=to_canon(recurrent.T), b_w=to_canon(b_w),
                     b_r=None if b_r is None else to_canon(b_r))


@pytest.fixture(scope="module")
def tf_keras():
    import tf_keras

    return tf_keras


@pytest.fixture(scope="module")
def keras3():
    import keras

    return keras


def _keras_case(k, layer_obj, cell, activations, reset_after=True, bidirectional=False):
    inp = k.Input((SEQ, IN))
    model = k.Model(inp, layer_obj(inp))
    x = RNG.standard_normal((BATCH, SEQ, IN)).astype(np.float32)
    for layer in model.layers[1:]:
        _randomize(layer)
    want = model.predict(x, verbose=0)
    w = model.layers[1].get_weights()
    directions = [_keras_direction(w[:3], cell)] + ([_keras_direction(w[3:], cell)] if bidirectional else [])
    canon = RecurrentLayer("k", cell, directions, activations=activations, reset_after=reset_after)
    Y, _, _ = reference.run_batch_first(canon, x)
    return want, Y.reshape(BATCH, SEQ, -1)


def test_lstm_matches_tf_keras(tf_keras):
    want, got = _keras_case(tf_keras, tf_keras.layers.LSTM(U, return_sequences=True), "lstm", None)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_lstm_hard_sigmoid_keras2_matches_tf_keras(tf_keras):
    layer = tf_keras.layers.LSTM(U, return_sequences=True, recurrent_activation="hard_sigmoid")
    want, got = _keras_case(tf_keras, layer, "lstm", (HARD_SIGMOID_KERAS2, TANH, TANH))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_lstm_hard_sigmoid_keras3_matches_keras3(keras3):
    layer = keras3.layers.LSTM(U, return_sequences=True, recurrent_activation="hard_sigmoid")
    want, got = _keras_case(keras3, layer, "lstm", (HARD_SIGMOID_KERAS3, TANH, TANH))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_keras2_and_keras3_hard_sigmoid_differ():
    x = np.array([1.0])
    assert HARD_SIGMOID_KERAS2(x)[0] != pytest.approx(HARD_SIGMOID_KERAS3(x)[0], abs=1e-3)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_both_reset_variants_match_tf_keras(tf_keras, reset_after):
    layer = tf_keras.layers.GRU(U, return_sequences=True, reset_after=reset_after)
    want, got = _keras_case(tf_keras, layer, "gru", None, reset_after=reset_after)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_gru_reset_variants_are_different_functions(tf_keras):
    """The same weights read as a reset-before cell must not reproduce a reset-after GRU."""
    inp = tf_keras.Input((SEQ, IN))
    model = tf_keras.Model(inp, tf_keras.layers.GRU(U, return_sequences=True, reset_after=True)(inp))
    _randomize(model.layers[1])
    x = RNG.standard_normal((BATCH, SEQ, IN)).astype(np.float32)
    keras_out = model.predict(x, verbose=0)
    d = _keras_direction(model.layers[1].get_weights(), "gru")
    before = RecurrentLayer("g", "gru", [d], reset_after=False)
    Y, _, _ = reference.run_batch_first(before, x)
    assert np.abs(Y[:, :, 0] - keras_out).max() > 1e-3


def test_simple_rnn_matches_tf_keras(tf_keras):
    want, got = _keras_case(tf_keras, tf_keras.layers.SimpleRNN(U, return_sequences=True), "rnn", None)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_simple_rnn_relu_matches_tf_keras(tf_keras):
    layer = tf_keras.layers.SimpleRNN(U, return_sequences=True, activation="relu")
    want, got = _keras_case(tf_keras, layer, "rnn", (RELU,))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bidirectional_lstm_matches_tf_keras(tf_keras):
    layer = tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(U, return_sequences=True))
    want, got = _keras_case(tf_keras, layer, "lstm", None, bidirectional=True)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


# --- torch -------------------------------------------------------------------

def _torch_layer(module, cell):
    sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    directions = []
    for suffix in ("_l0", "_l0_reverse")[: 2 if module.bidirectional else 1]:
        directions.append(Direction(W=sd["weight_ih" + suffix], R=sd["weight_hh" + suffix],
                                    b_w=sd["bias_ih" + suffix], b_r=sd["bias_hh" + suffix],
                                    proj=sd.get("weight_hr" + suffix)))
    return RecurrentLayer("t", cell, directions)


@pytest.mark.parametrize("cls,cell,kwargs", [
    ("LSTM", "lstm", {}), ("LSTM", "lstm", {"bidirectional": True}), ("LSTM", "lstm", {"proj_size": 2}),
    ("GRU", "gru", {}), ("GRU", "gru", {"bidirectional": True}), ("RNN", "rnn", {}),
])
def test_reference_matches_torch(cls, cell, kwargs):
    import torch

    torch.manual_seed(0)
    module = getattr(torch.nn, cls)(IN, U, batch_first=True, **kwargs)
    x = RNG.standard_normal((BATCH, SEQ, IN)).astype(np.float32)
    with torch.no_grad():
        out, state = module(torch.from_numpy(x))
    Y, Y_h, Y_c = reference.run_batch_first(_torch_layer(module, cell), x)
    np.testing.assert_allclose(Y.reshape(BATCH, SEQ, -1), out.numpy(), atol=1e-5, rtol=0)
    h_n = state[0] if cell == "lstm" else state
    np.testing.assert_allclose(Y_h, h_n.numpy(), atol=1e-5, rtol=0)
    if cell == "lstm":
        np.testing.assert_allclose(Y_c, state[1].numpy(), atol=1e-5, rtol=0)


def test_initial_state_and_sequence_lengths_follow_onnx_semantics():
    import torch

    torch.manual_seed(1)
    module = torch.nn.GRU(IN, U, batch_first=True, bidirectional=True)
    x = RNG.standard_normal((BATCH, SEQ, IN)).astype(np.float32)
    h0 = RNG.standard_normal((2, BATCH, U)).astype(np.float32)
    lens = np.array([SEQ, 3, 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lens, batch_first=True,
                                                     enforce_sorted=False)
    with torch.no_grad():
        out, h_n = module(packed, torch.from_numpy(h0))
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=SEQ)
    Y, Y_h, _ = reference.run_batch_first(_torch_layer(module, "gru"), x, initial_h=h0, sequence_lens=lens)
    np.testing.assert_allclose(Y.reshape(BATCH, SEQ, -1), out.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(Y_h, h_n.numpy(), atol=1e-5, rtol=0)
