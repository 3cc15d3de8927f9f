"""`rnnx demo`: convert the bundled CuDNNLSTM model and show that the result computes the same numbers.

The expected numbers were computed by tf_keras itself (scripts/make_demo_data.py): its own
converting `load_weights` of the CuDNN model into the CPU LSTM model, then `predict`.
No TensorFlow is needed here: the converted files are run with rnnx's numpy reference
(Keras .h5) and onnxruntime (.onnx).
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

from .api import convert, load
from .canonical import Bundle, Direction, RecurrentLayer, reference
from .canonical.gates import gate_count

TOLERANCE = 1e-5


def run_demo() -> int:
    data = resources.files("rnnx") / "data"
    with resources.as_file(data / "demo_cudnnlstm.h5") as src, resources.as_file(data / "demo_expected.npz") as npz:
        expected = dict(np.load(npz))
        with tempfile.TemporaryDirectory() as tmp:
            rows = _compare(Path(src), Path(tmp), expected)
    _print_table(rows)
    ok = all(err <= TOLERANCE for _, _, _, err, counts in rows if counts)
    naive = max(err for _, _, _, err, counts in rows if not counts)
    if ok:
        print(f"\nrnnx's conversions reproduce tf_keras's outputs within {TOLERANCE:g}; the usual web recipe "
              f"(sum the bias halves, transpose the kernels) is off by up to {naive:.2g}.")
        print("Do the same with your own file: rnnx convert model.h5 model.onnx --verify")
    else:
        print("\nA conversion did NOT reproduce tf_keras's outputs; please report this.")
    return 0 if ok else 1


def _compare(src: Path, tmp: Path, expected: dict) -> list[tuple]:
    x = expected["x"]
    source = load(src)
    print(f"Example: {src.name}, a tf_keras model with "
          + ", ".join(f"{l.provenance.get('class_name', l.cell)}({l.units}) {l.name!r}" for l in source.layers)
          + " and a Dense head. cuDNN-only: it does not run on a CPU and does not load in Keras 3.")
    rows = []

    naive = Bundle([_naive(layer) for layer in source.layers])
    rows.append(("web recipe (bias halves summed, kernels transposed)", "numpy reference", "lstm_2 output",
                 _max_diff(_stack_last(naive, x), expected["lstm_2"]), False))

    h5 = tmp / "demo_cpu.h5"
    convert(src, h5)
    cpu = load(h5)
    rows.append((f"rnnx -> {h5.name} (LSTM layers)", "numpy reference", "lstm_1 sequence",
                 _max_diff(_run(cpu.layers[0], x), expected["lstm_1"]), True))
    rows.append((f"rnnx -> {h5.name} (LSTM layers)", "numpy reference", "lstm_2 output",
                 _max_diff(_stack_last(cpu, x), expected["lstm_2"]), True))

    onnx_path = tmp / "demo.onnx"
    convert(src, onnx_path)
    rows.append((f"rnnx -> {onnx_path.name}", "onnxruntime", "model output", _onnx_diff(onnx_path, x, expected), True))
    return rows


def _run(layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    Y, _, _ = reference.run_batch_first(layer, x)
    return Y.reshape(Y.shape[0], Y.shape[1], -1)


def _stack_last(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    h = x
    for layer in bundle.layers:
        h = _run(layer, h)
    return h[:, -1]


def _naive(layer: RecurrentLayer) -> RecurrentLayer:
    """What the copied fix computes: each CuDNN gate block transposed instead of reshaped."""
    n, u = gate_count(layer.cell), layer.units

    def transposed(M):
        return np.concatenate([blk.reshape(M.shape[1], u).T for blk in np.split(M, n)])

    d = layer.directions[0]
    return RecurrentLayer(layer.name, layer.cell, [Direction(transposed(d.W), transposed(d.R), d.fused_bias())])


def _onnx_diff(path: Path, x: np.ndarray, expected: dict) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0].name
    outputs = session.run(None, {first: x})
    return _max_diff(outputs[0], expected["output"])


def _max_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max())


def _print_table(rows):
    head = ("conversion", "runs in", "compared", "max |diff| vs tf_keras")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(3)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  " + head[3])
    for name, runtime, what, err, _ in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip((name, runtime, what), widths)) + f"  {err:.2e}")
