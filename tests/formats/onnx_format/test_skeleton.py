"""The wire-format scan behind lazy inline ONNX (skeleton.py) on hostile and unusual bytes: a truncated,
fuzzed or malformed file is refused (FormatError, one sentence naming the file) exactly when protobuf refuses
it, and otherwise reads as protobuf parses it; lengths that claim more than the file holds are refused
before anything is allocated; what protobuf allows but onnx never writes (groups, a singular field twice,
fields of the wrong wire type, long varints) reads as protobuf reads it."""

import os
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from lazy_helpers import every_tensor, is_own_reference, read_back, tensors_everywhere  # noqa: E402
from onnx_helpers import random_layer  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle  # noqa: E402
from rnnx.errors import FormatError  # noqa: E402
from rnnx.formats.onnx_format import model as onnx_model  # noqa: E402
from rnnx.lazy import LazyArray  # noqa: E402


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_bytes(graph: bytes, after: bytes = b"") -> bytes:
    """A ModelProto (IR 7, opset 14) around the serialized GraphProto `graph`, then the bytes `after`."""
    shell = onnx.ModelProto(ir_version=7, producer_name="test")
    shell.opset_import.add(domain="", version=14)
    return shell.SerializeToString() + field(7, graph) + after


def lstm_graph(units=16, inputs=8) -> onnx.GraphProto:
    """The graph rnnx writes for one LSTM (W 2 KiB, R 4 KiB)."""
    layer = random_layer("lstm", units=units, inputs=inputs, name="l", seed=3)
    return onnx_model.build_layers_model(Bundle([layer]), plain_names=True)[0].graph


def _parse(data: bytes) -> onnx.ModelProto | None:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        return None
    return model


def _outcome(path: Path, lazy: bool):
    """The model `path` reads to (skeleton with its ranges read back in) or 'refused' (a FormatError naming
    the file); anything else fails the test."""
    try:
        model = onnx_model.load_model(path, lazy=lazy)
    except FormatError as exc:
        message = exc.args[0]
        assert str(path) in message and message.rstrip().endswith(".") and "\n" not in message, message
        return "refused"
    if lazy:
        whole = onnx_model.load_model(path, lazy=False)
        read_back(model, path, whole)
    return model


def _same_outcome(path: Path) -> str:
    lazy, whole = _outcome(path, True), _outcome(path, False)
    assert lazy == whole, path  # both refused, or both the same model
    return lazy if isinstance(lazy, str) else "read"


def _structure(path: Path) -> list[int]:
    """The byte positions of `path` outside the tensor values the reader leaves in the file."""
    model = onnx_model.load_model(path)
    values = np.zeros(path.stat().st_size, bool)
    for tensor in every_tensor(model):
        if is_own_reference(tensor, path):
            info = {e.key: e.value for e in tensor.external_data}
            values[int(info["offset"]):int(info["offset"]) + int(info["length"])] = True
    return [int(i) for i in np.flatnonzero(~values)]


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory) -> Path:
    return tensors_everywhere(tmp_path_factory.mktemp("everywhere") / "everywhere.onnx")


# --- truncated and fuzzed -------------------------------------------------------------------
def test_a_file_cut_anywhere_is_refused_or_read_as_protobuf_reads_it(everywhere, tmp_path):
    data = everywhere.read_bytes()
    structure = _structure(everywhere)
    assert len(structure) < len(data) / 5
    rng = np.random.default_rng(7)
    cuts = sorted(set(structure[::3]) | set(rng.integers(1, len(data), 100).tolist()))
    outcomes = []
    for cut in cuts:
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[:cut])
        outcomes.append(_same_outcome(path))
    assert outcomes.count("refused") > 0.5 * len(outcomes) and len(outcomes) > 500


