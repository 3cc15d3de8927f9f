"""Whole Keras model -> ONNX: `rnnx convert` against the tf_keras + tf2onnx route.

    python scripts/bench.py [--repeats 3] [--runs 20] [--write-readme]
    python scripts/bench.py --torch [--write-readme]     # PyTorch model export vs hand-written nn.LSTM
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

With `--suite savedmodel` (or `all`, the default) also: the seed model with LSTM(512) layers saved as
a Keras SavedModel directory (`model.save("dir")`), `rnnx convert dir model.onnx` against
`python -m tf2onnx.convert --saved-model dir` (TensorFlow import included, as a user runs it).

Prints markdown tables; --write-readme puts them into README.md's `graph` and `tensorflow`
sections. Ratios are reported, never asserted.

    python scripts/bench.py --deploy [--runs 20] [--write-readme]

measures instead the deployment variants (`rnnx convert --quantize int8` / `--precision float16`)
against the float32 export: size, onnxruntime latency (batch 32 x 40 steps where the model leaves
them free, one thread, the three variants' runs interleaved, median) and the deviation rnnx reports,
for the seed model built as above, the small seed fixture and every full model of the corpus;
--write-readme puts that table into README.md's `deploying` section.
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

BUILD_SAVEDMODEL = textwrap.dedent("""
    import sys, numpy as np, tf_keras
    from tf_keras import layers as L
    tf_keras.utils.set_random_seed(0)
    x = L.Input(({seq}, {features}), name="features")
    h = L.LSTM(512, return_sequences=True, name="lstm_1")(x)
    h = L.LSTM(512, name="lstm_2")(h)
    h = L.Dropout(0.2, name="dropout")(h)
    y = L.Activation("softmax", name="softmax")(L.Dense({classes}, name="dense")(h))
    model = tf_keras.Model(x, y, name="seed")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    model.save(sys.argv[1])  # no suffix: a SavedModel directory, as TF 2.0-2.15 users have them
""").format(seq=SEQ, features=FEATURES, classes=CLASSES)

SAVEDMODEL_ACCURACY = textwrap.dedent("""
    import sys, json, numpy as np, onnxruntime as ort, tf_keras
    model = tf_keras.models.load_model(sys.argv[1], compile=False)
    x = np.random.default_rng(1).normal(0, 1, (4, {seq}, {features})).astype(np.float32)
    expected = model.predict(x, verbose=0)
    errors = []
    for path in sys.argv[2:4]:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        errors.append(float(np.max(np.abs(session.run(None, {{session.get_inputs()[0].name: x}})[0] - expected))))
    print(json.dumps(errors))
