"""The `rnnx` command: a thin argparse front over the API. Exit 0 ok, 1 verification failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import traceback

from . import __version__, formats
from .errors import RnnxError, UsageError, VerificationError

EPILOG = """exit status: 0 success, 1 a verification failed, 2 bad input, unsupported feature or usage.
formats (by suffix, or --to): """ + "; ".join(
    f"{f.name} ({', '.join(f.suffixes)})" for f in formats.FORMATS)

INSPECT_TIMEOUT_S = 60  # far above what inspect takes on large files (0.6 s for 17 MB), short for a stuck server


FORGET_BIAS_HELP = ("TF1 checkpoints: the forget_bias the LSTM cells were built with (default: from the .meta "
                    "graph, else TensorFlow's default for the cell)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnx", description="Move LSTM / GRU / SimpleRNN weights between Keras 2 (CuDNN layers too), "
        "Keras 3, TensorFlow SavedModels and checkpoints (read only), PyTorch and ONNX, turn whole Keras models "
        "into ONNX graphs or PyTorch modules, and prove the result computes the same numbers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"rnnx {__version__}")
    p.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("inspect", help="list the recurrent layers of a file and what a conversion would do",
                       description="List every recurrent layer of PATH (class, units, directions, bias layout, "
                       "activations, dtype) and which target formats can hold it.")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--json", action="store_true", help="print JSON (schemas/inspect.schema.json)")
    s.add_argument("--config", metavar="JSON", help="architecture from model.to_json(), for weights-only files")
    s.add_argument("--forget-bias", type=float, metavar="F", help=FORGET_BIAS_HELP)
    _timeout_option(s, INSPECT_TIMEOUT_S)

    s = sub.add_parser("convert", help="convert SRC into DST",
                       description="Read SRC, write DST in the format its suffix names (or --to). DST is "
                       "written to a temporary file and renamed at the end: a failed run leaves nothing.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.add_argument("--to", choices=formats.names(), help="target format, when DST's suffix does not say it")
    s.add_argument("--layer", metavar="NAME", help="convert only this recurrent layer")
    s.add_argument("--config", metavar="JSON", help="architecture from model.to_json(), for weights-only files")
    s.add_argument("--forget-bias", type=float, metavar="F", help=FORGET_BIAS_HELP)
    s.add_argument("--verify", action="store_true", help="after writing, run DST and compare (exit 1 on mismatch)")
    s.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default 14)")
    s.add_argument("--time-major", action="store_true", help="ONNX input as [seq, batch, features]")
    s.add_argument("--accept-activation-change", action="store_true",
                   help="write Keras 2 hard_sigmoid layers to Keras 3 anyway and report the deviation")
    s.add_argument("--cudnn", action="store_true",
                   help="Keras 2 HDF5 target: write CuDNNLSTM / CuDNNGRU layers (to resume training on a GPU)")
    s.add_argument("--standalone", action="store_true",
                   help="torch-model target: copy rnnx.torch_nn into the file, so it needs only torch")
    s.add_argument("--external-data", action="store_true",
                   help="ONNX target: keep the weights in DST.data beside DST (ONNX external data; automatic "
                   "when the model is over protobuf's 2 GiB)")
    s.add_argument("--quiet", action="store_true", help="no progress bar (one is shown on a terminal for "
                   "conversions that take over a second)")
    s.add_argument("--engine", choices=("native", "tf2onnx"), default="native",
                   help="whole Keras model to ONNX: rnnx's own graph builder (default) or tf_keras + tf2onnx "
                   "(needs the tf extra)")
    s.add_argument("--quantize", choices=("int8",),
                   help="ONNX target: write the int8 variant (onnxruntime dynamic quantization) and report how far "
                   "it is from the float32 export")
    s.add_argument("--precision", choices=("float16",),
                   help="ONNX target: store the weights in float16 (every op still computes in float32: onnxruntime's "
                   "CPU provider has no float16 LSTM, GRU, RNN or MatMul kernel) and report how far it is from the "
                   "float32 export")
    s.add_argument("--tolerance", type=float, metavar="X",
                   help="with --verify: max absolute error, used exactly (defaults: int8 5e-2, float16 1e-2 from the "
                   "float32 export; else as for rnnx verify)")
    _timeout_option(s, None)

    s = sub.add_parser("verify", help="prove DST computes what SRC computes",
                       description="Run every recurrent layer of SRC through rnnx's numpy reference and DST in "
                       "its own runtime on random sequences of several lengths and batch sizes; print the "
                       "largest errors; exit 1 when any is over tolerance.")
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.add_argument("--to", choices=formats.names(), help="format of DST when its suffix does not say it")
    s.add_argument("--layer", metavar="NAME", help="verify only this recurrent layer")
    s.add_argument("--tolerance", type=float, help="max absolute error, used exactly (default: the larger of 1e-5 for float32 and "
                   "4 x the layer's measured float32 noise floor; README, 'How verify decides'; for an int8 / "
                   "float16 model rnnx wrote, its deviation from the float32 export: 5e-2 int8, 1e-2 float16)")
    s.add_argument("--config", metavar="JSON", help="architecture from model.to_json(), for weights-only files")
    s.add_argument("--forget-bias", type=float, metavar="F", help=FORGET_BIAS_HELP)
    s.add_argument("--json", action="store_true", help="print JSON (schemas/verify.schema.json)")
    _timeout_option(s, None)

    s = sub.add_parser("bench", help="onnxruntime latency and size of an ONNX model",
                       description="Run MODEL in onnxruntime (CPU) on random inputs of its shape: median latency of "
                       "--runs runs after a warm-up, with the threads stated, and the size on disk. --against runs a "
                       "second model interleaved with it and prints the ratio.")
    s.add_argument("model", metavar="MODEL")
    s.add_argument("--against", metavar="OTHER", help="a second ONNX model to compare with (e.g. the float32 export)")
    s.add_argument("--batch", type=int, default=32, help="batch size where the model leaves it free (default 32)")
    s.add_argument("--seq", type=int, default=40, help="sequence length where the model leaves it free (default 40)")
    s.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    s.add_argument("--runs", type=int, default=20, help="timed runs per model (default 20; median reported)")
    s.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    s.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("demo", help="convert the bundled CuDNNLSTM example and show it computes the same numbers",
                   description="Convert a small CuDNNLSTM model shipped with rnnx and compare the result "
                   "with the outputs tf_keras computed for the original.")
    return p


def _timeout_option(parser, default) -> None:
    parser.add_argument("--timeout", type=float, metavar="SECONDS", default=default,
                        help="stop with exit 2 when the work takes longer, also while libhdf5 or other native code "
                        "is stuck; no partial file is left (default: " + (f"{default:g} s" if default else "none") +
                        "; 0: none)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    from .watchdog import checked_timeout

    try:
        timeout = checked_timeout(getattr(args, "timeout", None))
    except UsageError as exc:
        _print_error(exc, args)
        return 2
    if timeout:
        return _watched(args, timeout)
    return _run(args)


def _watched(args, timeout: float) -> int:
    """The command run by the watchdog: past `timeout` seconds it is stopped, with exit 2."""
    from pathlib import Path

    from .watchdog import call, inspect_memory_cap

    try:
        if args.command == "inspect":
            return call(_run, args, timeout=timeout, subject=f"reading {args.path}",
                        memory_cap=inspect_memory_cap(args.path))
        outputs = [Path(args.dst)] if args.command == "convert" else []
        subject = (f"converting {args.src} to {args.dst}" if args.command == "convert"
                   else f"verifying {args.dst} against {args.src}")
        return call(_run, args, timeout=timeout, subject=subject, outputs=outputs)
    except RnnxError as exc:  # the deadline passed, or the child died in native code
        _print_error(exc, args)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args) -> int:
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
        return code
    except VerificationError as exc:
        _print_error(exc, args)
        return 1
    except RnnxError as exc:
        _print_error(exc, args)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `rnnx inspect x | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug or a file broken in a way no reader foresaw: still one sentence
        if args.debug:
            traceback.print_exc()
        else:
            print(_shown(f"rnnx: unexpected {type(exc).__name__}: {exc}. Nothing was written. "
                         f"Run again with --debug for a traceback and please report it."), file=sys.stderr)
        return 2


def _print_error(exc: Exception, args) -> None:
    if args.debug:
        traceback.print_exc()
    print(_shown(f"rnnx: {exc.args[0] if exc.args else exc}"), file=sys.stderr)


def _shown(text: str) -> str:
    """`text` with control characters from untrusted names (terminal escape sequences, carriage returns)
    written as escapes, so a file cannot drive the terminal it is inspected in."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _inspect(args) -> int:
    from .api import inspect
    from .report import as_text

    report = inspect(args.path, config=args.config, forget_bias=args.forget_bias)
    print(json.dumps(report, indent=2) if args.json else _shown(as_text(report)))
    return 0


