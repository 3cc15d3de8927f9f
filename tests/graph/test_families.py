"""Issue 10's broad set: recurrent Keras models built here in tf_keras and (their twins) in Keras 3, saved,
converted by rnnx's native whole-model export, run in onnxruntime and compared with the framework's own
outputs within 1e-5.

Every case also proves the comparison can fail: each emitted LSTM / GRU / RNN node is damaged in turn
(its bias zeroed; its first two gate blocks swapped, or for a one-gate RNN its first two units) and the
damaged graph must miss the framework's outputs. Weights are random (N(0, 0.5)), so no bias is zero.
"""

import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE, check_graph, max_error  # noqa: E402
from model_families import BATCH, KERAS3, STEPS, TF_KERAS, VOCAB, all_cases  # noqa: E402

import rnnx  # noqa: E402

CASES = all_cases()
PARAMS = [pytest.param(case, generation, id=f"{generation}-{case.name}")
          for case in CASES for generation in case.generations]
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


@pytest.fixture(scope="module")
def libraries():
    import keras
    import tf_keras

    return {TF_KERAS: tf_keras, KERAS3: keras}


def test_the_set_is_broad():
    counts = {g: sum(g in case.generations for case in CASES) for g in (TF_KERAS, KERAS3)}
    assert counts[TF_KERAS] >= 100 and counts[KERAS3] >= 90, counts
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case, generation", PARAMS)
def test_model_matches_its_framework(case, generation, libraries, tmp_path):
    K = libraries[generation]
    seed = zlib.crc32(f"{generation}-{case.name}".encode())
    model = case.build(K)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(0.0, 0.5, tuple(variable.shape)).astype(np.float32))
    src = tmp_path / f"model{case.saves_as.get(generation, '.h5' if generation == TF_KERAS else '.keras')}"
    model.save(src)
    dst = tmp_path / "model.onnx"
    result = rnnx.convert(src, dst)
    graph = check_graph(dst)
    recurrent = [n for n in graph.graph.node if n.op_type in RECURRENT_OPS]
    assert recurrent, "every model of the set has a recurrent node"

    inputs = _graph_inputs(graph)
    assert inputs == [t._keras_history[0].name for t in model.inputs], "ONNX inputs are named after the InputLayers"
    feeds = _feeds(graph, model, rng, case.pad)
    oracle = case.oracle(K, model) if case.oracle else model
    expected = _keras_outputs(oracle, [feeds[n] for n in inputs])
    session = _session(graph)
    actual = session.run(None, feeds)
    error = max_error(expected, actual)
    assert error <= TOLERANCE, f"max error {error:.3g}"

    if case.stateful:  # the second call continues from the first call's final states
        states = {i.name: actual[[o.name for o in session.get_outputs()].index(f"{i.name}_out")]
                  for i in graph.graph.input if i.name not in inputs}
        assert states, "a stateful model has state inputs"
        second = {**_feeds(graph, model, rng, case.pad), **states}
        expected_second = _keras_outputs(oracle, [second[n] for n in inputs])
        assert max(error, max_error(expected_second, session.run(None, second))) <= TOLERANCE
        assert max_error(expected_second, session.run(None, {n: second[n] for n in inputs})) > TOLERANCE, \
            "the states matter"
    if case.note and generation == KERAS3:
        assert any(case.note in note for note in result.notes), result.notes

    for node in recurrent:
        for damage in (_zero_bias, _swap_gate_blocks):
            damaged = onnx.ModelProto()
            damaged.CopyFrom(graph)
            damage(damaged, node.name)
            off = max_error(expected, _session(damaged).run(None, feeds))
            assert off > TOLERANCE, f"{damage.__name__} on node {node.name!r} still matches ({off:.3g})"


def _graph_inputs(graph: onnx.ModelProto) -> list[str]:
    """The model's own inputs, without the optional state inputs (which have a zero initializer)."""
    defaults = {t.name for t in graph.graph.initializer}
    return [i.name for i in graph.graph.input if i.name not in defaults]


def _feeds(graph, model, rng, pad: bool) -> dict:
    feeds = {}
    for name, tensor in zip(_graph_inputs(graph), model.inputs):
        shape = [BATCH if d is None else d for d in tensor.shape]
        if "int" in str(tensor.dtype):
            data = rng.integers(1, VOCAB, shape).astype(np.int32)
        else:
            data = rng.normal(0.0, 1.0, shape).astype(np.float32)
        if pad and name == _graph_inputs(graph)[0]:  # right-padded rows, the first one full length
            lengths = rng.integers(2, STEPS + 1, shape[0])
            lengths[0] = STEPS
            data[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0
        feeds[name] = data
    return feeds


def _keras_outputs(model, xs: list) -> list[np.ndarray]:
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in _flat(out)]


def _flat(out) -> list:
    """The outputs in order; a stacked RNN returns the states of each cell as a nested list."""
    return [t for o in out for t in _flat(o)] if isinstance(out, (list, tuple)) else [out]


def _session(graph: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # stateful layers' optional state inputs draw a warning
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _initializer(model: onnx.ModelProto, node_name: str, slot: int):
    node = next(n for n in model.graph.node if n.name == node_name)
    return next(t for t in model.graph.initializer if t.name == node.input[slot])


def _replace(tensor, array: np.ndarray) -> None:
    tensor.CopyFrom(onnx.numpy_helper.from_array(array.astype(onnx.numpy_helper.to_array(tensor).dtype),
                                                  tensor.name))


def _zero_bias(model: onnx.ModelProto, node_name: str) -> None:
    bias = _initializer(model, node_name, 3)
    _replace(bias, np.zeros_like(onnx.numpy_helper.to_array(bias)))


def _swap_gate_blocks(model: onnx.ModelProto, node_name: str) -> None:
    """W [D, gates * hidden, in]: the first two gate blocks (the first two rows of a one-gate RNN) swapped."""
    node = next(n for n in model.graph.node if n.name == node_name)
    W = _initializer(model, node_name, 1)
    array = onnx.numpy_helper.to_array(W).copy()
    hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
    block = 1 if node.op_type == "RNN" else hidden
    first, second = array[:, :block].copy(), array[:, block:2 * block].copy()
    array[:, :block], array[:, block:2 * block] = second, first
    _replace(W, array)
