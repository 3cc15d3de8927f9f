"""Whole Keras models to other frameworks: `export_model(bundle, path, **options)` writes ONNX.

Two parts:
- the Keras model graph, shared by every whole-model target: `config.py` parses a model's own
  config (Keras 2 model_config, a `model.to_json()` file, or a Keras 3 config.json) into one
  layer graph (`ModelSpec`: layers, their calls, the model's inputs and outputs), and `walk.py`
  visits its calls in order. They know nothing of ONNX or PyTorch.
- the ONNX backend, `to_onnx/`: one small converter per Keras layer class adds ONNX nodes
  (see to_onnx/registry.py and to_onnx/layers/). Recurrent layers become real ONNX LSTM / GRU /
  RNN ops. No TensorFlow is imported. The tf2onnx engine (`engine="tf2onnx"`,
  to_onnx/tf2onnx_engine.py) loads the model in tf_keras and hands it to tf2onnx instead; it
  needs the `tf` extra.
- the PyTorch backend, `to_torch/`: the same walk writing the source of an nn.Module
  (`to_torch/writer.py`, the `torch-model` format).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

ENGINES = ("native", "tf2onnx")

__all__ = ["export_model", "ENGINES"]


def export_model(bundle, path, opset: int | None = None, time_major: bool = False, engine: str | None = None,
                 external_data: bool | None = None, external_data_limit: int | None = None,
                 **_ignored) -> list[str]:
    """Write the whole Keras model held by `bundle` (model_config in bundle.source) to ONNX at `path`.

    Returns notes for the user. Options: opset (default 14), time_major (rank-3 inputs and
    outputs as [seq, batch, features]), engine ("native" or "tf2onnx"), external_data (None:
    only above external_data_limit bytes, protobuf's 2 GiB by default; True: always; False: never).
    The native engine streams the weights: see formats/onnx_format/external.py.
    """
    engine = engine or "native"
    if engine not in ENGINES:
        raise UsageError(f"Unknown ONNX engine {engine!r}; choose one of: {', '.join(ENGINES)}.")
    if engine == "tf2onnx":
        if external_data:
            raise UsageError("--external-data is written by rnnx's own ONNX builder; leave --engine tf2onnx out.")
        from .to_onnx.tf2onnx_engine import export_with_tf2onnx

        return export_with_tf2onnx(bundle, Path(path), opset=opset, time_major=time_major)
    from ..formats.onnx_format import external as external_weights
    from .to_onnx.builder import build_model

    limit = external_weights.PROTOBUF_LIMIT if external_data_limit is None else external_data_limit
    return external_weights.write_model(
        Path(path), lambda store: build_model(bundle, opset=opset, time_major=time_major, store=store),
        external=external_data, limit=limit)
