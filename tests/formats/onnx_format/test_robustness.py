"""Broken and hostile ONNX input: truncated, fuzzed, empty, text, external data outside the folder.
Each ends in FormatError (CLI exit 2, one plain sentence), never a crash, traceback, hang or partial file."""

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import random_layer  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle  # noqa: E402
from rnnx.errors import FormatError, RnnxError  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model  # noqa: E402


def _one_sentence(proc):
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert 1 <= len(lines) <= 2, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "small.onnx"
    rnnx.save(Bundle([random_layer("lstm", directions=2, name="a"), random_layer("gru", name="b", seed=2)]), path)
    return path


def _read_outcome(path):
    """'ok' when the damaged file still is a valid model, else the rnnx error (anything else fails the test)."""
    try:
        onnx_model.read(path)
        return "ok"
    except RnnxError as exc:
        message = exc.args[0]
        assert str(path) in message and message.strip().endswith("."), message
        return "error"


def test_truncated_files_are_format_errors(small_model, corpus, tmp_path):
    outcomes = []
    for source in (small_model, corpus / "onnx" / "dtln_lstm_stateful.onnx"):
        data = source.read_bytes()
        for fraction in (0.001, 0.01, 0.1, 0.33, 0.5, 0.77, 0.9, 0.99, 0.9999):
            cut = tmp_path / f"cut_{source.stem}_{fraction}.onnx"
            cut.write_bytes(data[: max(1, int(len(data) * fraction))])
            outcomes.append(_read_outcome(cut))
    assert outcomes == ["error"] * len(outcomes)


def test_fuzzed_files_never_crash(small_model, tmp_path):
    data = bytearray(small_model.read_bytes())
    rng = np.random.default_rng(1234)
    outcomes = []
    for trial in range(60):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
            damaged[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz_{trial}.onnx"
        path.write_bytes(bytes(damaged))
        outcomes.append(_read_outcome(path))
    assert "error" in outcomes  # most flips break the structure; the rest still are valid models


def test_empty_and_text_files(tmp_path, cli):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "notes.onnx").write_text("this is a text file, not a model\n" * 20)
    for name in ("empty.onnx", "notes.onnx"):
        with pytest.raises(FormatError, match=name):
            rnnx.load(tmp_path / name)
        proc = cli("inspect", tmp_path / name)
        assert proc.returncode == 2
        assert name in _one_sentence(proc)


def test_convert_of_a_broken_file_leaves_no_output(small_model, tmp_path, cli):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(small_model.read_bytes()[:300])
    proc = cli("convert", broken, tmp_path / "out.onnx")
    assert proc.returncode == 2
    _one_sentence(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]


def test_refused_layer_leaves_no_output(fixtures, tmp_path, cli):
    proc = cli("convert", fixtures / "torch" / "lstm_proj.pth", tmp_path / "out.onnx")
    assert proc.returncode == 2
    assert "proj" in _one_sentence(proc)
    assert list(tmp_path.iterdir()) == []


# --- external data ------------------------------------------------------------------------
def _external_model(folder: Path) -> Path:
    """A model whose weights live in weights.bin beside it (onnx's own external-data writer)."""
    folder.mkdir(parents=True, exist_ok=True)
    inner = folder / "model.onnx"
    rnnx.save(Bundle([random_layer("lstm", units=8, inputs=6, name="ext")]), folder / "plain.onnx", layer="ext")
    model = onnx.load(folder / "plain.onnx")
    onnx.save_model(model, inner, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (folder / "plain.onnx").unlink()
    return inner


def _relocate(model_path: Path, location: str) -> None:
    model = onnx.load(model_path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model_path.write_bytes(model.SerializeToString())


def test_external_data_inside_the_folder_is_read(tmp_path):
    path = _external_model(tmp_path / "m")
    assert any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in onnx.load(path, load_external_data=False).graph.initializer)
    layer = rnnx.load(path).layer("ext")
    want = random_layer("lstm", units=8, inputs=6, name="ext").directions[0]
    assert np.array_equal(layer.directions[0].W, want.W)


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "..\\secret.bin",
                                      "C:\\Windows\\secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location, cli):
    path = _external_model(tmp_path / "m")
    (tmp_path / "secret.bin").write_bytes((tmp_path / "m" / "weights.bin").read_bytes())
    _relocate(path, location)
    with pytest.raises(FormatError, match="outside the model's folder"):
        rnnx.load(path)
    proc = cli("inspect", path)
    assert proc.returncode == 2 and "outside" in _one_sentence(proc)


def test_external_data_through_a_symlink_out_of_the_folder_is_refused(tmp_path):
    path = _external_model(tmp_path / "m")
    os.replace(tmp_path / "m" / "weights.bin", tmp_path / "elsewhere.bin")
    os.symlink(tmp_path / "elsewhere.bin", tmp_path / "m" / "weights.bin")
    with pytest.raises(FormatError, match="outside the model's folder"):
        rnnx.load(path)


def test_external_data_shorter_than_claimed_is_refused(tmp_path):
    path = _external_model(tmp_path / "m")
    weights = tmp_path / "m" / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FormatError, match="past the end"):
        rnnx.load(path)


