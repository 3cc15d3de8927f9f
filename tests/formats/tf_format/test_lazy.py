"""TensorFlow files are read lazily: `inspect` and refusals visible in the metadata read no tensor entry
(rnnx's own TensorEntry.read is counted), a conversion reads each weight when it writes it (from the shard,
by path, checksum checked each time), and what it writes is what the same tensors held in memory give."""

import collections
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import rnnx
from rnnx import lazy
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.tf_format import bundle as tf_bundle
from rnnx.formats.tf_format import tf1

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_damaged import rewrite_index  # noqa: E402
from rnnx.lazy import read_all

SAVEDMODELS = ["tensorflow/lstm_savedmodel", "tensorflow/bidir_savedmodel", "tensorflow/cudnn_savedmodel",
               "tensorflow/nested_savedmodel", "tensorflow/gru_after_savedmodel", "tensorflow/keras3_export"]
TF2_CHECKPOINTS = ["tensorflow/lstm_ckpt", "tensorflow/bidir_ckpt", "tensorflow/cudnn_gru_ckpt",
                   "tensorflow/stacked_ckpt", "tensorflow/nested_ckpt"]
TF1_CHECKPOINTS = [f"tf1/{name}/model.ckpt" for name in
                   ("multi_rnn_stack", "bidirectional_stacks", "lstm_peephole_projection", "gru_block_cell",
                    "gru_old_names", "root_cells_no_meta", "cudnn_compatible_lstm")]
CORPUS_TF2 = ["iteam1_lstm_savedmodel_tf26", "osmarluiz_lstm2_savedmodel_tf21_sharded", "dinornn_gru_ckpt_sharded"]
CORPUS_TF1 = ["writes_python_basiclstm_tf17", "rnn_ctc_cudnnlstm_bidir_tf18"]
OPAQUE = "rnn_ctc_model/outputs/cudnn_lstm/opaque_kernel"


@pytest.fixture
def entry_reads(monkeypatch) -> list[str]:
    """Names of the bundle entries read (every read of tensor data goes through TensorEntry.read)."""
    reads: list[str] = []
    original = tf_bundle.TensorEntry.read

    def counted(self):
        reads.append(self.name)
        return original(self)

    monkeypatch.setattr(tf_bundle.TensorEntry, "read", counted)
    return reads


def _prefix(path: Path) -> Path:
    return path / "variables" / "variables" if (path / "saved_model.pb").is_file() else tf_bundle.resolve_prefix(path)


def _entries(path: Path) -> dict:
    return tf_bundle.read_bundle(_prefix(path))


def _is_tf1(path: Path) -> bool:
    return tf_bundle.OBJECT_GRAPH_KEY not in _entries(path)


def _weights(path: Path) -> set[str]:
    """The entries a conversion must read: every float tensor but optimizer state and Keras's metrics (and
    the duplicate list `_all_variables/` of a Keras 3 export)."""
    out = set()
    for name, entry in _entries(path).items():
        if entry.dtype not in ("float16", "float32", "float64"):
            continue
        if ".OPTIMIZER_SLOT" in name or name.startswith(("optimizer/", "save_counter/", "keras_api/",
                                                        "_all_variables/")):
            continue
        if _is_tf1(path) and tf1._is_optimizer_state(name):
            continue
        out.add(name)
    return out


def _expected_twice(path: Path, read: set[str]) -> set[str]:
    """Entries read twice, by what the file stores: a TF1 fused [x; h] kernel (once for W, once for R); a
    Keras bias holding both the input and the recurrent bias (a GRU's (2, 3u), a CuDNN layer's (2 n u,)),
    once per half."""
    entries = _entries(path)
    if _is_tf1(path):
        return {n for n in read if n.endswith(("/kernel", "/weights", "/w_ru", "/w_c")) and "projection/" not in n
                and any(part in tf1.CELLS for part in n.split("/"))}
    twice = set()
    for name in read:
        kernel = entries.get(name.replace("/bias/", "/kernel/"))
        if "/bias/" in name and kernel is not None and len(kernel.shape) == 2:
            bias = entries[name].shape
            if len(bias) == 2 or (len(bias) == 1 and bias[0] == 2 * kernel.shape[1]):
                twice.add(name)
    return twice


