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


def test_written_file_gets_the_mode_of_a_normal_new_file(tmp_path):
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_output(tmp_path / "out.onnx") as tmp:
        tmp.write_bytes(b"data")
    assert (tmp_path / "out.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