def test_a_tensor_claiming_more_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    rnnx.save(Bundle([random_layer("gru", name="g")]), path, layer="g")
    model = onnx.load(path)
    for tensor in model.graph.initializer:
        if tensor.name.endswith("_W"):
            tensor.dims[1] = 10**9  # a header claim; the data stays small
    path.write_bytes(model.SerializeToString())
    with pytest.raises(RnnxError, match="claims shape"):
        rnnx.load(path)


def test_a_node_with_zero_units_is_refused(tmp_path, cli):
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=0, name="empty")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((1, 0, 3), np.float32), "W"),
         numpy_helper.from_array(np.zeros((1, 0, 0), np.float32), "R")])
    path = tmp_path / "empty.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), path)
    with pytest.raises(FormatError, match="'empty'.*0 units"):
        rnnx.load(path)
    proc = cli("convert", path, tmp_path / "out.h5")
    assert proc.returncode == 2 and "unexpected" not in _one_sentence(proc)
    assert list(tmp_path.iterdir()) == [path]


def test_verify_of_a_float64_node_says_onnxruntime_has_no_kernel(tmp_path, cli):
    layer = random_layer("gru", name="g")
    for d in layer.directions:
        for key, value in d.tensors().items():
            setattr(d, key, value.astype(np.float64))
    rnnx.save(Bundle([layer]), tmp_path / "f64.rnnx")
    proc = cli("convert", tmp_path / "f64.rnnx", tmp_path / "f64.onnx", "--verify")
    assert proc.returncode == 2
    message = _one_sentence(proc)
    assert "no float64 GRU kernel" in message and "float32 copy" in message, message


@pytest.mark.parametrize("clip", [-1.0, float("nan")])
def test_a_node_whose_clip_is_no_threshold_is_refused(tmp_path, clip):
    path = tmp_path / "clip.onnx"
    rnnx.save(Bundle([random_layer("lstm", name="c")]), path, layer="c")
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    node.attribute.append(onnx.helper.make_attribute("clip", clip))
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="node 'c'.*clip .* is not a positive threshold"):
        rnnx.load(path)


def test_weights_of_a_type_rnnx_does_not_hold_say_what_to_do(tmp_path, cli):
    path = tmp_path / "bf16.onnx"
    rnnx.save(Bundle([random_layer("gru", name="g")]), path, layer="g")
    model = onnx.load(path)
    for tensor in model.graph.initializer:
        if tensor.name.endswith("_W"):
            tensor.data_type = onnx.TensorProto.BFLOAT16
    path.write_bytes(model.SerializeToString())
    proc = cli("inspect", path)
    assert proc.returncode == 2
    message = _one_sentence(proc)
    assert "node 'g'" in message and "BFLOAT16" in message and "export the model with float32" in message


def test_a_node_name_that_is_not_utf8_still_names_a_layer(tmp_path):
    path = tmp_path / "name.onnx"
    rnnx.save(Bundle([random_layer("gru", name="g")]), path, layer="g")
    model = onnx.load(path)
    next(n for n in model.graph.node if n.op_type == "GRU").name = "QQ\u00e9Q"
    path.write_bytes(model.SerializeToString().replace(b"QQ\xc3\xa9Q", b"QQ\xe9\x32Q"))  # same length
    bundle = rnnx.load(path)
    assert [layer.name for layer in bundle.layers] == ["QQ\ufffd2Q"]
    rnnx.save(bundle, tmp_path / "copy.rnnx")  # names are text all the way (was: bytes in the manifest)
    assert rnnx.load(tmp_path / "copy.rnnx").layers[0].name == "QQ\ufffd2Q"


def test_a_claimed_shape_whose_size_overflows_int64_is_refused_as_such(tmp_path):
    path = tmp_path / "m.onnx"
    rnnx.save(Bundle([random_layer("gru", name="g")]), path, layer="g")
    model = onnx.load(path)
    for tensor in model.graph.initializer:
        if tensor.name.endswith("_W"):
            del tensor.dims[:]
            tensor.dims.extend([1, 2**32, 2**32])  # an int64 product wraps around to 0
            tensor.ClearField("float_data")
            tensor.raw_data = b""
    path.write_bytes(model.SerializeToString())
    with pytest.raises(FormatError, match="claims shape .1, 4294967296, 4294967296. but holds 0 bytes"):
        rnnx.load(path)
