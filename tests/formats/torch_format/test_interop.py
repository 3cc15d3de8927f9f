"""Keras -> PyTorch, PyTorch -> Keras 2 HDF5 (tf_keras and Keras 3) and PyTorch -> ONNX.

The oracles are the frameworks: tf_keras computes the Keras sources (CuDNN files through
tf_keras's own load_weights conversion into the CPU twin), torch computes the PyTorch
sources, onnxruntime the ONNX files; every pair agrees within 1e-5.
"""

import json
import re

import numpy as np
import pytest
import torch

import rnnx
from rnnx.formats.torch_format import layout as torch_layout

RNG = np.random.default_rng(5)
BATCH, SEQ = 3, 7
NOTE = re.compile(r"^(?P<prefix>\S+) = (?P<call>nn\.\w+\(.*\))  # from (?P<source>.+)$")


@pytest.fixture(scope="module")
def tf_keras():
    import tf_keras

    return tf_keras


def modules_from_notes(notes, state):
    """{prefix: module} built from the writer's notes (constructor calls) and loaded (strict) from `state`."""
    out = {}
    for note in notes:
        m = NOTE.match(note)
        if not m:
            continue
        module = eval(m["call"], {"nn": torch.nn})
        if isinstance(module, (torch.nn.RNNBase, torch.nn.RNNCellBase)):
            module.load_state_dict(sub_state(state, m["prefix"]))
            out[m["prefix"]] = module
    return out


def sub_state(state, prefix):
    """The entries of module `prefix` ("" = the root) with the prefix removed."""
    if not prefix:
        return {k: v for k, v in state.items() if "." not in k}
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def run_torch(module, x):
    """[batch, seq, D*hidden] from a module (batch-first input) or a cell stepped over time."""
    inputs = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    with torch.no_grad():
        if isinstance(module, torch.nn.RNNCellBase):
            h, steps = None, []
            for t in range(x.shape[1]):
                h = module(inputs[:, t], h)
                steps.append(h[0] if isinstance(h, tuple) else h)
            return torch.stack(steps, 1).numpy()
        if not module.batch_first:
            return module(inputs.transpose(0, 1))[0].transpose(0, 1).numpy()
        return module(inputs)[0].numpy()


# --- Keras -> PyTorch --------------------------------------------------------------------------

def keras_io(model, name, x, tf_keras):
    """(input, output) of the Keras layer `name` ("outer/inner" inside a nested model) for model input x."""
    if "/" in name:
        outer, inner = name.split("/")
        sub = model.get_layer(outer)  # in these fixtures a nested model reads the model's input directly
        layer = sub.get_layer(inner)
        probe = tf_keras.Model(sub.inputs, [layer.input, layer.output])
    else:
        layer = model.get_layer(name)
        probe = tf_keras.Model(model.inputs, [layer.input, layer.output])
    layer_in, layer_out = probe.predict(x, verbose=0)
    return layer, layer_in, layer_out


def keras_view(layer, out, units):
    """Torch's [batch, seq, D*hidden] seen as the Keras layer returns it (merge_mode, return_sequences)."""
    bidirectional = hasattr(layer, "forward_layer")
    sequences = (layer.forward_layer if bidirectional else layer).return_sequences
    if not bidirectional:
        return out if sequences else out[:, -1]
    fwd, bwd = out[..., :units], out[..., units:]
    if not sequences:
        fwd, bwd = fwd[:, -1], bwd[:, 0]  # the backward direction ends at t = 0
    merge = {"concat": lambda a, b: np.concatenate([a, b], -1), "sum": np.add, "mul": np.multiply,
             "ave": lambda a, b: (a + b) / 2}
    return merge[layer.merge_mode](fwd, bwd)


KERAS_SOURCES = {
    "cudnn_stack_weights.h5": "cudnn_stack_cpu.json",
    "cudnn_stack_full.h5": "cudnn_stack_cpu.json",
    "cudnn_bidir_weights.h5": "cudnn_bidir_cpu.json",
    "cudnn_nested_weights.h5": "cudnn_nested_cpu.json",
    "cpu_mix_full.h5": None,
}


