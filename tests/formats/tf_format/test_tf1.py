"""TF1 name-based checkpoints -> canonical layers (rnnx.formats.tf_format.tf1).

The variables are loaded by TensorFlow itself (tf.train.load_checkpoint): layers_from_variables
does not care where its arrays come from. The oracle is TensorFlow: the outputs its cells
computed when the fixtures were made (tests/fixtures/tf1/*/reference.npz, see the README
there), and for the real files of the corpus TensorFlow's own fused LSTM kernel (BlockLSTM)
run here on the stored weights. rnnx's numpy reference and the ONNX file rnnx writes
(run in onnxruntime) must agree with it within 1e-5.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnx
from rnnx.canonical import Bundle, reference
from rnnx.canonical.model import OpaqueLayer, RecurrentLayer
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.onnx_format import model as onnx_model
from rnnx.formats.tf_format import tf1, tf1_meta

TOL = 1e-5
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "tf1"
WRITES_PYTHON = "tensorflow/writes_python_basiclstm_tf17/model.ckpt-6149"
RNN_CTC = "tensorflow/rnn_ctc_cudnnlstm_bidir_tf18/model--6"


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def load(tf, prefix) -> dict:
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def read_fixture(tf, name, **options):
    folder = FIXTURES / name
    meta = folder / "model.ckpt.meta"
    options.setdefault("meta_path", meta if meta.exists() else None)
    items, notes = tf1.layers_from_variables(load(tf, folder / "model.ckpt"), **options)
    return items, notes, dict(np.load(folder / "reference.npz"))


def recurrent(items):
    return [it for it in items if isinstance(it, RecurrentLayer)]


def max_abs(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)))


def run_onnx(layers, x_by_layer, tmp_path):
    """Write the layers with rnnx's ONNX writer and run each layer's node in onnxruntime."""
    path = tmp_path / "tf1.onnx"
    rnnx.save(Bundle(list(layers), {"format": "tf1"}), path)
    return {layer.name: onnx_model.run_layer(path, layer, x_by_layer[layer.name]) for layer in layers}


def chain(layers, x, tmp_path):
    """Run a stack layer after layer in the numpy reference and in onnxruntime; top outputs of both."""
    inputs, h_ref = {}, x
    for layer in layers:
        inputs[layer.name] = h_ref.astype(np.float32)
        h_ref = reference.run_batch_first(layer, h_ref)[0][:, :, 0]
    onnx_out = run_onnx(layers, inputs, tmp_path)  # each node fed the reference's input to it
    return h_ref, onnx_out


SINGLE = {  # fixture -> (layer name, class, forget_bias or None, cell kind, directions)
    "basic_lstm": ("rnn", "BasicLSTMCell", 0.7, "lstm", 1),
    "lstm_peephole_projection": ("encoder", "LSTMCell", 0.25, "lstm", 1),
    "gru_old_names": ("decoder", "GRUCell", None, "gru-reset-before", 1),
    "block_lstm_fused": ("fused", "LSTMBlockFusedCell", 0.6, "lstm", 1),
    "cudnn_compatible_lstm": ("rnn", "CudnnCompatibleLSTMCell", 0.0, "lstm", 1),
    "bidirectional_lstm": ("bidirectional_rnn", "LSTMCell", 0.5, "lstm", 2),
    "lstm_old_names": ("char_rnn", "BasicLSTMCell", 0.9, "lstm", 1),  # forget_bias found via the Saver's names
    "lstm_block_cell": ("blockcell", "LSTMBlockCell", 0.4, "lstm", 1),
    "gru_block_cell": ("gblock", "GRUBlockCell", None, "gru-reset-before", 1),
    "static_rnn_lstm": ("rnn", "LSTMCell", 0.2, "lstm", 1),
}


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_single_cells_match_tensorflow(tf, name, tmp_path):
    items, notes, ref = read_fixture(tf, name)
    (layer,) = recurrent(items)
    want_name, class_name, forget_bias, kind, directions = SINGLE[name]
    assert (layer.name, layer.provenance["class_name"], layer.kind, layer.num_directions) == \
        (want_name, class_name, kind, directions)
    if forget_bias is not None:  # read from the .meta graph (or fixed by the class), so no default note
        assert layer.provenance["forget_bias"] == [pytest.approx(forget_bias)] * directions
        assert not [n for n in notes if "forget_bias" in n]
    x = ref["x"]
    Y = reference.run_batch_first(layer, x)[0]
    if layer.proj_size is not None:  # ONNX has no projection (and torch no peepholes): .rnnx holds both
        with pytest.raises(UnsupportedError, match="projection"):
            run_onnx([layer], {layer.name: x}, tmp_path)
        rnnx.save(Bundle([layer], {"format": "tf1"}), tmp_path / "tf1.rnnx")
        (back,) = rnnx.load(tmp_path / "tf1.rnnx").layers
        Y_onnx = reference.run_batch_first(back, x)[0]
    else:
        Y_onnx = run_onnx([layer], {layer.name: x}, tmp_path)[layer.name]
    wants = [ref["y"]] if directions == 1 else [ref["y_fw"], ref["y_bw"]]
    for d, want in enumerate(wants):
        assert max_abs(Y[:, :, d], want) < TOL
        assert max_abs(Y_onnx[:, :, d], want) < TOL


def test_peepholes_and_projection_are_kept(tf):
    items, _, _ = read_fixture(tf, "lstm_peephole_projection")
    (layer,) = recurrent(items)
    assert layer.has_peepholes and (layer.units, layer.proj_size, layer.input_size) == (5, 3, 3)


def test_multi_rnn_stack_with_opaque_variables(tf, tmp_path):
    items, notes, ref = read_fixture(tf, "multi_rnn_stack")
    layers = recurrent(items)
    assert [(l.name, l.kind, l.units) for l in layers] == [
        ("rnnlm/rnn/multi_rnn_cell/cell_0", "lstm", 4),
        ("rnnlm/rnn/multi_rnn_cell/cell_1", "gru-reset-before", 3),
        ("rnnlm/rnn/multi_rnn_cell/cell_2", "rnn", 2)]
    assert layers[0].provenance["forget_bias"] == [pytest.approx(2.0)]
    top_ref, onnx_out = chain(layers, ref["x"], tmp_path)
    assert max_abs(top_ref, ref["y"]) < TOL
    assert max_abs(onnx_out[layers[-1].name][:, :, 0], ref["y"]) < TOL
    stored = load(tf, FIXTURES / "multi_rnn_stack" / "model.ckpt")
    opaque = {it.name: dict(it.weights) for it in items if isinstance(it, OpaqueLayer)}
    assert sorted(opaque) == ["embedding", "rnnlm"]
    assert sorted(opaque["rnnlm"]) == ["softmax_b", "softmax_w"]
    assert np.array_equal(opaque["rnnlm"]["softmax_w"], stored["rnnlm/softmax_w"])
    assert np.array_equal(opaque["embedding"]["embedding"], stored["embedding"])
    logits = np.tensordot(top_ref, opaque["rnnlm"]["softmax_w"], 1) + opaque["rnnlm"]["softmax_b"]
    assert max_abs(logits, ref["logits"]) < TOL
    rnnx.save(Bundle(items, {"format": "tf1"}), tmp_path / "stack.rnnx")  # .rnnx carries the opaque tensors
    back = {it.name: dict(it.weights) for it in rnnx.load(tmp_path / "stack.rnnx").others}
    assert np.array_equal(back["rnnlm"]["softmax_w"], stored["rnnlm/softmax_w"])


def test_bidirectional_stacks_are_two_stacks_the_bw_one_reversed(tf, tmp_path):
    """bidirectional_dynamic_rnn(MultiRNNCell, MultiRNNCell): the bw cells run over reversed time."""
    items, notes, ref = read_fixture(tf, "bidirectional_stacks")
    layers = recurrent(items)
    assert [(l.name, l.kind, bool(l.options.get("go_backwards"))) for l in layers] == [
        ("bidirectional_rnn/bw/multi_rnn_cell/cell_0", "gru-reset-before", True),
        ("bidirectional_rnn/bw/multi_rnn_cell/cell_1", "lstm", True),
        ("bidirectional_rnn/fw/multi_rnn_cell/cell_0", "gru-reset-before", False),
        ("bidirectional_rnn/fw/multi_rnn_cell/cell_1", "lstm", False)]
    assert sum("reversed sequence" in n for n in notes) == 2
    fw_top, _ = chain(layers[2:], ref["x"], tmp_path)
    bw_top, _ = chain(layers[:2], ref["x"][:, ::-1], tmp_path)
    assert max_abs(fw_top, ref["y_fw"]) < TOL
    assert max_abs(bw_top[:, ::-1], ref["y_bw"]) < TOL
    import onnxruntime

    bw_first = layers[0]  # written as an ONNX direction="reverse" node: Y in input time order, as TF returns it
    path = tmp_path / "bw.onnx"
    rnnx.save(Bundle([bw_first], {"format": "tf1"}), path, layer=bw_first.name)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (Y,) = session.run(["Y"], {"X": ref["x"]})
    want = reference.run_batch_first(bw_first, ref["x"][:, ::-1])[0][:, ::-1, 0]
    assert max_abs(Y, want) < TOL


def test_activations_come_from_the_meta_graph(tf, tmp_path):
    items, _, ref = read_fixture(tf, "relu_stack")
    layers = recurrent(items)
    assert [l.describe_activations() for l in layers] == ["Sigmoid, Relu, Relu", "Sigmoid, Relu", "Relu"]
    top_ref, onnx_out = chain(layers, ref["x"], tmp_path)
    assert max_abs(top_ref, ref["y"]) < TOL
    assert max_abs(onnx_out[layers[-1].name][:, :, 0], ref["y"]) < TOL


def test_root_scope_cells_without_meta_use_tf_defaults_with_a_note(tf, tmp_path):
    items, notes, ref = read_fixture(tf, "root_cells_no_meta")
    lstm, rnn = recurrent(items)
    assert (lstm.name, rnn.name) == ("basic_lstm_cell", "basic_rnn_cell")
    (note,) = [n for n in notes if "forget_bias" in n]
    assert "forget_bias 1 " in note and "BasicLSTMCell" in note and "--forget-bias" in note
    out = run_onnx([lstm, rnn], {lstm.name: ref["x"], rnn.name: ref["x"]}, tmp_path)
    for layer, key in ((lstm, "y_lstm"), (rnn, "y_rnn")):
        assert max_abs(reference.run_batch_first(layer, ref["x"])[0][:, :, 0], ref[key]) < TOL
        assert max_abs(out[layer.name][:, :, 0], ref[key]) < TOL


def test_forget_bias_argument_overrides_and_matters(tf):
    folder = FIXTURES / "basic_lstm"
    variables = load(tf, folder / "model.ckpt")
    ref = np.load(folder / "reference.npz")
    (default,), notes = tf1.layers_from_variables(variables)  # no .meta: TF's default 1.0, with a note
    assert default.provenance["forget_bias"] == [1.0] and any("forget_bias 1 " in n for n in notes)
    assert max_abs(reference.run_batch_first(default, ref["x"])[0][:, :, 0], ref["y"]) > 1e-3
    (given,), notes = tf1.layers_from_variables(variables, folder / "model.ckpt.meta", forget_bias=0.7)
    assert given.provenance["forget_bias_source"] == "argument" and not any("forget_bias" in n for n in notes)
    assert max_abs(reference.run_batch_first(given, ref["x"])[0][:, :, 0], ref["y"]) < TOL


def test_cell_clip_is_refused_in_one_sentence(tf):
    with pytest.raises(UnsupportedError, match=r"^TF1 cell 'rnn/lstm_cell' clips its cell state") as e:
        read_fixture(tf, "lstm_cell_clip")
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_corpus_basic_lstm_tf17_matches_tensorflow_block_lstm(tf, corpus, tmp_path):
    """2 x BasicLSTMCell(128) of a real TF 1.7 char model: run by TF's BlockLSTM on the stored weights."""
    prefix = corpus / WRITES_PYTHON
    variables = load(tf, prefix)
    items, notes = tf1.layers_from_variables(variables, Path(str(prefix) + ".meta"))
    layers = recurrent(items)
    assert [(l.name, l.provenance["class_name"], l.units, l.input_size) for l in layers] == [
        ("rnnlm/multi_rnn_cell/cell_0", "BasicLSTMCell", 128, 128),
        ("rnnlm/multi_rnn_cell/cell_1", "BasicLSTMCell", 128, 128)]
    assert all(l.provenance["forget_bias_source"] == "meta" and l.provenance["forget_bias"] == [1.0] for l in layers)
    assert sorted(it.name for it in items if isinstance(it, OpaqueLayer)) == ["Variable", "embedding", "rnnlm"]
    assert any("optimizer" in n for n in notes) and not any("Adam" in it.name for it in items)
    x = np.random.default_rng(7).uniform(-1, 1, (2, 9, 128)).astype(np.float32)
    h_tf = x
    for k in range(2):
        scope = f"rnnlm/multi_rnn_cell/cell_{k}/basic_lstm_cell"
        h_tf = block_lstm(tf, h_tf, variables[f"{scope}/kernel"], variables[f"{scope}/bias"], forget_bias=1.0)
    top_ref, onnx_out = chain(layers, x, tmp_path)
    assert max_abs(top_ref, h_tf) < TOL
    assert max_abs(onnx_out[layers[1].name][:, :, 0], h_tf) < TOL


