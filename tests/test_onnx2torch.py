"""ONNX LSTM / GRU / RNN nodes through onnx2torch.convert after `import rnnx.onnx2torch`; onnxruntime (and
the ONNX standard's own expected outputs) are the oracle."""

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import rnnx
import rnnx.onnx2torch  # noqa: F401  (registers the converters)
import onnx2torch

TOLERANCE = 1e-5
torch.set_num_threads(1)  # the step loop's small ops run far slower with two threads on a shared 2-core machine
# The ONNX standard's LSTM / GRU node tests in the corpus (named, so a missing corpus skips or fails them
# through the corpus fixture instead of leaving an empty parameter list)
NODE_TESTS = ("test_gru_batchwise", "test_gru_defaults", "test_gru_seq_length", "test_gru_with_initial_bias",
              "test_lstm_batchwise", "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes")


def _run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _run_torch(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """The graph outputs of onnx2torch's module, in graph order (a multi-output node as a graph output
    comes back whole from onnx2torch: pick the graph's output from it)."""
    module = onnx2torch.convert(model)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    with torch.no_grad():
        result = module(*[torch.from_numpy(np.array(feeds[n])) for n in inputs])
    producers = {out: node for node in model.graph.node for out in node.output}
    results = list(result) if isinstance(result, (tuple, list)) and len(model.graph.output) > 1 else [result]
    got = []
    for name, value in zip([o.name for o in model.graph.output], results):
        outputs = list(producers[name].output)
        if isinstance(value, (tuple, list)):
            value = value[outputs.index(name)]
        got.append(value.numpy())
    return got


def _max_error(expected, got) -> float:
    assert len(expected) == len(got)
    worst = 0.0
    for e, g in zip(expected, got):
        assert e.shape == g.shape, (e.shape, g.shape)
        worst = max(worst, float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64)), initial=0.0)))
    return worst


@pytest.mark.parametrize("name", NODE_TESTS)
def test_onnx_node_conformance(name, corpus):
    folder = corpus / "onnx-node-tests" / name
    model = onnx.load(str(folder / "model.onnx"))
    data = folder / "test_data_set_0"
    inputs = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("input_*.pb"))]
    expected = [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(data.glob("output_*.pb"))]
    feeds = {i.name: v for i, v in zip(model.graph.input, inputs)}
    got = _run_torch(model, feeds)
    assert _max_error(expected, got) <= TOLERANCE  # the standard's own outputs
    layout = [a.i for a in model.graph.node[0].attribute if a.name == "layout"]
    if not layout or layout[0] == 0:  # onnxruntime refuses layout=1
        assert _max_error(_run_ort(model, feeds), got) <= TOLERANCE


def test_dtln_stateful_lstm_model(corpus):
    model = onnx.load(str(corpus / "onnx" / "dtln_lstm_stateful.onnx"))
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    assert _max_error(_run_ort(model, feeds), _run_torch(model, feeds)) <= TOLERANCE


def test_gtcrn_gru_nodes(corpus):
    """Each of GTCRN's 14 GRU nodes (one-way and bidirectional, linear_before_reset=1, initial_h fed) cut out
    with its weights (the whole graph: test_gtcrn_whole_model)."""
    model = onnx.load(str(corpus / "onnx" / "gtcrn_gru.onnx"))
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                            for o in n.output}
    grus = [n for n in model.graph.node if n.op_type == "GRU"]
    assert len(grus) == 14 and any(a.s == b"bidirectional" for n in grus for a in n.attribute)
    initializers = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    rng = np.random.default_rng(1)
    for node in grus:
        D, _, size = initializers[node.input[1]].dims
        hidden = initializers[node.input[2]].dims[2]
        runtime = [name for name in node.input if name and name not in constants]
        shapes = {node.input[0]: [5, 2, size], **({node.input[5]: [D, 2, hidden]} if len(node.input) > 5 else {})}
        graph = helper.make_graph(
            [producers[n] for n in node.input if n in producers] + [node], "gru",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in runtime],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in node.output if n],
            initializer=[initializers[n] for n in node.input if n in initializers])
        sub = helper.make_model(graph, opset_imports=model.opset_import)
        feeds = {name: rng.normal(size=shapes[name]).astype(np.float32) for name in runtime}
        error = _max_error(_run_ort(sub, feeds), _run_torch(sub, feeds))
        assert error <= TOLERANCE, f"{node.name}: {error:.3g}"


@pytest.mark.parametrize("name", ["k2_masking.h5", "k2_states.h5", "k2_activations.h5", "k2_cudnn_mix.h5"])
def test_rnnx_exported_keras_models(name, fixtures, tmp_path):
    """ONNX graphs rnnx writes from the Keras fixtures: masks as sequence_lens, reverse direction,
    reset-before GRU, hard_sigmoid (HardSigmoid alpha/beta), bidirectional, initial states."""
    dst = tmp_path / "model.onnx"
    rnnx.convert(fixtures / "models" / name, dst)
    model = onnx.load(str(dst))
    rng = np.random.default_rng(2)
    feeds = {}
    for i in model.graph.input:
        if i.name in {t.name for t in model.graph.initializer}:
            continue
        shape = [d.dim_value or (3 if k == 0 else 9) for k, d in enumerate(i.type.tensor_type.shape.dim)]
        x = rng.normal(size=shape).astype(np.float32)
        if len(shape) == 3:  # right-padded rows, as the masks expect
            x[1, 6:] = 0.0
            x[2, 4:] = 0.0
        feeds[i.name] = x
    assert _max_error(_run_ort(model, feeds), _run_torch(model, feeds)) <= TOLERANCE


