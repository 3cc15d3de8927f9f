"""Keras layers to ONNX: onnxruntime runs rnnx's ONNX node and tf_keras (or Keras 3) runs the equivalent CPU
layer; the outputs agree within 1e-5. CuDNN files are loaded into their CPU twins by tf_keras's own converting
`load_weights`, which is the oracle for what a CuDNN layer computes."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import max_abs, session  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle, Direction, RecurrentLayer, gates  # noqa: E402
from rnnx.canonical.activations import HARD_SIGMOID_KERAS3, TANH  # noqa: E402

BATCH, SEQ = 3, 7

# (rnnx source file, oracle model: "cudnn_*" = CPU twin json + converting load_weights, else load_model, layer)
CASES = {
    "CuDNNLSTM": ("cudnn_stack_weights.h5", "cudnn_stack", "lstm_a"),
    "CuDNNGRU": ("cudnn_stack_weights.h5", "cudnn_stack", "gru_b"),
    "CuDNNLSTM_last": ("cudnn_stack_full.h5", "cudnn_stack", "lstm_c"),
    "Bidirectional_CuDNNLSTM": ("cudnn_bidir_weights.h5", "cudnn_bidir", "bi_concat"),
    "Bidirectional_CuDNNGRU_sum": ("cudnn_bidir_full.h5", "cudnn_bidir", "bi_sum"),
    "LSTM_hard_sigmoid": ("cpu_mix_full.h5", "cpu_mix", "lstm_hard"),
    "GRU_reset_before_hard_sigmoid": ("cpu_mix_full.h5", "cpu_mix", "gru_before"),
    "GRU_reset_after": ("cpu_mix_full.h5", "cpu_mix", "gru_after"),
    "SimpleRNN": ("cpu_mix_full.h5", "cpu_mix", "simple"),
    "SimpleRNN_relu": ("cpu_mix_full.h5", "cpu_mix", "simple_relu"),
    "Bidirectional_LSTM_ave": ("cpu_mix_full.h5", "cpu_mix", "bi_lstm"),
    "LSTM_no_bias": ("cpu_mix_full.h5", "cpu_mix", "lstm_nobias"),
}


@pytest.fixture(scope="module")
def oracle_models(fixtures):
    """The tf_keras CPU models holding every fixture's weights, loaded by tf_keras itself."""
    import tf_keras

    folder = fixtures / "keras2"
    models = {}
    for name in ("cudnn_stack", "cudnn_bidir"):
        model = tf_keras.models.model_from_json((folder / f"{name}_cpu.json").read_text())
        model.load_weights(str(folder / f"{name}_weights.h5"))  # tf_keras converts CuDNN weights itself
        models[name] = model
    models["cpu_mix"] = tf_keras.models.load_model(str(folder / "cpu_mix_full.h5"), compile=False)
    return models


def keras_sequence_output(keras_layer, x):
    """What `keras_layer` returns for every step, its Bidirectional halves concatenated (forward first)."""
    import tf_keras

    config = keras_layer.get_config()
    if isinstance(keras_layer, tf_keras.layers.Bidirectional):
        config["merge_mode"] = "concat"
        config["layer"]["config"]["return_sequences"] = True
        if "backward_layer" in config:
            config["backward_layer"]["config"]["return_sequences"] = True
    else:
        config["return_sequences"] = True
    twin = type(keras_layer).from_config(config)
    twin.build((None, None, x.shape[-1]))
    twin.set_weights(keras_layer.get_weights())
    return twin(x).numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_layer_computes_what_tf_keras_computes(case, fixtures, oracle_models, tmp_path):
    source, oracle, name = CASES[case]
    out = tmp_path / f"{name}.onnx"
    rnnx.convert(fixtures / "keras2" / source, out, layer=name)
    model = onnx.load(out)
    assert [i.name for i in model.graph.input][0] == "X" and model.graph.output[0].name == "Y"
    assert all(n.op_type != "Loop" for n in model.graph.node)
    keras_layer = oracle_models[oracle].get_layer(name)
    in_size = keras_layer.input_shape[-1]
    x = np.random.default_rng(len(case)).uniform(-1.5, 1.5, (BATCH, SEQ, in_size)).astype(np.float32)
    (Y,) = session(model).run(["Y"], {"X": x})
    assert max_abs(Y, keras_sequence_output(keras_layer, x)) < 1e-5


