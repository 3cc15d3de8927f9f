"""`scripts/bench.py --large`: wall time and peak memory of rnnx on Keras weights files of 1 GiB and 2.7 GiB.

Builds with h5py, in a temporary folder (--dir; several GB of free disk needed), the files of
issue 12: CuDNNLSTM(4096) layers on 4096 inputs, float32, as `save_weights` writes them (2 layers:
1.07 GB; 5 layers: 2.68 GB; each kernel and recurrent kernel 268 MB). Then, each in a fresh
process, measures wall time and peak RSS of `cp` of the file, `rnnx inspect`, `rnnx convert` to
every target (.keras is refused: a weights file has no architecture) and, for the 2.7 GiB file,
`rnnx convert` to ONNX (external data, automatically), onnxruntime loading it and `rnnx verify`
of the result. Each rnnx command is also run on a tiny file of the same kind (one LSTM(8)): its
peak RSS is the import floor the goals are measured from. Results are deleted as soon as they
are measured.
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


def _measure(command: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, command)], capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rnnx(*args) -> list[str]:
    return [sys.executable, "-m", "rnnx", *map(str, args)]


def _clear(path: Path) -> None:
    for p in path.parent.glob(path.name + "*"):
        p.unlink()


def run_large(folder: str | None = None) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnx-large-", dir=folder) as tmp:
        tmp = Path(tmp)
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
    return _table(rows)


def _table(rows) -> str:
    mib = 1 << 20
    lines = ["| file | command | exit | wall | wall / cp | peak RSS | import floor | above floor | "
             "above floor / largest tensor |", "|---|---|---|---|---|---|---|---|---|"]
    for label, size, command, result, floor, cp_wall in rows:
        above = "" if floor is None else f"{(result['peak'] - floor) / mib:.0f} MiB"
        ratio = "" if floor is None else f"{(result['peak'] - floor) / LARGEST_TENSOR:.2f}"
        lines.append(f"| {label} ({size / 1e9:.2f} GB) | {command} | {result['rc']} | {result['wall']:.2f} s | "
                     f"{result['wall'] / cp_wall:.1f} | {result['peak'] / mib:.0f} MiB | "
                     f"{'' if floor is None else f'{floor / mib:.0f} MiB'} | {above} | {ratio} |")
    failures = [f"{command} ({label}): {result['err'].strip().splitlines()[-1] if result['err'].strip() else ''}"
                for label, _, command, result, _, _ in rows if result["rc"]]
    if failures:
        lines += ["", "Non-zero exits: " + "; ".join(failures)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run_large(sys.argv[1] if len(sys.argv) > 1 else None))
