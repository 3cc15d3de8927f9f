"""int8 and float16 deployment variants of whole-model and per-layer ONNX exports.

The oracle is the framework that wrote each file (tf_keras for Keras 2, Keras 3 for .keras): the
deviation rnnx reports (reduced model against its float32 export) must equal the deviation this test
measures itself, reduced model against the framework's predictions on the same inputs, within the
float32 export's own distance from the framework (graph_helpers.TOLERANCE, 1e-5)."""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "graph"))
from graph_helpers import TOLERANCE, load_keras2, run_onnx  # noqa: E402

import rnnx  # noqa: E402
from rnnx import deploy  # noqa: E402

FIXTURES = ["k2_activations.h5", "k2_cudnn_mix.h5", "k2_layers.h5", "k2_masking.h5", "k2_merges.h5",
            "k2_merges_masked.h5", "k2_nested.h5", "k2_seed_cudnn.h5", "k2_stateful.h5", "k2_states.h5",
            "k2_time_distributed.h5", "k3_activations.keras", "k3_nested.keras", "k3_text.keras"]
CORPUS = {"keras2/stockprice_cudnnlstm4_full.h5": None, "keras2/head_pose_cudnnlstm_functional_full.h5": None,
          "keras2/medaka_bigru_full.hdf5": None, "keras2/medaka_lstm_theano_full.h5": None,
          "keras2/lstm_chem_weights.hdf5": "keras2/lstm_chem_model_arch.json", "keras3/dino_lstm.keras": None}


def _keras_model(src: Path, config: Path | None):
    if src.suffix == ".keras":
        import keras

        return keras.models.load_model(src)
    return load_keras2(src, config)


def _keras_outputs(model, feeds: dict, input_names: list[str]) -> list[np.ndarray]:
    """The model's outputs on the feeds of its inputs: an eager call, or model.predict for long inputs
    (medaka_bigru's 1000 steps of Bidirectional GRUs take a minute eagerly here, predict seconds; for
    the small fixtures predict's graph compilation is the slower one)."""
    xs = [feeds[n] for n in input_names]
    if max(x.size for x in xs) <= 20_000:
        out = model(xs if len(xs) > 1 else xs[0], training=False)
    else:
        out = model.predict(xs if len(xs) > 1 else xs[0], batch_size=len(xs[0]), verbose=0)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def _max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes {a.shape} and {b.shape}"
    return float(np.max(np.abs(a - b), initial=0.0))


def _check_variants(src: Path, config: Path | None, tmp_path: Path):
    float32 = tmp_path / "float32.onnx"
    rnnx.convert(src, float32, config=config)
    graph32 = onnx.load(str(float32))
    lstms = [n.op_type for n in graph32.graph.node].count("LSTM")
    model, expected = _keras_model(src, config), None
    for precision in deploy.PRECISIONS:
        dst = tmp_path / f"{precision}.onnx"
        result = rnnx.convert(src, dst, config=config, precision=precision)
        reduced = onnx.load(str(dst))
        onnx.checker.check_model(reduced, full_check=True)
        ops = [n.op_type for n in reduced.graph.node]
        if precision == "int8":
            assert ops.count("DynamicQuantizeLSTM") == lstms and "LSTM" not in ops, f"{src.name}: {ops}"
        else:
            assert ops.count("LSTM") == lstms
            weights = [i for i in reduced.graph.initializer if i.name not in {v.name for v in reduced.graph.input}]
            assert not [i.name for i in weights if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) > 1]
        report = result.deployment
        inputs = report["inputs"]
        feeds = deploy.random_feeds(float32, inputs["batch"], inputs["seq"], inputs["seed"])
        assert {k: list(v.shape) for k, v in feeds.items()} == inputs["shapes"]
        if expected is None:  # once: a stateful model would carry its states into a second call
            expected = _keras_outputs(model, feeds, [i.name for i in graph32.graph.input if i.name in feeds])
        got = run_onnx(dst, feeds)
        measured = max(_max_abs(g, e) for g, e in zip(got, expected))
        # outputs Keras does not return (a stateful layer's final states) are measured against the float32 export
        extra = run_onnx(float32, feeds)[len(expected):]
        measured = max([measured] + [_max_abs(g, e) for g, e in zip(got[len(expected):], extra)])
        assert measured > 0, f"{src.name} {precision}: the reduced model computes exactly what Keras does"
        assert abs(report["max_abs_error"] - measured) <= TOLERANCE, (
            f"{src.name} {precision}: rnnx reports {report['max_abs_error']:.6g}, the test measures {measured:.6g}")


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_variants_report_their_deviation_from_keras(name, fixtures, tmp_path):
    _check_variants(fixtures / "models" / name, None, tmp_path)


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_variants_report_their_deviation_from_keras(name, corpus, tmp_path):
    config = CORPUS[name]
    _check_variants(corpus / name, corpus / config if config else None, tmp_path)