def test_fuzzed_headers_are_refused_or_read_as_protobuf_reads_them(everywhere, tmp_path):
    data = everywhere.read_bytes()
    structure = _structure(everywhere)
    rng = np.random.default_rng(1234)
    outcomes = []
    for trial in range(300):
        damaged = bytearray(data)
        for pos in rng.choice(structure, size=int(rng.integers(1, 4))):
            damaged[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz_{trial % 10}.onnx"
        path.write_bytes(bytes(damaged))
        outcomes.append(_same_outcome(path))
    assert "refused" in outcomes and "read" in outcomes


# --- malformed wire data ---------------------------------------------------------------------
def _graph() -> bytes:
    return lstm_graph().SerializeToString()


MALFORMED = {
    "length prefix of 6 bytes": lambda: model_bytes(_graph(),
                                                    after=varint(30 << 3 | 2) + long_varint(1, 6) + b"a"),
    "graph longer than the file": lambda: model_bytes(b"") + varint(7 << 3 | 2) + varint(2**40) + b"\0" * 2000,
    "tensor longer than its graph": lambda: model_bytes(
        _graph() + field(5, field(8, b"w") + varint(9 << 3 | 2) + varint(2**62) + b"\0" * 2000)),
    "raw_data longer than its tensor": lambda: model_bytes(
        _graph() + varint(5 << 3 | 2) + varint(2004) + varint(9 << 3 | 2) + varint(10**6) + b"\0" * 2000),
    "varint of 11 bytes": lambda: model_bytes(_graph()) + varint(1 << 3) + b"\xff" * 10 + b"\x01",
    "wire type 7": lambda: model_bytes(_graph(), after=varint(30 << 3 | 7)),
    "wire type 6 inside the graph": lambda: model_bytes(_graph() + varint(31 << 3 | 6)),
    "varint cut short": lambda: model_bytes(_graph(), after=varint(1 << 3) + b"\xff\xff"),
    "field number 0": lambda: model_bytes(_graph(), after=b"\x02\x01a"),
    "field tag of 6 bytes": lambda: model_bytes(_graph(), after=b"\x88\x80\x80\x80\x80\x00\x01"),
    "group never closed": lambda: model_bytes(_graph(), after=varint(30 << 3 | 3) + varint(8) + b"\x01"),
    "group closed by another field": lambda: model_bytes(_graph() + varint(30 << 3 | 3) + varint(31 << 3 | 4)),
    "end of a group never opened": lambda: model_bytes(_graph() + varint(30 << 3 | 4)),
    "fixed64 past the end": lambda: model_bytes(_graph(), after=varint(30 << 3 | 1) + b"\0\0\0"),
}


@pytest.mark.parametrize("what", MALFORMED)
def test_malformed_wire_data_is_refused_as_protobuf_refuses_it(tmp_path, what):
    path = tmp_path / "bad.onnx"
    path.write_bytes(MALFORMED[what]())
    assert path.stat().st_size >= 1024  # large enough that the scan runs (a smaller file goes to protobuf)
    assert _parse(path.read_bytes()) is None  # not the scan's own strictness: protobuf refuses it too
    tracemalloc.start()
    try:
        # the scan's own sentence (what, at which byte), before protobuf sees anything
        with pytest.raises(FormatError, match=rf"^{path} is not an ONNX model \(.* at byte \d+.*\); it may be truncated"):
            onnx_model.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10  # nothing claimed was allocated


def test_the_cli_says_so_in_one_sentence(tmp_path, cli):
    path = tmp_path / "bad.onnx"
    path.write_bytes(MALFORMED["tensor longer than its graph"]())
    for command in (("inspect", path), ("convert", path, tmp_path / "out.safetensors")):
        proc = cli(*command)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and str(path) in lines[0] and "claims" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_a_text_file_is_refused_at_its_first_byte(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a model\n" * 100)
    with pytest.raises(FormatError, match=r"notes.onnx is not an ONNX model \(wire type 4 at byte 0\)"):
        onnx_model.load_model(path)


# --- what protobuf allows -------------------------------------------------------------------
def _large_constant(name: str, seed: int, shape=(32, 16)) -> onnx.NodeProto:
    values = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values, name))


