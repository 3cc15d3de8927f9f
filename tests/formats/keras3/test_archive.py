"""`.keras` archives: reader, writer (Keras 3 sources and translated Keras 2 models), refusals, bad archives."""

import json
import os
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import (KERAS2, KERAS3, archive_config, archive_member, h5_datasets, max_abs,  # noqa: E402
                            same_arrays, tf_keras_cpu_twin)

import rnnx  # noqa: E402
from rnnx.formats.keras3 import archive as keras3  # noqa: E402

# the keras3 fixtures, and the graph exporter's Keras 3 whole-model fixtures (nested models, masks, states)
ARCHIVES = [KERAS3 / f"{name}.keras" for name in ("stack", "bidir", "mixed")] + [
    KERAS3.parent / "models" / f"{name}.keras" for name in ("k3_nested", "k3_text", "k3_activations")]


def _inputs(model, seed=0, batch=3, steps=9):
    rng = np.random.default_rng(seed)
    out = []
    for inp in model.inputs:
        shape = [batch] + [d if d is not None else steps for d in inp.shape[1:]]
        embedded = any(l.__class__.__name__ == "Embedding" for l in model.layers[:2])
        if "int" in str(inp.dtype) or embedded:
            out.append(rng.integers(0, 11, shape).astype("int32" if "int" in str(inp.dtype) else "float32"))
        else:
            out.append(rng.standard_normal(shape).astype("float32"))
    return out if len(out) > 1 else out[0]


@pytest.mark.parametrize("src", ARCHIVES, ids=[p.stem for p in ARCHIVES])
def test_keras3_archive_round_trips(src, tmp_path):
    import keras

    out = tmp_path / src.name
    bundle = rnnx.load(src)
    assert bundle.source["format"] == "keras" and bundle.source["has_architecture"] is True
    assert bundle.source["keras_version"] == json.loads(archive_member(src, "metadata.json"))["keras_version"]
    assert bundle.source["model_config"] == archive_config(src)
    rnnx.save(bundle, out)
    assert same_arrays(h5_datasets(archive_member(src, "model.weights.h5")),
                       h5_datasets(archive_member(out, "model.weights.h5")))
    written, original = archive_config(out), archive_config(src)
    original.pop("compile_config", None)
    assert written == original
    a, b = keras.models.load_model(src), keras.models.load_model(out)
    x = _inputs(a)
    want, got = a.predict(x, verbose=0), b.predict(x, verbose=0)
    want, got = (want, got) if isinstance(want, list) else ([want], [got])
    assert all(np.array_equal(w, g) for w, g in zip(want, got))


def test_reader_takes_names_activations_and_options_from_the_config():
    bundle = rnnx.load(KERAS3 / "mixed.keras")
    by_name = {l.name: l for l in bundle.layers}
    assert list(by_name) == ["lstm_nobias", "gru_hard", "rnn_relu"]
    assert by_name["lstm_nobias"].has_bias is False
    assert by_name["gru_hard"].activations[0].describe() == "HardSigmoid(alpha=0.166667, beta=0.5)"
    assert by_name["rnn_relu"].activations[0].name == "Relu"
    assert by_name["lstm_nobias"].options["return_sequences"] is True
    assert [(o.name, o.class_name) for o in bundle.others] == [
        ("embed", "Embedding"), ("conv", "Conv1D"), ("bn", "BatchNormalization"), ("ln", "LayerNormalization"),
        ("head", "Dense")]
    assert [n for n, _ in bundle.others[2].weights] == ["vars/0", "vars/1", "vars/2", "vars/3"]
    bidir = rnnx.load(KERAS3 / "bidir.keras")
    assert bidir.layers[1].options["merge_mode"] == "sum" and bidir.layers[1].reset_after is False
    assert bidir.others[0].weights[0][0] == "layer/vars/0"


def test_windows_archive_reads_and_converts(tmp_path):
    import keras

    with zipfile.ZipFile(KERAS3 / "windows.keras") as zf:
        assert all(n.startswith(".\\") for n in zf.namelist())
    windows, original = rnnx.load(KERAS3 / "windows.keras"), rnnx.load(KERAS3 / "stack.keras")
    assert [i.name for i in windows.items] == [i.name for i in original.items]
    out = tmp_path / "fixed.keras"
    rnnx.save(windows, out)
    a, b = keras.models.load_model(KERAS3 / "stack.keras"), keras.models.load_model(out)
    x = _inputs(a)
    assert np.array_equal(a.predict(x, verbose=0), b.predict(x, verbose=0))


