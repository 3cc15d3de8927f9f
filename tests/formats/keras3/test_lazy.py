"""The Keras 3 readers read no tensor data until a tensor is used: `inspect` and refusals visible in the
metadata read no dataset (h5py's reads are counted), a conversion reads each dataset once (the Keras 3
writers too: the halves of one stored bias, a layer measured for a note), a `.keras` archive's
model.weights.h5 is read in place (stored) or from a temporary copy (compressed), and the archive's
safety checks still come first."""

import collections
import io
import os
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import KERAS2, KERAS3, archive_member, h5_datasets  # noqa: E402

import rnnx  # noqa: E402
from rnnx import lazy  # noqa: E402
from rnnx.errors import FormatError, UnsupportedError  # noqa: E402
from rnnx.formats.keras3.member import ByteRange  # noqa: E402
from rnnx.lazy import read_all  # noqa: E402

MODELS = KERAS3.parent / "models"
ARCHIVES = [KERAS3 / f"{n}.keras" for n in ("stack", "bidir", "mixed", "windows")] + [
    MODELS / f"{n}.keras" for n in ("k3_nested", "k3_text", "k3_activations")]
WEIGHTS_FILES = [KERAS3 / f"{n}.weights.h5" for n in ("stack", "bidir", "mixed", "windows")]