def long_varint(value: int, size: int) -> bytes:
    """`value` as a varint of `size` bytes (padded with continuation bytes, as protobuf allows)."""
    out = bytearray()
    for _ in range(size - 1):
        out.append(value & 0x7F | 0x80)
        value >>= 7
    assert value < 0x80
    return bytes(out + bytes([value]))


def _with_tensor(graph: onnx.GraphProto, name: str, replacement: bytes, extra: bytes = b"") -> bytes:
    """The serialized `graph` with the initializer field of tensor `name` replaced by `replacement`."""
    tensor = next(t for t in graph.initializer if t.name == name)
    body = graph.SerializeToString()
    old = field(5, tensor.SerializeToString())
    assert body.count(old) == 1
    return body.replace(old, replacement) + extra


W = "l/LSTM_W"


def _odd(kind: str) -> bytes:
    graph = lstm_graph()
    tensor = next(t for t in graph.initializer if t.name == W)
    inner = tensor.SerializeToString()
    assert len(tensor.raw_data) >= 1024
    if kind == "groups":  # unknown fields as (nested) groups in the model, the graph and a large tensor
        group = (varint(40 << 3 | 3) + varint(41 << 3 | 3) + varint(1 << 3) + b"\x05" + varint(41 << 3 | 4)
                 + varint(40 << 3 | 4))
        return model_bytes(_with_tensor(graph, W, field(5, inner + group), group), after=group)
    if kind == "graph twice":  # protobuf merges the two: the initializers and nodes of both
        half, rest = onnx.GraphProto(), onnx.GraphProto()
        half.initializer.extend(graph.initializer[:3])
        rest.CopyFrom(graph)
        del rest.initializer[:3]
        return model_bytes(half.SerializeToString()) + field(7, rest.SerializeToString())
    if kind == "tensor twice":  # a Constant whose `value` tensor comes in two pieces, merged by protobuf
        node = _large_constant("c", 1)
        piece = field(5, numpy_helper.from_array(np.ones((40, 10), np.float32), "c").SerializeToString())
        attribute = field(5, node.attribute[0].SerializeToString() + piece)
        node.ClearField("attribute")
        return model_bytes(graph.SerializeToString() + field(1, node.SerializeToString() + attribute))
    if kind == "raw_data twice":  # the last one counts
        other = np.random.default_rng(5).uniform(-1, 1, len(tensor.raw_data) // 4).astype("<f4").tobytes()
        return model_bytes(_with_tensor(graph, W, field(5, inner + field(9, other))))
    if kind == "wrong wire types":  # known fields of another wire type are unknown fields to protobuf
        return model_bytes(graph.SerializeToString() + varint(5 << 3) + b"\x07" + varint(1 << 3 | 5) + b"abcd",
                           after=varint(7 << 3) + b"\x01")
    if kind == "long varints":  # tags and lengths written with more bytes than they need
        raw = field(9, tensor.raw_data)
        assert inner.count(raw) == 1
        inner = inner.replace(raw, long_varint(9 << 3 | 2, 3) + long_varint(len(tensor.raw_data), 5) + tensor.raw_data)
        return model_bytes(_with_tensor(graph, W, long_varint(5 << 3 | 2, 4) + long_varint(len(inner), 5) + inner))
    if kind == "raw_data and external data":  # says its data is in w.bin: read from there, as before
        marked = onnx.TensorProto()
        marked.CopyFrom(tensor)
        marked.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(len(tensor.raw_data)))):
            marked.external_data.add(key=key, value=value)
        return model_bytes(_with_tensor(graph, W, field(5, marked.SerializeToString())))
    if kind == "float_data and raw_data":  # values in two fields: parsed as they are, read as before
        return model_bytes(_with_tensor(graph, W, field(5, inner + field(4, np.ones(300, "<f4").tobytes()))))
    raise AssertionError(kind)


ODD = ["groups", "graph twice", "tensor twice", "raw_data twice", "wrong wire types", "long varints",
       "float_data and raw_data", "raw_data and external data"]