def test_corpus_char_model_to_torch_with_embedding_and_softmax(tf, corpus, tmp_path):
    """The .meta graph shows the embedding (a Gather's table) and the softmax (MatMul + bias): the .pt
    target holds them as nn.Embedding and nn.Linear, and the whole char model in torch matches TensorFlow."""
    import torch

    prefix = corpus / WRITES_PYTHON
    variables = load(tf, prefix)
    items, _ = tf1.layers_from_variables(variables, Path(str(prefix) + ".meta"))
    classes = {it.name: it.class_name for it in items if isinstance(it, OpaqueLayer)}
    assert classes == {"Variable": None, "embedding": "Embedding", "rnnlm": "Dense"}
    notes = rnnx.save(Bundle(items, {"format": "tf1"}), tmp_path / "char.pt")
    assert any("skipped 'Variable'" in n for n in notes)
    state = torch.load(tmp_path / "char.pt", weights_only=True)
    embedding = torch.nn.Embedding(94, 128)
    embedding.load_state_dict({"weight": state["embedding.weight"]})
    softmax = torch.nn.Linear(128, 94)
    softmax.load_state_dict({k: state[f"rnnlm.{k}"] for k in ("weight", "bias")})
    lstms = []
    for k in range(2):
        lstm = torch.nn.LSTM(128, 128, batch_first=True)
        lstm.load_state_dict({key.split(".", 1)[1]: v for key, v in state.items()
                              if key.startswith(f"rnnlm_multi_rnn_cell_cell_{k}.")})
        lstms.append(lstm)
    ids = np.random.default_rng(9).integers(0, 94, (2, 8))
    with torch.no_grad():
        h = embedding(torch.from_numpy(ids))
        for lstm in lstms:
            h = lstm(h)[0]
        got = softmax(h).numpy()
    h_tf = tf.nn.embedding_lookup(variables["embedding"], ids).numpy()
    for k in range(2):
        scope = f"rnnlm/multi_rnn_cell/cell_{k}/basic_lstm_cell"
        h_tf = block_lstm(tf, h_tf, variables[f"{scope}/kernel"], variables[f"{scope}/bias"], forget_bias=1.0)
    want = (tf.tensordot(h_tf, variables["rnnlm/softmax_w"], 1) + variables["rnnlm/softmax_b"]).numpy()
    assert max_abs(got, want) < TOL


