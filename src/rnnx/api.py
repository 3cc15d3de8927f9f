"""The public functions: load, save, convert, inspect, verify."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import formats
from .canonical import Bundle
from .errors import UsageError


def load(path, **options) -> Bundle:
    """Read any supported file into a canonical Bundle (options: config=PATH for an architecture JSON)."""
    path = Path(path)
    fmt = formats.for_reading(path)
    if options.get("config") is not None and fmt.name not in ("keras-h5", "keras3-weights"):
        raise UsageError(f"--config gives a Keras weights file its architecture; {path} is read as {fmt.name}, "
                         f"which takes none, so leave --config out.")
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


def convert(src, dst, to: str | None = None, layer: str | None = None, config=None,
            verify: bool = False, raise_on_failure: bool = True, progress=None, **options) -> ConvertResult:
    """Read `src`, write `dst`; with verify=True also prove it numerically.

    A failed verification raises VerificationError, or with raise_on_failure=False is left in
    result.verification["ok"] (the file stays written either way, for inspection). `progress`:
    a callable that gets rnnx.progress.Event's (bytes of tensor data read and written)."""
    from .progress import done, reporting

    with reporting(progress):
        result = _convert(src, dst, to, layer, config, verify, raise_on_failure, **options)
        done()
    return result


def _convert(src, dst, to, layer, config, verify, raise_on_failure, **options) -> ConvertResult:
    from .io import same_file
    from .lazy import lazy_bytes
    from .progress import start

    src, dst = Path(src), Path(dst)
    if same_file(src, dst):
        raise UsageError(f"The destination {dst} is the source file; choose another path so the source is kept.")
    fmt = formats.for_writing(dst, to)
    if verify:
        formats.load_module(fmt, "run_layer")  # a target that cannot be verified is refused before writing
    bundle = load(src, config=config)
    if layer is not None:
        bundle = bundle.only(layer)
    if verify and not bundle.layers:
        from .verification import nothing_to_verify

        raise UsageError(nothing_to_verify(bundle) + " Convert without --verify.")  # refused before writing
    start(lazy_bytes(bundle))
    notes = save(bundle, dst, to=fmt.name, layer=layer, **options)
    result = ConvertResult(bundle, fmt.name, list(notes))
    if verify:
        from .verification import verify_bundle

        result.verification = verify_bundle(bundle, dst, to=fmt.name, raise_on_failure=raise_on_failure)
    return result


def inspect(path, **options) -> dict:
    """A JSON-ready description of a file (schemas/inspect.schema.json)."""
    from .report import describe

    path = Path(path)
    return describe(load(path, **options))


def verify(src, dst, to: str | None = None, layer: str | None = None, tolerance: float | None = None,
           config=None, raise_on_failure: bool = False) -> dict:
    """Compare every recurrent layer of `src` (numpy reference) with `dst` run in its own runtime."""
    from .verification import verify_bundle

    bundle = load(src, config=config)
    if layer is not None:
        bundle = bundle.only(layer)
    return verify_bundle(bundle, Path(dst), to=to, tolerance=tolerance, raise_on_failure=raise_on_failure)
