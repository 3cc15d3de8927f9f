"""Deployment variants of an rnnx ONNX export: int8 (dynamic quantization) and float16, each with the
deviation from the float32 export measured on the same random inputs, and onnxruntime latency.

int8 is onnxruntime's own quantizer, never a hand-written one: `onnxruntime.quantization.quantize_dynamic`
(LSTM becomes DynamicQuantizeLSTM, Dense's MatMul becomes MatMulInteger, Embedding's Gather reads int8
rows; GRU and RNN have no quantized op and stay float32). onnxruntime's CPU provider has no float16
kernel for the ops rnnx writes (LSTM, GRU, RNN, MatMul, Add, Softmax...), so the float16 variant keeps
every op float32 with its weights stored in float16 behind Casts, and the report names those ops.
The float32 export is written through the public write path (api.save) and post-processed here.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx

from .errors import FormatError, UsageError, VerificationError

PRECISIONS = ("int8", "float16")
# Default largest absolute output difference from the float32 export that `--verify` accepts. int8:
# 8-bit weights and activations quantized per run; on the corpus and fixtures the measured deviation
# is 1e-4 to 2e-2 (README "Deploying"). float16: weights rounded to 11 significant bits.
TOLERANCE = {"int8": 5e-2, "float16": 1e-2}
# The random inputs every deviation is measured on (batch, steps where the model leaves them free).
DEVIATION_BATCH, DEVIATION_SEQ, DEVIATION_SEED = 4, 20, 0
METADATA_KEY = "rnnx.deploy"
MAX_INPUT_ELEMENTS = 1 << 27  # a random input of more values than this (512 MB of float32) is refused
# The ops a conversion's summary counts: what was quantized and the recurrent ops left as they were.
REPORTED_OPS = ("DynamicQuantizeLSTM", "MatMulInteger", "LSTM", "GRU", "RNN", "MatMul", "Gemm", "Gather")


# --- reducing a float32 export ------------------------------------------------------------------
def reduce_precision(float32_path: Path, dst: Path, precision: str, record: dict | None = None) -> dict:
    """Write the `precision` variant of the float32 ONNX model at `float32_path` to `dst` (atomically),
    with `record` (how the float32 export was made) in its metadata under METADATA_KEY.

    Returns what was done: {"precision", "ops": op type counts of the result, "float32_ops": op types
    that compute in float32 (float16 only)}."""
    from .io import atomic_output

    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is not one rnnx writes; choose one of {', '.join(PRECISIONS)}.")
    with tempfile.TemporaryDirectory(prefix="rnnx-deploy-") as work:
        if precision == "int8":
            model = _quantize_int8(Path(float32_path), Path(work) / "int8.onnx")
            float32_ops = None
        else:
            model, float32_ops = _float16(onnx.load(str(float32_path)), Path(float32_path).parent)
    info = {"precision": precision, "ops": _op_counts(model)}
    if float32_ops is not None:
        info["float32_ops"] = float32_ops
    record = {**(record or {}), "precision": precision, **({"float32_ops": float32_ops} if float32_ops is not None else {})}
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(record, sort_keys=True))
    onnx.checker.check_model(model, full_check=True)  # never hand onnxruntime a graph onnx calls invalid
    with atomic_output(dst) as tmp:
        onnx.save(model, str(tmp))
    return info


def _quantize_int8(src: Path, out: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():  # the quantizer logs a pre-processing hint on the root logger
        # per-channel scales: on the corpus's trained LSTMs a third to a half of the per-tensor deviation
        quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, per_channel=True)
    model = onnx.load(str(out))
    _copy_metadata(onnx.load(str(src), load_external_data=False), model)
    return model


def _float16(model: onnx.ModelProto, work: Path) -> tuple[onnx.ModelProto, list[str]]:
    """float16 weights on disk, every op computing in float32 (returns the model and those op types).

    onnxruntime 1.32's CPU provider has no float16 kernel for LSTM, GRU, RNN, MatMul, Add, Softmax or
    the activations (it runs them in float32 behind Casts it inserts), only for data-movement ops
    (Transpose, Slice, Concat...). So every op stays float32 and each float32 initializer is stored in
    float16 with one Cast back to float32 in front of the graph, which onnxruntime folds into a float32
    constant when it loads the model. (onnxruntime.transformers.float16 was tried first: its graphs with
    every op kept float32 failed onnx.checker on masked and stateful models, and its mixed graphs, with
    data-movement ops in float16, crashed onnxruntime's optimizer.) A tensor with a value beyond
    float16's range stays float32."""
    float32_ops = sorted({n.op_type for n in model.graph.node})
    graph = model.graph
    overridable = {value.name for value in graph.input}  # initializers that are input defaults stay as they are
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in overridable:
            kept.append(init)
            continue
        values = onnx.numpy_helper.to_array(init, base_dir=str(work))
        if values.size and float(np.max(np.abs(values))) > np.finfo(np.float16).max:
            kept.append(init)
            continue
        stored = f"{init.name}/float16"
        kept.append(onnx.numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(onnx.helper.make_node("Cast", [stored], [init.name], name=f"{init.name}/to_float32",
                                           to=onnx.TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model, float32_ops


def _copy_metadata(src: onnx.ModelProto, dst: onnx.ModelProto) -> None:
    have = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in have and prop.key != METADATA_KEY:
            dst.metadata_props.add(key=prop.key, value=prop.value)


def deploy_metadata(path: Path) -> dict | None:
    """The METADATA_KEY record reduce_precision left in `path`, or None for a model rnnx did not reduce.
    The record comes from the file, so every entry is checked before it becomes an export option."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not an ONNX file: the ordinary verify path reports that
        return None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                record = json.loads(prop.value)
            except ValueError:
                raise FormatError(f"{path}: its {METADATA_KEY} metadata is not JSON; it was not written by rnnx, "
                                  f"or was damaged. Convert the source again with --quantize / --precision.") from None
            if not isinstance(record, dict) or record.get("precision") not in PRECISIONS \
                    or not all(isinstance(record.get(k), kinds) for k, kinds in RECORD_TYPES.items()) \
                    or record.get("engine") not in (None, "native", "tf2onnx"):
                raise FormatError(f"{path}: its {METADATA_KEY} metadata is not what rnnx writes (precision, layer, "
                                  f"opset, time_major, engine); convert the source again with --quantize / "
                                  f"--precision.")
            return record
    return None


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


RECORD_TYPES = {"layer": (str, type(None)), "opset": (int, type(None)), "time_major": (bool, type(None)),
                "engine": (str, type(None)), "float32_ops": (list, type(None))}


# --- the conversion and its proof ---------------------------------------------------------------
# The export options a reduced model records, so that verify can rebuild its float32 export.
EXPORT_OPTIONS = ("layer", "opset", "time_major", "engine")


def write_reduced(bundle, dst: Path, precision: str, verify: bool = False, tolerance: float | None = None,
                  **options) -> tuple[list[str], dict]:
    """Export `bundle` to float32 ONNX through api.save, write its `precision` variant to `dst` and
    measure the variant against it. Returns the writer's notes and the report: {"precision", "ops",
    "float32_ops" (float16), "max_abs_error", "max_rel_error", "inputs", "tolerance", "ok"}, and with
    verify=True also "verification": the float32 export's own proof against the source's layers."""
    from .api import save

    record = {k: options.get(k) for k in EXPORT_OPTIONS}
    with tempfile.TemporaryDirectory(prefix="rnnx-float32-") as work:
        float32 = Path(work) / "float32.onnx"
        notes = save(bundle, float32, to="onnx", **options)
        info = reduce_precision(float32, dst, precision, record)
        report = judged({**info, **deviation(float32, dst)}, precision, tolerance)
        if verify:
            report["verification"] = _float32_proof(bundle, float32, dst)
    return list(notes), report


def verify_reduced(bundle, dst: Path, record: dict, tolerance: float | None = None) -> dict:
    """`rnnx verify SRC reduced.onnx`: rebuild the float32 export the reduced model was made from (the
    options are in its metadata), prove it against the source's layers, and measure the reduced model
    against it; the report is verify's (schemas/verify.schema.json) with a "deployment" entry."""
    from .api import save

    options = {k: record[k] for k in EXPORT_OPTIONS if record.get(k) is not None}
    if options.get("layer") is not None:
        bundle = bundle.only(options["layer"])
    precision = record["precision"]
    with tempfile.TemporaryDirectory(prefix="rnnx-float32-") as work:
        float32 = Path(work) / "float32.onnx"
        save(bundle, float32, to="onnx", **options)
        report = _float32_proof(bundle, float32, dst)
        measured = judged(deviation(float32, dst), precision, tolerance)
    deployment = {"precision": precision, **measured}
    if precision == "float16":
        deployment["float32_ops"] = record.get("float32_ops", [])
    report["deployment"] = deployment
    report["ok"] = report["ok"] and deployment["ok"]
    return report


def _float32_proof(bundle, float32: Path, dst: Path) -> dict:
    from .verification import verify_bundle

    report = verify_bundle(bundle, float32, to="onnx")
    return {**report, "target": str(dst)}


# --- inputs and deviation -----------------------------------------------------------------------
def random_feeds(model: onnx.ModelProto | Path, batch: int = DEVIATION_BATCH, seq: int = DEVIATION_SEQ,
                 seed: int = DEVIATION_SEED) -> dict[str, np.ndarray]:
    """Random inputs for every graph input that has no default (initializer): free batch dims get
    `batch`, other free dims `seq`; float inputs N(0, 1); inputs that feed an Embedding's Gather
    (directly or through Cast) get integer ids in [1, vocabulary), never the padding id 0."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    defaults = {init.name for init in graph.initializer}
    time_major = _metadata(model).get("rnnx.io_layout") == "time_major"
    vocab = _vocabularies(model)
    rng = np.random.default_rng(seed)
    feeds = {}
    limit = MAX_INPUT_ELEMENTS
    for value in graph.input:
        if value.name in defaults:
            continue
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim)
        batch_axis = 1 if time_major and len(dims) >= 2 else 0
        shape = []
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                shape.append(dim.dim_value)
            elif "batch" in dim.dim_param or (not dim.dim_param and axis == batch_axis):
                shape.append(batch)
            else:
                shape.append(seq)
        if int(np.prod(shape, dtype=np.float64)) > limit:  # a fixed dimension is what the file claims
            raise UsageError(f"input {value.name!r} has shape {shape}: more than {limit} values, which rnnx does "
                             f"not allocate for a random input; give smaller --batch / --seq, or check the model.")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if value.name in vocab:
            data = rng.integers(1, max(vocab[value.name], 2), shape).astype(dtype)
        elif np.issubdtype(dtype, np.integer):
            data = rng.integers(0, 2, shape).astype(dtype)
        else:
            data = rng.standard_normal(shape).astype(dtype)
        feeds[value.name] = data
    return feeds


def _metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _vocabularies(model: onnx.ModelProto) -> dict[str, int]:
    """Graph input -> rows of the embedding table a Gather looks its values up in."""
    graph = model.graph
    tables = {init.name: list(init.dims) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = {}
    for value in graph.input:
        frontier, seen = [value.name], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node in consumers.get(name, ()):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name \
                        and node.input[0] in tables and tables[node.input[0]]:
                    found[value.name] = min(found.get(value.name, tables[node.input[0]][0]), tables[node.input[0]][0])
                elif node.op_type in ("Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose"):
                    frontier.extend(node.output)
    return found


def session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # stateful layers' optional state inputs draw a warning
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise FormatError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[0][:300]}).") from None


def deviation(reference: Path, reduced: Path, batch: int = DEVIATION_BATCH, seq: int = DEVIATION_SEQ,
              seed: int = DEVIATION_SEED) -> dict:
    """Largest absolute and relative difference of `reduced`'s outputs from `reference`'s (the float32
    export) on random_feeds(reference, batch, seq, seed); relative to max(|reference|, 1e-3)."""
    from .verification import _difference

    feeds = random_feeds(Path(reference), batch, seq, seed)
    want = session(reference).run(None, feeds)
    got = session(reduced).run(None, feeds)
    if len(got) != len(want) or any(np.shape(g) != np.shape(w) for g, w in zip(got, want)):
        raise VerificationError(f"{reduced} returns outputs of shapes {[np.shape(g) for g in got]}, its float32 "
                                f"export {[np.shape(w) for w in want]}.")
    max_abs = max_rel = 0.0
    for w, g in zip(want, got):
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        diff = _difference(g, w)  # a NaN never vanishes from the maximum
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_rel = max(max_rel, float((diff / np.fmax(np.abs(w), 1e-3)).max(initial=0.0)))
    shapes = {name: list(x.shape) for name, x in feeds.items()}
    return {"max_abs_error": max_abs, "max_rel_error": max_rel,
            "inputs": {"batch": batch, "seq": seq, "seed": seed, "shapes": shapes}}


def judged(report: dict, precision: str, tolerance: float | None) -> dict:
    """`report` with the tolerance it is held to (TOLERANCE[precision] unless given) and ok."""
    if tolerance is not None and not tolerance >= 0:
        raise UsageError(f"--tolerance {tolerance} is not a usable error bound; give a number of 0 or more, "
                         f"or leave it out for the default of {TOLERANCE[precision]:g} for {precision}.")
    tol = TOLERANCE[precision] if tolerance is None else tolerance
    return {**report, "tolerance": tol, "ok": bool(report["max_abs_error"] <= tol)}


def as_text(report: dict) -> str:
    shapes = ", ".join(f"{k} {v}" for k, v in report["inputs"]["shapes"].items())
    line = (f"{report['precision']} against the float32 export ({shapes}, seed {report['inputs']['seed']}): "
            f"max abs error {report['max_abs_error']:.3g}, max rel error {report['max_rel_error']:.3g}")
    if "tolerance" in report:
        line += f"  {'ok' if report['ok'] else 'FAILED'} (tolerance {report['tolerance']:.3g})"
    if report.get("float32_ops"):
        line += (f"\n  weights stored in float16; every op computes in float32 (onnxruntime's CPU provider has no "
                 f"float16 kernel for the recurrent and arithmetic ones): {', '.join(report['float32_ops'])}")
    return line


# --- latency ------------------------------------------------------------------------------------
def model_size(path: Path) -> int:
    """Bytes of the model file and of the external data files it names (inside its folder)."""
    path = Path(path)
    size = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return size
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            locations |= {e.value for e in init.external_data if e.key == "location"}
    folder = path.resolve().parent
    for location in locations:
        data = (folder / location).resolve()
        if data.is_file() and folder in data.parents:
            size += data.stat().st_size
    return size


def bench(paths: list[Path], batch: int = 32, seq: int = 40, runs: int = 20, warmup: int = 3,
          threads: int = 1, seed: int = 0) -> list[dict]:
    """onnxruntime latency of each model (median of `runs` runs after `warmup`, the models' runs
    interleaved so that a busy machine slows all alike) on random_feeds of each model's inputs."""
    if runs < 1 or warmup < 0 or batch < 1 or seq < 1 or threads < 1:
        raise UsageError("--runs, --batch, --seq and --threads must be 1 or more (and --warmup 0 or more).")
    sessions = [session(p, threads) for p in paths]
    feeds = [random_feeds(Path(p), batch, seq, seed) for p in paths]
    for s, f in zip(sessions, feeds):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in paths]
    for i in range(runs):  # the order alternates too: the model run first in a round ran slower here
        for k in (range(len(paths)) if i % 2 == 0 else reversed(range(len(paths)))):
            start = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append(time.perf_counter() - start)
    return [{"path": str(p), "size_bytes": model_size(p), "median_ms": 1e3 * statistics.median(t),
             "min_ms": 1e3 * min(t), "runs": runs, "warmup": warmup, "threads": threads,
             "inputs": {k: list(v.shape) for k, v in f.items()}} for p, t, f in zip(paths, times, feeds)]
