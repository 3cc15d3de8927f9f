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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnx", description="Move LSTM / GRU / SimpleRNN weights between Keras 2 (CuDNN layers too), "
        "Keras 3, PyTorch and ONNX, and prove the result computes the same numbers.",
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
    s.add_argument("--verify", action="store_true", help="after writing, run DST and compare (exit 1 on mismatch)")
    s.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default 14)")
    s.add_argument("--time-major", action="store_true", help="ONNX input as [seq, batch, features]")
    s.add_argument("--accept-activation-change", action="store_true",
                   help="write Keras 2 hard_sigmoid layers to Keras 3 anyway and report the deviation")
    s.add_argument("--cudnn", action="store_true",
                   help="Keras 2 HDF5 target: write CuDNNLSTM / CuDNNGRU layers (to resume training on a GPU)")
    s.add_argument("--engine", choices=("native", "tf2onnx"), default="native",
                   help="whole Keras model to ONNX: rnnx's own graph builder (default) or tf_keras + tf2onnx "
                   "(needs the tf extra)")
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
                   "4 x the layer's measured float32 noise floor; README, 'How verify decides')")
    s.add_argument("--config", metavar="JSON", help="architecture from model.to_json(), for weights-only files")
    s.add_argument("--json", action="store_true", help="print JSON (schemas/verify.schema.json)")
    _timeout_option(s, None)

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

    from .watchdog import call

    try:
        if args.command == "inspect":
            return call(_run, args, timeout=timeout, subject=f"reading {args.path}")
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

    report = inspect(args.path, config=args.config)
    print(json.dumps(report, indent=2) if args.json else _shown(as_text(report)))
    return 0


# convert's options that only one kind of target understands: given for another, they would do nothing.
TARGET_OPTIONS = {"opset": ("--opset", ("onnx",)), "time_major": ("--time-major", ("onnx",)),
                  "engine": ("--engine", ("onnx",)), "cudnn": ("--cudnn", ("keras-h5",)),
                  "accept_activation_change": ("--accept-activation-change", ("keras", "keras3-weights"))}


def _convert(args) -> int:
    from pathlib import Path

    from .api import convert
    from .verification import as_text

    options = {k: v for k, v in (("opset", args.opset), ("time_major", args.time_major),
                                 ("accept_activation_change", args.accept_activation_change),
                                 ("cudnn", args.cudnn), ("engine", args.engine)) if v is not None and v is not False}
    target = formats.for_writing(Path(args.dst), args.to).name
    for key in options:
        flag, targets = TARGET_OPTIONS[key]
        if target not in targets and not (key == "engine" and options[key] == "native"):
            raise UsageError(f"{flag} applies only to {' and '.join(targets)} targets; {args.dst} would be written "
                             f"as {target}. Leave {flag} out or choose another destination.")
    result = convert(args.src, args.dst, to=args.to, layer=args.layer, config=args.config,
                     verify=args.verify, raise_on_failure=False, **options)
    n = len(result.bundle.layers)
    print(f"wrote {args.dst} ({result.target_format}): {n} recurrent layer{'s' * (n != 1)}")
    for note in result.notes:
        print(_shown(f"  note: {note}"))
    if result.verification:
        print(_shown(as_text(result.verification)))
        if not result.verification["ok"]:
            print(_shown(f"rnnx: {args.dst} was written but does not compute what {args.src} computes; "
                         f"see the table above."), file=sys.stderr)
            return 1
    return 0


def _verify(args) -> int:
    from .api import verify
    from .verification import as_text

    report = verify(args.src, args.dst, to=args.to, layer=args.layer, tolerance=args.tolerance, config=args.config)
    print(json.dumps(_finite(report), indent=2, allow_nan=False) if args.json else _shown(as_text(report)))
    return 0 if report["ok"] else 1


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


COMMANDS = {"inspect": _inspect, "convert": _convert, "verify": _verify, "demo": _demo}
