"""The streamed safetensors writer writes the bytes safetensors.numpy.save_file writes, reading lazy tensors
one at a time."""

import numpy as np
from safetensors.numpy import save_file as reference_save_file

from rnnx.formats.safetensors_stream import save_file
from rnnx.lazy import LazyArray


def test_bytes_equal_safetensors_own_for_mixed_dtypes_metadata_and_lazy_tensors(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"b.weight": rng.standard_normal((3, 5)).astype(np.float32), "a": np.arange(7, dtype=np.int64),
               "half": rng.standard_normal(9).astype(np.float16), "z.double": rng.standard_normal((2, 2, 2)),
               "flag": np.array([True, False]), "bytes": np.arange(3, dtype=np.uint8),
               "empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5, np.float32)}
    # one key, as rnnx writes (safetensors orders several keys differently from call to call)
    metadata = {"rnnx_manifest": '{"x": "quote \\" and newline \\n, é"}'}
    reference_save_file(tensors, str(tmp_path / "reference.safetensors"), metadata=metadata)
    reads = []

    def lazy(array):
        return LazyArray(array.shape, array.dtype, lambda: reads.append(1) or array.copy())

    save_file({k: lazy(v) for k, v in tensors.items()}, tmp_path / "streamed.safetensors", metadata=metadata)
    assert (tmp_path / "streamed.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()
    assert len(reads) == len(tensors)  # each tensor read once, when written