""").format(seq=SEQ, features=FEATURES)

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


def run_savedmodel(repeats: int) -> str:
    _compile_rnnx()
    with tempfile.TemporaryDirectory(prefix="rnnx-bench-") as tmp:
        tmp = Path(tmp)
        saved = tmp / "seed_savedmodel"
        _python(BUILD_SAVEDMODEL, str(saved))
        native, anchor = tmp / "seed_rnnx.onnx", tmp / "seed_tf2onnx.onnx"
        rnnx_route = _route_figures([sys.executable, "-m", "rnnx", "convert", str(saved), str(native)], repeats)
        tf_route = _route_figures([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved),
                                   "--output", str(anchor), "--opset", "14"], repeats)
        errors = json.loads(_python(SAVEDMODEL_ACCURACY, str(saved), str(native), str(anchor)))
        ops = (_ops(native), _ops(anchor))
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {_machine()}; {_versions()}. Each conversion ran "
        f"{repeats} times in a fresh process (median wall time, largest peak RSS); errors are max |ONNX - "
        f"tf_keras predict| on 4 random inputs (tf_keras loading the SavedModel).",
        "",
        "| SavedModel: LSTM(512) x 2 + Dense(10) | convert wall | peak RSS | max error vs tf_keras | ops |",
        "|---|---|---|---|---|",
        f"| `rnnx convert dir model.onnx` | {rnnx_route['wall']:.2f} s | {rnnx_route['peak_mib']:.0f} MiB | "
        f"{errors[0]:.1e} | {ops[0]} |",
        f"| `python -m tf2onnx.convert --saved-model dir` | {tf_route['wall']:.2f} s | {tf_route['peak_mib']:.0f} MiB "
        f"| {errors[1]:.1e} | {ops[1]} |",
        f"| ratio | {tf_route['wall'] / rnnx_route['wall']:.1f}x faster | "
        f"{rnnx_route['peak_mib'] / tf_route['peak_mib']:.0%} of tf2onnx's | | |",
    ]
    return "\n".join(lines)


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


def run_deploy(runs: int) -> str:
    import rnnx
    from rnnx import deploy

    corpus = ROOT.parent / "shared" / "corpus"
    with tempfile.TemporaryDirectory(prefix="rnnx-bench-deploy-") as tmp:
        tmp = Path(tmp)
        _python(BUILD, str(tmp))
        models = [("seed: CuDNNLSTM(512) x 2 + Dense(10)", tmp / "seed_cudnn.h5", None),
                  ("tests/fixtures/models/k2_seed_cudnn.h5 (units 16)", ROOT / "tests/fixtures/models/k2_seed_cudnn.h5",
                   None)]
        models += [(f"corpus {name}", corpus / "keras2" / name, None) for name in (
            "stockprice_cudnnlstm4_full.h5", "head_pose_cudnnlstm_functional_full.h5", "medaka_bigru_full.hdf5",
            "medaka_lstm_theano_full.h5")]
        models += [("corpus lstm_chem (weights + JSON)", corpus / "keras2" / "lstm_chem_weights.hdf5",
                    corpus / "keras2" / "lstm_chem_model_arch.json"),
                   ("corpus dino_lstm.keras", corpus / "keras3" / "dino_lstm.keras", None)]
        rows = []
        for k, (label, src, config) in enumerate(models):
            paths = [tmp / f"{k}_float32.onnx", tmp / f"{k}_int8.onnx", tmp / f"{k}_float16.onnx"]
            rnnx.convert(src, paths[0], config=config)
            reports = [None] + [rnnx.convert(src, p, config=config, precision=v).deployment
                                for p, v in zip(paths[1:], ("int8", "float16"))]
            timed = deploy.bench(paths, batch=32, seq=40, runs=runs, warmup=3, threads=1)
            shapes = ", ".join(f"{v}" for v in timed[0]["inputs"].values())
            for variant, row, report in zip(("float32", "int8", "float16"), timed, reports):
                ratio = timed[0]["median_ms"] / row["median_ms"]
                smaller = timed[0]["size_bytes"] / row["size_bytes"]
                deviation = "" if report is None else f"{report['max_abs_error']:.1e}"
                rows.append(f"| {label} | {shapes} | {variant} | {row['size_bytes'] / 1e6:.3f} MB | {smaller:.2f}x | "
                            f"{row['median_ms']:.2f} ms | {ratio:.2f}x | {deviation} |")
    head = (f"Measured {datetime.date.today()} on {_machine()}; {_versions()}. onnxruntime CPU, one thread, "
            f"median of {runs} runs after 3 warm-ups, the three variants' runs interleaved in one process; "
            f"inputs batch 32 x 40 steps where the model leaves them free. Deviation: max |variant - float32 "
            f"export| over every output, as `rnnx convert` reports it (random inputs, batch "
            f"{deploy.DEVIATION_BATCH} x {deploy.DEVIATION_SEQ} steps where free; N(0, 1) features, token ids "
            f"for Embedding inputs).\n\n"
            "| model | input | variant | size | smaller | ORT latency | faster | max abs deviation |\n"
            "|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows)


# --- PyTorch model export (--torch): the generated seed model against a hand-written nn.LSTM one ---------
TORCH_LATENCY = textwrap.dedent("""
    import importlib.util, json, statistics, sys, time
    import numpy as np, safetensors.torch, torch
    from torch import nn
    torch.set_num_threads(1)
    path, runs = sys.argv[1], int(sys.argv[2])
    spec = importlib.util.spec_from_file_location("seed_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state = safetensors.torch.load_file(path[:-3] + ".safetensors")
    exported = module.Model()
    exported.load_state_dict(state, strict=True)

    class Hand(nn.Module):
        def __init__(self, features, units, classes):
            super().__init__()
            self.lstm_1 = nn.LSTM(features, units, batch_first=True)
            self.lstm_2 = nn.LSTM(units, units, batch_first=True)
            self.dense = nn.Linear(units, classes)

        def forward(self, x):
            y, _ = self.lstm_1(x)
            _, (h, _) = self.lstm_2(y)
            return torch.softmax(self.dense(h[-1]), -1)

    lstm_keys = [k for k in state if ".rnn.lstm." in k]
    names = sorted({k.split(".")[0] for k in lstm_keys}, key=lambda n: lstm_keys.index(
        next(k for k in lstm_keys if k.startswith(n + "."))))
    dense = next(k.split(".")[0] for k in state if k.endswith(".bias") and ".rnn." not in k)
    features = state[names[0] + ".rnn.lstm.weight_ih_l0"].shape[1]
    units = state[names[0] + ".rnn.lstm.weight_hh_l0"].shape[1]
    classes = state[dense + ".weight"].shape[0]
    hand = Hand(features, units, classes)
    hand_state = {}
    for mine, theirs in zip(("lstm_1", "lstm_2"), names):
        for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            hand_state[f"{mine}.{key}"] = state[f"{theirs}.rnn.lstm.{key}"]
    hand_state.update({"dense.weight": state[dense + ".weight"], "dense.bias": state[dense + ".bias"]})
    hand.load_state_dict(hand_state, strict=True)
    models = [exported.eval(), hand.eval()]
    steps = int(sys.argv[3])
    rng = np.random.default_rng(0)
    result = {"error": 0.0}
    with torch.no_grad():
        for batch in (1, 32):
            x = torch.from_numpy(rng.normal(0, 1, (batch, steps, features)).astype(np.float32))
            outs = [m(x) for m in models]  # warm-up
            result["error"] = max(result["error"], float((outs[0] - outs[1]).abs().max()))
            times = [[], []]
            for i in range(runs):  # interleaved, order alternating
                for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                    start = time.perf_counter()
                    models[k](x)
                    times[k].append(time.perf_counter() - start)
            result[batch] = [statistics.median(t) * 1000 for t in times]
    print(json.dumps(result))
""")


def torch_model_run(runs: int) -> str:
    """`rnnx convert k2_seed_cudnn.h5 seed.py --to torch-model` against a hand-written nn.LSTM model of the
    same shape holding the same weights: median forward latency at batch 1 and 32 (one thread, eager)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="rnnx-bench-torch-") as tmp:
        dst = Path(tmp) / "seed_model.py"
        src = ROOT / "tests" / "fixtures" / "models" / "k2_seed_cudnn.h5"
        subprocess.run([sys.executable, "-m", "rnnx", "convert", str(src), str(dst), "--to", "torch-model"],
                       check=True, capture_output=True, env=ENV)
        for order in range(2):  # two processes, averaged
            rows.append(json.loads(_python(TORCH_LATENCY, str(dst), str(runs), "7")))
    lat = {b: [statistics.mean(r[b][k] for r in rows) for k in range(2)] for b in ("1", "32")}
    error = max(r["error"] for r in rows)
    lines = [
        f"Measured {datetime.date.today().isoformat()} on {_machine()}; torch {_torch_version()}, one thread, "
        f"eager, no_grad. Median of {runs} forward calls per model after a warm-up, the two models' calls "
        f"interleaved, averaged over two processes; input [batch, 7, 5] (the fixture's shape).",
        "",
        "| model | batch 1 | batch 32 |",
        "|---|---|---|",
        f"| exported k2_seed_cudnn (CuDNNLSTM(16) x 2 + Dense(5) + softmax) | {lat['1'][0]:.3f} ms | "
        f"{lat['32'][0]:.3f} ms |",
        f"| hand-written nn.LSTM x 2 + nn.Linear, same weights | {lat['1'][1]:.3f} ms | {lat['32'][1]:.3f} ms |",
        f"| ratio (exported / hand-written) | {lat['1'][0] / lat['1'][1]:.2f} | {lat['32'][0] / lat['32'][1]:.2f} |",
        "",
        f"Largest difference between the two models' outputs: {error:.1e}.",
    ]
    return "\n".join(lines)