@pytest.mark.parametrize("name", ["cudnn_stack", "cudnn_bidir"])
def test_cudnn_full_model_becomes_a_keras3_model(name, tmp_path, cli):
    """rnnx convert old_cudnn_model.h5 model.keras; keras.models.load_model works with no custom objects."""
    import keras

    out = tmp_path / "model.keras"
    result = cli("convert", KERAS2 / f"{name}_full.h5", out)
    assert result.returncode == 0, result.stderr
    model = keras.models.load_model(out)
    classes = {type(l).__name__ for l in model.layers} | {
        type(l.forward_layer).__name__ for l in model.layers if hasattr(l, "forward_layer")}
    assert not any(c.startswith("CuDNN") for c in classes)
    x = np.random.default_rng(7).standard_normal((4, 11, model.inputs[0].shape[-1])).astype("float32")
    assert max_abs(model.predict(x, verbose=0), tf_keras_cpu_twin(name).predict(x, verbose=0)) <= 1e-5


def test_keras2_gru_becomes_reset_after_and_lstm_sigmoid(tmp_path):
    out = tmp_path / "model.keras"
    rnnx.convert(KERAS2 / "cudnn_stack_full.h5", out)
    layers = {l["config"]["name"]: l for l in archive_config(out)["config"]["layers"]}
    assert layers["gru_b"]["class_name"] == "GRU" and layers["gru_b"]["config"]["reset_after"] is True
    assert layers["lstm_a"]["config"]["recurrent_activation"] == "sigmoid"
    assert layers["lstm_a"]["config"]["activation"] == "tanh"
    assert layers["lstm_a"]["build_config"] == {"input_shape": [None, None, 4]}


def _keras3_hard_sigmoid(x):
    import tensorflow as tf

    return tf.clip_by_value(x / 6.0 + 0.5, 0.0, 1.0)


def test_hard_sigmoid_model_refused_then_written_with_keras3_semantics(tmp_path, cli):
    """With the change accepted, Keras 3 computes what tf_keras computes once its hard_sigmoid has slope 1/6."""
    import keras
    import tf_keras

    out = tmp_path / "mix.keras"
    result = cli("convert", KERAS2 / "cpu_mix_full.h5", out)
    assert result.returncode == 2 and "hard_sigmoid" in result.stderr and not out.exists()
    notes = rnnx.convert(KERAS2 / "cpu_mix_full.h5", out, accept_activation_change=True).notes
    assert any("lstm_hard" in n and "moves by up to" in n for n in notes)
    assert any("gru_before" in n and "moves by up to" in n for n in notes)
    oracle = tf_keras.models.load_model(KERAS2 / "cpu_mix_full.h5")
    for name in ("lstm_hard", "gru_before"):
        oracle.get_layer(name).cell.recurrent_activation = _keras3_hard_sigmoid
    model = keras.models.load_model(out)
    x = np.random.default_rng(8).standard_normal((3, 10, 4)).astype("float32")
    assert max_abs(model.predict(x, verbose=0), oracle(x).numpy()) <= 1e-5


def test_sources_without_architecture_are_refused(tmp_path, cli):
    for src in (KERAS3 / "stack.weights.h5", KERAS2 / "cudnn_stack_weights.h5"):
        out = tmp_path / "x.keras"
        result = cli("convert", src, out)
        assert result.returncode == 2, result.stdout
        assert ".weights.h5" in result.stderr and "--config" in result.stderr and not out.exists()
    result = cli("convert", KERAS3 / "stack.keras", tmp_path / "one.keras", "--layer", "gru")
    assert result.returncode == 2 and ".weights.h5" in result.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_weights_file_with_config_becomes_a_keras3_model(tmp_path, cli):
    import keras

    import h5py

    with h5py.File(KERAS2 / "cudnn_stack_full.h5") as f:  # the CuDNN model's own to_json()
        (tmp_path / "arch.json").write_text(f.attrs["model_config"])
    out = tmp_path / "model.keras"
    result = cli("convert", KERAS2 / "cudnn_stack_weights.h5", out, "--config", tmp_path / "arch.json")
    assert result.returncode == 0, result.stderr
    model = keras.models.load_model(out)
    x = np.random.default_rng(9).standard_normal((2, 5, 4)).astype("float32")
    assert max_abs(model.predict(x, verbose=0), tf_keras_cpu_twin("cudnn_stack").predict(x, verbose=0)) <= 1e-5


def test_unknown_layer_in_the_config_is_refused(tmp_path, cli):
    config = json.loads((KERAS2 / "cudnn_stack_cpu.json").read_text())
    head = next(l for l in config["config"]["layers"] if l["class_name"] == "Dense")
    head["class_name"] = "FancyAttention"
    bundle = rnnx.load(KERAS2 / "cudnn_stack_full.h5")
    bundle.source["model_config"] = config
    out = tmp_path / "x.keras"
    with pytest.raises(rnnx.UnsupportedError, match="FancyAttention"):
        rnnx.save(bundle, out)
    assert not out.exists() and os.listdir(tmp_path) == []


