"""The tf2onnx engine: tf_keras loads the model, tf2onnx converts it.

The fallback for layers outside the native set, and the route the native engine is measured
against. TensorFlow, tf_keras and tf2onnx are imported here only, when this engine is asked
for. CuDNN layers are first rewritten into their CPU equivalents by rnnx's own Keras 2 writer
(tf_keras cannot run them without a GPU, and tf2onnx refuses them).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ...errors import UnsupportedError, UsageError
from ...io import atomic_output

NEEDS = "the tf2onnx engine needs TensorFlow, tf_keras and tf2onnx: pip install 'rnnx[tf]'"


def _import_stack():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
        import tf2onnx
        import tf_keras
    except ImportError as exc:
        raise UnsupportedError(f"{NEEDS} ({exc.name} is not installed); or use the native engine "
                               f"(--engine native).") from None
    return tf, tf_keras, tf2onnx


def load_tf_keras_model(bundle, workdir: Path):
    """The bundle's Keras 2 model in tf_keras, CuDNN layers rewritten into CPU layers."""
    from ... import api
    from ...formats.keras2 import config as keras2_config

    source = bundle.source
    if source.get("format") != "keras-h5":
        raise UnsupportedError(
            f"The tf2onnx engine takes Keras 2 models (tf_keras); {source.get('path', 'this file')} is "
            f"{source.get('format')}. The native engine converts it: --engine native.")
    if not source.get("model_config"):
        raise UsageError(f"{source.get('path', 'The file')} holds weights only; give the architecture with "
                         f"--config model.json (the output of model.to_json()).")
    _, tf_keras, _ = _import_stack()
    weights = workdir / "weights.h5"
    api.save(bundle, weights, to="keras-h5")  # CPU layouts of every recurrent layer
    config, _ = keras2_config.to_cpu(source["model_config"])
    try:
        model = tf_keras.models.model_from_json(json.dumps(config))
        model.load_weights(str(weights))
    except Exception as exc:  # a custom class, a Lambda (safe mode), a config this tf_keras cannot build
        reason = str(exc).split(". ")[0].rstrip(".")
        raise UnsupportedError(
            f"tf_keras could not rebuild the model of {source.get('path', 'this file')} ({reason}). Custom layers "
            f"and Lambda layers need their Python code: load the model yourself in tf_keras and use "
            f"tf2onnx.convert.from_keras.") from None
    return model


def export_with_tf2onnx(bundle, path: Path, opset: int | None = None, time_major: bool = False) -> list[str]:
    if time_major:
        raise UsageError("The tf2onnx engine writes batch-major inputs only; leave out --time-major.")
    tf, _, tf2onnx = _import_stack()
    with tempfile.TemporaryDirectory(prefix="rnnx-tf2onnx-") as tmp:
        model = load_tf_keras_model(bundle, Path(tmp))
        signature = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
        with atomic_output(path) as out:
            tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset or 14, output_path=str(out))
    return ["written by tf_keras + tf2onnx (--engine tf2onnx)"]
