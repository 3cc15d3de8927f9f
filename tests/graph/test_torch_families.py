"""The layer families the ONNX backend gained (RNN(cell), also in Bidirectional, stacked cells, tf_keras TF op
layers, time_major) exported with --to torch-model: the torch outputs equal tf_keras's (and Keras 3's, for the
twins that exist) within 1e-5, and damaging any recurrent layer's weights in the state dict makes them miss.

A representative subset of tests/graph/model_families.py (which test_families.py runs in full through ONNX)
plus models built here for what that set lacks: Bidirectional(RNN(cell)) with return_state and initial_state
or a mask, stacked cells under a mask and initial states, time-major stacked cells and stateful time-major
layers, and every other TF function the backends convert. Weights are random (N(0, 0.5)), so no bias is zero.
"""

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE  # noqa: E402
from model_families import (BATCH, FEATURES, KERAS3, STEPS, TF_KERAS, UNITS, VOCAB, Case, all_cases,  # noqa: E402
                            _cell, _functional)
from torch_helpers import import_model, max_error, run_torch  # noqa: E402

import rnnx  # noqa: E402


class _TF:  # tensorflow, imported when a model is built (not when the tests are collected)
    def __getattr__(self, name):
        import tensorflow
        return getattr(tensorflow, name)


tf = _TF()


def _bidirectional_cell_with_states(K):
    """Bidirectional(RNN(LSTMCell)) returning its sequences and the four states, started from given states."""
    x = K.Input((STEPS, FEATURES))
    states = [K.Input((UNITS,)) for _ in range(4)]
    layer = K.layers.Bidirectional(K.layers.RNN(_cell(K, "lstm"), return_sequences=True, return_state=True),
                                   merge_mode="concat")
    return K.Model([x, *states], list(layer(x, initial_state=states)))


def _masked_bidirectional_cell(K):
    return _functional(K, lambda x: list(K.layers.Bidirectional(
        K.layers.RNN(_cell(K, "gru"), return_sequences=True, return_state=True), merge_mode="ave")(
        K.layers.Masking()(x))))


def _masked_stacked_backwards(K):
    cells = K.layers.StackedRNNCells([_cell(K, "gru"), _cell(K, "lstm")])
    return _functional(K, lambda x: K.layers.RNN(cells, return_sequences=True, go_backwards=True)(
        K.layers.Masking()(x)))


def _stacked_with_initial_states(K):
    x = K.Input((STEPS, FEATURES))
    states = [K.Input((UNITS,)) for _ in range(3)]  # LSTMCell h, c, then SimpleRNNCell h
    cells = K.layers.StackedRNNCells([_cell(K, "lstm"), _cell(K, "rnn")])
    out = K.layers.RNN(cells, return_sequences=True, return_state=True)(x, initial_state=[states[:2], states[2]])
    return K.Model([x, *states], list(out))


def _time_major_stacked(K):
    def body(x):
        cells = K.layers.StackedRNNCells([_cell(K, "lstm"), _cell(K, "gru")])
        y = K.layers.RNN(cells, return_sequences=True, time_major=True)(tf.transpose(x, [1, 0, 2]))
        return tf.transpose(y, [1, 0, 2])
    return _functional(K, body)


def _time_major_stateful(K):
    x = K.Input((STEPS, FEATURES), batch_size=BATCH)
    y = K.layers.GRU(UNITS, return_sequences=True, time_major=True, stateful=True)(tf.transpose(x, [1, 0, 2]))
    return K.Model(x, tf.transpose(y, [1, 0, 2]))


def _every_other_tf_function(K):
    """The TF functions model_families' TF op models do not call, each on a recurrent layer's output."""
    def body(x):
        y = K.layers.LSTM(UNITS, return_sequences=True)(x)  # [batch, steps, units]
        positive = tf.math.exp(y) + tf.math.abs(y)
        ratio = tf.math.truediv(y, positive) + tf.math.divide(positive, 2.0)
        mixed = tf.math.sigmoid(ratio) + tf.nn.relu(y) - tf.math.log(positive) + tf.math.sqrt(positive)
        scaled = tf.math.negative(mixed) * [[1.0, -2.0, 0.5]]  # a list constant, broadcast over the last axis
        return [tf.reduce_min(scaled, axis=-1), tf.math.reduce_mean(scaled), tf.transpose(scaled),
                scaled[:, ::-2, 1:], scaled[:, -2:0:-1], tf.squeeze(tf.expand_dims(scaled, 1)),
                tf.reduce_sum(scaled, axis=[0, 2], keepdims=True)]
    return _functional(K, body)


