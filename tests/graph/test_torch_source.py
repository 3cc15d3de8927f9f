"""The generated file reads well and scripts: compiles, no line over 100 characters, every Keras layer
named, torch.jit.script runs it with the same numbers; hostile layer names stay out of the code."""

import json
import re
import py_compile
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import TOLERANCE, load_keras2  # noqa: E402
from torch_helpers import import_model, keras_feeds, keras_predict, max_error, run_torch  # noqa: E402

import rnnx  # noqa: E402
from rnnx.errors import UnsupportedError  # noqa: E402


@pytest.mark.parametrize("name, standalone", [("k2_seed_cudnn.h5", False), ("k2_merges_masked.h5", False),
                                              ("k2_states.h5", False), ("k2_layers.h5", False),
                                              ("k2_seed_cudnn.h5", True), ("k2_states.h5", True)])
def test_generated_file_is_readable_and_scripts(name, standalone, models_dir, tmp_path):
    import torch

    dst = tmp_path / "model.py"
    rnnx.convert(models_dir / name, dst, to="torch-model", standalone=standalone)
    py_compile.compile(str(dst), doraise=True)
    text = dst.read_text()
    long_lines = [line for line in text.splitlines() if len(line) > 100]
    assert not long_lines, long_lines[:3]
    bundle = rnnx.load(models_dir / name)
    config = bundle.source["model_config"]
    layer_names = [entry["config"]["name"] for entry in config["config"]["layers"]
                   if entry["class_name"] not in ("InputLayer",)]
    assert all(repr(n) in text for n in layer_names), [n for n in layer_names if repr(n) not in text]
    model = import_model(dst)
    scripted = torch.jit.script(model)
    keras_model = load_keras2(models_dir / name)
    feeds = keras_feeds(keras_model, tokens=name == "k2_merges_masked.h5", vocab=20, seed=7)
    expected = keras_predict(keras_model, feeds)
    assert max_error(expected, run_torch(scripted, feeds)) <= TOLERANCE
    assert max_error(expected, run_torch(model, feeds)) <= TOLERANCE


def test_seed_model_uses_builtin_lstm(models_dir, tmp_path):
    dst = tmp_path / "seed.py"
    rnnx.convert(models_dir / "k2_seed_cudnn.h5", dst, to="torch-model")
    model = import_model(dst)
    import torch

    assert sum(isinstance(m, torch.nn.LSTM) for m in model.modules()) == 2
    assert "RecurrentLoop" not in dst.read_text()


def test_hostile_layer_names_stay_out_of_the_code(models_dir, tmp_path):
    """A layer named like code becomes an identifier rnnx derived and a repr in a comment."""
    import h5py

    src = tmp_path / "hostile.h5"
    with h5py.File(models_dir / "k2_seed_cudnn.h5", "r") as f_in, h5py.File(src, "w") as f_out:
        for key in f_in:
            f_in.copy(key, f_out)
        for key, value in f_in.attrs.items():
            f_out.attrs[key] = value
        hostile = 'dense"\nimport os; os.system("echo pwned")  #'
        raw = f_out.attrs["model_config"]
        raw = raw.decode() if isinstance(raw, bytes) else raw
        f_out.attrs["model_config"] = raw.replace('"dense"', json.dumps(hostile))
        group = f_out["model_weights"]
        group.move("dense", hostile.replace("/", "_"))
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["layer_names"]]
        group.attrs["layer_names"] = [(hostile if n == "dense" else n).encode() for n in names]
    dst = tmp_path / "hostile.py"
    rnnx.convert(src, dst, to="torch-model")
    text = dst.read_text()
    assert "os.system" not in text.replace(repr(hostile), "")
    assert repr(hostile) in text
    model = import_model(dst)
    keras_model = load_keras2(models_dir / "k2_seed_cudnn.h5")
    feeds = keras_feeds(keras_model)
    assert max_error(keras_predict(keras_model, feeds), run_torch(model, feeds)) <= TOLERANCE


def test_lambda_is_refused_and_nothing_is_written(models_dir, tmp_path):
    dst = tmp_path / "lambda.py"
    with pytest.raises(UnsupportedError, match="times_two"):
        rnnx.convert(models_dir / "k2_lambda.h5", dst, to="torch-model")
    assert not dst.exists() and not dst.with_suffix(".safetensors").exists()


def test_cli_refuses_standalone_for_other_targets(models_dir, tmp_path, cli):
    result = cli("convert", models_dir / "k2_seed_cudnn.h5", tmp_path / "x.onnx", "--standalone")
    assert result.returncode == 2 and "--standalone" in result.stderr
    assert not (tmp_path / "x.onnx").exists()
    np.testing.assert_equal(len(list(tmp_path.iterdir())), 0)


def test_torch_backend_converts_every_layer_class_the_onnx_backend_does():
    from rnnx.graph.to_onnx import activations as onnx_activations
    from rnnx.graph.to_onnx import registry as onnx_registry
    from rnnx.graph.to_torch import activations as torch_activations
    from rnnx.graph.to_torch import registry as torch_registry

    assert set(torch_registry.supported()) == set(onnx_registry.supported())
    assert set(onnx_activations.names()) <= {n for n in torch_activations.EXPRESSIONS if n} | {"hard_sigmoid"}


def test_torch_backend_converts_the_tf_functions_the_onnx_backend_does():
    from rnnx.graph.to_onnx.layers import tf_ops as onnx_tf_ops
    from rnnx.graph.to_torch.layers import tf_ops as torch_tf_ops

    for table in ("BINARY", "UNARY", "REDUCE"):
        assert set(getattr(torch_tf_ops, table)) == set(getattr(onnx_tf_ops, table)), table
    assert set(torch_tf_ops.FUNCTIONS) == set(onnx_tf_ops._FUNCTIONS)


def test_unconverted_tf_function_is_refused_by_layer_and_function(tmp_path, cli):
    import tensorflow as tf
    import tf_keras

    x = tf_keras.Input((5, 4))
    y = tf.math.cumsum(tf_keras.layers.LSTM(3, return_sequences=True)(x), axis=1)
    src, dst = tmp_path / "cumsum.h5", tmp_path / "cumsum.py"
    tf_keras.Model(x, y).save(src)
    result = cli("convert", src, dst, "--to", "torch-model")
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "Traceback" not in message and message.count("\n") == 0, message
    # tf_keras names the layer tf.math.cumsum, or tf.math.cumsum_N after earlier models in the same process
    assert re.search(r"Layer 'tf\.math\.cumsum(_\d+)?' \(TFOpLambda\) calls tf\.math\.cumsum", message), message
    assert "PyTorch model export" in message, message
    assert not dst.exists() and not dst.with_suffix(".safetensors").exists()


def test_tf_op_constant_beyond_float32_is_infinity_as_in_tf_keras(tmp_path):
    """tf_keras casts a constant to float32 (1e39 -> inf); the generated code spells it float('inf'), as
    Python has no literal for it."""
    import tensorflow as tf
    import tf_keras

    x = tf_keras.Input((5, 4))
    y = tf.math.multiply(tf_keras.layers.LSTM(3, return_sequences=True)(x), 1e39)
    keras_model = tf_keras.Model(x, y)
    src, dst = tmp_path / "inf.h5", tmp_path / "inf.py"
    keras_model.save(src)
    rnnx.convert(src, dst, to="torch-model")
    assert "float('inf')" in dst.read_text()
    feeds = [np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)]
    expected = keras_predict(keras_model, feeds)[0]
    assert np.isinf(expected).any()
    np.testing.assert_array_equal(run_torch(import_model(dst), feeds)[0], expected)
