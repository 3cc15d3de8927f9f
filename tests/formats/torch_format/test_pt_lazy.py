"""The torch zip reader reads no tensor data until a tensor is used: `inspect` and refusals visible in the
metadata read no storage (rnnx's own range read, zip_data.read_data, is counted), a conversion reads each
tensor's bytes once, damaged files are refused from the metadata at open or, where only the data shows it,
when the tensor is read. torch.load(weights_only=True) gives the expected values."""

import io
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import rnnx
from rnnx.cli import main as cli_main
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.torch_format import zip_data
from rnnx.formats.torch_format import zip_pickle as torch_zip
from rnnx.lazy import LazyArray
from rnnx.lazy import read_all

FIXTURES = ["cells.pt", "checkpoint.ckpt", "gru_fp16.pt", "gru_stack.pt", "lstm_proj.pth", "lstm_stack.pt",
            "lstm_stack_batch_first.pt", "rnn_nobias.pt"]


@pytest.fixture
def storage_reads(monkeypatch, tmp_path_factory):
    """A function giving the reads so far, in order, as (member, first byte, end byte, CRC checked). They are
    logged to a file so that reads in the child process the CLI's watchdog forks count too."""
    log = tmp_path_factory.mktemp("reads") / "reads.log"
    log.touch()
    real = zip_data.read_data

    def counted(member, start=0, stop=None, check=True):
        with open(log, "a") as fh:
            fh.write(f"{member.name} {start} {member.size if stop is None else stop} {check}\n")
        return real(member, start, stop, check)

    monkeypatch.setattr(zip_data, "read_data", counted)

    def reads():
        lines = (line.split() for line in log.read_text().splitlines())
        return [(name, int(a), int(b), check == "True") for name, a, b, check in lines]

    return reads


def torch_state(path):
    """The state dict torch.load gives: the dict holding the recurrent weights (rnnx's checkpoint search)."""
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if "model" in loaded:
        loaded = loaded["model"]
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def distinct_storages(state) -> int:
    return len({t.untyped_storage().data_ptr() for t in state.values() if t.numel()})


def assert_each_tensor_read_once(reads, state):
    """Every storage of `state` read, no byte range twice, and no more bytes than its tensors hold."""
    assert len(reads) == len(set(reads))
    assert len({name for name, *_ in reads}) == distinct_storages(state)
    assert sum(b - a for _, a, b, _ in reads) == sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.parametrize("name", FIXTURES)
def test_inspect_reads_no_storage_and_a_conversion_reads_each_once(fixtures, tmp_path, storage_reads, capfd, name):
    src = fixtures / "torch" / name
    assert rnnx.inspect(src)["layers"] and storage_reads() == []
    assert cli_main(["inspect", str(src)]) == 0 and "recurrent layer" in capfd.readouterr().out
    assert cli_main(["inspect", "--json", "--timeout", "0", str(src)]) == 0
    assert storage_reads() == []
    bundle = rnnx.load(src)
    assert all(isinstance(t, LazyArray) for layer in bundle.layers for d in layer.directions
               for t in d.tensors().values())
    rnnx.convert(src, tmp_path / "out.safetensors")
    expected = torch_state(src)
    assert_each_tensor_read_once(storage_reads(), expected)
    assert len(storage_reads()) == distinct_storages(expected)  # one storage per tensor: each read once, whole
    written = load_file(tmp_path / "out.safetensors")
    assert sorted(written) == sorted(expected)
    for key, tensor in expected.items():
        assert written[key].shape == tuple(tensor.shape) and np.array_equal(written[key], tensor.numpy()), key


def test_the_corpus_checkpoint_is_inspected_without_reading_and_converted_reading_the_model_alone(
        corpus, tmp_path, storage_reads):
    """gtcrn_checkpoint.tar also holds an optimizer state: its storages are never read. Its GRUs were saved
    from CUDA, their tensors views into one flat buffer per module: each view reads its own bytes."""
    src = corpus / "torch" / "gtcrn_checkpoint.tar"
    assert len(rnnx.inspect(src)["layers"]) == 14 and storage_reads() == []
    rnnx.convert(src, tmp_path / "out.safetensors")
    model = torch_state(src)
    assert_each_tensor_read_once(storage_reads(), model)
    with zipfile.ZipFile(src) as zf:
        members = [n for n in zf.namelist() if "/data/" in n]
    assert distinct_storages(model) < len(members) and distinct_storages(model) < len(model)
    written = load_file(tmp_path / "out.safetensors")
    assert sorted(written) == sorted(model)
    for key, tensor in model.items():  # num_batches_tracked stays 0-d
        assert written[key].shape == tuple(tensor.shape) and np.array_equal(written[key], tensor.numpy()), key