@pytest.mark.parametrize("name", KERAS_SOURCES)
def test_keras_to_torch_matches_tf_keras(fixtures, tmp_path, tf_keras, name):
    src = fixtures / "keras2" / name
    twin = KERAS_SOURCES[name]
    if twin:  # tf_keras converts the CuDNN weights into the CPU twin itself
        oracle = tf_keras.models.model_from_json((fixtures / "keras2" / twin).read_text())
        oracle.load_weights(str(src))
    else:
        oracle = tf_keras.models.load_model(str(src), compile=False)
    bundle = rnnx.load(src)
    expressible = [it for it in bundle.items
                   if not (isinstance(it, rnnx.RecurrentLayer) and torch_layout.refusal(it))]
    bundle = rnnx.Bundle(expressible, bundle.source)
    out = tmp_path / "model.pt"
    notes = rnnx.save(bundle, out)
    modules = modules_from_notes(notes, torch.load(out, weights_only=True))
    assert len(modules) == len(bundle.layers) >= 2
    x = RNG.standard_normal((BATCH, SEQ, oracle.input_shape[-1])).astype(np.float32)
    for layer in bundle.layers:
        keras_layer, layer_in, want = keras_io(oracle, layer.name, x, tf_keras)
        module = modules[torch_layout.identifier(layer.name)]
        got = keras_view(keras_layer, run_torch(module, layer_in), layer.hidden_size)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-5, layer.name


def test_keras_dense_rides_along_as_linear(fixtures, tmp_path, tf_keras):
    src = fixtures / "keras2" / "cudnn_stack_weights.h5"
    oracle = tf_keras.models.model_from_json((fixtures / "keras2" / "cudnn_stack_cpu.json").read_text())
    oracle.load_weights(str(src))
    out = tmp_path / "model.safetensors"
    notes = rnnx.save(rnnx.load(src), out)
    assert "head = nn.Linear(3, 2)  # from 'head'" in notes
    from safetensors.torch import load_file

    state = load_file(str(out))
    linear = torch.nn.Linear(3, 2)
    linear.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    x = RNG.standard_normal((4, SEQ, 4)).astype(np.float32)
    _, head_in, want = keras_io(oracle, "head", x, tf_keras)
    with torch.no_grad():
        got = linear(torch.from_numpy(head_in)).numpy()
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("layer, words", [
    (None, "Layer 'lstm_hard' uses gate activation HardSigmoid(alpha=0.2, beta=0.5)"),
    ("gru_before", "Layer 'gru_before' uses a reset-before GRU"),
])
def test_inexpressible_keras_layers_are_refused(cli, fixtures, tmp_path, layer, words):
    args = ["--layer", layer] if layer else []
    done = cli("convert", fixtures / "keras2" / "cpu_mix_full.h5", tmp_path / "out.pt", *args)
    assert done.returncode == 2
    assert words in done.stderr and "convert it to ONNX (.onnx) instead" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, words", [
    ("keras2/medaka_bigru_full.hdf5", "reset-before GRU"),
    ("keras2/medaka_lstm_theano_full.h5", "HardSigmoid(alpha=0.2, beta=0.5)"),
])
def test_corpus_layers_torch_cannot_hold(cli, corpus, tmp_path, name, words):
    done = cli("convert", corpus / name, tmp_path / "out.safetensors")
    assert done.returncode == 2 and words in done.stderr and "ONNX" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_corpus_cudnn_checkpoint_to_torch(corpus, tmp_path, tf_keras):
    """A real CuDNNLSTM x 4 file: tf_keras's own conversion into LSTM layers is the oracle."""
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM  # noqa: F401  (registers the class)

    src = corpus / "keras2" / "stockprice_cudnnlstm4_full.h5"
    bundle = rnnx.load(src)
    out = tmp_path / "stock.pt"
    notes = rnnx.save(bundle, out)
    modules = modules_from_notes(notes, torch.load(out, weights_only=True))
    config = json.loads(json.dumps(bundle.source["model_config"]))
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "CuDNNLSTM":
            layer["class_name"] = "LSTM"
            layer["config"].update(recurrent_activation="sigmoid", activation="tanh")
            for key in ("kernel_constraint", "recurrent_constraint", "bias_constraint"):
                layer["config"].pop(key, None)
    oracle = tf_keras.models.model_from_json(json.dumps(config))
    oracle.load_weights(str(src))
    x = RNG.standard_normal((2, oracle.input_shape[1] or 5, oracle.input_shape[-1])).astype(np.float32)
    for layer in bundle.layers:
        keras_layer, layer_in, want = keras_io(oracle, layer.name, x, tf_keras)
        got = keras_view(keras_layer, run_torch(modules[torch_layout.identifier(layer.name)], layer_in), 50)
        assert np.abs(got - want).max() <= 1e-5, layer.name


# --- PyTorch -> Keras 2 HDF5 -------------------------------------------------------------------

TORCH_SOURCES = ["lstm_stack.pt", "gru_stack.pt", "rnn_nobias.pt", "cells.pt", "checkpoint.ckpt", "gru_fp16.pt"]