# convert's options that only one kind of target understands: given for another, they would do nothing.
TARGET_OPTIONS = {"opset": ("--opset", ("onnx",)), "time_major": ("--time-major", ("onnx",)),
                  "engine": ("--engine", ("onnx",)), "cudnn": ("--cudnn", ("keras-h5",)),
                  "precision": ("--quantize / --precision", ("onnx",)),
                  "external_data": ("--external-data", ("onnx",)),
                  "accept_activation_change": ("--accept-activation-change", ("keras", "keras3-weights")),
                  "standalone": ("--standalone", ("torch-model",))}


def _convert(args) -> int:
    from pathlib import Path

    from .api import convert
    from .verification import as_text

    options = {k: v for k, v in (("opset", args.opset), ("time_major", args.time_major),
                                 ("accept_activation_change", args.accept_activation_change),
                                 ("cudnn", args.cudnn), ("engine", args.engine), ("standalone", args.standalone),
                                 ("external_data", args.external_data))
               if v is not None and v is not False}
    if args.quantize and args.precision:
        raise UsageError("--quantize int8 and --precision float16 are two different variants; give one of them "
                         "(convert twice for both).")
    if args.tolerance is not None and not args.verify:
        raise UsageError("--tolerance bounds what --verify checks; add --verify or leave --tolerance out.")
    precision = args.quantize or args.precision
    if precision:
        options["precision"] = precision
    target = formats.for_writing(Path(args.dst), args.to).name
    for key in options:
        flag, targets = TARGET_OPTIONS[key]
        if target not in targets and not (key == "engine" and options[key] == "native"):
            raise UsageError(f"{flag} applies only to {' and '.join(targets)} targets; {args.dst} would be written "
                             f"as {target}. Leave {flag} out or choose another destination.")
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from .progress import TerminalBar

        bar = TerminalBar(sys.stderr)
    try:
        result = convert(args.src, args.dst, to=args.to, layer=args.layer, config=args.config,
                         verify=args.verify, raise_on_failure=False, tolerance=args.tolerance,
                         forget_bias=args.forget_bias, progress=bar, **options)
    finally:
        if bar is not None:
            bar.close()
    n = len(result.bundle.layers)
    variant = f", {precision}" if precision else ""
    print(f"wrote {args.dst} ({result.target_format}{variant}): {n} recurrent layer{'s' * (n != 1)}")
    for note in result.notes:
        print(_shown(f"  note: {note}"))
    if result.deployment:
        return _reduced_outcome(args, result)
    if result.verification:
        print(_shown(as_text(result.verification)))
        if not result.verification["ok"]:
            print(_shown(f"rnnx: {args.dst} was written but does not compute what {args.src} computes; "
                         f"see the table above."), file=sys.stderr)
            return 1
    return 0


