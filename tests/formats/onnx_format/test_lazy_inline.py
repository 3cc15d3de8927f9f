"""Inline .onnx files read lazily: the reader parses a skeleton of the file (skeleton.py) whose large raw_data
stay in the file, read by range when used. The skeleton with those ranges read back in is what onnx parses,
for every model of the corpus, of onnx's own test data and written here; `inspect` reads no range; a
conversion reads each weight once and writes what it wrote when the whole file was parsed."""

import glob
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from lazy_helpers import every_tensor, is_own_reference, large_values, read_back, tensors_everywhere  # noqa: E402
from onnx_helpers import random_layer  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle  # noqa: E402
from rnnx.formats.onnx_format import external, model as onnx_model, skeleton  # noqa: E402
from rnnx.lazy import LazyArray  # noqa: E402

ONNX_TEST_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


@pytest.fixture
def range_reads(monkeypatch) -> list[tuple[str, int, int]]:
    """(file name, offset, bytes) of every range the ONNX reader reads (inline or external data)."""
    reads: list[tuple[str, int, int]] = []
    real = onnx_model.read_range

    def counted(path, offset, dtype, count):
        reads.append((Path(path).name, offset, count * np.dtype(dtype).itemsize))
        return real(path, offset, dtype, count)

    monkeypatch.setattr(onnx_model, "read_range", counted)
    return reads


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """An inline model written by rnnx whose weights are over 1 KiB: a bidirectional LSTM and a GRU."""
    path = tmp_path_factory.mktemp("written") / "model.onnx"
    rnnx.save(Bundle([random_layer("lstm", directions=2, units=24, inputs=16, name="enc", seed=4),
                      random_layer("gru", units=20, inputs=48, name="dec", seed=5)]), path)
    return path


@pytest.fixture(scope="module")
def peepholes(tmp_path_factory) -> Path:
    """A bidirectional LSTM with peepholes (which only ONNX and .rnnx files hold) and large P."""
    path = tmp_path_factory.mktemp("peepholes") / "peepholes.onnx"
    rnnx.save(Bundle([random_layer("lstm", directions=2, units=96, inputs=8, name="peep", seed=6, peepholes=True)]),
              path)
    return path


@pytest.fixture
def sources(corpus, written, everywhere, peepholes, request) -> list[Path]:
    """The models the conversion tests read; the peephole one for targets that hold peepholes."""
    target = request.node.callspec.params["target"]
    return ([written, everywhere, corpus / "onnx" / "dtln_lstm_stateful.onnx", corpus / "onnx" / "gtcrn_gru.onnx"]
            + ([peepholes] if target in (".rnnx", ".onnx") else []))


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory) -> Path:
    return tensors_everywhere(tmp_path_factory.mktemp("everywhere") / "everywhere.onnx")


def _whole(path) -> onnx.ModelProto:
    return onnx_model.load_model(path, lazy=False)


# --- the schema ---------------------------------------------------------------------------
def _holds_tensors(desc, seen=frozenset()) -> bool:
    if desc.full_name == "onnx.TensorProto":
        return True
    return desc.full_name not in seen and any(
        f.message_type is not None and _holds_tensors(f.message_type, seen | {desc.full_name}) for f in desc.fields)


def test_the_scanned_fields_are_every_way_onnx_proto_has_to_a_tensor():
    found, todo = {}, [onnx.ModelProto.DESCRIPTOR]
    while todo:
        desc = todo.pop()
        if desc.name in found:
            continue
        kids = [f for f in desc.fields if f.message_type is not None and _holds_tensors(f.message_type)]
        found[desc.name] = {} if desc.name == "TensorProto" else {
            f.number: (f.message_type.name, f.is_repeated) for f in kids}
        todo += [f.message_type for f in kids if desc.name != "TensorProto"]
    assert found == skeleton.CHILDREN
    fields = TensorProto.DESCRIPTOR.fields_by_name
    assert (fields["raw_data"].number, fields["external_data"].number, fields["data_location"].number) == (
        skeleton.TENSOR_RAW_DATA, skeleton.TENSOR_EXTERNAL_DATA, skeleton.TENSOR_DATA_LOCATION)
    assert (fields["data_type"].number, fields["float_data"].number, fields["double_data"].number) == (
        skeleton.TENSOR_DATA_TYPE, skeleton.TENSOR_FLOAT_DATA, skeleton.TENSOR_DOUBLE_DATA)
    values = {f.number for f in TensorProto.DESCRIPTOR.fields if f.name.endswith("_data") and f.name != "external_data"}
    assert values == skeleton.TENSOR_DATA_FIELDS
    assert fields["float_data"].is_packed and fields["double_data"].is_packed  # how onnx writes them
    assert (TensorProto.EXTERNAL, TensorProto.FLOAT, TensorProto.DOUBLE) == (
        skeleton.EXTERNAL, skeleton.FLOAT, skeleton.DOUBLE)
    entry = onnx.StringStringEntryProto.DESCRIPTOR.fields_by_name
    assert (entry["key"].number, entry["value"].number) == (1, 2)


