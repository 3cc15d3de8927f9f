"""Helpers of the PyTorch model tests: write a Keras model as .py + .safetensors, import and run it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np


def import_model(path: Path, weights: Path | None = None):
    """Model() of the generated file at `path`, its state dict loaded strictly, in eval mode."""
    import safetensors.torch

    name = f"rnnx_generated_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # torch.jit.script looks the module up by name
    spec.loader.exec_module(module)
    model = module.Model()
    model.load_state_dict(safetensors.torch.load_file(str(weights or path.with_suffix(".safetensors"))), strict=True)
    return model.eval()


def run_torch(model, feeds: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    # One intra-op thread: the step loop's many small ops ran 45x slower with two threads on the shared
    # 2-core test machine (medaka_bigru: 30 s against 0.66 s).
    torch.set_num_threads(1)
    with torch.no_grad():
        out = model(*[torch.from_numpy(np.ascontiguousarray(f)) for f in feeds])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def keras_feeds(keras_model, seed: int = 0, batch: int = 3, steps: int = 9, vocab: int = 10, pad: bool = True,
                tokens: bool = False) -> list[np.ndarray]:
    """Random inputs of the Keras model (batch `batch`, `steps` where the length is free), right-padded
    with zeros when `pad` (one row full length). Integer inputs (and all with `tokens`) are ids in [1, vocab)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for keras_input in keras_model.inputs:
        shape = [d if d is not None else (batch if k == 0 else steps) for k, d in enumerate(keras_input.shape)]
        dtype = np.dtype(getattr(keras_input.dtype, "name", keras_input.dtype))
        if tokens or np.issubdtype(dtype, np.integer):
            data = rng.integers(1, vocab, shape).astype(dtype)
        else:
            data = rng.normal(0.0, 1.0, shape).astype(dtype)
        if pad and len(shape) >= 2:
            lengths = rng.integers(2, shape[1] + 1, shape[0])
            lengths[0] = shape[1]
            data[np.arange(shape[1])[None, :] >= lengths[:, None]] = 0
        feeds.append(data)
    return feeds


def keras_predict(keras_model, feeds: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(feeds if len(feeds) > 1 else feeds[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def max_error(expected: list, actual: list) -> float:
    assert len(actual) == len(expected), f"{len(actual)} torch outputs for {len(expected)} Keras outputs"
    worst = 0.0
    for k, (e, a) in enumerate(zip(expected, actual)):
        assert a.shape == e.shape, f"output {k}: torch shape {a.shape}, Keras shape {e.shape}"
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)), initial=0.0)))
    return worst
