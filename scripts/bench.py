"""Whole Keras model -> ONNX: `rnnx convert` against the tf_keras + tf2onnx route.

    python scripts/bench.py [--repeats 3] [--runs 20] [--write-readme]
    python scripts/bench.py --large [--dir FOLDER] [--write-readme]     (see scripts/bench_large.py)

Builds two models with tf_keras in a temporary folder (the seed model: Input(50, 64) ->
CuDNNLSTM(512, return_sequences) -> CuDNNLSTM(512) -> Dropout -> Dense(10) -> softmax; and a
larger one: Embedding(5000, 128) -> Bidirectional(CuDNNLSTM(512)) x 2 -> TimeDistributed(Dense(10))),
then measures, each route in a fresh process:

- wall time and peak memory (max RSS of the process) of `rnnx convert model.h5 model.onnx`, and of
  a script doing what a user of the anchor does: import TensorFlow, tf_keras and tf2onnx, load the
  CPU model (tf2onnx refuses CuDNN layers), `tf2onnx.convert.from_keras`;
- onnxruntime latency of both exports at batch 1 and batch 32 (median of --runs runs);
- the largest difference of both exports from tf_keras's predictions (the CPU model into which
  tf_keras's own load_weights converted the CuDNN weights).

Prints a markdown table; --write-readme puts it into README.md's `graph` section. Ratios are
reported, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEQ, FEATURES, CLASSES, VOCAB = 50, 64, 10, 5000
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}

BUILD = textwrap.dedent("""
    import sys, numpy as np, tf_keras
    from tf_keras import layers as L
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM
    out = sys.argv[1]
    tf_keras.utils.set_random_seed(0)

    def seed(lstm):
        x = L.Input(({seq}, {features}), name="features")
        h = lstm(512, return_sequences=True, name="lstm_1")(x)
        h = lstm(512, name="lstm_2")(h)
        h = L.Dropout(0.2, name="dropout")(h)
        y = L.Activation("softmax", name="softmax")(L.Dense({classes}, name="dense")(h))
        return tf_keras.Model(x, y, name="seed")

    def larger(lstm):
        x = L.Input(({seq},), name="tokens")
        h = L.Embedding({vocab}, 128, name="embedding")(x)
        h = L.Bidirectional(lstm(512, return_sequences=True), name="bi_1")(h)
        h = L.Bidirectional(lstm(512, return_sequences=True), name="bi_2")(h)
        y = L.TimeDistributed(L.Dense({classes}), name="td_dense")(h)
        return tf_keras.Model(x, y, name="larger")

    rng = np.random.default_rng(0)
    for name, build in (("seed", seed), ("larger", larger)):
        model = build(CuDNNLSTM)
        model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
        model.save(f"{{out}}/{{name}}_cudnn.h5")
        cpu = build(lambda *a, **k: L.LSTM(*a, **k))
        cpu.load_weights(f"{{out}}/{{name}}_cudnn.h5")  # tf_keras's own CuDNN -> CPU conversion
        cpu.save(f"{{out}}/{{name}}_cpu.h5")
""").format(seq=SEQ, features=FEATURES, classes=CLASSES, vocab=VOCAB)

TF2ONNX_ROUTE = textwrap.dedent("""
    import sys
    import tensorflow as tf, tf_keras, tf2onnx
    model = tf_keras.models.load_model(sys.argv[1], compile=False)
    spec = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=14, output_path=sys.argv[2])