# --- synthetic nodes: every attribute rnnx reads ------------------------------------------------------------
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
CASES = {
    "lstm_bidirectional_lengths": ("LSTM", {"direction": "bidirectional"}, True, False),
    "lstm_clip_input_forget_peepholes": ("LSTM", {"clip": 0.7, "input_forget": 1}, True, True),
    "lstm_hard_sigmoid_alpha_beta": ("LSTM", {"activations": ["HardSigmoid", "Tanh", "ScaledTanh"],
                                             "activation_alpha": [0.2, 0.9], "activation_beta": [0.5, 1.3]},
                                    False, False),
    "gru_reset_before_reverse": ("GRU", {"direction": "reverse", "linear_before_reset": 0}, True, False),
    "gru_reset_after_bidirectional": ("GRU", {"direction": "bidirectional", "linear_before_reset": 1}, False,
                                      False),
    "gru_leaky_relu": ("GRU", {"activations": ["Sigmoid", "LeakyRelu"], "activation_alpha": [0.1]}, True, False),
    "rnn_relu_bidirectional": ("RNN", {"direction": "bidirectional", "activations": ["Relu", "Relu"]}, True,
                               False),
    "rnn_tanh": ("RNN", {}, False, False),
}


def _node_model(op: str, attrs: dict, lengths: bool, peepholes: bool, layout: int = 0, as_constant_nodes=False,
                seed: int = 0):
    rng = np.random.default_rng(seed)
    D = 2 if attrs.get("direction") == "bidirectional" else 1
    hidden, size, steps, batch = 4, 3, 6, 3
    G = GATES[op]
    tensors = {"W": rng.normal(0, 0.6, (D, G * hidden, size)), "R": rng.normal(0, 0.6, (D, G * hidden, hidden)),
               "B": rng.normal(0, 0.3, (D, 2 * G * hidden))}
    if peepholes:
        tensors["P"] = rng.normal(0, 0.5, (D, 3 * hidden))
    tensors = {k: v.astype(np.float32) for k, v in tensors.items()}
    x_shape = [batch, steps, size] if layout else [steps, batch, size]
    state_shape = [batch, D, hidden] if layout else [D, batch, hidden]
    inputs = ["X", "W", "R", "B", "sequence_lens" if lengths else "", "initial_h"]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape),
                    helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, state_shape)]
    feeds = {"X": rng.normal(size=x_shape).astype(np.float32),
             "initial_h": rng.normal(size=state_shape).astype(np.float32)}
    if lengths:
        graph_inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [batch]))
        feeds["sequence_lens"] = np.array([steps, 2, 4], np.int32)
    if op == "LSTM":
        inputs += ["initial_c", "P" if peepholes else ""]
        graph_inputs.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, state_shape))
        feeds["initial_c"] = rng.normal(size=state_shape).astype(np.float32)
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    nodes, initializers = [], []
    for name, value in tensors.items():
        if as_constant_nodes:
            nodes.append(helper.make_node("Constant", [], [name + "_c"], value=numpy_helper.from_array(value)))
            nodes.append(helper.make_node("Identity", [name + "_c"], [name]))
        else:
            initializers.append(numpy_helper.from_array(value, name))
    nodes.append(helper.make_node(op, inputs, outputs, name="rec", hidden_size=hidden, layout=layout, **attrs))
    graph = helper.make_graph(nodes, "g", graph_inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                                                        for o in outputs], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    return model, feeds


@pytest.mark.parametrize("case", CASES)
def test_synthetic_node_matches_onnxruntime(case):
    op, attrs, lengths, peepholes = CASES[case]
    model, feeds = _node_model(op, attrs, lengths, peepholes)
    expected = _run_ort(model, feeds)
    assert _max_error(expected, _run_torch(model, feeds)) <= TOLERANCE
    constant_model, _ = _node_model(op, attrs, lengths, peepholes, as_constant_nodes=True)
    assert _max_error(expected, _run_torch(constant_model, feeds)) <= TOLERANCE


@pytest.mark.parametrize("case", ["lstm_bidirectional_lengths", "gru_reset_before_reverse"])
def test_layout_1_matches_layout_0_in_onnxruntime(case):
    """onnxruntime refuses layout=1; the same node in layout 0 on transposed data is the oracle."""
    op, attrs, lengths, peepholes = CASES[case]
    model0, feeds0 = _node_model(op, attrs, lengths, peepholes)
    model1, _ = _node_model(op, attrs, lengths, peepholes, layout=1)
    feeds1 = {k: (np.ascontiguousarray(np.swapaxes(v, 0, 1)) if v.ndim == 3 else v) for k, v in feeds0.items()}
    Y, *states = _run_ort(model0, feeds0)
    expected = [np.ascontiguousarray(np.transpose(Y, (2, 0, 1, 3)))] + [np.swapaxes(s, 0, 1) for s in states]
    assert _max_error(expected, _run_torch(model1, feeds1)) <= TOLERANCE


