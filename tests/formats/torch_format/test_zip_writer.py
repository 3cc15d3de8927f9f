"""The .pt writer writes torch.save's zip format without torch: torch.load(weights_only=True) (and mmap=True,
which needs torch's 64-byte alignment) gives back exactly the tensors torch.save would have stored."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import rnnx
from rnnx.formats.torch_format.zip_writer import ALIGNMENT, save_state_dict
from rnnx.lazy import LazyArray


def _same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert torch.equal(got[key], want[key]), key


def test_every_dtype_and_shape_loads_as_torch_save_stores_it(tmp_path):
    rng = np.random.default_rng(0)
    state = {"w": rng.standard_normal((4, 3)).astype(np.float32), "half": rng.standard_normal(5).astype(np.float16),
             "double": rng.standard_normal((2, 1, 3)), "steps": np.array(7, np.int64), "mask": np.array([True, False]),
             "bytes": np.arange(3, dtype=np.uint8), "small": np.arange(4, dtype=np.int32).reshape(2, 2),
             "empty": np.zeros((0, 3), np.float32)}
    lazy = {k: LazyArray(v.shape, v.dtype, lambda v=v: v.copy()) for k, v in state.items()}
    save_state_dict(lazy, tmp_path / "rnnx.pt", "rnnx")
    torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, tmp_path / "torch.pt")
    want = torch.load(tmp_path / "torch.pt", weights_only=True)
    _same(torch.load(tmp_path / "rnnx.pt", weights_only=True), want)
    _same(torch.load(tmp_path / "rnnx.pt", weights_only=True, mmap=True), want)
    with zipfile.ZipFile(tmp_path / "rnnx.pt") as zf, open(tmp_path / "rnnx.pt", "rb") as fh:
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            name_length, extra_length = np.frombuffer(fh.read(4), "<u2")
            start = info.header_offset + 30 + int(name_length) + int(extra_length)
            assert start % ALIGNMENT == 0, info.filename


@pytest.mark.parametrize("src", ["keras2/cudnn_bidir_full.h5", "torch/lstm_stack.pt", "torch/gru_fp16.pt",
                                 "models/k2_layers.h5"])
def test_converted_files_hold_what_torch_save_of_the_same_state_dict_holds(fixtures, tmp_path, src):
    from rnnx.formats.torch_format.layout import to_state_dict

    rnnx.convert(fixtures / src, tmp_path / "out.pt")
    state, _ = to_state_dict(rnnx.load(fixtures / src))
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, tmp_path / "torch.pt")
    _same(torch.load(tmp_path / "out.pt", weights_only=True), torch.load(tmp_path / "torch.pt", weights_only=True))


def test_writing_pt_imports_no_torch(fixtures, tmp_path):
    code = ("import sys, rnnx; rnnx.convert(sys.argv[1], sys.argv[2]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code, str(fixtures / "keras2/cudnn_stack_weights.h5"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert set(torch.load(tmp_path / "out.pt", weights_only=True))


def test_crc32_combine_gives_zlibs_crc_of_the_joined_bytes():
    import zlib

    from rnnx.formats.torch_format.zip_writer import crc32_combine

    rng = np.random.default_rng(1)
    for a_len, b_len in ((0, 5), (5, 0), (1, 1), (1000, 3), (7, 65536), (123457, 999983)):
        a, b = rng.bytes(a_len), rng.bytes(b_len)
        assert crc32_combine(zlib.crc32(a), zlib.crc32(b), b_len) == zlib.crc32(a + b)


def test_a_tensor_written_in_parts_over_several_crc_pieces_passes_zips_own_check(tmp_path, monkeypatch):
    from rnnx.formats.torch_format import zip_writer
    from rnnx.lazy import joined

    monkeypatch.setattr(zip_writer, "CRC_PIECE", 1000)  # many pieces per part, a short one at each end
    rng = np.random.default_rng(2)
    source = rng.standard_normal((8, 301)).astype(np.float32)
    stored = LazyArray(source.shape, source.dtype, lambda: source)
    swapped = joined(stored, source.shape, np.float32, lambda v: [v[4:], v[:4]])
    save_state_dict({"swapped": swapped, "plain": stored, "empty": np.zeros((0,), np.float32)},
                    tmp_path / "parts.pt", "parts")
    with zipfile.ZipFile(tmp_path / "parts.pt") as zf:
        assert zf.testzip() is None  # every member's CRC-32 checked by zipfile
    loaded = torch.load(tmp_path / "parts.pt", weights_only=True)
    assert np.array_equal(loaded["swapped"].numpy(), np.concatenate([source[4:], source[:4]]))
    assert np.array_equal(loaded["plain"].numpy(), source) and loaded["empty"].shape == (0,)