EXTRA = [
    Case("bi-rnncell-lstm-states-initial-state", _bidirectional_cell_with_states),
    Case("masking-bi-rnncell-gru-state", _masked_bidirectional_cell, pad=True),
    Case("masking-stacked-gru-lstm-seq-back", _masked_stacked_backwards, pad=True),
    # tf_keras records the nested initial states as a nested inbound node, which graph/config.py does not read
    Case("stacked-lstm-rnn-initial-state", _stacked_with_initial_states, generations=(KERAS3,)),
    Case("time-major-stacked-lstm-gru", _time_major_stacked, generations=(TF_KERAS,)),
    Case("time-major-stateful-gru", _time_major_stateful, generations=(TF_KERAS,), stateful=True),
    Case("tf-ops-every-other-function", _every_other_tf_function, generations=(TF_KERAS,)),
]
# name -> generations taken from model_families (its other cases are RNN(cell)-free or run through ONNX only)
FROM_FAMILIES = {
    "rnncell-lstm-state": (TF_KERAS, KERAS3), "rnncell-gru-seq-back": (TF_KERAS, KERAS3),
    "rnncell-rnn-seq-state": (TF_KERAS, KERAS3), "rnncell-bi-lstm": (TF_KERAS, KERAS3),
    "rnncell-bi-gru": (KERAS3,), "rnncell-init-gru": (TF_KERAS, KERAS3),
    "rnncell-tfkeras-archive-lstm": (TF_KERAS,), "masking-rnncell-lstm-state": (TF_KERAS, KERAS3),
    "stacked-lstm-gru-seq": (TF_KERAS, KERAS3), "stacked-gru-rnn-lstm-state-back": (TF_KERAS, KERAS3),
    "time-major-lstm": (TF_KERAS,), "time-major-bi-gru": (TF_KERAS,), "time-major-state-back-rnn": (TF_KERAS,),
    "time-major-state-back-lstm": (TF_KERAS,), "tf-ops-arithmetic-lstm": (TF_KERAS,),
    "tf-ops-shapes-gru": (TF_KERAS,), "masked-initial-state-lstm": (KERAS3,),
}
CASES = [c for c in all_cases() if c.name in FROM_FAMILIES] + EXTRA
PARAMS = [pytest.param(case, generation, id=f"{generation}-{case.name}") for case in CASES
          for generation in FROM_FAMILIES.get(case.name, case.generations)]
SCRIPTED = ("time-major", "tf-ops", "stacked")  # the new code paths also run under torch.jit.script


@pytest.fixture(scope="module")
def libraries():
    import keras
    import tf_keras

    return {TF_KERAS: tf_keras, KERAS3: keras}


def test_the_subset_covers_each_family():
    assert len(FROM_FAMILIES) == len([c for c in CASES if c.name in FROM_FAMILIES]), "a name is not in the set"
    names = [p.id for p in PARAMS]
    for family in ("rnncell-", "rnncell-bi", "bi-rnncell", "stacked", "time-major", "tf-ops", "masking-"):
        assert any(family in n for n in names), family
    assert 20 <= len(PARAMS) <= 40, len(PARAMS)