def _reduced_outcome(args, result) -> int:
    from . import deploy
    from .verification import as_text

    report = result.deployment
    ops = ", ".join(f"{op} x{n}" for op, n in report["ops"].items() if op in deploy.REPORTED_OPS)
    if ops:
        print(f"  ops: {ops}")
    shown = dict(report) if args.verify else {k: v for k, v in report.items() if k not in ("tolerance", "ok")}
    print(_shown(deploy.as_text(shown)))
    if not args.verify:
        return 0
    print(_shown(_float32_stage(as_text(result.verification))))
    if not (report["ok"] and result.verification["ok"]):
        print(_shown(f"rnnx: {args.dst} was written but is further from what {args.src} computes than the "
                     f"tolerance; see above."), file=sys.stderr)
        return 1
    return 0


def _float32_stage(table: str) -> str:
    """verify's table of the float32 export a reduced model was made from, said to be that."""
    lines = table.splitlines()
    return "\n".join(["the float32 export it was made from, against the source:"] + lines[:-1])


def _verify(args) -> int:
    from .api import verify
    from .verification import as_text

    report = verify(args.src, args.dst, to=args.to, layer=args.layer, tolerance=args.tolerance, config=args.config,
                    forget_bias=args.forget_bias)
    if args.json:
        print(json.dumps(_finite(report), indent=2, allow_nan=False))
    else:
        if "deployment" in report:
            from .deploy import as_text as deployment_text

            print(_shown(_float32_stage(as_text(report))))
            print(_shown(deployment_text(report["deployment"])))
        else:
            print(_shown(as_text(report)))
    return 0 if report["ok"] else 1


def _bench(args) -> int:
    from pathlib import Path

    from .deploy import bench

    paths = [Path(args.model)] + ([Path(args.against)] if args.against else [])
    for path in paths:
        formats_name = formats.for_reading(path).name
        if formats_name != "onnx":
            raise UsageError(f"rnnx bench runs ONNX models in onnxruntime; {path} is read as {formats_name}. "
                             f"Convert it to .onnx first.")
    rows = bench(paths, batch=args.batch, seq=args.seq, runs=args.runs, warmup=args.warmup, threads=args.threads)
    if args.json:
        print(json.dumps({"models": rows, **({"ratio": rows[1]["median_ms"] / rows[0]["median_ms"]}
                                              if len(rows) == 2 else {})}, indent=2))
        return 0
    for row in rows:
        shapes = ", ".join(f"{k} {v}" for k, v in row["inputs"].items())
        print(_shown(f"{row['path']}: {row['median_ms']:.2f} ms median of {row['runs']} runs (min {row['min_ms']:.2f}"
                     f" ms; {row['threads']} thread{'s' * (row['threads'] != 1)}, after {row['warmup']} warm-up), "
                     f"{row['size_bytes'] / 1e6:.2f} MB; inputs {shapes}"))
    if len(rows) == 2:
        ratio = rows[1]["median_ms"] / rows[0]["median_ms"]
        print(_shown(f"{args.model} runs {ratio:.2f}x as fast as {args.against} "
                     f"({rows[0]['size_bytes'] / rows[1]['size_bytes']:.2f}x its size)"))
    return 0


def _finite(value):
    """Strict JSON: an error that is not a finite number (a target returning NaN) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo()


COMMANDS = {"inspect": _inspect, "convert": _convert, "verify": _verify, "bench": _bench, "demo": _demo}