@pytest.fixture
def dataset_reads(monkeypatch) -> collections.Counter:
    """How often each HDF5 dataset's data is read, by its path with backslashes made slashes: by a reader's
    `_values` (the Keras 3 and Keras 2 readers map plain datasets and have h5py read the others) or by h5py
    anywhere else (every path to the data goes through these)."""
    from rnnx.formats.keras2 import h5 as keras2_h5
    from rnnx.formats.keras3 import layout as keras3_layout

    reads: collections.Counter = collections.Counter()
    inside = []

    def count(ds):
        reads[ds.name.replace("\\", "/").lstrip("/")] += 1

    for method in ("__getitem__", "read_direct", "__array__"):
        original = getattr(h5py.Dataset, method)

        def counted(self, *args, _original=original, **kwargs):
            if not inside:
                count(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(h5py.Dataset, method, counted)
    for module in (keras3_layout, keras2_h5):
        def counted_values(*args, _values=module._values):
            count(next(a for a in args if isinstance(a, h5py.Dataset)))
            inside.append(True)
            try:
                return _values(*args)
            finally:
                inside.pop()

        monkeypatch.setattr(module, "_values", counted_values)
    return reads


def _weights_member(src: Path) -> bytes:
    with zipfile.ZipFile(src) as zf:  # (windows.keras calls it .\\model.weights.h5)
        return zf.read(next(n for n in zf.namelist() if n.replace("\\", "/").endswith("model.weights.h5")))


def _datasets(src: Path) -> set[str]:
    """Every dataset of the Keras 3 weights in `src` that a bundle carries (optimizer state is not)."""
    data = _weights_member(src) if src.suffix == ".keras" else src
    return {k for k in h5_datasets(data) if not k.startswith("optimizer")}


def _targets(src: Path) -> list[str]:
    return [".weights.h5", ".onnx"] + ([".keras"] if src.suffix == ".keras" else [])


def _carried(src: Path, target: str, datasets: set[str]) -> set[str]:
    """What a conversion to `target` reads: everything, but for ONNX from a weights file (one model per
    recurrent layer) the recurrent cells' variables only."""
    if target == ".onnx" and src.suffix != ".keras":
        return {d for d in datasets if "cell/vars/" in d}
    return datasets


@pytest.mark.parametrize("src", ARCHIVES + WEIGHTS_FILES, ids=lambda p: p.name)
def test_inspect_reads_no_dataset_and_a_conversion_reads_each_once(src, tmp_path, dataset_reads):
    expected = _datasets(src)
    dataset_reads.clear()  # (reading the expected datasets counted too)
    report = rnnx.inspect(src)
    assert report["layers"] and not dataset_reads
    for target in _targets(src):
        dataset_reads.clear()
        rnnx.convert(src, tmp_path / f"out{target}")
        assert set(dataset_reads) == _carried(src, target, expected), target
        assert set(dataset_reads.values()) == {1}, (target, dataset_reads)


def test_the_cli_inspect_reads_no_tensor_data(tmp_path):
    """`rnnx inspect` in its own process: h5py's dataset reads counted there, on both Keras 3 files."""
    import subprocess

    code = ("import collections, h5py, runpy, sys\n"
            "reads = []\n"
            "for m in ('__getitem__', 'read_direct', '__array__'):\n"
            "    orig = getattr(h5py.Dataset, m)\n"
            "    setattr(h5py.Dataset, m, lambda self, *a, _o=orig, **k: reads.append(self.name) or _o(self, *a, **k))\n"
            "from rnnx.formats.keras3 import layout\n"
            "values = layout._values\n"
            "layout._values = lambda ds, mapper: reads.append(ds.name) or values(ds, mapper)\n"
            "sys.argv = ['rnnx', 'inspect', sys.argv[1]]\n"
            "try:\n"
            "    runpy.run_module('rnnx', run_name='__main__')\n"
            "finally:\n"
            "    print('READS', len(reads))\n")
    for src in (KERAS3 / "mixed.keras", KERAS3 / "mixed.weights.h5"):
        done = subprocess.run([sys.executable, "-c", code, str(src)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "lstm_nobias" in done.stdout and done.stdout.strip().endswith("READS 0"), done.stdout[-300:]


@pytest.mark.parametrize("name", ["cudnn_stack_full", "cudnn_bidir_full", "cpu_mix_full"])
@pytest.mark.parametrize("target", [".weights.h5", ".keras"])
def test_the_keras3_writers_read_each_tensor_of_a_keras2_source_once(name, target, tmp_path, dataset_reads):
    """The two halves of a CuDNN or 2-row GRU bias come from one stored bias, read once; a Keras 2
    hard_sigmoid layer is measured for its deviation note and written from the same read."""
    src = KERAS2 / f"{name}.h5"
    result = rnnx.convert(src, tmp_path / f"out{target}", accept_activation_change=True)
    assert dataset_reads and set(dataset_reads.values()) == {1}, dataset_reads
    if name == "cpu_mix_full":
        assert sum("moves by up to" in n for n in result.notes) == 2, result.notes


REFUSED = [  # (source, target, options, what the refusal says): each visible in the metadata
    (KERAS3 / "stack.weights.h5", "out.keras", {}, "no model architecture"),
    (KERAS3 / "stack.keras", "out.keras", {"layer": "gru"}, "holds a whole model"),
    (KERAS3 / "mixed.keras", "out.h5", {}, "no Keras 2 equivalent"),
    (KERAS3 / "mixed.keras", "out.pt", {}, "PyTorch gates always use Sigmoid"),
    (KERAS2 / "cpu_mix_full.h5", "out.weights.h5", {}, "hard_sigmoid"),
]


@pytest.mark.parametrize("src, dst, options, says", REFUSED, ids=[f"{r[0].name}->{r[1]}" for r in REFUSED])
def test_a_refusal_visible_in_the_metadata_comes_before_any_tensor_is_read(src, dst, options, says, tmp_path,
                                                                         dataset_reads):
    with pytest.raises(UnsupportedError, match=says):
        rnnx.convert(src, tmp_path / dst, **options)
    assert not dataset_reads and list(tmp_path.iterdir()) == []




def _content(path: Path) -> bytes:
    """A written file's bytes; for a .keras archive, its members but metadata.json (which holds the date)."""
    if path.suffix != ".keras":
        return path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        return b"".join(zf.read(n) for n in zf.namelist() if n != "metadata.json")


WRITTEN = [(src, suffix) for src in (KERAS3 / "mixed.keras", KERAS3 / "bidir.keras", MODELS / "k3_nested.keras",
                                     KERAS3 / "windows.weights.h5")
           for suffix in (".weights.h5", ".keras", ".onnx", ".safetensors", ".rnnx")
           if suffix != ".keras" or src.suffix == ".keras"]


@pytest.mark.parametrize("src, suffix", WRITTEN, ids=[f"{s.name}->{t}" for s, t in WRITTEN])
def test_writing_lazy_tensors_gives_the_file_materialised_ones_give(src, suffix, tmp_path):
    bundle = rnnx.load(src)
    assert all(isinstance(d.W, lazy.LazyArray) for layer in bundle.layers for d in layer.directions)
    try:
        rnnx.save(read_all(bundle), tmp_path / f"eager{suffix}")
    except UnsupportedError:  # the target cannot hold one of the layers (mixed.keras's HardSigmoid GRU in torch)
        with pytest.raises(UnsupportedError):
            rnnx.save(bundle, tmp_path / f"lazy{suffix}")
        return
    rnnx.save(bundle, tmp_path / f"lazy{suffix}")
    assert _content(tmp_path / f"lazy{suffix}") == _content(tmp_path / f"eager{suffix}")


@pytest.mark.parametrize("original", [KERAS3 / "bidir.keras", KERAS3 / "stack.weights.h5"], ids=lambda p: p.name)
def test_a_bundle_outlives_the_reader_and_names_the_file_when_it_is_gone_or_changed(original, tmp_path):
    copy = tmp_path / original.name
    shutil.copy(original, copy)
    bundle = rnnx.load(copy)
    W = bundle.layers[0].directions[0].W
    expected = np.array(W)  # read after load returned: the file is opened again
    assert np.array_equal(expected, np.array(rnnx.load(original).layers[0].directions[0].W))
    del expected
    if copy.suffix == ".keras":  # the zip's offsets are only those of the file that was read
        os.utime(copy, ns=(0, 0))
        with pytest.raises(FormatError, match="changed after it was read"):
            np.asarray(W)
    copy.unlink()
    with pytest.raises(FormatError, match=original.name):
        np.asarray(W)


def _rezipped(src: Path, dst: Path, compression: int) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    return dst


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA])
def test_a_compressed_weights_member_reads_as_the_stored_one(compression, tmp_path, dataset_reads):
    src = _rezipped(KERAS3 / "mixed.keras", tmp_path / "packed.keras", compression)
    with zipfile.ZipFile(src) as zf:
        assert zf.getinfo("model.weights.h5").compress_type == compression
    assert rnnx.inspect(src)["layers"] == rnnx.inspect(KERAS3 / "mixed.keras")["layers"]
    assert not dataset_reads
    packed, stored = rnnx.load(src), rnnx.load(KERAS3 / "mixed.keras")
    for a, b in zip(packed.layers, stored.layers, strict=True):
        for da, db in zip(a.directions, b.directions, strict=True):
            assert all(np.array_equal(np.asarray(da.tensors()[k]), np.asarray(v)) for k, v in db.tensors().items())
    for a, b in zip(packed.others, stored.others, strict=True):
        assert all(np.array_equal(np.asarray(wa), np.asarray(wb)) for (_, wa), (_, wb) in zip(a.weights, b.weights))


@pytest.mark.parametrize("src, mapped", [(KERAS3 / "mixed.keras", True), (KERAS3 / "mixed.weights.h5", True),
                                         ("deflated", False)], ids=["stored .keras", ".weights.h5", "deflated .keras"])
def test_plain_variables_are_mapped_from_the_file_and_hold_what_h5py_reads(src, mapped, tmp_path):
    if src == "deflated":
        src = _rezipped(KERAS3 / "mixed.keras", tmp_path / "packed.keras", zipfile.ZIP_DEFLATED)
    stored = h5_datasets(_weights_member(src) if src.suffix == ".keras" else src)
    others = rnnx.load(src).others
    assert others
    for item in others:
        for name, weight in item.weights:
            values = weight.load()
            assert values.flags.writeable is not mapped  # a mapped view is read-only
            want = stored[f"{item.options['keras3_path']}/{name}"]
            assert values.dtype == want.dtype and np.array_equal(values, want)


def _data_offset_in_archive(src: Path, dataset: str) -> int:
    """Where the data of `dataset` of the archive's (stored) model.weights.h5 sits in the archive file."""
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("model.weights.h5")
    with open(src, "rb") as fh:
        fh.seek(info.header_offset + 26)
        n, m = np.frombuffer(fh.read(4), "<u2")
    start = info.header_offset + 30 + int(n) + int(m)
    with h5py.File(io.BytesIO(archive_member(src, "model.weights.h5"))) as h5:
        return start + h5[dataset].id.get_offset()


def test_a_damaged_stored_member_is_refused_before_its_tensors_are_used(tmp_path):
    """inspect reads headers only; the member's CRC-32 is checked before the first tensor is read."""
    src = tmp_path / "damaged.keras"
    shutil.copy(KERAS3 / "stack.keras", src)
    data = bytearray(src.read_bytes())
    at = _data_offset_in_archive(src, "layers/lstm/cell/vars/1")
    data[at] ^= 0xFF
    src.write_bytes(bytes(data))
    assert rnnx.inspect(src)["layers"]
    with pytest.raises(FormatError, match="CRC-32"):
        rnnx.convert(src, tmp_path / "out.rnnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.keras"]


def test_a_stored_member_running_past_the_archive_is_refused(tmp_path):
    src = tmp_path / "forged.keras"
    data = bytearray((KERAS3 / "stack.keras").read_bytes())
    with zipfile.ZipFile(KERAS3 / "stack.keras") as zf:
        info = zf.getinfo("model.weights.h5")
    struct.pack_into("<H", data, info.header_offset + 28, 0xFFFF)  # its local header's extra field: 64 KiB
    src.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="past the archive"):
        rnnx.inspect(src)