def _torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="conversions per route (median wall time)")
    parser.add_argument("--runs", type=int, default=40, help="onnxruntime runs per batch size (median)")
    parser.add_argument("--write-readme", action="store_true", help="write the tables into README.md")
    parser.add_argument("--suite", choices=("keras", "savedmodel", "all"), default="all",
                        help="keras: the .h5 models; savedmodel: the SavedModel -> ONNX ratio; all: both")
    parser.add_argument("--deploy", action="store_true",
                        help="measure the int8 / float16 deployment variants instead (README 'Deploying')")
    parser.add_argument("--torch", action="store_true",
                        help="instead: the PyTorch model export of the seed fixture against a hand-written "
                        "nn.LSTM model (README section 'PyTorch model')")
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
    if args.torch:
        table = torch_model_run(max(args.runs, 200))
        print(table)
        if args.write_readme:
            write_readme(table, "torch-bench")
        return 0
    if args.deploy:
        table = run_deploy(args.runs)
        print(table)
        if args.write_readme:
            write_readme(table, "bench-deploy")
        return 0
    if args.suite in ("keras", "all"):
        table = run(args.repeats, args.runs)
        print(table)
        if args.write_readme:
            write_readme(table)
    if args.suite in ("savedmodel", "all"):
        table = run_savedmodel(args.repeats)
        print(table)
        if args.write_readme:
            write_readme(table, "bench-savedmodel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