def test_corpus_cudnn_lstm_opaque_buffer_equals_copies_and_tensorflow(tf, corpus, tmp_path):
    """A TF 1.8 bidirectional CudnnLSTM(160): the opaque buffer decoded, checked against its canonical
    copies, and run against TF's BlockLSTM (CudnnCompatibleLSTMCell's op) on the copies."""
    prefix = corpus / RNN_CTC
    variables = load(tf, prefix)
    meta = Path(str(prefix) + ".meta")
    buffer_only = {k: v for k, v in variables.items() if "cudnn_compatible_lstm_cell" not in k}
    decoded = []
    for given, meta_path, checked in ((variables, meta, True), (variables, None, True), (buffer_only, meta, False)):
        items, notes = tf1.layers_from_variables(given, meta_path)  # sizes from the graph and/or the copies
        (layer,) = recurrent(items)
        assert (layer.name, layer.provenance["class_name"], layer.units, layer.input_size, layer.num_directions) \
            == ("rnn_ctc_model/outputs/cudnn_lstm", "CudnnLSTM", 160, 28, 2)
        assert any("equals its canonical copies" in n for n in notes) == checked
        decoded.append(layer)
    assert all(np.array_equal(a.directions[1].R, decoded[0].directions[1].R) for a in decoded)
    assert [it.name for it in items if isinstance(it, OpaqueLayer)] == ["rnn_ctc_model/outputs/dense"]
    copy = "rnn_ctc_model/outputs/cudnn_lstm/stack_bidirectional_rnn/cell_0/bidirectional_rnn/{}/" \
           "cudnn_compatible_lstm_cell/{}"
    x = np.random.default_rng(8).uniform(-1, 1, (2, 11, 28)).astype(np.float32)
    y_fw = block_lstm(tf, x, variables[copy.format("fw", "kernel")], variables[copy.format("fw", "bias")], 0.0)
    y_bw = block_lstm(tf, x[:, ::-1], variables[copy.format("bw", "kernel")],
                      variables[copy.format("bw", "bias")], 0.0)[:, ::-1]
    Y = reference.run_batch_first(layer, x)[0]
    Y_onnx = run_onnx([layer], {layer.name: x}, tmp_path)[layer.name]
    for d, want in enumerate((y_fw, y_bw)):
        assert max_abs(Y[:, :, d], want) < TOL
        assert max_abs(Y_onnx[:, :, d], want) < TOL


