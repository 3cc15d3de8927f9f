"""torch_zip: PyTorch's zip checkpoints read with numpy alone; torch.load(weights_only=True) is the oracle."""

import io
import os
import pickle
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import rnnx
from rnnx.errors import FormatError, UnsupportedError
from rnnx.formats.torch_format import zip_pickle as torch_zip

FIXTURES = ["cells.pt", "checkpoint.ckpt", "gru_fp16.pt", "gru_stack.pt", "lstm_proj.pth", "lstm_stack.pt",
            "lstm_stack_batch_first.pt", "rnn_nobias.pt"]


def assert_same(expected, got, where="root"):
    """`got` (torch_zip) holds what torch.load gave: same containers, keys, dtypes, shapes and bytes."""
    if isinstance(expected, torch.Tensor):
        if expected.dtype == torch.bfloat16:
            assert isinstance(got, torch_zip.BFloat16Array), where
            assert np.array_equal(expected.float().numpy(), got.float32), where
            assert got.float32.dtype == np.float32, where
            return
        want = expected.detach().resolve_conj().resolve_neg().numpy()
        assert isinstance(got, np.ndarray), (where, type(got))
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert got.tobytes() == want.tobytes(), where
        return
    if type(expected) is torch.Size:
        assert type(got) is tuple and got == tuple(expected), where
        return
    if isinstance(expected, (torch.dtype, torch.device)):
        assert repr(got) == str(expected) or got == str(expected), where
        return
    assert type(got) is type(expected), (where, type(expected), type(got))
    if isinstance(expected, dict):
        assert list(got) == list(expected), where
        assert getattr(got, "_metadata", None) == getattr(expected, "_metadata", None), where
        for key in expected:
            assert_same(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for k, (a, b) in enumerate(zip(expected, got)):
            assert_same(a, b, f"{where}[{k}]")
    else:
        assert got == expected, where


@pytest.mark.parametrize("name", FIXTURES)
def test_fixtures_read_as_torch_reads_them(fixtures, name):
    path = fixtures / "torch" / name
    assert_same(torch.load(path, map_location="cpu", weights_only=True), torch_zip.load_state(path))


def test_real_checkpoint_reads_as_torch_reads_it(corpus):
    """gtcrn_checkpoint.tar: an older torch's zip (no byteorder member), CUDA storages, an optimizer state."""
    path = corpus / "torch" / "gtcrn_checkpoint.tar"
    loaded = torch_zip.load_state(path)
    assert_same(torch.load(path, map_location="cpu", weights_only=True), loaded)
    assert sum(torch_zip.is_tensor(v) for v in loaded["model"].values()) > 100


def shared_storage_state():
    """Tensors that share storages at several offsets, non-contiguous views and every common dtype."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=gen)
    ints = torch.arange(30, dtype=torch.int64).reshape(5, 6)
    complex_values = torch.randn(3, dtype=torch.complex64, generator=gen)
    return OrderedDict([
        ("base", base), ("transposed", base.t()), ("rows", base[1:3]), ("block", base[1:3, 2:5]),
        ("column", base[:, 4]), ("strided", base[::2, ::3]), ("element", base[3, 5]),
        ("f16", torch.randn(3, 4, generator=gen).half()), ("f16_t", torch.randn(3, 4, generator=gen).half().t()),
        ("f64", torch.randn(2, 3, generator=gen).double()), ("i64", ints[1:, 2:]), ("i64_t", ints.t()),
        ("i32", torch.arange(-4, 4, dtype=torch.int32)), ("i16", torch.arange(-3, 3, dtype=torch.int16)),
        ("i8", torch.arange(-5, 5, dtype=torch.int8)), ("u8", torch.arange(7, dtype=torch.uint8)),
        ("flags", torch.tensor([True, False, True])), ("c64", complex_values), ("conj", complex_values.conj()),
        ("bf16", torch.randn(2, 3, generator=gen).bfloat16()), ("u16", torch.tensor([1, 65535], dtype=torch.uint16)),
        ("scalar", torch.tensor(2.5)), ("empty", torch.zeros(0, 3)), ("expanded", base[0:1].expand(3, 6)),
        ("param", torch.nn.Parameter(torch.ones(2, 2))),
        ("nested", {"list": [base[2], 3, "x", None], "tuple": (1.5, True), "size": torch.Size([2, 3]),
                    "bytes": b"\x00\xff", "set": {1, 2}, "dtype": torch.float16, "device": torch.device("cpu"),
                    "state": torch.nn.GRU(2, 3).state_dict()}),
    ])


def test_shared_storages_views_and_dtypes(tmp_path):
    path = tmp_path / "views.pt"
    state = shared_storage_state()
    torch.save(state, path)
    with zipfile.ZipFile(path) as zf:
        storages = [n for n in zf.namelist() if "/data/" in n]
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    views_of_base = [t for t in tensors if t.untyped_storage().data_ptr() == state["base"].data_ptr()]
    assert len(views_of_base) == 8
    # the 8 views of base share one storage member, i64 / i64_t one, c64 / conj one; + the GRU's 4 tensors
    assert len(storages) == len(tensors) - 7 - 1 - 1 + 4
    expected = torch.load(path, weights_only=True)
    loaded = torch_zip.load_state(path)
    assert_same(expected, loaded)
    assert loaded["transposed"].flags.writeable and loaded["base"].flags.writeable
    assert loaded["f16"].dtype == np.float16 and loaded["i64"].dtype == np.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.int64, torch.complex64,
                                   torch.bfloat16])
def test_big_endian_files(tmp_path, dtype):
    """A file whose byteorder member says 'big' (storages byte-swapped), as torch writes on big-endian hosts."""
    little = tmp_path / "little.pt"
    tensor = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)) * 100).to(dtype)
    torch.save({"w": tensor, "w_t": tensor.t()}, little)
    item = torch.empty(0, dtype=dtype).element_size() // (2 if dtype.is_complex else 1)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and "/." not in info.filename:
                data = np.frombuffer(data, f"<u{item}").astype(f">u{item}").tobytes()
            elif info.filename.endswith("/byteorder"):
                data = b"big"
            dst.writestr(info.filename, data)
    assert_same(torch.load(big, weights_only=True), torch_zip.load_state(big))
    assert_same(torch.load(little, weights_only=True), torch_zip.load_state(big))


def test_big_endian_bytes_storage_is_refused(tmp_path):
    """uint16 and newer dtypes lie on untyped (byte) storages, which the file's byte order does not describe."""
    path = tmp_path / "u16.pt"
    torch.save({"u": torch.tensor([1, 2], dtype=torch.uint16)}, path)
    big = tmp_path / "big.pt"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, b"big" if info.filename.endswith("/byteorder") else src.read(info))
    with pytest.raises(FormatError, match="does not byte-swap"):
        torch_zip.load_state(big)