def torch_originals(path):
    """{module prefix: (original torch module loaded from the file, its canonical layers)}."""
    bundle = rnnx.load(path)
    state = torch.load(path, weights_only=True)
    if "model" in state:
        state = {k[len("module."):]: v for k, v in state["model"].items()}
    out = {}
    for layer in bundle.layers:
        out.setdefault(layer.provenance["module"], []).append(layer)
    modules = {}
    for prefix, layers in out.items():
        module = eval(layers[0].provenance["rebuild"], {"nn": torch.nn})
        module.load_state_dict(sub_state(state, prefix))
        modules[prefix] = (module.float(), layers)
    return modules


def keras_twin(keras, groups):
    """One Keras chain per torch module: one layer per stacked layer, Bidirectional for two directions."""
    L = keras.layers
    inputs, outputs = [], []
    for layers in groups:
        x = inp = L.Input((None, layers[0].input_size))
        for layer in layers:
            kwargs = {"return_sequences": True, "use_bias": layer.has_bias}
            base = {"lstm": lambda: L.LSTM(layer.units, **kwargs),
                    "gru": lambda: L.GRU(layer.units, reset_after=True, **kwargs),
                    "rnn": lambda: L.SimpleRNN(layer.units, **kwargs)}[layer.cell]()
            x = (L.Bidirectional(base, name=layer.name) if layer.num_directions == 2
                 else type(base).from_config({**base.get_config(), "name": layer.name}))(x)
        inputs.append(inp)
        outputs.append(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("flavour", ["tf_keras", "keras3"])
@pytest.mark.parametrize("name", TORCH_SOURCES)
def test_torch_to_keras_h5_matches_torch(fixtures, tmp_path, flavour, name, tf_keras):
    import keras

    src = fixtures / "torch" / name
    out = tmp_path / "model.h5"
    rnnx.save(rnnx.load(src), out)
    originals = torch_originals(src)
    model = keras_twin(tf_keras if flavour == "tf_keras" else keras, [layers for _, layers in originals.values()])
    model.load_weights(str(out), by_name=True)
    xs = [RNG.standard_normal((BATCH, SEQ, layers[0].input_size)).astype(np.float32)
          for _, layers in originals.values()]
    got = model.predict(xs, verbose=0)
    got = got if isinstance(got, list) else [got]
    for (module, _), x, y in zip(originals.values(), xs, got, strict=True):
        assert np.abs(np.asarray(y) - run_torch(module, x)).max() <= 1e-5


# --- PyTorch -> ONNX ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lstm_stack.pt", "gru_stack.pt", "rnn_nobias.pt", "cells.pt",
                                  "checkpoint.ckpt", "gru_fp16.pt"])
def test_torch_to_onnx_matches_torch(fixtures, tmp_path, name):
    import onnx
    import onnxruntime as ort

    src = fixtures / "torch" / name
    out = tmp_path / "model.onnx"
    rnnx.save(rnnx.load(src), out)
    units = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["rnnx.layers"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    originals = torch_originals(src)
    bundle = rnnx.load(src)
    feeds, expected = {}, {}
    for unit in units:
        module, layers = originals[bundle.layer(unit["layers"][0]).provenance["module"]]
        assert unit["layers"] == [l.name for l in layers]  # a stacked module stays one chained unit
        dtype = np.float16 if layers[0].dtype == np.float16 else np.float32
        feeds[unit["inputs"][0]] = x = RNG.standard_normal((BATCH, SEQ, layers[0].input_size)).astype(dtype)
        expected[unit["outputs"][0]] = run_torch(module, x.astype(np.float32))
    assert len(expected) == len(originals)
    names = list(expected)
    for name_, y in zip(names, session.run(names, feeds), strict=True):
        want = expected[name_]
        # onnxruntime computes a float16 model in float16: its outputs carry float16 rounding (5e-4 at 1.0)
        tolerance = 1e-5 if y.dtype == np.float32 else 1e-3
        assert np.abs(y.astype(np.float32).reshape(want.shape) - want).max() <= tolerance


def _gru_nodes(model):
    return [n for n in model.graph.node if n.op_type == "GRU"]


def _attributes(node):
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute
            if a.name in ("hidden_size", "direction", "linear_before_reset")}


