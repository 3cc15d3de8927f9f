"""Readers other than Keras 2 that hand out lazy tensors: .safetensors, .rnnx (safetensors header only) and ONNX
with external data (the data file's ranges) read no tensor for `inspect`, and read each when converting."""

import numpy as np
import pytest
import safetensors

import rnnx
from rnnx.lazy import LazyArray


@pytest.fixture
def tensor_reads(monkeypatch) -> list[str]:
    """Keys of the safetensors tensors read (every reader opens files with safetensors.safe_open)."""
    reads: list[str] = []
    real = safetensors.safe_open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, key):
            reads.append(key)
            return self.inner.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(safetensors, "safe_open", Counting)
    return reads


@pytest.mark.parametrize("suffix", [".safetensors", ".rnnx"])
def test_inspect_of_safetensors_files_reads_only_the_header(fixtures, tmp_path, tensor_reads, suffix):
    src = tmp_path / f"model{suffix}"
    rnnx.convert(fixtures / "keras2" / "cudnn_bidir_full.h5", src)
    assert rnnx.inspect(src)["layers"] and tensor_reads == []
    bundle = rnnx.load(src)
    assert all(isinstance(t, LazyArray) for layer in bundle.layers for d in layer.directions
               for t in d.tensors().values())
    rnnx.convert(src, tmp_path / "again.h5")
    assert len(tensor_reads) >= sum(len(d.tensors()) for layer in bundle.layers for d in layer.directions)


def test_onnx_external_data_is_read_by_range_when_used(fixtures, tmp_path, monkeypatch):
    from rnnx import progress
    from rnnx.formats.onnx_format import external

    monkeypatch.setattr(external, "INLINE_BYTES", 64)  # the fixture's tensors are small
    src, inline = tmp_path / "model.onnx", tmp_path / "inline.onnx"
    rnnx.convert(fixtures / "keras2" / "cudnn_stack_weights.h5", src, external_data=True)
    rnnx.convert(fixtures / "keras2" / "cudnn_stack_weights.h5", inline)
    events = []
    with progress.reporting(events.append):
        report = rnnx.inspect(src)
    assert report["layers"] and not [e for e in events if e.kind == "read"]
    lazy, eager = rnnx.load(src), rnnx.load(inline)
    assert all(isinstance(d.W, LazyArray) for layer in lazy.layers for d in layer.directions)
    with progress.reporting(events.append):
        for a, b in zip(lazy.layers, eager.layers, strict=True):
            for da, db in zip(a.directions, b.directions):
                for key, value in db.tensors().items():
                    assert np.array_equal(np.asarray(da.tensors()[key]), value)
    assert [e.name for e in events if e.kind == "read"][0].startswith("model.onnx.data:")