def test_tensors_numpy_cannot_hold_ride_as_notes(tmp_path):
    torch.manual_seed(2)
    state = torch.nn.GRU(2, 3).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized dtypes are deprecated, still found in files
        state["q"] = torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.quint8)
    state["f8"] = torch.randn(3).to(torch.float8_e4m3fn)
    torch.save(state, tmp_path / "odd.pt")
    bundle = rnnx.load(tmp_path / "odd.pt")
    assert bundle.source["notes"] == ["q: a quantized tensor, not carried along",
                                      "f8: a float8_e4m3fn tensor, not carried along"]
    assert [l.name for l in bundle.layers] == ["l0"]
    rnnx.save(bundle.only("l0"), tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert sorted(back) == sorted(k for k in state if k.endswith("_l0"))
    assert all(torch.equal(back[k], state[k]) for k in back)


# --- reading without torch ------------------------------------------------------------------------

def run_python(code, cwd):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def cli_without_torch_import(args, cwd):
    """stdout of rnnx's CLI run in-process, then a last line naming any heavy framework it imported."""
    code = (f"import sys\nfrom rnnx import cli\nrc = cli.main({[str(a) for a in args]!r})\n"
            f"print('IMPORTED', rc, sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    done = run_python(code, cwd)
    assert done.returncode == 0, done.stderr
    output, _, last = done.stdout.rstrip("\n").rpartition("\n")
    assert last == "IMPORTED 0 []", last
    return output


@pytest.fixture(scope="module")
def zip_and_legacy(tmp_path_factory):
    """The same checkpoint as a zip file and in the legacy format (which rnnx opens with torch.load)."""
    folder = tmp_path_factory.mktemp("formats")
    (folder / "zip").mkdir()
    (folder / "legacy").mkdir()
    torch.manual_seed(4)
    net = torch.nn.Module()
    net.rnn = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    net.head = torch.nn.Linear(8, 2)
    checkpoint = {"epoch": 3, "model": net.state_dict()}
    torch.save(checkpoint, folder / "zip" / "model.pt")
    torch.save(checkpoint, folder / "legacy" / "model.pt", _use_new_zipfile_serialization=False)
    return folder / "zip" / "model.pt", folder / "legacy" / "model.pt"


def test_inspect_and_convert_do_not_import_torch(zip_and_legacy, corpus, tmp_path):
    zip_file, legacy_file = zip_and_legacy
    assert zipfile.is_zipfile(zip_file) and not zipfile.is_zipfile(legacy_file)
    shown = cli_without_torch_import(["inspect", zip_file], tmp_path)
    assert "rebuild: nn.LSTM(3, 4, num_layers=2, bidirectional=True)" in shown
    through_torch = run_python(f"from rnnx import cli; cli.main(['inspect', {str(legacy_file)!r}])", tmp_path)
    assert shown.replace(str(zip_file), "FILE") == through_torch.stdout.rstrip("\n").replace(str(legacy_file), "FILE")
    gtcrn = corpus / "torch" / "gtcrn_checkpoint.tar"
    assert "14 recurrent layers" in cli_without_torch_import(["inspect", gtcrn], tmp_path)

    cli_without_torch_import(["convert", zip_file, tmp_path / "zip.onnx"], tmp_path)
    rnnx.convert(legacy_file, tmp_path / "legacy.onnx")
    from_zip, from_legacy = (onnx.load(str(tmp_path / n)).graph for n in ("zip.onnx", "legacy.onnx"))
    assert [n.SerializeToString() for n in from_zip.node] == [n.SerializeToString() for n in from_legacy.node]
    assert len(from_zip.initializer) == len(from_legacy.initializer) > 0
    for a, b in zip(from_zip.initializer, from_legacy.initializer, strict=True):
        assert a.name == b.name and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_reading_needs_no_torch_but_the_legacy_format_does(zip_and_legacy, monkeypatch):
    zip_file, legacy_file = zip_and_legacy
    with_torch = rnnx.load(legacy_file)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without torch installed
    without_torch = rnnx.load(zip_file)
    assert [l.name for l in without_torch.layers] == [l.name for l in with_torch.layers] == ["rnn.l0", "rnn.l1"]
    for a, b in zip(without_torch.layers, with_torch.layers, strict=True):
        for da, db in zip(a.directions, b.directions, strict=True):
            assert all(np.array_equal(v, db.tensors()[k]) for k, v in da.tensors().items())
    with pytest.raises(UnsupportedError, match="legacy format"):
        rnnx.load(legacy_file)


def test_legacy_file_reads_through_torch(tmp_path):
    """torch.save(_use_new_zipfile_serialization=False): torch.load reads it; rnnx gives what the zip gives."""
    state = shared_storage_state()
    del state["nested"]  # the legacy format keeps torch.Size etc. as torch objects; tensors are compared
    del state["u16"]  # torch's own legacy loader fails on uint16 (UntypedStorage has no dtype)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, tmp_path / "zip.pt")
    legacy, from_zip = rnnx.load(tmp_path / "legacy.pt"), rnnx.load(tmp_path / "zip.pt")
    assert legacy.source["notes"] == from_zip.source["notes"] == ["bf16: bfloat16 read as float32"]
    (legacy_root,), (zip_root,) = legacy.others, from_zip.others
    assert [k for k, _ in legacy_root.weights] == [k for k, _ in zip_root.weights] == list(state)
    for (key, a), (_, b) in zip(legacy_root.weights, zip_root.weights, strict=True):
        assert (a.dtype, a.shape) == (b.dtype, b.shape) and a.tobytes() == b.tobytes(), key
        if key != "bf16":
            assert_same(state[key], np.asarray(b), key)  # rnnx.load's zip tensors are lazy


# --- files made to hurt -----------------------------------------------------------------------------

class Storage:
    """A storage in a hand-made file: ('storage', FloatStorage, key, 'cpu', numel) in the pickle."""

    def __init__(self, key, values, numel=None):
        self.key, self.data = key, np.asarray(values, np.float32).tobytes()
        self.numel = len(values) if numel is None else numel


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, self.args


class MarkerConfig:
    """A custom class: unpickling it touches the marker file."""

    def __init__(self):
        self.level = 1  # some state, so that unpickling calls __setstate__

    def __setstate__(self, state):
        open("rnnx_pickle_marker", "w").close()


class Payload:
    """Unpickling this object calls `function(*args)`: what a malicious file does."""

    def __init__(self, function, *args):
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def write_torch_zip(path, obj, storages=(), extra_members=()):
    """A zip laid out as torch.save lays it out, holding `obj` pickled with Storage objects as storages."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            if isinstance(value, Storage):
                return ("storage", torch.FloatStorage, value.key, "cpu", value.numel)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buffer.getvalue())
        zf.writestr("archive/byteorder", "little")
        for storage in storages:
            zf.writestr(f"archive/data/{storage.key}", storage.data)
        zf.writestr("archive/version", "3\n")
        for name, data in extra_members:
            zf.writestr(name, data)
    return path


def test_hand_made_files_read_like_torch_when_well_formed(tmp_path):
    """The control for the hurtful variants below: a valid hand-made file torch itself loads."""
    storage = Storage("0", np.arange(12))
    obj = {"a": Tensor(storage, 2, (2, 3), (1, 4)), "b": Tensor(storage, 0, (12,), (1,))}
    path = write_torch_zip(tmp_path / "made.pt", obj, [storage])
    assert_same(torch.load(path, weights_only=True), torch_zip.load_state(path))


@pytest.mark.parametrize("payload", [
    Payload(os.system, "touch rnnx_pickle_marker"),
    Payload(eval, "open('rnnx_pickle_marker', 'w')"),
    Payload(exec, "open('rnnx_pickle_marker', 'w')"),
    MarkerConfig(),
], ids=["os.system", "builtins.eval", "builtins.exec", "custom-class"])
def test_pickle_code_never_runs(tmp_path, cli, monkeypatch, payload):
    storage = Storage("0", [1.0, 2.0])
    path = write_torch_zip(tmp_path / "bad.pt", {"w": Tensor(storage, 0, (2,), (1,)), "x": payload}, [storage])
    work = tmp_path / "work"
    work.mkdir()
    done = cli("inspect", path, cwd=work)
    assert done.returncode == 2 and "arbitrary pickle code" in done.stderr and "Traceback" not in done.stderr
    code = (f"from rnnx.formats.torch_format import zip_pickle as torch_zip\n"
            f"try: torch_zip.load_state({str(path)!r})\nexcept Exception as e: print(e)")
    said = run_python(code, work).stdout
    assert "which rnnx refuses to run" in said and str(path) in said
    assert list(work.iterdir()) == []
    # the control: plain pickle really runs the payload the file holds
    monkeypatch.chdir(work)
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert (work / "rnnx_pickle_marker").exists()


def test_whole_pickled_module_names_the_class(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.GRU(2, 3), path)
    with pytest.raises(FormatError, match=r"needs arbitrary pickle code to load \(torch\.nn\.modules\.rnn\.GRU\)"):
        torch_zip.load_state(path)


@pytest.mark.parametrize("offset, size, stride, numel, words", [
    (0, (5,), (1,), 4, "reaches past the end"),        # longer than its storage
    (3, (2,), (1,), 4, "reaches past the end"),        # an offset that runs it off the end
    (0, (2, 3), (3, 2), 6, "reaches past the end"),    # strides that reach past the storage
    (0, (2,), (-1,), 4, "not non-negative"),           # a negative stride
    (-1, (2,), (1,), 4, "not non-negative"),           # a negative offset
    (0, (2, 2), (1,), 4, "of one rank"),               # size and stride of different ranks
    (0, (2 ** 62, 2 ** 62), (0, 0), 4, "more than any memory"),  # an expanded tensor too large to index
])
def test_tensor_outside_its_storage(tmp_path, offset, size, stride, numel, words):
    storage = Storage("0", np.arange(numel))
    path = write_torch_zip(tmp_path / "bad.pt", {"w": Tensor(storage, offset, size, stride)}, [storage])
    with pytest.raises(FormatError, match=words) as refused:
        torch_zip.load_state(path)
    assert str(path) in str(refused.value)


def test_storage_larger_than_its_member(tmp_path, cli):
    storage = Storage("0", [1.0, 2.0, 3.0, 4.0], numel=1_000_000)
    path = write_torch_zip(tmp_path / "bad.pt", {"w": Tensor(storage, 0, (4,), (1,))}, [storage])
    with pytest.raises(FormatError, match="should hold 4000000 bytes but holds 16"):
        torch_zip.load_state(path)
    done = cli("convert", path, tmp_path / "out.onnx")
    assert done.returncode == 2 and "should hold" in done.stderr and not (tmp_path / "out.onnx").exists()


def test_member_size_beyond_the_archive_is_refused_before_reading(tmp_path):
    storage = Storage("0", [1.0, 2.0, 3.0, 4.0])
    path = write_torch_zip(tmp_path / "bad.pt", {"w": Tensor(storage, 0, (4,), (1,))}, [storage])
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory's first entry
    while not data[entry + 46:].startswith(b"archive/data/0"):
        entry = data.index(b"PK\x01\x02", entry + 4)
    data[entry + 20:entry + 28] = (2 ** 31 - 1).to_bytes(4, "little") * 2  # compressed and full size
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="cannot hold"):
        torch_zip.load_state(path)


@pytest.mark.parametrize("name", ["../x", "/etc/x", "archive/../../x"])
def test_member_names_that_escape(tmp_path, name):
    storage = Storage("0", [1.0])
    path = write_torch_zip(tmp_path / "bad.pt", {"w": Tensor(storage, 0, (1,), (1,))}, [storage],
                           extra_members=[(name, b"x")])
    with pytest.raises(FormatError, match="points outside the archive"):
        torch_zip.load_state(path)


def test_truncated_and_foreign_archives(tmp_path, fixtures, cli):
    whole = (fixtures / "torch" / "lstm_stack.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(FormatError, match="cannot be opened"):
        torch_zip.load_state(cut)
    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("readme.txt", "not torch")
    with pytest.raises(FormatError, match="no <archive>/data.pkl"):
        torch_zip.load_state(foreign)
    damaged = tmp_path / "damaged.pt"
    with zipfile.ZipFile(fixtures / "torch" / "gru_stack.pt") as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:len(data) // 2] if info.filename.endswith("data.pkl") else data)
    done = cli("inspect", damaged)
    assert done.returncode == 2 and "not a readable PyTorch file" in done.stderr and "Traceback" not in done.stderr


def test_torchscript_archive_is_named(tmp_path):
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, its files are still about
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), str(path))
    with pytest.raises(FormatError, match="TorchScript"):
        torch_zip.load_state(path)