# --- what is read equals what onnx parses --------------------------------------------------
def _model_files(corpus, written, everywhere) -> list[Path]:
    files = sorted(corpus.rglob("*.onnx")) + sorted(Path(p) for p in glob.glob(str(ONNX_TEST_DATA / "**" / "*.onnx"),
                                                                          recursive=True))
    files += sorted(Path(__file__).resolve().parents[2].joinpath("fixtures").rglob("*.onnx"))
    return files + [written, everywhere]


def _check_equal_to_onnx(path: Path) -> int:
    """Assert the lazily read model of `path` is onnx's parse of it; how many tensors stayed in the file."""
    lazy, whole = onnx_model.load_model(path), onnx.load(path, load_external_data=False)
    base = path.resolve().parent
    for kept, parsed in zip(every_tensor(lazy), every_tensor(whole), strict=True):
        if is_own_reference(kept, path) and kept.data_type in (1, 10, 11):
            got = onnx_model._to_array(kept, base, "test", "W")
            assert isinstance(got, LazyArray)
            want = numpy_helper.to_array(parsed)
            assert got.dtype == want.dtype and np.array_equal(np.asarray(got), want, equal_nan=True)
    big = sum(1 for t in every_tensor(whole) if large_values(t, external.INLINE_BYTES))
    kept = read_back(lazy, path, whole)
    assert lazy == whole, path
    assert kept == big, path  # every large raw_data, wherever it is, was left in the file
    return kept


@pytest.mark.parametrize("threshold", [external.INLINE_BYTES, 16])
def test_every_model_read_lazily_is_what_onnx_load_parses(corpus, written, everywhere, monkeypatch, threshold):
    monkeypatch.setattr(external, "INLINE_BYTES", threshold)  # 16: nearly every tensor of the small models
    files = _model_files(corpus, written, everywhere)
    assert len([f for f in files if "onnx-node-tests" in str(f)]) == 8 and len(files) > 150
    kept = {f: _check_equal_to_onnx(f) for f in files}
    assert kept[everywhere] >= 20 and kept[written] >= 5
    assert kept[corpus / "onnx" / "dtln_lstm_stateful.onnx"] > 0 and kept[corpus / "onnx" / "gtcrn_gru.onnx"] > 0
    assert sum(kept.values()) > (40 if threshold > 16 else 300)


def test_the_skeleton_holds_no_weights(written, everywhere):
    for path in (written, everywhere):
        assert onnx_model.load_model(path).ByteSize() < path.stat().st_size / 5
        assert _whole(path).ByteSize() == path.stat().st_size


def test_the_layers_read_lazily_equal_those_of_the_whole_file(corpus, written, everywhere, peepholes, monkeypatch):
    for path in (written, everywhere, peepholes, corpus / "onnx" / "dtln_lstm_stateful.onnx",
                 corpus / "onnx" / "gtcrn_gru.onnx"):
        lazy = rnnx.load(path)
        with monkeypatch.context() as patch:
            patch.setattr(onnx_model, "_own_location", lambda _path: None)  # parse every byte, as before
            whole = rnnx.load(path)
        assert [l.name for l in lazy.layers] == [l.name for l in whole.layers] and lazy.layers
        for a, b in zip(lazy.layers, whole.layers):
            assert a.cell == b.cell and a.activations == b.activations and a.options == b.options
            for da, db in zip(a.directions, b.directions, strict=True):
                for key, value in db.tensors().items():
                    assert not isinstance(value, LazyArray)
                    got = da.tensors()[key]
                    assert np.array_equal(np.asarray(got), value) and got.dtype == value.dtype, (path, a.name, key)
        assert any(isinstance(t, LazyArray) for l in lazy.layers for d in l.directions for t in d.tensors().values())


# --- reads ---------------------------------------------------------------------------------
def test_inspect_of_an_inline_model_reads_no_tensor_data(written, everywhere, range_reads, capsys):
    from rnnx import cli, progress

    for path in (written, everywhere):
        events = []
        with progress.reporting(events.append):
            report = rnnx.inspect(path)
            for json in ([], ["--json"]):  # in this process (no --timeout child), so the reads are counted
                assert cli.main(["inspect", *json, "--timeout", "0", str(path)]) == 0
        assert report["layers"] and range_reads == [] and not [e for e in events if e.kind == "read"]
        assert "enc" in capsys.readouterr().out or path == everywhere
    bundle = rnnx.load(written)  # not vacuous: the weights are lazy, so there was something to read
    assert all(isinstance(d.W, LazyArray) and isinstance(d.R, LazyArray) for l in bundle.layers for d in l.directions)
    assert range_reads == []


