"""The Keras 2 reader reads no tensor data until a tensor is used: `inspect` and refusals visible in the
metadata read no dataset (h5py's reads are counted), conversions read each dataset when they write it,
and a Bundle outlives the reader (it reopens the file by path)."""


import h5py
import numpy as np
import pytest

import rnnx
from rnnx import lazy
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.keras2 import h5 as h5_reader
from rnnx.lazy import read_all

KERAS2 = ("cudnn_stack", "cudnn_bidir", "cudnn_nested", "cpu_mix")


@pytest.fixture
def dataset_reads(monkeypatch) -> list[str]:
    """Names of the HDF5 datasets whose data is read: by the reader's `_values` (which maps plain datasets
    and has h5py read the others) or by h5py anywhere else (every path to the data goes through these)."""
    reads: list[str] = []
    inside = []
    for method in ("__getitem__", "read_direct", "__array__"):
        original = getattr(h5py.Dataset, method)

        def counted(self, *args, _original=original, **kwargs):
            if not inside:
                reads.append(self.name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(h5py.Dataset, method, counted)
    values = h5_reader._values

    def counted_values(path, ds):
        reads.append(ds.name)
        inside.append(ds.name)
        try:
            return values(path, ds)
        finally:
            inside.pop()

    monkeypatch.setattr(h5_reader, "_values", counted_values)
    return reads


def _weight_datasets(path) -> set[str]:
    names = set()
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.add("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return names


@pytest.mark.parametrize("name", [f"{m}_{kind}" for m in KERAS2 for kind in ("weights", "full")])
def test_inspect_reads_no_dataset_and_a_conversion_reads_each(fixtures, tmp_path, dataset_reads, name):
    src = fixtures / "keras2" / f"{name}.h5"
    report = rnnx.inspect(src)
    assert report["layers"] and dataset_reads == []
    rnnx.convert(src, tmp_path / "out.rnnx")  # the counter sees reads: every dataset, every kernel once
    assert set(dataset_reads) == _weight_datasets(src)
    kernels = [n for n in dataset_reads if "kernel" in n]  # a CuDNN bias is read once per half (small)
    assert len(kernels) == len(set(kernels))


REFUSED = [  # (source, target, options, what the refusal says): each visible in the metadata
    ("keras2/cudnn_stack_weights.h5", "out.keras", {}, "no model architecture"),
    ("keras2/cpu_mix_full.h5", "out.keras", {}, "hard_sigmoid"),
    ("keras2/cpu_mix_weights.h5", "out.h5", {"cudnn": True}, "reset-before GRU"),
    ("models/k2_layers.h5", "out.h5", {"cudnn": True}, "CuDNN"),
]


@pytest.mark.parametrize("src, dst, options, says", REFUSED, ids=[f"{r[0]}->{r[1]}" for r in REFUSED])
def test_a_refusal_visible_in_the_metadata_comes_before_any_tensor_is_read(fixtures, tmp_path, dataset_reads,
                                                                         src, dst, options, says):
    with pytest.raises(UnsupportedError, match=says):
        rnnx.convert(fixtures / src, tmp_path / dst, **options)
    assert dataset_reads == [] and list(tmp_path.iterdir()) == []




@pytest.mark.parametrize("name", ["cudnn_bidir_full", "cudnn_stack_weights", "cudnn_nested_full"])
@pytest.mark.parametrize("suffix", [".h5", ".onnx", ".safetensors", ".rnnx", ".weights.h5"])
def test_writing_lazy_tensors_gives_the_file_materialised_ones_give(fixtures, tmp_path, name, suffix):
    bundle = rnnx.load(fixtures / "keras2" / f"{name}.h5")
    assert any(isinstance(d.W, lazy.LazyArray) for layer in bundle.layers for d in layer.directions)
    options = {"accept_activation_change": True} if suffix == ".weights.h5" else {}
    rnnx.save(bundle, tmp_path / f"lazy{suffix}", **options)
    rnnx.save(read_all(bundle), tmp_path / f"eager{suffix}", **options)
    if suffix.endswith(".h5"):
        lazy_sets, eager_sets = _weight_datasets(tmp_path / f"lazy{suffix}"), _weight_datasets(tmp_path / f"eager{suffix}")
        assert lazy_sets == eager_sets
        with h5py.File(tmp_path / f"lazy{suffix}") as a, h5py.File(tmp_path / f"eager{suffix}") as b:
            for key in lazy_sets:
                assert a[key].dtype == b[key].dtype and np.array_equal(a[key][()], b[key][()])
    else:
        assert (tmp_path / f"lazy{suffix}").read_bytes() == (tmp_path / f"eager{suffix}").read_bytes()


def test_a_bundle_outlives_the_reader_and_names_the_file_when_it_is_gone(fixtures, tmp_path):
    copy = tmp_path / "model.h5"
    copy.write_bytes((fixtures / "keras2" / "cudnn_stack_weights.h5").read_bytes())
    bundle = rnnx.load(copy)
    expected = np.array(bundle.layers[0].directions[0].W)  # read after load returned: the file is reopened
    assert expected.shape == bundle.layers[0].directions[0].W.shape
    copy.unlink()
    del expected
    with pytest.raises(FormatError, match="model.h5"):
        np.asarray(bundle.layers[0].directions[0].W)


@pytest.mark.parametrize("src, options", [("models/k2_layers.h5", {}), ("keras2/cudnn_bidir_weights.h5", {"cudnn": True})])
def test_a_layout_shared_by_source_and_target_is_copied_not_transposed_twice(fixtures, tmp_path, monkeypatch, src,
                                                                             options):
    from rnnx.formats.keras2 import layout

    bundle = rnnx.load(fixtures / src)
    rnnx.save(read_all(bundle), tmp_path / "computed.h5", **options)  # through the canonical layout and back
    calls = []
    monkeypatch.setattr(layout, "matrix_from_canonical", lambda *a: calls.append(a) or None)
    rnnx.save(bundle, tmp_path / "copied.h5", **options)
    assert calls == []
    with h5py.File(tmp_path / "copied.h5") as a, h5py.File(tmp_path / "computed.h5") as b:
        names = _weight_datasets(tmp_path / "copied.h5")
        assert names == _weight_datasets(tmp_path / "computed.h5") and names
        for key in names:
            assert np.array_equal(a[key][()], b[key][()]), key


def _rewritten(src, dst, **dataset_options):
    """A copy of `src` whose datasets are stored with `dataset_options` (chunks, compression), same values."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for key, value in a.attrs.items():
            b.attrs[key] = value

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                group = b.require_group(name)
            else:
                options = dataset_options if obj.ndim and obj.dtype.kind == "f" else {}
                group = b.create_dataset(name, data=obj[()], **options)
            for key, value in obj.attrs.items():
                group.attrs[key] = value

        a.visititems(copy)


def test_plain_datasets_are_mapped_and_chunked_or_compressed_ones_read_by_h5py_to_the_same_values(fixtures,
                                                                                                  tmp_path):
    src = fixtures / "keras2" / "cudnn_bidir_weights.h5"
    _rewritten(src, tmp_path / "compressed.h5", chunks=True, compression="gzip")
    plain, compressed = rnnx.load(src), rnnx.load(tmp_path / "compressed.h5")
    stored = [np.asarray(plain.layers[0].directions[0].W.origin[1])]  # the kernel as stored
    assert isinstance(stored[0].base, np.ndarray) or not stored[0].flags.owndata
    assert not stored[0].flags.writeable  # a view of the mapped file
    assert np.asarray(compressed.layers[0].directions[0].W.origin[1]).flags.writeable  # copied out by h5py
    for a, b in zip(plain.layers, compressed.layers):
        for da, db in zip(a.directions, b.directions):
            for key, value in da.tensors().items():
                assert np.array_equal(np.asarray(value), np.asarray(db.tensors()[key])), key
    rnnx.save(plain, tmp_path / "from_plain.safetensors")
    rnnx.save(compressed, tmp_path / "from_compressed.safetensors")
    assert (tmp_path / "from_plain.safetensors").read_bytes() == (tmp_path / "from_compressed.safetensors").read_bytes()


def test_writing_into_a_mapped_tensor_changes_the_copy_in_memory_not_the_file(fixtures, tmp_path):
    copy = tmp_path / "model.h5"
    copy.write_bytes((fixtures / "keras2" / "cudnn_stack_weights.h5").read_bytes())
    before = copy.read_bytes()
    stored = rnnx.load(copy).layers[0].directions[0].W.origin[1]
    first = float(np.asarray(stored)[0, 0])
    assert first != 2.5
    stored[0, 0] = 2.5
    assert float(np.asarray(stored)[0, 0]) == 2.5
    assert copy.read_bytes() == before
    assert float(np.asarray(rnnx.load(copy).layers[0].directions[0].W.origin[1])[0, 0]) == first


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("shape", [(3, 5), (128, 128), (129, 300), (1000, 257), (256, 4096)])
def test_tiled_transposes_equal_numpys_transpose(monkeypatch, threaded, shape):
    from rnnx.formats.keras2 import layout

    monkeypatch.setattr(layout, "THREADED_BYTES", 0 if threaded else 1 << 62)
    a = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    got = layout.transposed(a)
    assert got.flags.c_contiguous and got.shape == shape[::-1] and np.array_equal(got, a.T)
    assert np.array_equal(layout.transposed(a[:, ::2]), a[:, ::2].T)  # a strided view too