def test_verify_runs_the_archive_in_keras3(tmp_path, cli):
    out = tmp_path / "model.keras"
    result = cli("convert", KERAS2 / "cudnn_bidir_full.h5", out, "--verify")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "matches its source" in result.stdout


# --- bad archives -----------------------------------------------------------------


def _zip(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _good_members() -> dict:
    with zipfile.ZipFile(KERAS3 / "stack.keras") as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "C:\\evil.txt",
                                  "..\\evil.txt"])
def test_members_escaping_the_archive_are_refused(evil, tmp_path, cli):
    work = tmp_path / "work"
    work.mkdir()
    src = _zip(work / "evil.keras", {**_good_members(), evil: b"x"})
    result = cli("convert", src, work / "out.onnx", "--layer", "lstm")
    assert result.returncode == 2 and "outside the archive" in result.stderr
    assert sorted(os.listdir(work)) == ["evil.keras"] and os.listdir(tmp_path) == ["work"]


def test_oversized_member_declaration_is_refused_before_reading(tmp_path, cli):
    src = _zip(tmp_path / "big.keras", _good_members())
    data = bytearray(src.read_bytes())
    # the central directory entry of model.weights.h5: set its uncompressed size to ~4 GiB
    name = b"model.weights.h5"
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(name))  # its central directory header
    assert data[at + 46: at + 46 + len(name)] == name
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
    src.write_bytes(bytes(data))
    with pytest.raises(rnnx.FormatError, match="declares"):
        keras3.read(src)
    result = cli("inspect", src)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_missing_or_broken_members_are_refused(tmp_path, cli):
    members = _good_members()
    cases = {
        "no_weights": {k: v for k, v in members.items() if k != "model.weights.h5"},
        "bad_json": {**members, "config.json": b"{not json"},
        "bad_h5": {**members, "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 100},
        "bad_config": {**members, "config.json": b'{"class_name": "Sequential", "config": {"layers": [5]}}'},
        "wrong_config": {**members, "config.json": json.dumps({"class_name": "Sequential", "config": {"layers": [
            {"class_name": "Bidirectional", "config": {"name": "bi", "layer": {"class_name": "LSTM", "config": {}}}}]}}
        ).encode()},
    }
    for label, content in cases.items():
        src = _zip(tmp_path / f"{label}.keras", content)
        with pytest.raises(rnnx.FormatError):
            keras3.read(src)
        result = cli("inspect", src)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (label, result.stderr)
        assert str(src) in result.stderr


def test_tf_keras_archive_keeps_keras2_hard_sigmoid(tmp_path):
    """tf_keras 2.13+ writes .keras archives too; there hard_sigmoid means Keras 2's (slope 0.2)."""
    import tf_keras

    from rnnx.canonical import reference
    from rnnx.canonical.activations import HARD_SIGMOID_KERAS2

    model = tf_keras.Sequential([tf_keras.layers.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True,
                                                      input_shape=(6, 2))])
    model.save(tmp_path / "tfk.keras")
    (layer,) = rnnx.load(tmp_path / "tfk.keras").layers
    assert layer.activations[0] == HARD_SIGMOID_KERAS2
    x = np.random.default_rng(14).standard_normal((2, 6, 2)).astype("float32")
    want = model.predict(x, verbose=0)
    assert max_abs(reference.run_batch_first(layer, x)[0][:, :, 0], want) <= 1e-5


def test_reading_and_writing_keras3_files_imports_no_framework(tmp_path):
    import subprocess

    code = (
        "import sys, rnnx\n"
        f"rnnx.inspect({str(KERAS3 / 'mixed.keras')!r}); rnnx.inspect({str(KERAS3 / 'windows.weights.h5')!r})\n"
        f"rnnx.convert({str(KERAS2 / 'cudnn_nested_full.h5')!r}, {str(tmp_path / 'a.keras')!r})\n"
        f"rnnx.convert({str(KERAS3 / 'bidir.keras')!r}, {str(tmp_path / 'b.weights.h5')!r})\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras', 'torch') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("inbound", [5, "zz", [[["x"]]]])
def test_a_malformed_keras2_config_is_a_format_error_naming_the_file(inbound, tmp_path, cli):
    import shutil

    import h5py

    src = tmp_path / "damaged.h5"
    shutil.copy(KERAS2 / "cudnn_bidir_full.h5", src)
    with h5py.File(src, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        next(layer for layer in config["config"]["layers"] if layer.get("inbound_nodes"))["inbound_nodes"] = inbound
        f.attrs["model_config"] = json.dumps(config)
    result = cli("convert", src, tmp_path / "model.keras")
    assert result.returncode == 2 and "unexpected" not in result.stderr and "Traceback" not in result.stderr
    assert f"{src}: its Keras 2 model config is malformed" in result.stderr, result.stderr
    assert not (tmp_path / "model.keras").exists()