REFUSED = [  # (source, target, error, what it says): each visible in the metadata
    ("lstm_proj.pth", "out.h5", UnsupportedError, "no LSTM projection"),
    ("lstm_proj.pth", "out.weights.h5", UnsupportedError, "projection"),
    ("gru_stack.pt", "out.keras", UnsupportedError, "no model architecture"),
]


@pytest.mark.parametrize("src, dst, error, says", REFUSED, ids=[f"{r[0]}->{r[1]}" for r in REFUSED])
def test_a_refusal_visible_in_the_metadata_comes_before_any_storage_is_read(fixtures, tmp_path, storage_reads,
                                                                         src, dst, error, says):
    with pytest.raises(error, match=says):
        rnnx.convert(fixtures / "torch" / src, tmp_path / dst)
    assert storage_reads() == [] and list(tmp_path.iterdir()) == []


def test_bfloat16_recurrent_weights_are_refused_before_any_storage_is_read(tmp_path, storage_reads):
    torch.manual_seed(0)
    path = tmp_path / "bf16.pt"
    torch.save(torch.nn.GRU(2, 3).bfloat16().state_dict(), path)
    with pytest.raises(FormatError, match="is bfloat16"):
        rnnx.inspect(path)
    assert storage_reads() == []


# --- shared storages, views, dtypes ---------------------------------------------------------------

def shared_state():
    """Tied weights and slices of one storage beside an LSTM's own tensors, and a bfloat16 tensor."""
    torch.manual_seed(3)
    lstm = torch.nn.LSTM(3, 4)
    state = OrderedDict(("rnn." + k, v) for k, v in lstm.state_dict().items())
    embedding = torch.randn(10, 3)
    state.update([("embed.weight", embedding), ("out.weight", embedding),  # tied, as in a language model
                  ("rows.weight", embedding[2:6]), ("column.weight", embedding[:, 1]),
                  ("strided.weight", embedding[::3, ::2]), ("transposed.weight", embedding.t()),
                  ("expanded.weight", embedding[0:1].expand(4, 3)), ("half.weight", torch.randn(2, 3).bfloat16()),
                  ("empty.weight", torch.zeros(0, 2)), ("scalar.steps", torch.tensor(7))])
    return state