def test_opaque_buffer_that_disagrees_with_its_copies_is_refused(tf, corpus):
    variables = load(tf, corpus / RNN_CTC)
    name = "rnn_ctc_model/outputs/cudnn_lstm/opaque_kernel"
    damaged = variables[name].copy()
    damaged[1000] += 0.5
    with pytest.raises(FormatError, match="disagree"):
        tf1.layers_from_variables({**variables, name: damaged})


def block_lstm(tf, x, kernel, bias, forget_bias):
    """TensorFlow's fused LSTM kernel (the op of LSTMBlockCell / CudnnCompatibleLSTMCell) over x [batch, time, in]."""
    batch, units = x.shape[0], bias.shape[0] // 4
    zeros, no_peep = tf.zeros([batch, units]), tf.zeros([units])
    out = tf.raw_ops.BlockLSTM(seq_len_max=tf.constant(x.shape[1], tf.int64), x=np.swapaxes(x, 0, 1).copy(),
                               cs_prev=zeros, h_prev=zeros, w=kernel, wci=no_peep, wcf=no_peep, wco=no_peep, b=bias,
                               forget_bias=forget_bias, cell_clip=-1.0, use_peephole=False)
    return np.swapaxes(out.h.numpy(), 0, 1)


# --- refusals and the .meta reader --------------------------------------------------------------