""")

MEASURE = textwrap.dedent("""
    import resource, subprocess, sys, time, json
    start = time.perf_counter()
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"wall": wall, "peak_mib": peak_kib / 1024, "rc": done.returncode, "err": done.stderr[-2000:]}))
""")

ACCURACY = textwrap.dedent("""
    import sys, json, numpy as np, onnxruntime as ort, tf_keras
    cpu, exports, kind = sys.argv[1], sys.argv[2:4], sys.argv[4]
    model = tf_keras.models.load_model(cpu, compile=False)
    rng = np.random.default_rng(1)
    if kind == "tokens":
        x = rng.integers(0, {vocab}, (4, {seq})).astype(np.float32)
    else:
        x = rng.normal(0, 1, (4, {seq}, {features})).astype(np.float32)
    expected = model.predict(x, verbose=0)
    errors = []
    for path in exports:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        feed = x.astype(np.int32) if "int" in session.get_inputs()[0].type else x
        errors.append(float(np.max(np.abs(session.run(None, {{name: feed}})[0] - expected))))
    print(json.dumps(errors))
""").format(vocab=VOCAB, seq=SEQ, features=FEATURES)

LATENCY = textwrap.dedent("""
    import sys, json, time, statistics, numpy as np, onnxruntime as ort
    paths, kind, runs = sys.argv[1:3], sys.argv[3], int(sys.argv[4])
    sessions = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]) for p in paths]
    rng = np.random.default_rng(2)
    result = [{{}}, {{}}]
    for batch in (1, 32):
        if kind == "tokens":
            x = rng.integers(0, {vocab}, (batch, {seq}))
        else:
            x = rng.normal(0, 1, (batch, {seq}, {features}))
        feeds = []
        for session in sessions:
            info = session.get_inputs()[0]
            feeds.append({{info.name: x.astype(np.int32 if "int" in info.type else np.float32)}})
            session.run(None, feeds[-1])  # warm up
        times = [[], []]
        for i in range(runs):  # interleaved, order alternating, so that load from elsewhere hits both alike
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                sessions[k].run(None, feeds[k])
                times[k].append(time.perf_counter() - start)
        for k in range(2):
            result[k][batch] = statistics.median(times[k]) * 1000
    print(json.dumps(result))
""").format(vocab=VOCAB, seq=SEQ, features=FEATURES)


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV)
    if done.returncode:
        raise SystemExit(f"bench step failed:\n{done.stderr[-3000:]}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def _measure(command: list[str]) -> dict:
    """Wall time and peak RSS of `command` run in a fresh process (under a small parent that reads its rusage)."""
    result = json.loads(_python(MEASURE, *command))
    if result["rc"]:
        raise SystemExit(f"{command} failed:\n{result['err']}")
    return result


def _route_figures(command: list[str], repeats: int) -> dict:
    runs = [_measure(command) for _ in range(repeats)]
    return {"wall": statistics.median(r["wall"] for r in runs), "peak_mib": max(r["peak_mib"] for r in runs)}


def _latency(native: Path, anchor: Path, kind: str, runs: int) -> list[dict]:
    """Median latencies of both exports, measured in two processes with their places swapped (the
    session created first ran measurably slower here), averaged."""
    first = json.loads(_python(LATENCY, str(native), str(anchor), kind, str(runs)))
    second = json.loads(_python(LATENCY, str(anchor), str(native), kind, str(runs)))[::-1]
    return [{batch: (a[batch] + b[batch]) / 2 for batch in a} for a, b in zip(first, second)]


def _ops(path: Path) -> str:
    import onnx

    ops = [n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node]
    counts = {op: ops.count(op) for op in ("LSTM", "Loop", "Scan")}
    return ", ".join(f"{op} x{n}" for op, n in counts.items() if n) or "no recurrent op"


def _compile_rnnx() -> None:
    """Give rnnx the bytecode an installed package has (pip compiles on install). A source
    checkout under PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every
    run; the anchor's packages in site-packages already have theirs."""
    import compileall

    import rnnx

    compileall.compile_dir(Path(rnnx.__file__).parent, quiet=1)


