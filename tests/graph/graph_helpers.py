"""Helpers of the whole-model tests: the framework that wrote each file computes the expected outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOLERANCE = 1e-5
CUDNN_TWINS = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}


def cpu_twin_config(model_config: dict) -> dict:
    """The model config with every CuDNN layer replaced by the CPU layer tf_keras converts its weights into."""
    config = copy.deepcopy(model_config)

    def visit(node):
        if isinstance(node, dict):
            if node.get("class_name") in CUDNN_TWINS:
                inner = node["config"]
                keep = {k: inner[k] for k in ("name", "trainable", "units", "return_sequences", "return_state",
                                               "go_backwards", "stateful", "batch_input_shape", "dtype")
                        if k in inner}
                keep.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True)
                if node["class_name"] == "CuDNNGRU":
                    keep["reset_after"] = True
                node["class_name"] = CUDNN_TWINS[node["class_name"]]
                node["config"] = keep
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return config


def load_keras2(path: Path, config_json: Path | None = None):
    """The tf_keras model of a Keras 2 file; CuDNN layers become CPU layers through tf_keras's own
    converting load_weights."""
    import h5py
    import tf_keras

    if config_json is not None:
        model = tf_keras.models.model_from_json(Path(config_json).read_text())
        model.load_weights(str(path))
        return model
    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if "CuDNN" not in json.dumps(config):
        return tf_keras.models.load_model(str(path), compile=False)
    model = tf_keras.models.model_from_json(json.dumps(cpu_twin_config(config)))
    model.load_weights(str(path))
    return model


def random_inputs(onnx_model: onnx.ModelProto, keras_inputs, seed: int = 0, batch: int = 3, steps: int = 9,
                  vocab: int = 10, pad: bool = True, tokens: bool = False) -> dict[str, np.ndarray]:
    """Random feeds for the graph inputs (batch `batch`, `steps` where the length is free),
    right-padded with zeros when `pad` (at least one row full length).

    Integer inputs (and every input when `tokens`) hold token ids in [1, vocab)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    graph_inputs = [i for i in onnx_model.graph.input
                    if i.name not in {init.name for init in onnx_model.graph.initializer}]
    for value_info, keras_input in zip(graph_inputs, keras_inputs):
        shape = [d if d is not None else (batch if k == 0 else steps) for k, d in enumerate(keras_input.shape)]
        elem = value_info.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if tokens or np.issubdtype(dtype, np.integer):
            data = rng.integers(1, vocab, shape).astype(dtype)
        else:
            data = rng.normal(0.0, 1.0, shape).astype(dtype)
        if pad and len(shape) >= 2:
            lengths = rng.integers(2, shape[1] + 1, shape[0])
            lengths[0] = shape[1]  # one full-length row
            steps = np.arange(shape[1])[None, :]
            padding = steps >= lengths[:, None]
            data[padding] = 0
        feeds[value_info.name] = data
    return feeds


def run_onnx(path: Path, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # stateful layers' optional state inputs draw a warning
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def keras_outputs(model, feeds: dict, input_names: list[str]) -> list[np.ndarray]:
    """The model's outputs (a list) on the feeds of its inputs, in the order of `input_names`."""
    xs = [feeds[n] for n in input_names]
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def max_error(expected, actual) -> float:
    expected = expected if isinstance(expected, list) else [expected]
    assert len(actual) >= len(expected), f"{len(actual)} ONNX outputs for {len(expected)} Keras outputs"
    worst = 0.0
    for k, e in enumerate(expected):
        e = np.asarray(e)
        a = np.asarray(actual[k])
        assert a.shape == e.shape, f"output {k}: ONNX shape {a.shape}, Keras shape {e.shape}"
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)), initial=0.0)))
    return worst


def check_graph(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan", "If"}, f"control flow in the graph: {ops & {'Loop', 'Scan', 'If'}}"
    return model