class Claimed:
    """An array-like that only claims a shape and dtype: asking for its values fails the test."""

    def __init__(self, shape, dtype=np.float32):
        self.shape, self.dtype = shape, np.dtype(dtype)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the values of a variable were read before its shape was checked")


def test_shapes_that_fit_no_layout_are_refused_before_reading_values():
    variables = {"rnn/basic_lstm_cell/kernel": Claimed((7, 15)), "rnn/basic_lstm_cell/bias": Claimed((15,))}
    with pytest.raises(FormatError, match=r"^TF1 cell 'rnn/basic_lstm_cell' \(BasicLSTMCell\): kernel \(7, 15\), "
                                          r"bias \(15,\) fit no known layout"):
        tf1.layers_from_variables(variables)
    gru = {"g/gru_cell/gates/kernel": Claimed((7, 8)), "g/gru_cell/gates/bias": Claimed((8,)),
           "g/gru_cell/candidate/kernel": Claimed((7, 3)), "g/gru_cell/candidate/bias": Claimed((3,))}
    with pytest.raises(FormatError, match="fit no known layout"):
        tf1.layers_from_variables(gru)


def test_integer_weights_and_missing_variables_are_refused():
    ints = {"rnn/basic_rnn_cell/kernel": np.zeros((5, 2), np.int32), "rnn/basic_rnn_cell/bias": np.zeros(2)}
    with pytest.raises(FormatError, match="holds int32 values where a float weight is expected"):
        tf1.layers_from_variables(ints)
    with pytest.raises(FormatError, match="has no bias or biases variable"):
        tf1.layers_from_variables({"rnn/basic_rnn_cell/kernel": np.zeros((5, 2), np.float32)})


