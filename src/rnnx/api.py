"""The public functions: load, save, convert, inspect, verify."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import formats
from .canonical import Bundle
from .errors import UsageError


def load(path, timeout: float | None = None, **options) -> Bundle:
    """Read any supported file into a canonical Bundle (options: config=PATH for an architecture JSON;
    forget_bias=F for TF1 checkpoints; shapes_only=True lets readers that can (TensorFlow files) skip
    tensor data, giving placeholder weights of the stored shapes, as `inspect` needs).

    timeout=SECONDS reads in a child process and raises DeadlineError past it (also while native code
    such as libhdf5 holds the GIL); the same holds for every function below."""
    path = Path(path)
    if _deadline(timeout):
        return _watched(load, path, timeout=timeout, subject=f"reading {path}", **options)
    fmt = formats.for_reading(path)
    if options.get("config") is not None and fmt.name not in ("keras-h5", "keras3-weights", "tf-checkpoint"):
        raise UsageError(f"--config gives a Keras weights file its architecture; {path} is read as {fmt.name}, "
                         f"which takes none, so leave --config out.")
    if options.get("forget_bias") is None:
        options.pop("forget_bias", None)
    elif fmt.name not in ("tf-checkpoint", "tf-savedmodel"):
        raise UsageError(f"--forget-bias applies to TF1 checkpoints, whose LSTM cells add it at run time; {path} is "
                         f"read as {fmt.name}, so leave --forget-bias out.")
    bundle = formats.load_module(fmt, "read").read(path, **options)
    bundle.source.setdefault("format", fmt.name)  # a .rnnx file keeps the format it was converted from
    bundle.source["path"] = str(path)  # the file read, never the one a .rnnx was made from
    bundle.source["file_format"] = fmt.name
    return bundle


def save(bundle: Bundle, path, to: str | None = None, **options) -> list[str]:
    """Write `bundle` to `path` in the format its suffix (or `to`) names; returns notes for the user."""
    path = Path(path)
    fmt = formats.for_writing(path, to)
    if path.exists() and path.is_dir():
        raise UsageError(f"Cannot write {path}: it is a folder.")
    return formats.load_module(fmt, "write").write(bundle, path, **options) or []


@dataclass
class ConvertResult:
    bundle: Bundle
    target_format: str
    notes: list[str] = field(default_factory=list)
    verification: dict | None = None
    deployment: dict | None = None


def convert(src, dst, to: str | None = None, layer: str | None = None, config=None,
            verify: bool = False, raise_on_failure: bool = True, precision: str | None = None,
            tolerance: float | None = None, forget_bias: float | None = None, timeout: float | None = None,
            progress=None, **options) -> ConvertResult:
    """Read `src`, write `dst`; with verify=True also prove it numerically.

    precision="int8" / "float16" (ONNX targets) writes that deployment variant of the float32 export
    and measures it against the export (result.deployment, rnnx.deploy); `tolerance` bounds that
    deviation (default rnnx.deploy.TOLERANCE), or without a precision the verified layers' errors.
    A failed verification raises VerificationError, or with raise_on_failure=False is left in
    result.verification["ok"] / result.deployment["ok"] (the file stays written either way).
    `progress`: a callable that gets rnnx.progress.Event's (bytes of tensor data read and written);
    not called when a `timeout` runs the conversion in a child process."""
    src, dst = Path(src), Path(dst)
    if _deadline(timeout):
        return _watched(convert, src, dst, to=to, layer=layer, config=config, verify=verify,
                        raise_on_failure=raise_on_failure, precision=precision, tolerance=tolerance,
                        forget_bias=forget_bias, timeout=timeout, outputs=[dst],
                        subject=f"converting {src} to {dst}", **options)
    from .progress import done, reporting

    with reporting(progress):
        result = _convert(src, dst, to, layer, config, verify, raise_on_failure, precision, tolerance, forget_bias,
                          **options)
        done()
    return result


def _convert(src: Path, dst: Path, to, layer, config, verify, raise_on_failure, precision, tolerance, forget_bias,
             **options) -> ConvertResult:
    from .io import same_file
    from .lazy import lazy_bytes
    from .progress import start

    if same_file(src, dst):
        raise UsageError(f"The destination {dst} is the source file; choose another path so the source is kept.")
    fmt = formats.for_writing(dst, to)
    if verify:
        formats.load_module(fmt, "run_layer")  # a target that cannot be verified is refused before writing
    bundle = load(src, config=config, forget_bias=forget_bias)
    if layer is not None:
        bundle = bundle.only(layer)
    if verify and not bundle.layers:
        from .verification import nothing_to_verify

        raise UsageError(nothing_to_verify(bundle) + " Convert without --verify.")  # refused before writing
    if precision is not None:
        return _convert_reduced(bundle, dst, fmt.name, precision, verify, tolerance, raise_on_failure,
                                layer=layer, **options)
    start(lazy_bytes(bundle))
    notes = list(bundle.source.get("read_notes") or []) + save(bundle, dst, to=fmt.name, layer=layer, **options)
    result = ConvertResult(bundle, fmt.name, list(notes))
    if verify:
        from .verification import verify_bundle

        result.verification = verify_bundle(bundle, dst, to=fmt.name, tolerance=tolerance,
                                            raise_on_failure=raise_on_failure)
    return result


def _convert_reduced(bundle, dst: Path, target: str, precision: str, verify: bool, tolerance, raise_on_failure,
                     **options) -> ConvertResult:
    from . import deploy
    from .errors import VerificationError

    if target != "onnx":
        raise UsageError(f"--quantize / --precision make deployment variants of ONNX models; {dst} would be "
                         f"written as {target}. Give a .onnx destination.")
    notes, report = deploy.write_reduced(bundle, dst, precision, verify=verify, tolerance=tolerance, **options)
    result = ConvertResult(bundle, target, notes, verification=report.pop("verification", None), deployment=report)
    failed = verify and not (report["ok"] and result.verification["ok"])
    if failed and raise_on_failure:
        raise VerificationError(f"{dst} ({precision}) differs from its float32 export by {report['max_abs_error']:.3g}"
                                f" (tolerance {report['tolerance']:g}), or the export from its source.", report)
    return result


def inspect(path, timeout: float | None = None, **options) -> dict:
    """A JSON-ready description of a file (schemas/inspect.schema.json)."""
    from .report import describe

    path = Path(path)
    if _deadline(timeout):
        from .watchdog import inspect_memory_cap

        return _watched(inspect, path, timeout=timeout, subject=f"reading {path}",
                        memory_cap=inspect_memory_cap(path), **options)
    return describe(load(path, shapes_only=True, **options))  # readers that can skip tensor data do


def verify(src, dst, to: str | None = None, layer: str | None = None, tolerance: float | None = None,
           config=None, raise_on_failure: bool = False, forget_bias: float | None = None,
           timeout: float | None = None) -> dict:
    """Compare every recurrent layer of `src` (numpy reference) with `dst` run in its own runtime."""
    from .verification import verify_bundle

    if _deadline(timeout):
        return _watched(verify, src, dst, to=to, layer=layer, tolerance=tolerance, config=config,
                        raise_on_failure=raise_on_failure, forget_bias=forget_bias, timeout=timeout,
                        subject=f"verifying {dst} against {src}")

    bundle = load(src, config=config, forget_bias=forget_bias)
    record = _deploy_record(Path(dst), to)
    if record is not None:
        from .deploy import verify_reduced

        if layer is not None and layer != record.get("layer"):
            raise UsageError(f"{dst} is a {record['precision']} deployment model, verified as a whole; leave "
                             f"--layer out.")
        return verify_reduced(bundle, Path(dst), record, tolerance=tolerance)
    if layer is not None:
        bundle = bundle.only(layer)
    return verify_bundle(bundle, Path(dst), to=to, tolerance=tolerance, raise_on_failure=raise_on_failure)


def _deploy_record(dst: Path, to: str | None) -> dict | None:
    """The rnnx.deploy metadata of an int8 / float16 ONNX model rnnx wrote, else None."""
    fmt = formats.for_writing(dst, to) if to else formats.for_reading(dst)
    if fmt.name != "onnx" or not dst.is_file():
        return None
    from .deploy import deploy_metadata

    return deploy_metadata(dst)
def _deadline(timeout) -> bool:
    from .watchdog import checked_timeout

    return checked_timeout(timeout) is not None


def _watched(func, *args, timeout, subject: str, outputs=(), **kwargs):
    """func(*args, **kwargs) without a timeout, run by the watchdog under one."""
    from .watchdog import call

    return call(func, *args, timeout=float(timeout), subject=subject, outputs=outputs, **kwargs)
