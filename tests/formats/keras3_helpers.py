"""Helpers shared by the Keras 3 tests: HDF5 trees, zips, the tf_keras oracle of the keras2 fixtures."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
KERAS2 = FIXTURES / "keras2"
KERAS3 = FIXTURES / "keras3"


def h5_datasets(source) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (path or bytes), keyed by its path with backslashes made slashes."""
    import h5py

    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    out = {}
    with h5py.File(handle, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n.replace("\\", "/"), o[...]) if isinstance(o, h5py.Dataset)
                     else None)
    return out


def same_arrays(a: dict, b: dict, skip_prefix: str = "optimizer") -> bool:
    """Same paths, dtypes, shapes and bytes (optimizer state left aside)."""
    a = {k: v for k, v in a.items() if not k.startswith(skip_prefix)}
    b = {k: v for k, v in b.items() if not k.startswith(skip_prefix)}
    return sorted(a) == sorted(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a)


def archive_member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def archive_config(path: Path) -> dict:
    return json.loads(archive_member(path, "config.json"))


def tf_keras_cpu_twin(name: str):
    """The tf_keras CPU model of keras2 fixture `name`, holding the CuDNN weights via tf_keras's own converting
    load_weights: the oracle for every conversion of a CuDNN fixture."""
    import tf_keras

    model = tf_keras.models.model_from_json((KERAS2 / f"{name}_cpu.json").read_text())
    model.load_weights(str(KERAS2 / f"{name}_weights.h5"))
    return model


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())
