"""`scripts/bench.py --large`: wall time and peak memory of rnnx on Keras 2 files of 1 GiB and 2.7 GiB.

    python scripts/bench_large.py [FOLDER] [--whole]     (--whole: only the whole-model files)

Builds with h5py, in a temporary folder (--dir; several GB of free disk needed), the files of
issue 12: CuDNNLSTM(4096) layers on 4096 inputs, float32, as `save_weights` writes them (2 layers:
1.07 GB; 5 layers: 2.68 GB; each kernel and recurrent kernel 268 MB). Then, each in a fresh
process, measures wall time and peak RSS of `cp` of the file, `rnnx inspect`, `rnnx convert` to
every target (.keras is refused: a weights file has no architecture) and, for the 2.7 GiB file,
`rnnx convert` to ONNX (external data, automatically), onnxruntime loading it and `rnnx verify`
of the result. Then two whole-model files of 1.07 GB (tf_keras's model.save layout: model_config and
/model_weights) of Sequential([CuDNNLSTM(4096, return_sequences=True), CuDNNLSTM(4096), Dense(16)]) on
4096 inputs, and the same with LSTM layers, each converted to `.onnx` and to `--to torch-model`, and
the `.onnx` run by onnxruntime on a short input. Each rnnx command is also run on a tiny file of the
same kind (one LSTM(8); a whole model of 8 units): its peak RSS is the import floor the goals are
measured from. Results are deleted as soon as they are measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

UNITS = INPUTS = 4096
GATES = 4
TARGETS = (".h5", ".onnx", ".pt", ".safetensors", ".rnnx", ".weights.h5", ".keras")
LARGEST_TENSOR = INPUTS * GATES * UNITS * 4  # bytes of one kernel

MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"wall": wall, "peak": peak, "rc": done.returncode, "err": done.stderr[-1500:]}))
"""

ORT_LOAD = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, 4096)).astype(np.float32)
feeds = {i.name: x for i in session.get_inputs() if i.name.endswith("_X")}
print([o.shape for o in session.run(None, feeds)][:1])
"""

ORT_RUN_WHOLE = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, 4096)).astype(np.float32)
(y,) = session.run(None, {session.get_inputs()[0].name: x})
assert y.shape == (1, 16) and np.isfinite(y).all(), y
"""
WHOLE_TARGETS = ((".onnx", "convert -> .onnx (whole model)", ()),
                 (".py", "convert -> torch-model (whole model)", ("--to", "torch-model")))