def test_per_layer_variants_match_the_tf_keras_layer(fixtures, tmp_path):
    """--layer: the one-layer model's Y against the tf_keras layer's own output."""
    import tf_keras

    src = fixtures / "models" / "k2_seed_cudnn.h5"
    float32 = tmp_path / "lstm1.onnx"
    rnnx.convert(src, float32, layer="cudnn_lstm_1")
    keras = load_keras2(src)
    for precision, op in (("int8", "DynamicQuantizeLSTM"), ("float16", "LSTM")):
        dst = tmp_path / f"lstm1_{precision}.onnx"
        result = rnnx.convert(src, dst, layer="cudnn_lstm_1", precision=precision)
        reduced = onnx.load(str(dst))
        onnx.checker.check_model(reduced, full_check=True)
        assert [n.op_type for n in reduced.graph.node].count(op) == 1
        inputs = result.deployment["inputs"]
        feeds = deploy.random_feeds(float32, inputs["batch"], inputs["seq"], inputs["seed"])
        assert list(feeds) == ["X"]  # initial_h / initial_c have defaults
        x = tf_keras.Input((None, feeds["X"].shape[-1]))  # the per-layer model takes any length
        expected_y = np.asarray(tf_keras.Model(x, keras.get_layer("cudnn_lstm_1")(x))(feeds["X"], training=False))
        got, want = run_onnx(dst, feeds), run_onnx(float32, feeds)
        measured = max([_max_abs(got[0], expected_y)] + [_max_abs(g, w) for g, w in zip(got[1:], want[1:])])
        assert measured > 0
        assert abs(result.deployment["max_abs_error"] - measured) <= TOLERANCE, (precision, measured)


def test_verify_exits_1_below_the_measured_deviation(cli, fixtures, tmp_path):
    src = fixtures / "models" / "k2_seed_cudnn.h5"
    dst = tmp_path / "seed_int8.onnx"
    ok = cli("convert", src, dst, "--quantize", "int8", "--verify")
    assert ok.returncode == 0, ok.stderr
    assert "DynamicQuantizeLSTM x2" in ok.stdout and "max abs error" in ok.stdout
    reported = rnnx.verify(src, dst)["deployment"]["max_abs_error"]
    assert reported > 0
    tight = cli("convert", src, tmp_path / "tight.onnx", "--quantize", "int8", "--verify",
                "--tolerance", f"{reported / 2:.3g}")
    assert tight.returncode == 1, tight.stdout + tight.stderr
    assert (tmp_path / "tight.onnx").is_file()  # written, for inspection, as every failed --verify leaves it
    loose = cli("verify", src, dst, "--tolerance", f"{reported * 2:.3g}")
    assert loose.returncode == 0, loose.stdout + loose.stderr
    below = cli("verify", src, dst, "--tolerance", f"{reported / 2:.3g}", "--json")
    assert below.returncode == 1
    report = json.loads(below.stdout)
    assert report["deployment"]["ok"] is False and report["ok"] is False
    assert all(layer["ok"] for layer in report["layers"])  # the float32 export itself is right


def test_verify_json_of_a_float16_model_follows_the_schema(cli, fixtures, tmp_path):
    import jsonschema

    src = fixtures / "models" / "k3_text.keras"
    dst = tmp_path / "text_fp16.onnx"
    assert cli("convert", src, dst, "--precision", "float16").returncode == 0
    done = cli("verify", src, dst, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    schema = json.loads((ROOT.parent / "schemas" / "verify.schema.json").read_text())
    jsonschema.validate(report, schema)
    deployment = report["deployment"]
    assert deployment["precision"] == "float16" and deployment["tolerance"] == deploy.TOLERANCE["float16"]
    assert "LSTM" in deployment["float32_ops"] and "GRU" in deployment["float32_ops"]
    assert 0 < deployment["max_abs_error"] <= deployment["tolerance"]


def test_bench_against_prints_the_ratio(cli, fixtures, tmp_path):
    src = fixtures / "models" / "k2_seed_cudnn.h5"
    assert cli("convert", src, tmp_path / "f32.onnx").returncode == 0
    assert cli("convert", src, tmp_path / "int8.onnx", "--quantize", "int8").returncode == 0
    done = cli("bench", tmp_path / "int8.onnx", "--against", tmp_path / "f32.onnx", "--batch", "4", "--seq", "9",
               "--runs", "3", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    first, second = report["models"]
    assert first["inputs"] == {"features": [4, 7, 5]}  # the seed fixture's 7 steps are fixed in its config
    assert first["threads"] == 1 and first["median_ms"] > 0
    assert report["ratio"] == pytest.approx(second["median_ms"] / first["median_ms"])
    assert first["size_bytes"] == (tmp_path / "int8.onnx").stat().st_size < second["size_bytes"]
    text = cli("bench", tmp_path / "int8.onnx", "--against", tmp_path / "f32.onnx", "--runs", "2")
    assert text.returncode == 0 and "as fast as" in text.stdout


def test_usage_errors_exit_2(cli, fixtures, tmp_path):
    src = fixtures / "models" / "k2_seed_cudnn.h5"
    cases = [("convert", src, tmp_path / "x.h5", "--quantize", "int8"),
             ("convert", src, tmp_path / "x.onnx", "--quantize", "int8", "--precision", "float16"),
             ("convert", src, tmp_path / "x.onnx", "--quantize", "int8", "--tolerance", "1"),
             ("bench", src)]
    for args in cases:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("rnnx: ") and len(done.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_tampered_deploy_record_is_refused(cli, fixtures, tmp_path):
    src = fixtures / "models" / "k2_seed_cudnn.h5"
    dst = tmp_path / "int8.onnx"
    rnnx.convert(src, dst, precision="int8")
    model = onnx.load(str(dst))
    for prop in model.metadata_props:
        if prop.key == deploy.METADATA_KEY:
            prop.value = json.dumps({"precision": "int8", "opset": "14; rm -rf"})
    onnx.save(model, str(dst))
    done = cli("verify", src, dst)
    assert done.returncode == 2 and "rnnx.deploy" in done.stderr, done.stderr


def test_random_feeds_refuse_what_a_fixed_shape_merely_claims():
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20, 1 << 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    from rnnx.errors import UsageError

    with pytest.raises(UsageError, match="more than"):
        deploy.random_feeds(helper.make_model(graph))
