"""The recurrent model families of tests/graph/test_families.py, each built by one function for tf_keras
and for Keras 3 (the "twins": the same code on the other library).

A builder takes `K` (the tf_keras or keras module) and returns a Model; `Case` says which generations
build it and how its inputs are fed. Sizes are kept small (3 units, 5 steps) so that the whole set runs
in a couple of minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

BATCH, STEPS, FEATURES, UNITS, VOCAB = 3, 5, 4, 3, 12
TF_KERAS, KERAS3 = "tf_keras", "keras3"


@dataclass
class Case:
    name: str
    build: Callable  # (K) -> model
    generations: tuple = (TF_KERAS, KERAS3)
    pad: bool = False  # right-pad rows of the first input with zeros (masked models)
    stateful: bool = False  # compare a second call that continues from the first's states
    saves_as: dict = field(default_factory=dict)  # generation -> file suffix (default .h5 / .keras)
    oracle: Callable | None = None  # (K, model) -> the model whose outputs are expected (default: itself)
    note: str | None = None  # a note rnnx must print when converting it


def _layer(K, cell: str, **options):
    L = K.layers
    if cell == "lstm":
        return L.LSTM(UNITS, **options)
    if cell == "gru":
        return L.GRU(UNITS, **options)
    if cell == "gru_rb":
        return L.GRU(UNITS, reset_after=False, **options)
    return L.SimpleRNN(UNITS, **options)


def _cell(K, cell: str):
    L = K.layers
    return {"lstm": L.LSTMCell, "gru": L.GRUCell, "rnn": L.SimpleRNNCell}[cell](UNITS)


def _states(cell: str) -> int:
    return 2 if cell == "lstm" else 1


def _outputs(y):
    return list(y) if isinstance(y, (list, tuple)) else y


def _functional(K, body, shape=(STEPS, FEATURES), dtype="float32", **input_options):
    x = K.Input(shape, dtype=dtype, **input_options)
    return K.Model(x, _outputs(body(x)))


CELLS = ("lstm", "gru", "gru_rb", "rnn")
CELL_KINDS = ("lstm", "gru", "rnn")  # RNN(cell): LSTMCell, GRUCell (reset_after=True), SimpleRNNCell


def plain_cases() -> list[Case]:
    cases = []
    for cell in CELLS:
        for seq in (False, True):
            for state in (False, True):
                for back in (False, True):
                    options = dict(return_sequences=seq, return_state=state, go_backwards=back)
                    tag = "".join(t for t, on in zip(("seq", "state", "back"), (seq, state, back)) if on) or "last"
                    cases.append(Case(f"{cell}-{tag}", lambda K, c=cell, o=options:
                                      _functional(K, lambda x: _layer(K, c, **o)(x))))
    return cases


def bidirectional_cases() -> list[Case]:
    cases = []
    for cell in ("lstm", "gru", "rnn"):
        for merge in ("concat", "sum", "mul", "ave", None):
            for seq in (False, True):
                cases.append(Case(f"bi-{cell}-{merge}-{'seq' if seq else 'last'}",
                                  lambda K, c=cell, m=merge, s=seq: _functional(
                                      K, lambda x: K.layers.Bidirectional(_layer(K, c, return_sequences=s),
                                                                          merge_mode=m)(x))))
        cases.append(Case(f"bi-{cell}-state", lambda K, c=cell: _functional(
            K, lambda x: K.layers.Bidirectional(_layer(K, c, return_sequences=True, return_state=True))(x))))
    return cases


def rnn_cell_cases() -> list[Case]:
    cases = []
    for cell in CELL_KINDS:
        variants = {
            "last": dict(),
            "state": dict(return_state=True),
            "seq-back": dict(return_sequences=True, go_backwards=True),
            "seq-state": dict(return_sequences=True, return_state=True),
        }
        for tag, options in variants.items():
            cases.append(Case(f"rnncell-{cell}-{tag}", lambda K, c=cell, o=options:
                              _functional(K, lambda x: K.layers.RNN(_cell(K, c), **o)(x))))
        cases.append(Case(f"rnncell-bi-{cell}", lambda K, c=cell: _functional(
            K, lambda x: K.layers.Bidirectional(K.layers.RNN(_cell(K, c), return_sequences=True),
                                                merge_mode="sum")(x))))
        cases.append(Case(f"rnncell-init-{cell}", lambda K, c=cell: _initial_state_model(
            K, c, lambda: K.layers.RNN(_cell(K, c), return_sequences=True))))
        cases.append(Case(f"rnncell-tfkeras-archive-{cell}", lambda K, c=cell: _functional(
            K, lambda x: K.layers.RNN(_cell(K, c), return_state=True)(x)), generations=(TF_KERAS,),
            saves_as={TF_KERAS: ".keras"}))
    stacks = {"lstm-gru": ("lstm", "gru"), "gru-rnn-lstm": ("gru", "rnn", "lstm"), "lstm-lstm": ("lstm", "lstm")}
    for tag, cells in stacks.items():
        cases.append(Case(f"stacked-{tag}-seq", lambda K, cs=cells: _functional(
            K, lambda x: K.layers.RNN(K.layers.StackedRNNCells([_cell(K, c) for c in cs]),
                                      return_sequences=True)(x))))
        cases.append(Case(f"stacked-{tag}-state-back", lambda K, cs=cells: _functional(
            K, lambda x: K.layers.RNN(K.layers.StackedRNNCells([_cell(K, c) for c in cs]), return_state=True,
                                      go_backwards=True)(x))))
    return cases


def _initial_state_model(K, cell: str, make_layer):
    x = K.Input((STEPS, FEATURES))
    states = [K.Input((UNITS,)) for _ in range(_states(cell))]
    return K.Model([x, *states], make_layer()(x, initial_state=states))


def mask_cases() -> list[Case]:
    cases = []
    for cell in ("lstm", "gru", "rnn"):
        cases.append(Case(f"embedding-mask-{cell}-seq", lambda K, c=cell: _functional(
            K, lambda x: _layer(K, c, return_sequences=True)(K.layers.Embedding(VOCAB, FEATURES, mask_zero=True)(x)),
            shape=(STEPS,), dtype="int32"), pad=True))
        cases.append(Case(f"embedding-mask-bi-{cell}", lambda K, c=cell: _functional(
            K, lambda x: K.layers.Bidirectional(_layer(K, c, return_sequences=True))(
                K.layers.Embedding(VOCAB, FEATURES, mask_zero=True)(x)), shape=(STEPS,), dtype="int32"), pad=True))
        cases.append(Case(f"masking-{cell}-last", lambda K, c=cell: _functional(
            K, lambda x: _layer(K, c)(K.layers.Masking()(x))), pad=True))
        cases.append(Case(f"masking-rnncell-{cell}-state", lambda K, c=cell: _functional(
            K, lambda x: K.layers.RNN(_cell(K, c), return_sequences=True, return_state=True)(K.layers.Masking()(x))),
            pad=True))
    return cases


def state_cases() -> list[Case]:
    cases = []
    for cell in ("lstm", "gru", "rnn"):
        cases.append(Case(f"initial-state-input-{cell}", lambda K, c=cell: _initial_state_model(
            K, c, lambda: _layer(K, c, return_sequences=True))))
        cases.append(Case(f"encoder-decoder-{cell}", lambda K, c=cell: _encoder_decoder(K, c)))
        cases.append(Case(f"bi-initial-state-{cell}", lambda K, c=cell: _bidirectional_initial_state(K, c)))
        cases.append(Case(f"stateful-{cell}", lambda K, c=cell: _functional(
            K, lambda x: _layer(K, c, return_sequences=True, stateful=True)(x), shape=(STEPS, FEATURES),
            batch_size=BATCH), stateful=True))
    return cases


def _encoder_decoder(K, cell: str):
    x = K.Input((STEPS, FEATURES))
    y = K.Input((STEPS - 1, FEATURES))
    _, *states = _layer(K, cell, return_state=True)(x)
    out = _layer(K, cell, return_sequences=True)(y, initial_state=states)
    return K.Model([x, y], K.layers.Dense(2)(out))


def _bidirectional_initial_state(K, cell: str):
    x = K.Input((STEPS, FEATURES))
    states = [K.Input((UNITS,)) for _ in range(2 * _states(cell))]
    return K.Model([x, *states], K.layers.Bidirectional(_layer(K, cell, return_sequences=True))(
        x, initial_state=states))


def wrapper_cases() -> list[Case]:
    cases = []
    for cell in ("lstm", "gru", "rnn"):
        cases.append(Case(f"time-distributed-dense-{cell}", lambda K, c=cell: _functional(
            K, lambda x: K.layers.TimeDistributed(K.layers.Dense(2))(_layer(K, c, return_sequences=True)(x)))))
        # Keras 3 reading of TimeDistributed(LSTM) is another change (issue 10 item 5): tf_keras here
        cases.append(Case(f"time-distributed-{cell}", lambda K, c=cell: _functional(
            K, lambda x: K.layers.TimeDistributed(_layer(K, c))(x), shape=(2, STEPS, FEATURES)),
            generations=(TF_KERAS,)))
        cases.append(Case(f"sequential-{cell}", lambda K, c=cell: K.Sequential(
            [K.Input((STEPS, FEATURES)), _layer(K, c, return_sequences=True), K.layers.Dense(2)])))
    return cases


def tf_op_cases() -> list[Case]:
    """tf_keras only: TF functions on Keras tensors (TFOpLambda) and time-major layers around them."""
    class _TF:  # tensorflow, imported when a model is built (not when the tests are collected)
        def __getattr__(self, name):
            import tensorflow
            return getattr(tensorflow, name)
    tf = _TF()

    def around_time_major(K, cell, bidirectional=False):
        def body(x):
            t = tf.transpose(x, perm=[1, 0, 2])
            layer = _layer(K, cell, return_sequences=True, time_major=True)
            y = (K.layers.Bidirectional(layer) if bidirectional else layer)(t)
            return tf.transpose(y, [1, 0, 2])
        return _functional(K, body)

    def time_major_states(K, cell):
        def body(x):
            out = _layer(K, cell, time_major=True, return_state=True, go_backwards=True)(tf.transpose(x, [1, 0, 2]))
            return out
        return _functional(K, body)

    def arithmetic(K, cell):
        def body(x):
            y = _layer(K, cell, return_sequences=True)(x)
            z = y * 2.0 + 1.0
            w = tf.math.subtract(z, y) * y
            return [tf.reduce_mean(w, axis=1), 3.0 - y[:, -1], tf.math.reduce_max(w, axis=[1], keepdims=True)]
        return _functional(K, body)

    def shapes(K, cell):
        def body(x):
            a = _layer(K, cell, return_sequences=True)(x)
            b = _layer(K, cell, return_sequences=True, go_backwards=True)(x)
            both = tf.concat([a, b], axis=-1)
            flat = tf.reshape(both[:, 1:, :4], [-1, (STEPS - 1) * 4])
            return [tf.squeeze(tf.expand_dims(flat, -1), axis=-1), tf.math.reduce_sum(both, 1), tf.math.tanh(a)]
        return _functional(K, body)

    cases = []
    for cell in ("lstm", "gru", "rnn"):
        cases.append(Case(f"time-major-{cell}", lambda K, c=cell: around_time_major(K, c), generations=(TF_KERAS,)))
        cases.append(Case(f"time-major-bi-{cell}", lambda K, c=cell: around_time_major(K, c, True),
                          generations=(TF_KERAS,)))
        cases.append(Case(f"time-major-state-back-{cell}", lambda K, c=cell: time_major_states(K, c),
                          generations=(TF_KERAS,)))
        cases.append(Case(f"tf-ops-arithmetic-{cell}", lambda K, c=cell: arithmetic(K, c), generations=(TF_KERAS,)))
        cases.append(Case(f"tf-ops-shapes-{cell}", lambda K, c=cell: shapes(K, c), generations=(TF_KERAS,)))
    return cases


def masked_initial_state_cases() -> list[Case]:
    """Embedding(mask_zero) -> recurrent(x, initial_state=...): masked semantics in both generations.

    Keras 3.15 ignores the propagated mask there; its twin's oracle is the same layers with the mask passed
    explicitly (which Keras 3 honours), and rnnx prints a note."""
    def build(K, cell, explicit_mask=False, layers=None):
        tokens = K.Input((STEPS,), dtype="int32")
        states = [K.Input((UNITS,)) for _ in range(_states(cell))]
        embedding, recurrent = layers or (K.layers.Embedding(VOCAB, FEATURES, mask_zero=True),
                                          _layer(K, cell, return_sequences=True, return_state=True))
        kwargs = {"mask": K.ops.not_equal(tokens, 0)} if explicit_mask else {}
        return K.Model([tokens, *states], recurrent(embedding(tokens), initial_state=states, **kwargs))

    def explicit(K, model):
        """The same layers (weights shared), the mask passed explicitly."""
        embedding = next(layer for layer in model.layers if isinstance(layer, K.layers.Embedding))
        recurrent = next(layer for layer in model.layers if isinstance(layer, (K.layers.LSTM, K.layers.GRU)))
        cell = "lstm" if isinstance(recurrent, K.layers.LSTM) else "gru"
        return build(K, cell, explicit_mask=True, layers=(embedding, recurrent))

    cases = []
    for cell in ("lstm", "gru"):
        cases.append(Case(f"masked-initial-state-{cell}", lambda K, c=cell: build(K, c), pad=True,
                          oracle=lambda K, m: explicit(K, m) if K.__name__ == "keras" else m,
                          note="Keras 3 (3.15) ignores the mask"))
    return cases


def all_cases() -> list[Case]:
    return (plain_cases() + bidirectional_cases() + rnn_cell_cases() + mask_cases() + state_cases()
            + wrapper_cases() + tf_op_cases() + masked_initial_state_cases())