def test_keras_layer_variables_are_refused_not_misread():
    for scope in ("lstm", "lstm/lstm_cell"):  # tf.keras 1.x and 2.x names in a Saver checkpoint
        keras = {f"{scope}/kernel": Claimed((3, 16)), f"{scope}/recurrent_kernel": Claimed((4, 16)),
                 f"{scope}/bias": Claimed((16,))}
        with pytest.raises(UnsupportedError, match=f"under '{scope}' are a Keras layer's"):
            tf1.layers_from_variables(keras)


def test_unknown_cells_are_refused_not_carried_as_opaque():
    for scope in ("rnn/layer_norm_basic_lstm_cell", "RNN/MultiRNNCell/Cell0/BasicLSTMCell/Linear"):
        variables = {f"{scope}/kernel": Claimed((7, 16)), f"{scope}/bias": Claimed((16,)),
                     f"{scope}/Matrix": Claimed((7, 16))}
        with pytest.raises(UnsupportedError, match="cell, which rnnx does not read"):
            tf1.layers_from_variables(variables)


def test_opaque_buffer_without_sizes_is_refused():
    with pytest.raises(FormatError, match="whose layer sizes are neither in a .meta graph nor in canonical copies"):
        tf1.layers_from_variables({"m/cudnn_lstm/opaque_kernel": np.zeros(100, np.float32)})


