import pytest

from rnnx.io import atomic_output


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "out.onnx") as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("writer broke")
    assert list(tmp_path.iterdir()) == []


def test_successful_write_replaces_destination(tmp_path):
    dst = tmp_path / "out.h5"
    dst.write_bytes(b"old")
    with atomic_output(dst) as tmp:
        tmp.write_bytes(b"new")
    assert dst.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [dst]
