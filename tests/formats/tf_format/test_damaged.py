"""Damaged and unsupported TensorFlow files: one sentence, exit 2, nothing written, nothing allocated
beyond what the file holds. Damage is made by hand from real TensorFlow checkpoints; an index is
rewritten with a small LevelDB-table writer (below) and TensorFlow's own BundleEntryProto."""

import shutil
import tracemalloc
from pathlib import Path

import pytest

import rnnx
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.tf_format import bundle as tf_bundle


def assert_one_sentence_failure(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert "Traceback" not in err and err.startswith("rnnx: ") and len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)


@pytest.fixture
def ckpt(fixtures, tmp_path) -> Path:
    """A copy of the `lstm` save_weights checkpoint folder."""
    folder = tmp_path / "ckpt"
    shutil.copytree(fixtures / "tensorflow" / "lstm_ckpt", folder)
    return folder


def write_table(path: Path, records: list[tuple[bytes, bytes]], compression: int = 0) -> None:
    """A LevelDB-format table as TensorFlow writes it: one data block, its index block, an empty metaindex."""
    def varint(n):
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def block(entries):
        body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
        body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart point at 0
        kind = bytes([compression])
        return body + kind + tf_bundle.masked_crc32c(body + kind).to_bytes(4, "little")

    data = block(sorted(records))
    meta = block([])
    index = block([(sorted(records)[-1][0], varint(0) + varint(len(data) - 5))])
    handles = (varint(len(data)) + varint(len(meta) - 5) + varint(len(data) + len(meta)) + varint(len(index) - 5))
    footer = handles.ljust(40, b"\0") + tf_bundle.TABLE_MAGIC.to_bytes(8, "little")
    path.write_bytes(data + meta + index + footer)