def _assert_read_as_expected(path: Path, reads: list[str]) -> None:
    counts = collections.Counter(reads)
    if not _is_tf1(path):  # read once, as the checkpoint is read: the model's structure
        assert counts.pop(tf_bundle.OBJECT_GRAPH_KEY) == 1
    assert set(counts) == _weights(path), set(counts) ^ _weights(path)
    twice = _expected_twice(path, set(counts))
    for name, count in counts.items():
        if name == OPAQUE:  # once for the check against the copies, then once per tensor (W, R, b_w, b_r)
            assert count == 1 + 4 * 2, count
        else:
            assert count == (2 if name in twice else 1), (name, count)


def _inspect_and_convert(src: Path, tmp_path: Path, reads: list[str]) -> None:
    report = rnnx.inspect(src)
    assert report["layers"]
    # the object graph (a string tensor: the model's structure, no weights) is the one entry inspect reads
    structure = [] if _is_tf1(src) else [tf_bundle.OBJECT_GRAPH_KEY]
    assert reads == structure, reads
    reads.clear()
    bundle = rnnx.load(src)
    if OPAQUE in _entries(src):  # the buffer is compared with its canonical copies as the checkpoint is read
        copies = {n for n in _entries(src) if "/stack_bidirectional_rnn/" in n}
        assert set(reads) == {OPAQUE} | copies and reads.count(OPAQUE) == 1, reads
    else:
        assert reads == structure, reads
    rnnx.save(bundle, tmp_path / "out.rnnx")  # .rnnx keeps every layer, the opaque ones too
    _assert_read_as_expected(src, reads)


@pytest.mark.parametrize("name", SAVEDMODELS + TF2_CHECKPOINTS + TF1_CHECKPOINTS)
def test_inspect_reads_no_tensor_and_a_conversion_reads_each_weight(fixtures, tmp_path, entry_reads, name):
    _inspect_and_convert(fixtures / name, tmp_path, entry_reads)


@pytest.mark.parametrize("name", CORPUS_TF2 + CORPUS_TF1)
def test_the_corpus_files_are_read_lazily_too(corpus, tmp_path, entry_reads, name):
    _inspect_and_convert(corpus / "tensorflow" / name, tmp_path, entry_reads)


REFUSED = [  # (source, target, what the refusal says): each visible in the index, config or .meta graph
    ("tensorflow/lstm_ckpt", "out.keras", "no model architecture"),
    ("tensorflow/gru_before_savedmodel", "out.pt", "reset-before GRU"),
    ("tf1/lstm_peephole_projection/model.ckpt", "out.onnx", "projection"),
    ("tf1/bidirectional_lstm/model.ckpt", "out.safetensors", "peephole"),
    ("tf1/lstm_cell_clip/model.ckpt", "out.onnx", "clips its cell state"),
]


@pytest.mark.parametrize("src, dst, says", REFUSED, ids=[f"{r[0]}->{r[1]}" for r in REFUSED])
def test_a_refusal_visible_in_the_metadata_comes_before_any_tensor_is_read(fixtures, tmp_path, entry_reads, src,
                                                                         dst, says):
    with pytest.raises(UnsupportedError, match=says):
        rnnx.convert(fixtures / src, tmp_path / dst)
    assert set(entry_reads) <= {tf_bundle.OBJECT_GRAPH_KEY} and list(tmp_path.iterdir()) == []