@pytest.mark.parametrize("case, generation", PARAMS)
def test_torch_model_matches_its_framework(case, generation, libraries, tmp_path):
    import torch

    K = libraries[generation]
    seed = zlib.crc32(f"torch-{generation}-{case.name}".encode())
    model = case.build(K)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(0.0, 0.5, tuple(variable.shape)).astype(np.float32))
    src = tmp_path / f"model{case.saves_as.get(generation, '.h5' if generation == TF_KERAS else '.keras')}"
    model.save(src)
    dst = tmp_path / "model.py"
    result = rnnx.convert(src, dst, to="torch-model")
    torch_model = import_model(dst)
    recurrent = [m for m in torch_model.modules() if type(m).__name__ == "KerasRecurrent"]
    canonical = [item for item in rnnx.load(src).items if isinstance(item, rnnx.RecurrentLayer)]
    assert len(recurrent) == len(canonical) > 0, "one KerasRecurrent per recurrent layer (per stacked cell)"

    feeds = _feeds(model, rng, case.pad)
    oracle = case.oracle(K, model) if case.oracle else model
    expected = _keras_outputs(oracle, feeds)
    error = max_error(expected, run_torch(torch_model, feeds))
    assert error <= TOLERANCE, f"max error {error:.3g}"
    if any(tag in case.name for tag in SCRIPTED):
        torch_model.reset_states()  # a stateful layer starts again from zeros
        scripted = torch.jit.script(torch_model)
        assert max_error(expected, run_torch(scripted, feeds)) <= TOLERANCE, "scripted"
        torch_model.reset_states()
        run_torch(torch_model, feeds)
    if case.note and generation == KERAS3:
        assert any(case.note in note for note in result.notes), result.notes
    if case.stateful:  # the second call continues from the first call's final states
        second = _feeds(model, rng, case.pad)
        expected_second = _keras_outputs(oracle, second)
        assert max_error(expected_second, run_torch(torch_model, second)) <= TOLERANCE
        torch_model.reset_states()
        assert max_error(expected_second, run_torch(torch_model, second)) > TOLERANCE, "the states matter"

    state = {k: v.clone() for k, v in torch_model.state_dict().items()}
    for module in recurrent:
        prefix = next(name for name, m in torch_model.named_modules() if m is module)
        for damage in (_zero_biases, _swap_gate_blocks):
            damaged = {k: v.clone() for k, v in state.items()}
            damage(damaged, f"{prefix}.", module)
            torch_model.load_state_dict(damaged, strict=True)
            torch_model.reset_states()
            off = max_error(expected, run_torch(torch_model, feeds))
            assert off > TOLERANCE, f"{damage.__name__} on {prefix!r} still matches ({off:.3g})"


def _feeds(model, rng, pad: bool) -> list[np.ndarray]:
    feeds = []
    for k, tensor in enumerate(model.inputs):
        shape = [BATCH if d is None else d for d in tensor.shape]
        if "int" in str(tensor.dtype):
            data = rng.integers(1, VOCAB, shape).astype(np.int32)
        else:
            data = rng.normal(0.0, 1.0, shape).astype(np.float32)
        if pad and k == 0:  # right-padded rows, the first one full length
            lengths = rng.integers(2, STEPS + 1, shape[0])
            lengths[0] = STEPS
            data[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0
        feeds.append(data)
    return feeds


def _keras_outputs(model, xs: list) -> list[np.ndarray]:
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in _flat(out)]


def _flat(out) -> list:
    """The outputs in order; a stacked RNN returns the states of each cell as a nested list."""
    return [t for o in out for t in _flat(o)] if isinstance(out, (list, tuple)) else [out]


def _zero_biases(state: dict, prefix: str, module) -> None:
    for key in state:
        if key.startswith(prefix) and ".bias_" in f".{key.rsplit('.', 1)[-1]}":
            state[key].zero_()


def _swap_gate_blocks(state: dict, prefix: str, module) -> None:
    """Input kernels [gates * hidden, in] (or [D, gates * hidden, in]): the first two gate blocks swapped (the
    first two units for a one-gate SimpleRNN)."""
    hidden = module.hidden_size
    for key in state:
        if key.startswith(prefix) and key.rsplit(".", 1)[-1].startswith("weight_ih"):
            w = state[key]
            rows = w.shape[-2]
            block = 1 if rows == hidden else hidden
            axis = w.dim() - 2
            first = w.narrow(axis, 0, block).clone()
            w.narrow(axis, 0, block).copy_(w.narrow(axis, block, block))
            w.narrow(axis, block, block).copy_(first)