def test_gtcrn_checkpoint_to_onnx_matches_pytorchs_own_export(corpus, tmp_path):
    """gtcrn_gru.onnx was exported by PyTorch from the same network (with other trained weights: its
    tensors are not the checkpoint's). rnnx's PyTorch -> ONNX of the checkpoint must give the same GRU
    nodes (order, sizes, direction, linear_before_reset, tensor shapes) and compute what torch computes;
    and PyTorch's own exported nodes, read by rnnx and written as a state dict, must compute in torch
    what onnxruntime computes for them."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    ckpt = corpus / "torch" / "gtcrn_checkpoint.tar"
    exported = onnx.load(str(corpus / "onnx" / "gtcrn_gru.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in exported.graph.initializer}
    theirs_nodes = _gru_nodes(exported)
    from_torch = rnnx.load(ckpt).layers
    from_onnx = rnnx.load(corpus / "onnx" / "gtcrn_gru.onnx").layers
    assert len(from_torch) == len(from_onnx) == len(theirs_nodes) == 14
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["model"]
    for ours, theirs, node in zip(from_torch, from_onnx, theirs_nodes, strict=True):  # both in network order
        out = tmp_path / "ours.onnx"
        rnnx.convert(ckpt, out, layer=ours.name)
        (our_node,) = _gru_nodes(onnx.load(str(out)))
        assert {"direction": b"forward", **_attributes(our_node)} == {"direction": b"forward", **_attributes(node)}
        ours_init = {i.name: i.dims for i in onnx.load(str(out)).graph.initializer}
        assert [list(ours_init[n]) for n in our_node.input[1:4]] == [list(initializers[n].shape)
                                                                     for n in node.input[1:4]]

        # rnnx's ONNX of the checkpoint module == the checkpoint module in torch
        module = eval(ours.provenance["rebuild"], {"nn": torch.nn})
        module.load_state_dict(sub_state(state, ours.provenance["module"]))
        x = RNG.standard_normal((2, 9, ours.input_size)).astype(np.float32)
        (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["Y"], {"X": x})
        assert np.abs(got - run_torch(module, x)).max() <= 1e-5, ours.name

        # PyTorch's own exported node, alone in a model == its weights written by rnnx as a state dict
        D, hidden = theirs.num_directions, theirs.hidden_size
        one = helper.make_node("GRU", ["X", *node.input[1:4]], ["Y"], name="gru")
        one.attribute.extend(node.attribute)
        graph = helper.make_graph(
            [one], "one", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, None, ours.input_size])],
            [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [None, D, None, hidden])],
            [numpy_helper.from_array(initializers[n], n) for n in node.input[1:4]])
        single = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
        single.ir_version = 6
        (want,) = ort.InferenceSession(single.SerializeToString(),
                                       providers=["CPUExecutionProvider"]).run(["Y"], {"X": x.transpose(1, 0, 2)})
        want = want.transpose(2, 0, 1, 3).reshape(2, 9, D * hidden)  # [seq, D, batch, h] -> [batch, seq, D*h]
        pt = tmp_path / "theirs.pt"
        notes = rnnx.save(rnnx.Bundle([theirs]), pt)
        (module,) = modules_from_notes(notes, torch.load(pt, weights_only=True)).values()
        assert np.abs(run_torch(module, x) - want).max() <= 1e-5, theirs.name


def test_gtcrn_checkpoint_to_onnx_equals_pytorchs_export_of_the_same_weights(corpus, tmp_path):
    """The corpus ONNX holds other trained weights, so PyTorch's own exporter is run here on the
    checkpoint's modules: rnnx's ONNX of each GRU must hold bit-identical W, R, B and the same
    attributes, and compute the same outputs in onnxruntime."""
    import warnings

    import onnx
    import onnxruntime as ort

    ckpt = corpus / "torch" / "gtcrn_checkpoint.tar"
    state = torch.load(ckpt, weights_only=True, map_location="cpu")["model"]
    for layer in rnnx.load(ckpt).layers:
        module = eval(layer.provenance["rebuild"], {"nn": torch.nn})
        module.load_state_dict(sub_state(state, layer.provenance["module"]))
        x = RNG.standard_normal((1, 7, layer.input_size)).astype(np.float32)
        theirs = tmp_path / "torch_export.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.from_numpy(x).transpose(0, 1),), str(theirs), dynamo=False,
                              opset_version=14, input_names=["X"], output_names=["Y", "Y_h"])
        ours = tmp_path / "rnnx.onnx"
        rnnx.convert(ckpt, ours, layer=layer.name, time_major=True)

        (our_node,) = _gru_nodes(onnx.load(str(ours)))
        (their_node,) = _gru_nodes(onnx.load(str(theirs)))
        assert _attributes(our_node) == _attributes(their_node)
        (a,), (b,) = rnnx.load(ours).layers, rnnx.load(theirs).layers
        for da, db in zip(a.directions, b.directions, strict=True):
            for key in ("W", "R", "b_w", "b_r"):
                assert np.array_equal(getattr(da, key), getattr(db, key)), (layer.name, key)

        x_tm = x.transpose(1, 0, 2)
        want = ort.InferenceSession(str(theirs), providers=["CPUExecutionProvider"]).run(["Y"], {"X": x_tm})[0]
        got = ort.InferenceSession(str(ours), providers=["CPUExecutionProvider"]).run(["Y"], {"X": x_tm})[0]
        assert np.abs(got - want.reshape(got.shape)).max() <= 1e-6, layer.name