def test_weights_fed_at_run_time_are_forward_inputs():
    model, feeds = _node_model("LSTM", {"direction": "bidirectional"}, True, True)
    for tensor in list(model.graph.initializer):
        model.graph.input.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.dims)))
        feeds[tensor.name] = numpy_helper.to_array(tensor)
    expected = _run_ort(model, feeds)
    del model.graph.initializer[:]
    assert _max_error(expected, _run_torch(model, feeds)) <= TOLERANCE


def test_missing_onnx2torch_is_a_clear_error():
    code = ("import sys; sys.modules['onnx2torch'] = None\n"
            "try:\n    import rnnx.onnx2torch\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ})
    assert "UnsupportedError" in run.stdout and "rnnx[onnx2torch]" in run.stdout, run.stdout + run.stderr


def test_onnx2torch_imports_without_torchvision():
    assert "torchvision" not in sys.modules  # the stand-in used while onnx2torch imported is gone
    from onnx2torch.node_converters import nms

    with pytest.raises(rnnx.errors.UnsupportedError, match="torchvision"):
        nms.torchvision.ops.nms(None, None, 0.5)


def test_onnx_model_to_torch_model_source(corpus, tmp_path, cli):
    """rnnx convert model.onnx OUT.py --to torch-model: a Model wrapping onnx2torch's graph module."""
    import importlib.util

    import safetensors.torch

    src = corpus / "onnx" / "dtln_lstm_stateful.onnx"
    dst = tmp_path / "dtln.py"
    result = cli("convert", src, dst, "--to", "torch-model")
    assert result.returncode == 0, result.stderr
    spec = importlib.util.spec_from_file_location("dtln_generated", dst)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(safetensors.torch.load_file(str(tmp_path / "dtln.safetensors")), strict=True)
    onnx_model = onnx.load(str(src))
    rng = np.random.default_rng(4)
    feeds = {i.name: rng.normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in onnx_model.graph.input}
    with torch.no_grad():
        got = model(*[torch.from_numpy(feeds[i.name]) for i in onnx_model.graph.input])
    assert _max_error(_run_ort(onnx_model, feeds), [g.numpy() for g in got]) <= TOLERANCE


def test_gtcrn_whole_model(corpus):
    """The whole GTCRN graph (14 GRU nodes among convolutions, BatchNormalization and slicing, with its
    stream caches as inputs). onnx2torch's own BatchNormalization converter refuses its nodes (no input rank
    in the graph's value_info: "spatial rank == -2"); `import rnnx.onnx2torch` gives those the same formula
    at any rank."""
    model = onnx.load(str(corpus / "onnx" / "gtcrn_gru.onnx"))
    rng = np.random.default_rng(5)
    feeds = {i.name: rng.normal(size=[d.dim_value or 1 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input}
    assert len(feeds) == 4 and sum(n.op_type == "BatchNormalization" for n in model.graph.node) > 0
    # 1,786 nodes: two float32 runtimes drift apart by their own rounding (onnxruntime is 1.5e-5 from the
    # float64 result on these inputs), so the bound is rnnx verify's rule: the larger of 1e-5 and 4 x the
    # measured float32 noise floor (the converted module in float32 against the same module in float64).
    from rnnx.verification import NOISE_FACTOR

    module = onnx2torch.convert(model).eval()
    inputs = [feeds[i.name] for i in model.graph.input]
    with torch.no_grad():
        got = [g.numpy() for g in module(*map(torch.from_numpy, inputs))]
        exact = [g.numpy() for g in module.double()(*[torch.from_numpy(x).double() for x in inputs])]
    noise = _max_error(exact, got)
    assert _max_error(_run_ort(model, feeds), got) <= max(TOLERANCE, NOISE_FACTOR * noise)


def test_onnx_model_with_a_node_onnx2torch_refuses_names_it(fixtures, tmp_path, cli):
    src = tmp_path / "lstm.onnx"
    rnnx.convert(fixtures / "torch" / "lstm_stack.pt", src)
    model = onnx.load(str(src))
    first = model.graph.output[0]
    model.graph.node.append(helper.make_node("Hardmax", [first.name], ["hardmax_out"], name="no_such_converter"))
    model.graph.output.append(helper.make_tensor_value_info("hardmax_out", TensorProto.FLOAT, None))
    onnx.save(model, str(src))
    out = tmp_path / "out"
    out.mkdir()
    result = cli("convert", src, out / "model.py", "--to", "torch-model")
    assert result.returncode == 2, result.stderr
    assert "'no_such_converter' (Hardmax" in result.stderr and "node" in result.stderr, result.stderr
    assert list(out.iterdir()) == []