def _weight_ranges(path: Path) -> set[tuple[str, int, int]]:
    """The ranges of the file the recurrent weights (W, R, B, P) of its nodes occupy, by direction."""
    model = onnx_model.load_model(path)
    ranges = set()
    for found in onnx_model.recurrent_nodes(model):
        for index in (1, 2, 3, 7):
            if len(found.node.input) <= index or not found.node.input[index]:
                continue
            tensor = found.scope.constant(found.node.input[index], found.name, "weight")
            if is_own_reference(tensor, path):
                info = {e.key: e.value for e in tensor.external_data}
                offset, length = int(info["offset"]), int(info["length"])
                pieces = tensor.dims[0] * (2 if index == 3 else 1)  # B: Wb and Rb of each direction
                ranges |= {(path.resolve().name, offset + k * length // pieces, length // pieces)
                           for k in range(pieces)}
    return ranges


@pytest.mark.parametrize("target", [".safetensors", ".rnnx", ".h5", ".onnx"])
def test_a_conversion_reads_each_weight_once(sources, tmp_path, range_reads, target):
    for path in sources:
        expected = _weight_ranges(path)
        assert expected
        del range_reads[:]
        events = []
        rnnx.convert(path, tmp_path / f"{path.stem}{target}", progress=events.append)
        assert len(range_reads) == len(set(range_reads)), path  # no range read twice
        assert set(range_reads) == expected, path  # and every weight read, by direction
        reads = [e for e in events if e.kind == "read"]
        assert sum(e.nbytes for e in reads) == sum(n for *_, n in expected)
        assert all(e.name.startswith(f"{path.name}:") for e in reads)


def test_verify_reads_the_node_weights_of_an_inline_model(written, tmp_path, cli):
    source = tmp_path / "source.safetensors"
    rnnx.convert(written, source)
    done = cli("verify", source, written)
    assert done.returncode == 0, done.stdout + done.stderr
    back = tmp_path / "back.onnx"
    done = cli("convert", written, back, "--verify")
    assert done.returncode == 0, done.stdout + done.stderr


# --- the outputs are what they were ----------------------------------------------------------
@pytest.mark.parametrize("target", [".safetensors", ".rnnx", ".onnx", ".h5"])
def test_conversions_write_what_they_wrote_when_the_whole_file_was_parsed(sources, tmp_path, monkeypatch, target):
    for path in sources:
        lazy, whole = tmp_path / f"lazy_{path.stem}{target}", tmp_path / f"whole_{path.stem}{target}"
        rnnx.convert(path, lazy)
        with monkeypatch.context() as patch:
            patch.setattr(onnx_model, "_own_location", lambda _path: None)
            rnnx.convert(path, whole)
        if target == ".h5":  # HDF5 files record their own creation details: compare what they hold
            import h5py

            with h5py.File(lazy, "r") as a, h5py.File(whole, "r") as b:
                names = []
                a.visit(names.append)
                assert names and names == _names(b)
                for name in names:
                    assert dict(a[name].attrs).keys() == dict(b[name].attrs).keys()
                    if isinstance(a[name], h5py.Dataset):
                        assert np.array_equal(a[name][()], b[name][()]), name
        else:
            assert lazy.read_bytes() == whole.read_bytes(), path


def _names(h5):
    names = []
    h5.visit(names.append)
    return names


# --- memory ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_mib(tmp_path_factory) -> Path:
    """Two 256-unit LSTMs: four 1 MiB weights (W, R of each) in a 4 MiB inline model."""
    path = tmp_path_factory.mktemp("four_mib") / "four.onnx"
    rnnx.save(Bundle([random_layer("lstm", units=256, inputs=256, name="a", seed=1),
                      random_layer("lstm", units=256, inputs=256, name="b", seed=2)]), path)
    return path


@pytest.mark.parametrize("target", [".onnx", ".safetensors", ".h5", ".rnnx"])
def test_a_conversion_holds_about_one_tensor_at_a_time(four_mib, tmp_path, target):
    import tracemalloc

    rnnx.convert(four_mib, tmp_path / f"warm{target}")  # imports and caches out of the count
    tracemalloc.start()
    try:
        rnnx.convert(four_mib, tmp_path / f"out{target}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    largest = 4 * 256 * 256 * 4
    assert peak < 2.5 * largest, peak / largest  # a weight as read and its reordered copy; never the model