def test_damaged_meta_graph_is_one_sentence(tmp_path):
    meta = (FIXTURES / "basic_lstm" / "model.ckpt.meta").read_bytes()
    bad = tmp_path / "model.ckpt.meta"
    bad.write_bytes(meta[: len(meta) // 2])
    variables = {"rnn/basic_lstm_cell/kernel": np.zeros((7, 16), np.float32),
                 "rnn/basic_lstm_cell/bias": np.zeros(16, np.float32)}
    with pytest.raises(FormatError, match=r"the \.meta graph is truncated or not a MetaGraphDef"):
        tf1.layers_from_variables(variables, bad)


def test_damaged_meta_bytes_give_rnnx_errors_only(tmp_path):
    """Flipped bytes and truncations anywhere in a .meta: the result is a layer or an RnnxError, never a crash."""
    import random

    from rnnx.errors import RnnxError

    source = (FIXTURES / "multi_rnn_stack" / "model.ckpt.meta").read_bytes()
    scope = "rnnlm/rnn/multi_rnn_cell/cell_0/basic_lstm_cell"
    variables = {f"{scope}/kernel": np.zeros((7, 16), np.float32), f"{scope}/bias": np.zeros(16, np.float32)}
    rng, path, outcomes = random.Random(11), tmp_path / "model.ckpt.meta", set()
    for _ in range(120):
        damaged = bytearray(source)
        for _ in range(rng.randint(1, 20)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged[:rng.randrange(len(damaged))] if rng.random() < 0.3 else damaged))
        try:
            tf1.layers_from_variables(variables, path)
            outcomes.add("read")
        except RnnxError as e:
            outcomes.add(type(e).__name__)
    assert {"read", "FormatError"} <= outcomes


def test_meta_field_numbers_equal_tensorflows_descriptors(tf):
    from tensorflow.core.framework import attr_value_pb2, function_pb2, graph_pb2, node_def_pb2, op_def_pb2, tensor_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    messages = {"MetaGraphDef": meta_graph_pb2.MetaGraphDef, "GraphDef": graph_pb2.GraphDef,
                "FunctionDefLibrary": function_pb2.FunctionDefLibrary, "FunctionDef": function_pb2.FunctionDef,
                "OpDef": op_def_pb2.OpDef, "NodeDef": node_def_pb2.NodeDef, "AttrValue": attr_value_pb2.AttrValue,
                "TensorProto": tensor_pb2.TensorProto}
    assert set(messages) == set(tf1_meta.FIELDS)
    for message, numbers in tf1_meta.FIELDS.items():
        fields = messages[message].DESCRIPTOR.fields_by_name
        assert {name: fields[name].number for name in numbers} == numbers, message
    attr_entry = node_def_pb2.NodeDef.DESCRIPTOR.fields_by_name["attr"].message_type.fields_by_name
    assert {k: attr_entry[k].number for k in tf1_meta.MAP_ENTRY} == tf1_meta.MAP_ENTRY


def test_reading_imports_no_tensorflow():
    """The reader and its .meta decoder run on plain numpy arrays without importing TensorFlow or torch."""
    code = (
        "import sys, numpy as np\n"
        "from rnnx.formats.tf_format import tf1\n"
        "v = {'rnn/basic_lstm_cell/kernel': np.zeros((7, 16), np.float32),\n"
        "     'rnn/basic_lstm_cell/bias': np.zeros(16, np.float32)}\n"
        f"(layer,), notes = tf1.layers_from_variables(v, {str(FIXTURES / 'basic_lstm' / 'model.ckpt.meta')!r})\n"
        "assert abs(layer.provenance['forget_bias'][0] - 0.7) < 1e-6, layer.provenance\n"
        "bad = [m for m in ('tensorflow', 'torch', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr


def test_cudnn_gru_opaque_buffer_and_compatible_copies_match_torch_gru():
    """CudnnGRU and CudnnCompatibleGRUCell (TF 2.21 builds neither): a buffer laid out as cuDNN lays it out
    (the layout checked on the real CudnnLSTM file), from the weights of a torch.nn.GRU, which computes
    cuDNN's reset-after GRU; its canonical copies built as TF's saveable writes them."""
    import torch

    torch.manual_seed(3)
    inputs, units = 3, 4
    gru = torch.nn.GRU(inputs, units, batch_first=True, bidirectional=True)
    p = {k: v.detach().numpy().astype(np.float32) for k, v in gru.state_dict().items()}
    scope = "enc/cudnn_gru"
    directions = ("", "_reverse")
    buffer = np.concatenate([p[f"weight_ih_l0{s}"].ravel() for s in directions[:1]]
                            + [p[f"weight_hh_l0{s}"].ravel() for s in directions[:1]]
                            + [p[f"weight_ih_l0{s}"].ravel() for s in directions[1:]]
                            + [p[f"weight_hh_l0{s}"].ravel() for s in directions[1:]]
                            + [p[f"bias_{kind}_l0{s}"] for s in directions for kind in ("ih", "hh")])
    variables = {f"{scope}/opaque_kernel": buffer}
    for side, s in zip(("fw", "bw"), directions):
        cell = f"{scope}/stack_bidirectional_rnn/cell_0/bidirectional_rnn/{side}/cudnn_compatible_gru_cell"
        W, R, b_w, b_r = (p[f"{k}_l0{s}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        rz = slice(0, 2 * units)
        variables[f"{cell}/gates/kernel"] = np.concatenate([W[rz], R[rz]], axis=1).T.copy()
        variables[f"{cell}/gates/bias"] = b_w[rz] + b_r[rz]
        variables[f"{cell}/candidate/input_projection/kernel"] = W[2 * units:].T.copy()
        variables[f"{cell}/candidate/input_projection/bias"] = b_w[2 * units:]
        variables[f"{cell}/candidate/hidden_projection/kernel"] = R[2 * units:].T.copy()
        variables[f"{cell}/candidate/hidden_projection/bias"] = b_r[2 * units:]
    items, notes = tf1.layers_from_variables(variables)
    (layer,) = recurrent(items)
    assert (layer.name, layer.provenance["class_name"], layer.kind, layer.num_directions) == \
        (scope, "CudnnGRU", "gru", 2)
    assert any("equals its canonical copies" in n for n in notes)
    x = np.random.default_rng(4).uniform(-1, 1, (2, 6, inputs)).astype(np.float32)
    with torch.no_grad():
        want = gru(torch.from_numpy(x))[0].numpy().reshape(2, 6, 2, units)
    assert max_abs(reference.run_batch_first(layer, x)[0], want) < TOL
    copies_only = {k: v for k, v in variables.items() if not k.endswith("opaque_kernel")}
    (pair,), _ = tf1.layers_from_variables(copies_only)  # the copies alone: CudnnCompatibleGRUCell x 2
    assert (pair.provenance["class_name"], pair.kind, pair.num_directions) == ("CudnnCompatibleGRUCell", "gru", 2)
    assert max_abs(reference.run_batch_first(pair, x)[0], want) < TOL


@pytest.mark.parametrize("relative", [WRITES_PYTHON, RNN_CTC, *(f"fixtures:{n}" for n in ("multi_rnn_stack", "bidirectional_stacks", "gru_old_names"))])
def test_cli_reads_tf1_checkpoints_as_tensorflow_reads_them(tf, corpus, relative, tmp_path, cli):
    """The whole path (format detection, the bundle reader, tf1.py) gives the same layers as
    tf1.py fed with TensorFlow's own checkpoint reader, and the CLI conversion verifies."""
    if relative.startswith("fixtures:"):
        prefix = FIXTURES / relative.split(":")[1] / "model.ckpt"
    else:
        prefix = corpus / relative
    meta = Path(f"{prefix}.meta")
    expected, _ = tf1.layers_from_variables(load(tf, prefix), meta if meta.exists() else None)
    done = cli("convert", prefix.parent, tmp_path / "out.onnx", "--verify")
    assert done.returncode == 0, done.stderr
    done = cli("convert", f"{prefix}.index", tmp_path / "out.rnnx")
    assert done.returncode == 0, done.stderr
    got = rnnx.load(tmp_path / "out.rnnx")
    assert [it.name for it in got.layers] == [it.name for it in recurrent(expected)]
    for mine, theirs in zip(got.layers, recurrent(expected)):
        for d_mine, d_theirs in zip(mine.directions, theirs.directions):
            assert d_mine.tensors().keys() == d_theirs.tensors().keys()
            for key, value in d_theirs.tensors().items():
                assert np.array_equal(d_mine.tensors()[key], value), (mine.name, key)