def write_cudnn_weights(path: Path, layers: int, units: int = UNITS, inputs: int = INPUTS, seed: int = 0) -> None:
    """A Keras 2 weights file (save_weights layout) of `layers` CuDNNLSTM layers, written block by block."""
    import h5py

    rng = np.random.default_rng(seed)
    names = [f"cudnn_lstm_{k + 1}" for k in range(layers)]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for k, name in enumerate(names):
            group = f.create_group(name)
            weights = [f"{name}/kernel:0", f"{name}/recurrent_kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([w.encode() for w in weights])
            rows = inputs if k == 0 else units
            for wname, shape in zip(weights, ((rows, GATES * units), (units, GATES * units), (2 * GATES * units,))):
                ds = group.create_dataset(wname, shape, np.float32)
                if len(shape) == 1:
                    ds[...] = rng.uniform(-0.05, 0.05, shape).astype(np.float32)
                    continue
                for start in range(0, shape[0], 256):
                    block = rng.uniform(-0.05, 0.05, (min(256, shape[0] - start), shape[1])).astype(np.float32)
                    ds[start:start + len(block)] = block


def whole_model_config(cell: str, units: int = UNITS, inputs: int = INPUTS, outputs: int = 16) -> str:
    """The model_config JSON tf_keras writes for Sequential([InputLayer((None, None, inputs)),
    CELL(units, return_sequences=True), CELL(units), Dense(outputs)]), CELL "cudnn" (CuDNNLSTM) or "lstm".

    tf_keras saves a twin with 8 units on 8 inputs (building the real one would allocate and
    initialise every weight); only its sizes are then changed."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import h5py
    import tf_keras
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    layer = {"cudnn": CuDNNLSTM, "lstm": tf_keras.layers.LSTM}[cell]
    twin = tf_keras.Sequential([
        tf_keras.layers.InputLayer(batch_input_shape=(None, None, 8), name="x"),
        layer(8, return_sequences=True, name=f"{cell}_1"), layer(8, name=f"{cell}_2"),
        tf_keras.layers.Dense(4, name="dense")], name=f"big_{cell}")
    with tempfile.TemporaryDirectory() as tmp:
        twin.save(Path(tmp) / "twin.h5")
        with h5py.File(Path(tmp) / "twin.h5", "r") as f:
            config = json.loads(f.attrs["model_config"])
    for entry in config["config"]["layers"]:
        layer_config = entry["config"]
        if entry["class_name"] == "InputLayer":
            layer_config["batch_input_shape"] = [None, None, inputs]
        elif entry["class_name"] == "Dense":
            layer_config["units"] = outputs
        else:
            layer_config["units"] = units
    return json.dumps(config)


def write_whole_model(path: Path, cell: str = "cudnn", units: int = UNITS, inputs: int = INPUTS,
                      outputs: int = 16, seed: int = 0) -> None:
    """A Keras 2 full-model .h5 (model_config + /model_weights, as tf_keras's model.save writes it) of
    whole_model_config(cell, ...), its weights written block by block with h5py (never whole in memory)."""
    import h5py

    config = whole_model_config(cell, units, inputs, outputs)
    rng = np.random.default_rng(seed)
    names = [f"{cell}_1", f"{cell}_2", "dense"]
    bias = 2 * GATES * units if cell == "cudnn" else GATES * units
    cell_path = "" if cell == "cudnn" else "lstm_cell/"
    shapes = {names[0]: [("kernel", (inputs, GATES * units)), ("recurrent_kernel", (units, GATES * units)),
                         ("bias", (bias,))],
              names[1]: [("kernel", (units, GATES * units)), ("recurrent_kernel", (units, GATES * units)),
                         ("bias", (bias,))],
              "dense": [("kernel", (units, outputs)), ("bias", (outputs,))]}
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = tf_keras_version()
        f.attrs["model_config"] = config
        weights = f.create_group("model_weights")
        weights.attrs["backend"] = "tensorflow"
        weights.attrs["keras_version"] = tf_keras_version()
        weights.attrs["layer_names"] = names
        for name in names:
            group = weights.create_group(name)
            inner = "" if name == "dense" else cell_path
            wnames = [f"{name}/{inner}{w}:0" for w, _ in shapes[name]]
            group.attrs["weight_names"] = wnames
            for wname, (_, shape) in zip(wnames, shapes[name]):
                ds = group.create_dataset(wname, shape, np.float32)
                scale = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.05
                for start in range(0, shape[0], 256 if len(shape) == 2 else shape[0]):
                    rows = min(256, shape[0] - start) if len(shape) == 2 else shape[0]
                    block = rng.uniform(-scale, scale, (rows, *shape[1:])).astype(np.float32)
                    ds[start:start + rows] = block
        weights.create_group("top_level_model_weights").attrs["weight_names"] = np.array([], np.float64)


def tf_keras_version() -> str:
    import tf_keras

    return tf_keras.__version__


def _measure(command: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)], capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rnnx(*args) -> list[str]:
    return [sys.executable, "-m", "rnnx", *map(str, args)]


def _clear(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


def run_large(folder: str | None = None, whole_only: bool = False) -> str:
    """The table; `whole_only`: only the whole-model files' rows (2.2 GB of disk at most instead of 5.4)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnx-large-", dir=folder) as tmp:
        tmp = Path(tmp)
        if whole_only:
            return _table(_whole_model_rows(tmp))
        tiny = tmp / "tiny.h5"
        write_cudnn_weights(tiny, 1, units=8, inputs=8)
        floors = {}
        for target in TARGETS:
            _clear(tmp / f"tiny_out{target}")
            floors[target] = _measure(_rnnx("convert", tiny, tmp / f"tiny_out{target}"))["peak"]
            _clear(tmp / f"tiny_out{target}")
        floors["inspect"] = _measure(_rnnx("inspect", tiny))["peak"]
        for label, layers in (("1 GiB", 2), ("2.7 GiB", 5)):
            src = tmp / f"large_{layers}.h5"
            write_cudnn_weights(src, layers)
            size = src.stat().st_size
            cp = _measure(["cp", src, tmp / "copy.h5"])
            (tmp / "copy.h5").unlink()
            rows.append((label, size, "cp", cp, None, cp["wall"]))
            rows.append((label, size, "rnnx inspect", _measure(_rnnx("inspect", src)), floors["inspect"], cp["wall"]))
            targets = TARGETS if layers == 2 else (".onnx",)
            for target in targets:
                dst = tmp / f"out{target}"
                result = _measure(_rnnx("convert", src, dst))
                rows.append((label, size, f"convert -> {target}", result, floors[target], cp["wall"]))
                if target == ".onnx" and layers == 5:
                    rows.append((label, size, "onnxruntime loads the .onnx", _measure(
                        [sys.executable, "-c", ORT_LOAD, dst]), None, cp["wall"]))
                    rows.append((label, size, "rnnx verify (src, .onnx)",
                                 _measure(_rnnx("verify", src, dst)), None, cp["wall"]))
                _clear(dst)
            src.unlink()
        rows += _whole_model_rows(tmp)
    return _table(rows)


def _whole_model_rows(tmp: Path) -> list:
    rows = []
    for cell, layer in (("cudnn", "CuDNNLSTM"), ("lstm", "LSTM")):
        tiny = tmp / f"tiny_{cell}.h5"
        write_whole_model(tiny, cell, units=8, inputs=8)
        floors = {}
        for suffix, _, options in WHOLE_TARGETS:
            floors[suffix] = _measure(_rnnx("convert", tiny, tmp / f"tiny_out{suffix}", *options))["peak"]
            _clear(tmp / "tiny_out")
        src = tmp / f"whole_{cell}.h5"
        write_whole_model(src, cell)
        label, size = f"1 GiB whole model, {layer}", src.stat().st_size
        cp = _measure(["cp", src, tmp / "copy.h5"])
        (tmp / "copy.h5").unlink()
        rows.append((label, size, "cp", cp, None, cp["wall"]))
        for suffix, command, options in WHOLE_TARGETS:
            dst = tmp / f"out{suffix}"
            rows.append((label, size, command, _measure(_rnnx("convert", src, dst, *options)), floors[suffix],
                         cp["wall"]))
            if suffix == ".onnx":
                rows.append((label, size, "onnxruntime runs the .onnx (whole model)",
                             _measure([sys.executable, "-c", ORT_RUN_WHOLE, dst]), None, cp["wall"]))
            _clear(tmp / "out")
        src.unlink()
    return rows


def _table(rows) -> str:
    mib = 1 << 20
    lines = ["| file | command | exit | wall | wall / cp | peak RSS | import floor | above floor | "
             "above floor / largest tensor |", "|---|---|---|---|---|---|---|---|---|"]
    for label, size, command, result, floor, cp_wall in rows:
        # a peak a little under the floor (the same process on a tiny file) is at the floor: 0, not -0
        above = "" if floor is None else f"{max(0, result['peak'] - floor) / mib:.0f} MiB"
        ratio = "" if floor is None else f"{max(0, result['peak'] - floor) / LARGEST_TENSOR:.2f}"
        lines.append(f"| {label} ({size / 1e9:.2f} GB) | {command} | {result['rc']} | {result['wall']:.2f} s | "
                     f"{result['wall'] / cp_wall:.1f} | {result['peak'] / mib:.0f} MiB | "
                     f"{'' if floor is None else f'{floor / mib:.0f} MiB'} | {above} | {ratio} |")
    failures = [f"{command} ({label}): {result['err'].strip().splitlines()[-1] if result['err'].strip() else ''}"
                for label, _, command, result, _, _ in rows if result["rc"]]
    if failures:
        lines += ["", "Non-zero exits: " + "; ".join(failures)]
    return "\n".join(lines)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--whole"]
    print(run_large(args[0] if args else None, whole_only="--whole" in sys.argv[1:]))
