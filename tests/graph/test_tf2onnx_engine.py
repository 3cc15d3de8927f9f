"""--engine tf2onnx: rnnx rewrites CuDNN layers, tf_keras loads the model, tf2onnx converts it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import (TOLERANCE, check_graph, keras_outputs, load_keras2, max_error,  # noqa: E402
                           random_inputs, run_onnx)


def test_cudnn_model_through_tf2onnx(models_dir, tmp_path, cli):
    src = models_dir / "k2_seed_cudnn.h5"
    dst = tmp_path / "seed_tf2onnx.onnx"
    result = cli("convert", src, dst, "--engine", "tf2onnx")
    assert result.returncode == 0, result.stderr
    assert "tf2onnx" in result.stdout
    graph = check_graph(dst)
    model = load_keras2(src)
    feeds = random_inputs(graph, model.inputs)
    expected = keras_outputs(model, feeds, ["features"])
    assert max_error(expected, run_onnx(dst, feeds)) <= TOLERANCE


def test_keras3_archive_is_refused_by_tf2onnx_engine(models_dir, tmp_path, cli):
    dst = tmp_path / "model.onnx"
    result = cli("convert", models_dir / "k3_nested.keras", dst, "--engine", "tf2onnx")
    assert result.returncode == 2
    assert "--engine native" in result.stderr
    assert not dst.exists()


def test_weights_with_config_through_tf2onnx(corpus, tmp_path):
    import rnnx

    src = corpus / "keras2" / "lstm_chem_weights.hdf5"
    config = corpus / "keras2" / "lstm_chem_model_arch.json"
    dst = tmp_path / "chem.onnx"
    rnnx.convert(src, dst, config=config, engine="tf2onnx")
    graph = check_graph(dst)
    model = load_keras2(src, config)
    feeds = random_inputs(graph, model.inputs, batch=2, steps=6, pad=False)
    expected = keras_outputs(model, feeds, [i.name for i in graph.graph.input if i.name in feeds])
    assert max_error(expected, run_onnx(dst, feeds)) <= TOLERANCE