def test_hard_sigmoid_nodes_carry_the_keras2_constants(fixtures, tmp_path):
    rnnx.convert(fixtures / "keras2" / "cpu_mix_full.h5", tmp_path / "m.onnx", layer="lstm_hard")
    (node,) = [n for n in onnx.load(tmp_path / "m.onnx").graph.node if n.op_type == "LSTM"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["activations"] == [b"HardSigmoid", b"Tanh", b"Tanh"]
    assert np.float32(attrs["activation_alpha"][0]) == np.float32(0.2)
    assert np.float32(attrs["activation_beta"][0]) == np.float32(0.5)


def test_weights_only_file_gives_one_node_per_layer_named_after_it(fixtures, oracle_models, tmp_path):
    """Every recurrent layer of a weights-only CuDNN file as its own node with its own I/O."""
    out = tmp_path / "all.onnx"
    notes = rnnx.save(rnnx.load(fixtures / "keras2" / "cudnn_stack_weights.h5"), out)
    assert notes == []
    model = onnx.load(out)
    names = ("lstm_a", "gru_b", "lstm_c")
    assert [n.name for n in model.graph.node if n.op_type in ("LSTM", "GRU")] == list(names)
    feeds, wanted = {}, []
    rng = np.random.default_rng(11)
    for name in names:
        layer = oracle_models["cudnn_stack"].get_layer(name)
        feeds[f"{name}_X"] = rng.uniform(-1, 1, (BATCH, SEQ, layer.input_shape[-1])).astype(np.float32)
        wanted.append(keras_sequence_output(layer, feeds[f"{name}_X"]))
    got = session(model).run([f"{n}_Y" for n in names], feeds)
    for g, w in zip(got, wanted):
        assert max_abs(g, w) < 1e-5


def test_final_states_match_keras_return_state(fixtures, oracle_models, tmp_path):
    import tf_keras

    rnnx.convert(fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / "a.onnx", layer="lstm_a")
    keras_layer = oracle_models["cudnn_stack"].get_layer("lstm_a")
    twin = tf_keras.layers.LSTM.from_config({**keras_layer.get_config(), "return_state": True})
    twin.build((None, None, 4))
    twin.set_weights(keras_layer.get_weights())
    x = np.random.default_rng(2).uniform(-1, 1, (BATCH, SEQ, 4)).astype(np.float32)
    _, h, c = (t.numpy() for t in twin(x))
    Y_h, Y_c = session(onnx.load(tmp_path / "a.onnx")).run(["Y_h", "Y_c"], {"X": x})
    assert max_abs(Y_h[0], h) < 1e-5 and max_abs(Y_c[0], c) < 1e-5


def test_keras3_hard_sigmoid_becomes_hardsigmoid_one_sixth(tmp_path):
    """A Keras 3 LSTM(recurrent_activation="hard_sigmoid") is HardSigmoid(1/6, 0.5) in ONNX, not Keras 2's 0.2."""
    import keras

    layer = keras.layers.LSTM(4, recurrent_activation="hard_sigmoid", return_sequences=True)
    layer.build((None, None, 3))
    rng = np.random.default_rng(3)
    layer.set_weights([rng.uniform(-1.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    kernel, recurrent, bias = layer.get_weights()
    to_canonical = lambda a: gates.reorder(a, gates.LSTM_KERAS, gates.LSTM_CANONICAL)  # noqa: E731
    canonical = RecurrentLayer("lstm", "lstm", [Direction(W=to_canonical(kernel.T), R=to_canonical(recurrent.T),
                                                          b_w=to_canonical(bias))],
                               activations=(HARD_SIGMOID_KERAS3, TANH, TANH))
    rnnx.save(Bundle([canonical]), tmp_path / "k3.onnx", layer="lstm")
    model = onnx.load(tmp_path / "k3.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert np.float32(attrs["activation_alpha"][0]) == np.float32(1 / 6)
    x = rng.uniform(-4, 4, (BATCH, SEQ, 3)).astype(np.float32)  # wide enough to reach both clip edges
    (Y,) = session(model).run(["Y"], {"X": x})
    assert max_abs(Y, keras.ops.convert_to_numpy(layer(x))) < 1e-5


def test_keras3_file_hard_sigmoid_gru_to_onnx(fixtures, tmp_path):
    """The Keras 3 fixture's GRU(recurrent_activation="hard_sigmoid") through rnnx's Keras 3 reader to ONNX,
    against Keras 3 running the layer it loads from the same file."""
    import keras

    src = fixtures / "keras3" / "mixed.keras"
    rnnx.convert(src, tmp_path / "gru_hard.onnx", layer="gru_hard")
    model = onnx.load(tmp_path / "gru_hard.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "GRU"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["activations"][0] == b"HardSigmoid" and np.float32(attrs["activation_alpha"][0]) == np.float32(1 / 6)
    keras_layer = keras.saving.load_model(str(src), compile=False).get_layer("gru_hard")
    twin = type(keras_layer).from_config({**keras_layer.get_config(), "return_sequences": True})
    in_size = keras_layer.get_weights()[0].shape[0]
    twin.build((None, None, in_size))
    twin.set_weights(keras_layer.get_weights())
    x = np.random.default_rng(8).uniform(-4, 4, (BATCH, SEQ, in_size)).astype(np.float32)
    (Y,) = session(model).run(["Y"], {"X": x})
    assert max_abs(Y, keras.ops.convert_to_numpy(twin(x))) < 1e-5


@pytest.mark.parametrize("source, name", [
    ("medaka_lstm_theano_full.h5", "lstm_1"),  # Keras 2.0.4 config: hard_sigmoid LSTM
    ("medaka_bigru_full.hdf5", "bidirectional_2"),  # Keras 2.1.5: Bidirectional reset-before GRU, hard_sigmoid
])
def test_real_keras2_models_to_onnx(corpus, tmp_path, source, name):
    import tf_keras

    src = corpus / "keras2" / source
    rnnx.convert(src, tmp_path / "layer.onnx", layer=name)
    keras_layer = tf_keras.models.load_model(str(src), compile=False).get_layer(name)
    x = np.random.default_rng(9).uniform(-2, 2, (BATCH, SEQ, keras_layer.input_shape[-1])).astype(np.float32)
    (Y,) = session(onnx.load(tmp_path / "layer.onnx")).run(["Y"], {"X": x})
    assert max_abs(Y, keras_sequence_output(keras_layer, x)) < 1e-5


def test_real_weights_only_cudnn_file_to_onnx(corpus, tmp_path):
    """textgenrnn's weights-only CuDNNLSTM file: every layer its own node; tf_keras converts the same file into
    CPU LSTMs by name (its own CuDNN conversion) for the oracle."""
    import tf_keras

    src = corpus / "keras2" / "textgenrnn_cudnnlstm2_weights.hdf5"
    rnnx.convert(src, tmp_path / "all.onnx")
    L = tf_keras.layers
    inp = L.Input((None, 100))
    h1 = L.LSTM(128, recurrent_activation="sigmoid", return_sequences=True, name="rnn_1")(inp)
    h2 = L.LSTM(128, recurrent_activation="sigmoid", return_sequences=True, name="rnn_2")(h1)
    twin = tf_keras.Model(inp, [h1, h2])
    twin.load_weights(str(src), by_name=True)
    x = np.random.default_rng(10).uniform(-1, 1, (BATCH, SEQ, 100)).astype(np.float32)
    y1, y2 = (t.numpy() for t in twin(x))
    got = session(onnx.load(tmp_path / "all.onnx")).run(["rnn_1_Y", "rnn_2_Y"], {"rnn_1_X": x, "rnn_2_X": y1})
    assert max_abs(got[0], y1) < 1e-5 and max_abs(got[1], y2) < 1e-5
