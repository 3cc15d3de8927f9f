"""Whole Keras 2 models (tf_keras full-model .h5 fixtures) -> one ONNX graph; tf_keras is the oracle."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import (TOLERANCE, check_graph, keras_outputs, load_keras2, max_error,  # noqa: E402
                           random_inputs, run_onnx)

import rnnx  # noqa: E402

# fixture -> whether its inputs are token ids
MODELS = {
    "k2_seed_cudnn.h5": False,
    "k2_cudnn_mix.h5": False,
    "k2_merges_masked.h5": True,
    "k2_merges.h5": True,
    "k2_masking.h5": False,
    "k2_states.h5": False,
    "k2_layers.h5": False,
    "k2_activations.h5": False,
    "k2_nested.h5": False,
    "k2_time_distributed.h5": False,
}


@pytest.fixture(scope="module")
def keras_models(models_dir):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_keras2(models_dir / name)
        return cache[name]
    return get


@pytest.fixture(scope="module")
def exported(models_dir, tmp_path_factory):
    """name -> (onnx path, notes), each fixture converted once by rnnx.convert."""
    out_dir = tmp_path_factory.mktemp("k2_onnx")
    cache = {}

    def get(name, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            dst = out_dir / f"{Path(name).stem}_{len(cache)}.onnx"
            result = rnnx.convert(models_dir / name, dst, **options)
            cache[key] = (dst, result.notes)
        return cache[key]
    return get


def _compare(name, path, keras_model, tokens, **input_options):
    graph = check_graph(path)
    feeds = random_inputs(graph, keras_model.inputs, tokens=tokens, vocab=20, **input_options)
    expected = keras_outputs(keras_model, feeds, [i.name for i in graph.graph.input if i.name in feeds])
    error = max_error(expected, run_onnx(path, feeds))
    assert error <= TOLERANCE, f"{name}: max error {error:.3g}"
    return graph


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_tf_keras(name, keras_models, exported):
    path, _ = exported(name)
    _compare(name, path, keras_models(name), MODELS[name])


@pytest.mark.parametrize("name", ["k2_merges_masked.h5", "k2_masking.h5"])
def test_masks_become_sequence_lens_on_right_padded_batches(name, keras_models, exported):
    path, notes = exported(name)
    graph = _compare(name, path, keras_models(name), MODELS[name], seed=5, batch=6)
    recurrent = [n for n in graph.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert recurrent and all(len(n.input) > 4 and n.input[4] for n in recurrent), "every recurrent op gets lens"
    assert any("right-padded" in note for note in notes)


def test_seed_model_is_real_lstm_ops(exported):
    path, _ = exported("k2_seed_cudnn.h5")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("LSTM") == 2
    assert "Loop" not in ops and "Scan" not in ops


@pytest.mark.parametrize("opset", [13, 18])
@pytest.mark.parametrize("name", ["k2_layers.h5", "k2_merges_masked.h5"])
def test_other_opsets(name, opset, keras_models, exported):
    path, _ = exported(name, opset=opset)
    graph = _compare(name, path, keras_models(name), MODELS[name])
    assert graph.opset_import[0].version == opset


def test_time_major(keras_models, exported):
    path, _ = exported("k2_cudnn_mix.h5", time_major=True)
    graph = check_graph(path)
    model = keras_models("k2_cudnn_mix.h5")
    feeds = random_inputs(graph, model.inputs)
    expected = keras_outputs(model, feeds, ["x"])[0]
    (got,) = run_onnx(path, {"x": np.ascontiguousarray(feeds["x"].transpose(1, 0, 2))})
    assert max_error([expected], [got.transpose(1, 0, 2)]) <= TOLERANCE


def test_stateful_states_are_graph_inputs_and_outputs(models_dir, exported):
    """Two successive calls: Keras carries its states over; ONNX is fed the states it returned."""
    path, _ = exported("k2_stateful.h5")
    graph = check_graph(path)
    state_inputs = [i.name for i in graph.graph.input if i.name.endswith(("/state_h", "/state_c"))]
    assert sorted(state_inputs) == ["gru_stateful/state_h", "lstm_stateful/state_c", "lstm_stateful/state_h"]
    model = load_keras2(models_dir / "k2_stateful.h5")
    model.reset_states()
    first = random_inputs(graph, model.inputs, seed=1)
    second = random_inputs(graph, model.inputs, seed=2)
    expected = [keras_outputs(model, first, ["x"])[0], keras_outputs(model, second, ["x"])[0]]

    names = [o.name for o in graph.graph.output]
    out1 = dict(zip(names, run_onnx(path, first)))
    carried = {name: out1[f"{name}_out"] for name in state_inputs}
    out2 = dict(zip(names, run_onnx(path, {**second, **carried})))
    assert max_error(expected, [out1["dense"], out2["dense"]]) <= TOLERANCE


def test_cli_converts_whole_model(models_dir, tmp_path, cli, keras_models):
    dst = tmp_path / "seed.onnx"
    result = cli("convert", models_dir / "k2_seed_cudnn.h5", dst)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and dst.exists()
    _compare("k2_seed_cudnn.h5", dst, keras_models("k2_seed_cudnn.h5"), False)


@pytest.mark.parametrize("name", ["k2_masking.h5", "k2_states.h5", "k2_merges.h5", "k2_nested.h5"])
def test_recurrent_nodes_keep_their_layer_names(name, models_dir, exported):
    """Also when the layer's output is a graph output of the same name: names survive ONNX -> .h5 -> ..."""
    path, _ = exported(name)
    nodes = [n.name for n in onnx.load(path).graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    layers = [layer.name for layer in rnnx.load(models_dir / name).layers]
    assert set(layers) <= set(nodes)  # a layer called again (k2_nested) adds nodes <layer>_1, ...
    assert set(layers) <= {layer.name for layer in rnnx.load(path).layers}