def run(repeats: int, runs: int) -> str:
    _compile_rnnx()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnx-bench-") as tmp:
        tmp = Path(tmp)
        _python(BUILD, str(tmp))
        for name, kind in (("seed", "features"), ("larger", "tokens")):
            cudnn, cpu = tmp / f"{name}_cudnn.h5", tmp / f"{name}_cpu.h5"
            native, anchor = tmp / f"{name}_rnnx.onnx", tmp / f"{name}_tf2onnx.onnx"
            rnnx_route = _route_figures([sys.executable, "-m", "rnnx", "convert", str(cudnn), str(native)], repeats)
            tf_route = _route_figures([sys.executable, "-c", TF2ONNX_ROUTE, str(cpu), str(anchor)], repeats)
            errors = json.loads(_python(ACCURACY, str(cpu), str(native), str(anchor), kind))
            latency = _latency(native, anchor, kind, runs)
            rows.append((name, rnnx_route, tf_route, errors, latency, _ops(native), _ops(anchor)))
    return _table(rows, repeats, runs)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("onnxruntime", "tensorflow-cpu", "tf-keras", "tf2onnx"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def _table(rows, repeats: int, runs: int) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"Measured {today} on {_machine()}; {_versions()}. Each conversion ran {repeats} times in a fresh "
        f"process (median wall time, largest peak RSS; rnnx with its modules byte-compiled, as an installed "
        f"package has them; the tf_keras + tf2onnx route starts from the CPU model, its CuDNN layers already "
        f"rewritten); onnxruntime latency is the median of {runs} runs after "
        f"a warm-up, the two exports' runs interleaved in one process, averaged over two processes with the "
        f"sessions' order swapped; errors are max |ONNX - tf_keras predict| on 4 random inputs.",
        "",
        "| model | route | convert wall | peak RSS | ORT batch 1 | ORT batch 32 | max error vs tf_keras | ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, native, anchor, errors, latency, native_ops, anchor_ops in rows:
        label = {"seed": "seed: CuDNNLSTM(512) x 2 + Dense(10)",
                 "larger": "Embedding + Bidirectional(CuDNNLSTM(512)) x 2 + TimeDistributed(Dense)"}[name]
        for route, figures, error, lat, ops in (("`rnnx convert`", native, errors[0], latency[0], native_ops),
                                                ("tf_keras + tf2onnx", anchor, errors[1], latency[1], anchor_ops)):
            lines.append(f"| {label} | {route} | {figures['wall']:.2f} s | {figures['peak_mib']:.0f} MiB | "
                         f"{lat['1']:.2f} ms | {lat['32']:.1f} ms | {error:.1e} | {ops} |")
        lines.append(f"| {label} | ratio | {anchor['wall'] / native['wall']:.1f}x faster | "
                     f"{native['peak_mib'] / anchor['peak_mib']:.0%} of tf2onnx's | "
                     f"{latency[0]['1'] / latency[1]['1']:.2f} | {latency[0]['32'] / latency[1]['32']:.2f} | | |")
    lines += ["", "Ratio row: conversion speed-up of rnnx, its peak memory as a share of the tf2onnx route's, "
              "and rnnx's ORT latency divided by tf2onnx's (below 1: rnnx's graph runs faster)."]
    return "\n".join(lines)


def write_readme(table: str, block: str = "bench") -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- {block}: start -->", f"<!-- {block}: end -->"
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} block")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{table}\n{end}{after}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="conversions per route (median wall time)")
    parser.add_argument("--runs", type=int, default=40, help="onnxruntime runs per batch size (median)")
    parser.add_argument("--write-readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--large", action="store_true", help="the 1 GiB and 2.7 GiB Keras files of issue 12: wall "
                        "time and peak memory of cp and of every conversion (scripts/bench_large.py)")
    parser.add_argument("--dir", help="with --large: where to build the files (several GB free)")
    args = parser.parse_args(argv)
    if args.large:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_large import run_large

        table = run_large(args.dir)
        print(table)
        if args.write_readme:
            write_readme(table, "large")
        return 0
    table = run(args.repeats, args.runs)
    print(table)
    if args.write_readme:
        write_readme(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