def test_the_byte_range_reads_nothing_outside_its_range(tmp_path):
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(100)))
    with open(path, "rb") as fh:
        view = ByteRange(fh, 10, 20)
        assert view.read() == bytes(range(10, 30))
        assert view.seek(0, io.SEEK_END) == 20 and view.read(5) == b""
        view.seek(15)
        assert view.read(100) == bytes(range(25, 30))
        with pytest.raises(ValueError):
            view.seek(-1)
        view.close()
        assert not fh.closed


def _weights_file(path: Path, build) -> Path:
    shutil.copy(KERAS3 / "stack.weights.h5", path)
    with h5py.File(path, "r+") as h5:
        build(h5.require_group("layers/dense_extra/vars"))
    return path


def test_a_variable_claiming_more_bytes_than_the_file_is_refused_before_reading(tmp_path):
    # declared, never written: HDF5 allocates nothing, the header claims 64 MiB
    src = _weights_file(tmp_path / "claims.weights.h5", lambda g: g.create_dataset("0", (4096, 4096), "f4"))
    assert src.stat().st_size < 1 << 20
    with pytest.raises(FormatError, match="claims"):
        rnnx.load(src)


def test_a_variable_stored_in_another_file_is_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.arange(16, dtype="f4").tobytes())
    src = _weights_file(tmp_path / "external.weights.h5",
                        lambda g: g.create_dataset("0", (16,), "f4", external=[(str(outside), 0, 64)]))
    with pytest.raises(FormatError, match="another file"):
        rnnx.load(src)


@pytest.mark.parametrize("src", [KERAS3 / "mixed.keras", KERAS2 / "cudnn_bidir_full.h5"], ids=lambda p: p.name)
def test_the_archive_writer_streams_the_weights_the_bytes_it_built_in_memory_before(src, tmp_path):
    """model.weights.h5 goes through a scratch file (removed), with the bytes h5py writes to memory."""
    from rnnx.formats.keras3 import archive, layout

    bundle = rnnx.load(src)
    out = tmp_path / "out.keras"
    rnnx.save(bundle, out)
    config, _ = archive.keras3_config_of(bundle, out)
    entries, _ = layout.entries_from_bundle(bundle, config)
    memory = io.BytesIO()
    with h5py.File(memory, "w") as h5:
        layout.write_tree(h5, entries, model_name=config["config"]["name"])
    assert archive_member(out, "model.weights.h5") == memory.getvalue()
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("model.weights.h5").compress_type == zipfile.ZIP_STORED
    assert os.listdir(tmp_path) == ["out.keras"]