def materialised(tree):
    if isinstance(tree, LazyArray):
        return tree.load()
    if isinstance(tree, torch_zip.BFloat16Array):
        return torch_zip.BFloat16Array(np.asarray(tree.float32))
    if isinstance(tree, dict):
        return type(tree)((k, materialised(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(materialised(v) for v in tree)
    return tree


def test_shared_storages_and_views_read_lazily_give_torchs_values(tmp_path, storage_reads):
    path = tmp_path / "shared.pt"
    state = shared_state()
    torch.save(state, path)
    loaded = torch_zip.load_state(path, lazy=True)
    assert storage_reads() == []
    assert isinstance(loaded["rows.weight"], LazyArray) and isinstance(loaded["half.weight"].float32, LazyArray)
    expected = torch.load(path, weights_only=True)
    values = materialised(loaded)  # all held at once: the views of a storage read whole share one read
    with zipfile.ZipFile(path) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert sorted(storage_reads()) == sorted({(n, 0, sizes[n], True) for n, *_ in storage_reads()})
    assert len(storage_reads()) == distinct_storages(expected)
    eager = torch_zip.load_state(path)
    for key, tensor in expected.items():
        if tensor.dtype == torch.bfloat16:
            assert np.array_equal(values[key].float32, tensor.float().numpy())
            continue
        for got in (values[key], eager[key]):
            assert got.shape == tuple(tensor.shape) and got.dtype == tensor.numpy().dtype, key
            assert np.array_equal(got, tensor.numpy()), key


def test_a_view_read_alone_reads_its_own_bytes(tmp_path, storage_reads):
    """With no view of the storage held, a slice reads its byte range; the first such read also scans the
    whole member for its CRC, the later ones read their range alone."""
    path = tmp_path / "shared.pt"
    state = shared_state()
    torch.save(state, path)
    loaded = torch_zip.load_state(path, lazy=True)
    rows, column = np.asarray(loaded["rows.weight"]), np.asarray(loaded["column.weight"])
    assert np.array_equal(rows, state["rows.weight"].numpy()) and np.array_equal(column, state["column.weight"].numpy())
    member = storage_reads()[0][0]
    assert storage_reads() == [(member, 2 * 3 * 4, 6 * 3 * 4, True), (member, 1 * 4, (1 + 9 * 3 + 1) * 4, False)]


def test_a_converted_file_with_shared_storages_holds_torchs_values(tmp_path, storage_reads):
    path = tmp_path / "shared.pt"
    state = shared_state()
    torch.save(state, path)
    rnnx.convert(path, tmp_path / "out.safetensors")
    written = load_file(tmp_path / "out.safetensors")
    assert sorted(written) == sorted(state)
    for key, tensor in state.items():
        want = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        assert written[key].shape == want.shape and np.array_equal(written[key], want), key
    reads = storage_reads()  # at most one read per tensor: a storage is read again once no view of it is held
    assert reads and len(reads) <= len([t for t in state.values() if t.numel()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.bfloat16])
def test_big_endian_files_read_lazily(tmp_path, dtype):
    """A file whose byteorder member says 'big': a slice read alone is swapped as the whole storage is."""
    tensor = (torch.randn(4, 3, generator=torch.Generator().manual_seed(1)) * 100).to(dtype)
    little, big = tmp_path / "little.pt", tmp_path / "big.pt"
    torch.save({"rows": tensor[1:3], "w": tensor, "w_t": tensor.t()}, little)
    item = torch.empty(0, dtype=dtype).element_size() // (2 if dtype.is_complex else 1)
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename:
                data = np.frombuffer(data, f"<u{item}").astype(f">u{item}").tobytes()
            elif info.filename.endswith("/byteorder"):
                data = b"big"
            dst.writestr(info.filename, data)
    loaded, expected = torch_zip.load_state(big, lazy=True), torch.load(big, weights_only=True)
    bfloat16 = dtype == torch.bfloat16
    for key, saved in (("rows", tensor[1:3]), ("w", tensor), ("w_t", tensor.t())):  # rows first: a range alone
        assert torch.equal(expected[key], saved)
        got = np.asarray(loaded[key].float32 if bfloat16 else loaded[key])
        assert np.array_equal(got, (expected[key].float() if bfloat16 else expected[key]).numpy()), key


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_0d_tensor_stays_0d(tmp_path, legacy):
    """BatchNorm's num_batches_tracked is 0-d; lazily (zip) or eagerly (legacy, through torch.load) read alike."""
    net = torch.nn.Module()
    net.rnn, net.norm = torch.nn.GRU(2, 3), torch.nn.BatchNorm1d(3)
    net.norm.num_batches_tracked += 5
    torch.save(net.state_dict(), tmp_path / "net.pt", _use_new_zipfile_serialization=not legacy)
    for suffix in (".safetensors", ".pt"):
        rnnx.convert(tmp_path / "net.pt", tmp_path / f"out{suffix}")
        back = load_file(tmp_path / "out.safetensors") if suffix == ".safetensors" else {
            k: v.numpy() for k, v in torch.load(tmp_path / "out.pt", weights_only=True).items()}
        assert back["norm.num_batches_tracked"].shape == () and back["norm.num_batches_tracked"] == 5


# --- lazy and eager give the same files -----------------------------------------------------------



WRITTEN = [(name, suffix) for name in ("lstm_stack.pt", "checkpoint.ckpt", "cells.pt", "gru_fp16.pt", "lstm_proj.pth")
           for suffix in (".pt", ".safetensors", ".onnx", ".rnnx") if (name, suffix) != ("lstm_proj.pth", ".onnx")]


@pytest.mark.parametrize("name, suffix", WRITTEN)
def test_writing_lazy_tensors_gives_the_file_materialised_ones_give(fixtures, tmp_path, name, suffix):
    bundle = rnnx.load(fixtures / "torch" / name)
    (tmp_path / "lazy").mkdir()
    (tmp_path / "eager").mkdir()
    rnnx.save(bundle, tmp_path / "lazy" / f"model{suffix}")  # same name: a .pt archive is named after its file
    rnnx.save(read_all(bundle), tmp_path / "eager" / f"model{suffix}")
    assert (tmp_path / "lazy" / f"model{suffix}").read_bytes() == (tmp_path / "eager" / f"model{suffix}").read_bytes()


def test_a_deflated_archive_reads_through_zipfile(fixtures, tmp_path, storage_reads):
    """torch.save stores its members; an archive compressed again by another tool still reads the same."""
    src = fixtures / "torch" / "gru_stack.pt"
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info))
    assert rnnx.inspect(packed)["layers"] and storage_reads() == []
    rnnx.convert(packed, tmp_path / "out.safetensors")
    assert storage_reads()
    written, expected = load_file(tmp_path / "out.safetensors"), torch_state(src)
    assert sorted(written) == sorted(expected)
    assert all(np.array_equal(written[k], v.numpy()) for k, v in expected.items())


# --- damaged files --------------------------------------------------------------------------------

def _storage_header(data: bytes, member: str) -> int:
    """Offset of the local header of `member` in the archive `data`."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.getinfo(member).header_offset


def _last_storage(path) -> str:
    with zipfile.ZipFile(path) as zf:
        return max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.header_offset).filename


def test_a_local_header_that_puts_the_data_past_the_end_is_refused_at_open(fixtures, tmp_path, storage_reads, cli):
    path = tmp_path / "bad.pt"
    data = bytearray((fixtures / "torch" / "lstm_stack.pt").read_bytes())
    header = _storage_header(bytes(data), _last_storage(fixtures / "torch" / "lstm_stack.pt"))
    data[header + 28:header + 30] = struct.pack("<H", 0xFFFF)  # the local extra field's length
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="reaches past the end of the file") as refused:
        rnnx.inspect(path)
    assert str(path) in str(refused.value) and storage_reads() == []
    done = cli("convert", path, tmp_path / "out.onnx")
    assert done.returncode == 2 and "truncated" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_a_local_header_naming_another_member_is_refused_at_open(fixtures, tmp_path, storage_reads):
    path = tmp_path / "bad.pt"
    data = bytearray((fixtures / "torch" / "lstm_stack.pt").read_bytes())
    member = _last_storage(fixtures / "torch" / "lstm_stack.pt")
    header = _storage_header(bytes(data), member)
    name_at = header + 30
    assert data[name_at:name_at + len(member)] == member.encode()
    data[name_at + len(member) - 1] = ord("x")  # the central directory still names it as before
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="cannot be opened"):
        rnnx.load(path)
    assert storage_reads() == []


class _Storage:
    pass


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


def _hand_made(path, numel, member_values, offset, size, stride):
    """A torch zip whose one tensor has the given view of a FloatStorage of `numel` values."""
    storage = _Storage()

    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if value is storage else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"rnn.weight_ih_l0": _Tensor(storage, offset, size, stride)})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", np.asarray(member_values, np.float32).tobytes())
    return path


@pytest.mark.parametrize("numel, values, offset, size, stride, says", [
    (4, range(4), 0, (4, 2), (2, 1), "reaches past the end of storage 0"),  # a view longer than its storage
    (4, range(4), 3, (2,), (1,), "reaches past the end of storage 0"),
    (1000, range(4), 0, (4,), (1,), "should hold 4000 bytes but holds 16"),  # a member shorter than its storage
])
def test_a_storage_shorter_than_it_must_be_is_refused_before_any_read(tmp_path, storage_reads, numel, values, offset,
                                                                      size, stride, says):
    path = _hand_made(tmp_path / "bad.pt", numel, values, offset, size, stride)
    with pytest.raises(FormatError, match=says) as refused:
        rnnx.inspect(path)
    assert str(path) in str(refused.value) and storage_reads() == []
    with pytest.raises(FormatError, match=says):
        torch_zip.load_state(path)


def test_a_file_cut_or_damaged_after_it_was_opened_is_refused_when_the_tensor_is_read(fixtures, tmp_path):
    whole = (fixtures / "torch" / "lstm_stack.pt").read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(whole)
    bundle = rnnx.load(path)
    first = bundle.layers[0].directions[0]
    assert np.asarray(first.W).shape == first.W.shape  # readable while the file is whole

    path.write_bytes(whole[:len(whole) // 2])  # cut: the later storages lie past the new end
    last = bundle.layers[-1].directions[-1]
    with pytest.raises(FormatError, match="ends early; the file is truncated") as refused:
        np.asarray(last.R)
    assert str(path) in str(refused.value) and len(str(refused.value).split(". ")) == 1

    path.write_bytes(_with_storages_damaged(whole))  # whole again, but every storage's first byte changed
    with pytest.raises(FormatError, match="does not match its checksum"):
        np.asarray(last.R)

    path.unlink()
    with pytest.raises(FormatError, match="model.pt"):
        np.asarray(bundle.layers[1].directions[0].W)


def _with_storages_damaged(whole: bytes) -> bytes:
    """The archive `whole` with the first data byte of every storage member flipped (CRCs left as they were)."""
    damaged = bytearray(whole)
    with zipfile.ZipFile(io.BytesIO(whole)) as zf:
        for info in zf.infolist():
            if "/data/" in info.filename and info.file_size:
                damaged[zip_data.locate(io.BytesIO(whole), info, "archive", len(whole)).start] ^= 0x01
    return bytes(damaged)


def test_a_damaged_storage_fails_the_conversion_with_one_sentence(fixtures, tmp_path, cli):
    path = tmp_path / "damaged.pt"
    path.write_bytes(_with_storages_damaged((fixtures / "torch" / "gru_stack.pt").read_bytes()))
    assert cli("inspect", path).returncode == 0  # the data is not read to inspect
    done = cli("convert", path, tmp_path / "out.safetensors")
    assert done.returncode == 2 and "does not match its checksum" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.safetensors").exists()