def rewrite_index(prefix: Path, change) -> None:
    """Rewrite PREFIX.index after `change(name, BundleEntryProto)` edits entries (returning None drops one)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    index = Path(f"{prefix}.index")
    records = tf_bundle.read_table(index.read_bytes(), index)
    out = [records[0]]
    for key, value in records[1:]:
        entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
        entry = change(key.decode(), entry)
        if entry is not None:
            out.append((key, entry.SerializeToString()))
    write_table(index, out)


KERNEL = "layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE"


def test_truncated_index(ckpt, cli, tmp_path):
    index = ckpt / "ckpt.index"
    index.write_bytes(index.read_bytes()[:-20])
    result = cli("convert", ckpt, tmp_path / "out.onnx")
    assert_one_sentence_failure(result, "ckpt.index", "truncated")
    assert not (tmp_path / "out.onnx").exists()


def test_flipped_byte_in_a_data_shard(ckpt, cli, tmp_path):
    shard = ckpt / "ckpt.data-00000-of-00001"
    entries = tf_bundle.read_bundle(ckpt / "ckpt")
    data = bytearray(shard.read_bytes())
    data[entries[KERNEL].offset + 5] ^= 0x01
    shard.write_bytes(bytes(data))
    result = cli("convert", ckpt / "ckpt", tmp_path / "out.safetensors")
    assert_one_sentence_failure(result, "CRC32C", "damaged", KERNEL)
    assert list(tmp_path.glob("out*")) == []
    # inspect reads the index and the object graph, not the weights: it still describes the file
    inspected = cli("inspect", ckpt / "ckpt")
    assert inspected.returncode == 0 and "units 4" in inspected.stdout, inspected.stderr


def test_missing_shard(ckpt, cli, tmp_path):
    (ckpt / "ckpt.data-00000-of-00001").unlink()
    result = cli("inspect", ckpt / "ckpt.index")
    assert_one_sentence_failure(result, "missing", ".data-00000-of-00001")


def test_entry_past_the_end_of_its_shard(ckpt, cli, tmp_path):
    shard = ckpt / "ckpt.data-00000-of-00001"
    entries = tf_bundle.read_bundle(ckpt / "ckpt")
    shard.write_bytes(shard.read_bytes()[: entries[KERNEL].offset + 8])
    result = cli("convert", ckpt, tmp_path / "out.onnx")
    assert_one_sentence_failure(result, "past the end of the shard")
    assert not (tmp_path / "out.onnx").exists()


def test_huge_declared_shape_is_refused_without_allocating_it(ckpt):
    def huge(name, entry):
        if name == KERNEL:
            del entry.shape.dim[:]
            entry.shape.dim.add(size=1 << 31)
            entry.shape.dim.add(size=1 << 20)
            entry.size = (1 << 51) * 4
        return entry

    rewrite_index(ckpt / "ckpt", huge)
    tracemalloc.start()
    with pytest.raises(FormatError, match="past the end of the shard"):
        rnnx.load(ckpt)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_shape_that_disagrees_with_the_stored_size(ckpt):
    def lie(name, entry):
        if name == KERNEL:
            entry.shape.dim[0].size *= 1000
        return entry

    rewrite_index(ckpt / "ckpt", lie)
    with pytest.raises(FormatError, match="declares the shape"):
        rnnx.load(ckpt)


def test_integer_variable_where_a_weight_is_expected(ckpt):
    def as_int(name, entry):
        if name == KERNEL:
            entry.dtype = 3  # DT_INT32: as many bytes as the float32 it was, so its checksum still holds
        return entry

    rewrite_index(ckpt / "ckpt", as_int)
    with pytest.raises(UnsupportedError, match="as int32 where a weight is expected"):
        rnnx.load(ckpt)


def test_partitioned_variable_is_refused(ckpt):
    def sliced(name, entry):
        if name == KERNEL:
            entry.slices.add().extent.add(start=0, length=1)
        return entry

    rewrite_index(ckpt / "ckpt", sliced)
    with pytest.raises(UnsupportedError, match="partitioned"):
        rnnx.load(ckpt)


def test_object_graph_reaching_a_missing_variable(ckpt):
    rewrite_index(ckpt / "ckpt", lambda name, entry: None if name == KERNEL else entry)
    with pytest.raises(FormatError, match="which the checkpoint does not have"):
        rnnx.load(ckpt)


def test_compressed_table_block_is_refused(ckpt):
    index = ckpt / "ckpt.index"
    write_table(index, tf_bundle.read_table(index.read_bytes(), index), compression=1)
    with pytest.raises(UnsupportedError, match="snappy-compressed"):
        rnnx.load(ckpt)


def test_stale_checkpoint_entry_lists_the_prefixes_found(ckpt, cli):
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "ckpt-900"\nall_model_checkpoint_paths: "ckpt-900"\n')
    result = cli("inspect", ckpt)
    assert_one_sentence_failure(result, "ckpt-900", "prefixes found: ckpt")


def test_checkpoint_file_with_a_foreign_absolute_path_falls_back_to_the_folder(ckpt):
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "/home/someone/run3/ckpt"\n')
    assert [l.cell for l in rnnx.load(ckpt).layers] == ["lstm"]


def test_v1_checkpoint_is_refused(ckpt, cli, tmp_path):
    v1 = tmp_path / "model.ckpt-100"
    write_table(v1, [(b"lstm/kernel", b"\x00")])  # V1 files are a table of their own, with no .index beside
    result = cli("inspect", v1)
    assert_one_sentence_failure(result, "V1 checkpoint")


def test_prefix_forms_all_reach_the_same_checkpoint(ckpt):
    names = {str(p): [l.units for l in rnnx.load(p).layers]
             for p in (ckpt, ckpt / "ckpt", ckpt / "ckpt.index", ckpt / "ckpt.data-00000-of-00001")}
    assert set(map(tuple, names.values())) == {(4,)}, names


def test_tensorflow_files_are_not_a_target(ckpt, cli, tmp_path):
    result = cli("convert", ckpt, tmp_path / "x.index")
    assert_one_sentence_failure(result, "does not write them")


def test_forget_bias_is_refused_for_files_that_do_not_take_it(fixtures, cli):
    result = cli("inspect", fixtures / "keras2" / "cpu_mix_full.h5", "--forget-bias", "1.0")
    assert_one_sentence_failure(result, "--forget-bias applies to TF1 checkpoints")
    for keras_file in ("lstm_savedmodel", "lstm_ckpt"):  # Keras layers store their whole bias
        result = cli("inspect", fixtures / "tensorflow" / keras_file, "--forget-bias", "1.0")
        assert_one_sentence_failure(result, "--forget-bias", "Keras")


def test_checkpoint_file_written_on_windows_with_escapes(ckpt):
    (ckpt / "checkpoint").write_text('model_checkpoint_path: "C:\\\\Users\\\\j\\303\\274rgen\\\\run\\\\ckpt"\n')
    assert tf_bundle.latest_checkpoint(ckpt / "checkpoint") == "C:\\Users\\jürgen\\run\\ckpt"
    assert [l.units for l in rnnx.load(ckpt).layers] == [4]


def test_convert_with_verify_from_a_savedmodel(fixtures, cli, tmp_path):
    result = cli("convert", fixtures / "tensorflow" / "bidir_savedmodel", tmp_path / "m.onnx", "--verify")
    assert result.returncode == 0, result.stderr
    assert "matches its source" in result.stdout


def test_cell_whose_shapes_fit_no_layout(ckpt, cli, tmp_path):
    recurrent = "layer_with_weights-0/cell/recurrent_kernel/.ATTRIBUTES/VARIABLE_VALUE"

    def reshaped(name, entry):
        if name == recurrent:  # (4, 16) stored as (8, 8): same bytes, no LSTM / GRU / SimpleRNN has it
            del entry.shape.dim[:]
            entry.shape.dim.add(size=8)
            entry.shape.dim.add(size=8)
        return entry

    rewrite_index(ckpt / "ckpt", reshaped)
    result = cli("convert", ckpt, tmp_path / "out.onnx")
    assert_one_sentence_failure(result, "fit no Keras 2")
    assert not (tmp_path / "out.onnx").exists()