@pytest.mark.parametrize("kind", ODD)
def test_what_protobuf_allows_reads_as_protobuf_reads_it(tmp_path, kind):
    path = tmp_path / "odd.onnx"
    path.write_bytes(_odd(kind))
    w = np.random.default_rng(8).uniform(-1, 1, (1, 64, 8)).astype("<f4")
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    parsed = _parse(path.read_bytes())
    assert parsed is not None and any(t.name == W for t in parsed.graph.initializer)
    lazy = onnx_model.load_model(path)
    kept = read_back(lazy, path, parsed)
    assert lazy == parsed
    if kind in ("groups", "long varints", "wrong wire types"):
        assert kept >= 2  # the large tensors (W, R) were still left in the file
    if kind in ("raw_data twice", "float_data and raw_data", "raw_data and external data"):
        assert kept == 1  # R; W's values are in two places, for protobuf and the reader to make sense of
    if kind == "graph twice":
        assert kept == 0  # merged: no one occurrence is the whole graph, so it was parsed whole
    layers = rnnx.load(path).layers
    assert layers and [layer.name for layer in layers] == ["l"]
    if kind == "raw_data and external data":
        from rnnx.canonical import gates

        want = gates.reorder(w[0], gates.LSTM_ONNX, gates.CANONICAL_ORDER["lstm"])
        assert np.array_equal(np.asarray(layers[0].directions[0].W), want)


# --- file names -------------------------------------------------------------------------------
def test_a_file_name_that_cannot_be_a_location_is_parsed_whole(tmp_path):
    source = tmp_path / "plain.onnx"
    rnnx.save(Bundle([random_layer("gru", units=24, inputs=16, name="g")]), source)
    odd = tmp_path / "C:model.onnx"  # a drive to Windows, so no external-data location may name it
    odd.write_bytes(source.read_bytes())
    lazy, whole = rnnx.load(source).layer("g"), rnnx.load(odd).layer("g")
    assert isinstance(lazy.directions[0].W, LazyArray) and not isinstance(whole.directions[0].W, LazyArray)
    assert np.array_equal(np.asarray(lazy.directions[0].W), whole.directions[0].W)


def test_a_model_reached_through_a_link_reads_its_own_file(tmp_path):
    real = tmp_path / "store" / "real.onnx"
    real.parent.mkdir()
    rnnx.save(Bundle([random_layer("gru", units=24, inputs=16, name="g", seed=9)]), real)
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.onnx"
    os.symlink(real, link)
    layer = rnnx.load(link).layer("g")
    assert isinstance(layer.directions[0].W, LazyArray)
    want = random_layer("gru", units=24, inputs=16, name="g", seed=9).directions[0]
    assert np.array_equal(np.asarray(layer.directions[0].W), want.W)


def test_the_skeleton_is_an_external_data_model_of_the_file_it_came_from(tmp_path):
    """Written out beside the model, the skeleton is an ordinary ONNX external-data model whose data file is
    the model: onnxruntime runs it as it runs the model, and the reader checks its ranges like any other."""
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    rnnx.save(Bundle([random_layer("gru", units=24, inputs=16, name="g", seed=2)]), path, layer="g")
    skeleton = tmp_path / "skeleton.onnx"
    skeleton.write_bytes(onnx_model.load_model(path).SerializeToString())
    assert skeleton.stat().st_size < path.stat().st_size / 5
    x = np.random.default_rng(0).uniform(-1, 1, (2, 5, 16)).astype(np.float32)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    outputs = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]).run(None, {"X": x})
               for p in (path, skeleton)]
    for got, want in zip(outputs[1], outputs[0], strict=True):
        assert np.array_equal(got, want)
    assert np.array_equal(np.asarray(rnnx.load(skeleton).layer("g").directions[0].W),
                          np.asarray(rnnx.load(path).layer("g").directions[0].W))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(FormatError, match="keeps its data in 'model.onnx' at bytes .* past the end"):
        rnnx.load(skeleton)