def _datasets(path: Path) -> dict:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.setdefault(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


WRITTEN = [("tensorflow/bidir_savedmodel", ".onnx"), ("tensorflow/nested_savedmodel", ".onnx"),
           ("tensorflow/cudnn_savedmodel", ".h5"), ("tensorflow/stacked_ckpt", ".safetensors"),
           ("tensorflow/bidir_ckpt", ".h5"), ("tf1/multi_rnn_stack/model.ckpt", ".rnnx"),
           ("tf1/bidirectional_stacks/model.ckpt", ".onnx"), ("tf1/lstm_peephole_projection/model.ckpt", ".rnnx"),
           ("tf1/cudnn_compatible_lstm/model.ckpt", ".safetensors"), ("tf1/gru_block_cell/model.ckpt", ".h5")]


@pytest.mark.parametrize("src, suffix", WRITTEN, ids=[f"{s}->{t}" for s, t in WRITTEN])
def test_writing_lazy_tensors_gives_the_file_materialised_ones_give(fixtures, tmp_path, src, suffix):
    bundle = rnnx.load(fixtures / src)
    assert all(lazy.is_lazy(t) for layer in bundle.layers for d in layer.directions for t in d.tensors().values())
    rnnx.save(bundle, tmp_path / f"lazy{suffix}")
    rnnx.save(read_all(bundle), tmp_path / f"eager{suffix}")
    if suffix == ".h5":
        lazy_sets, eager_sets = _datasets(tmp_path / "lazy.h5"), _datasets(tmp_path / "eager.h5")
        assert lazy_sets.keys() == eager_sets.keys() and lazy_sets
        for key, value in lazy_sets.items():
            assert value.dtype == eager_sets[key].dtype and np.array_equal(value, eager_sets[key]), key
    else:
        assert (tmp_path / f"lazy{suffix}").read_bytes() == (tmp_path / f"eager{suffix}").read_bytes()


@pytest.mark.parametrize("name", ["tensorflow/lstm_savedmodel", "tf1/basic_lstm/model.ckpt"])
def test_each_load_reads_the_shard_again_and_checks_it(fixtures, tmp_path, name):
    """The bundle outlives the reader; each load reads the shard by path and verifies the entry's checksum."""
    src = fixtures / name
    copy = tmp_path / "copy"
    if src.is_dir():
        shutil.copytree(src, copy)
    else:
        copy.mkdir()
        for f in src.parent.glob("model.ckpt.*"):
            shutil.copyfile(f, copy / f.name)
        copy = copy / "model.ckpt"
    bundle = rnnx.load(copy)
    W = bundle.layers[0].directions[0].W
    first = np.asarray(W).copy()  # nothing holds what the load returned
    shard = next(_prefix(copy).parent.glob(f"{_prefix(copy).name}.data-*"))
    data = bytearray(shard.read_bytes())
    for entry in _entries(copy).values():  # every tensor entry damaged by one bit
        if entry.dtype == "float32" and entry.size:
            data[entry.offset] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="CRC32C"):
        np.asarray(W)
    shard.unlink()
    with pytest.raises(FormatError, match="missing"):
        np.asarray(W)
    assert first.shape == W.shape


def test_the_cudnn_buffer_is_checked_against_its_copies_when_read(corpus, tmp_path):
    """The opaque buffer's check reads the values as the checkpoint is read: a buffer that no longer equals its
    canonical copies (checksum made to match) is refused by rnnx.load, before a conversion writes anything."""
    folder = tmp_path / "rnn_ctc"
    shutil.copytree(corpus / "tensorflow" / "rnn_ctc_cudnnlstm_bidir_tf18", folder)
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    prefix = folder / "model--6"
    intact = rnnx.load(prefix)
    entry = _entries(prefix)[OPAQUE]
    shard = Path(entry.shard)
    data = bytearray(shard.read_bytes())
    values = np.frombuffer(data, np.float32, entry.size // 4, entry.offset).copy()
    values[1000] += np.float32(0.5)
    data[entry.offset:entry.offset + entry.size] = values.tobytes()
    shard.write_bytes(bytes(data))

    def recrc(name, proto):
        if name == OPAQUE:
            proto.crc32c = tf_bundle.masked_crc32c(values.tobytes())
        return proto

    rewrite_index(prefix, recrc)
    with pytest.raises(FormatError, match="disagree"):
        rnnx.load(prefix)
    with pytest.raises(FormatError, match="disagree"):
        rnnx.convert(prefix, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    with pytest.raises(FormatError, match="CRC32C"):  # the bundle loaded before reads the changed shard
        np.asarray(intact.layers[0].directions[0].W)
