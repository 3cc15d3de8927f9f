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


def _interrupt(monkeypatch, target: str):
    """Make `module:attr` (or `module:Class.attr`) run as before, then fail: the temporary file holds real
    bytes when the writer gives up."""
    import importlib

    module_name, path = target.split(":")
    owner = importlib.import_module(module_name)
    *classes, attr = path.split(".")
    for cls in classes:
        owner = getattr(owner, cls)
    original = getattr(owner, attr)

    def write_then_fail(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("interrupted after writing")

    monkeypatch.setattr(owner, attr, write_then_fail)


# (destination, the call that puts the bytes on disk)
WRITERS = [
    ("out.h5", "rnnx.formats.keras2.h5:_write_plan"),
    ("out.weights.h5", "rnnx.formats.keras3.layout:write_tree"),
    ("out.onnx", "rnnx.formats.onnx_format.external:_stream_inline"),
    ("out.pt", "rnnx.formats.torch_format.zip_writer:save_state_dict"),
    ("out.safetensors", "rnnx.formats.safetensors_stream:save_file"),
    ("out.rnnx", "rnnx.formats.safetensors_stream:save_file"),
    ("out.py", "pathlib:Path.write_text"),
]


@pytest.mark.parametrize("dst, call", WRITERS, ids=[w[0] for w in WRITERS])
def test_every_writer_leaves_nothing_when_interrupted_mid_write(tmp_path, monkeypatch, dst, call):
    import numpy as np

    import rnnx
    from rnnx.canonical import Bundle, Direction, RecurrentLayer

    rng = np.random.default_rng(0)
    layer = RecurrentLayer("lstm", "lstm", [Direction(*(rng.standard_normal(s).astype(np.float32)
                                                        for s in ((8, 3), (8, 2), (8,))))])
    _interrupt(monkeypatch, call)
    with pytest.raises(RuntimeError, match="interrupted after writing"):
        rnnx.save(Bundle([layer]), tmp_path / dst)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("src, dst, call", [
    ("keras3/bidir.keras", "out.keras", "zipfile:ZipFile.writestr"),
    ("keras2/cudnn_stack_full.h5", "model.onnx", "rnnx.formats.onnx_format.external:_stream_inline"),  # whole model
])
def test_archive_and_whole_model_writers_leave_nothing_when_interrupted(fixtures, tmp_path, monkeypatch, src, dst,
                                                                         call):
    import rnnx

    _interrupt(monkeypatch, call)
    with pytest.raises(RuntimeError, match="interrupted after writing"):
        rnnx.convert(fixtures / src, tmp_path / dst)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("src", ["keras2/cudnn_stack_weights.h5", "keras2/cudnn_stack_full.h5"])
def test_onnx_with_external_data_leaves_neither_file_when_interrupted(fixtures, tmp_path, monkeypatch, src):
    import rnnx

    _interrupt(monkeypatch, "rnnx.formats.onnx_format.external:WeightStore.finish")
    with pytest.raises(RuntimeError, match="interrupted after writing"):
        rnnx.convert(fixtures / src, tmp_path / "model.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_renames_every_file_or_none(tmp_path):
    from rnnx.io import atomic_outputs

    with atomic_outputs(tmp_path / "a.data", tmp_path / "a.onnx") as (data, model):
        data.write_bytes(b"weights")
        model.write_bytes(b"model")
    assert (tmp_path / "a.data").read_bytes() == b"weights" and (tmp_path / "a.onnx").read_bytes() == b"model"
    with atomic_outputs(tmp_path / "b.data", tmp_path / "b.onnx") as (data, model):
        data.unlink()  # the block chose not to write this one
        model.write_bytes(b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.data", "a.onnx", "b.onnx"]
