"""`rnnx verify`: the numpy reference of the source against the target run in its own runtime."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from . import formats
from .canonical import Bundle, reference
from .errors import FormatError, RnnxError, UsageError, VerificationError
from .lazy import held

# (batch, sequence length) pairs every layer is checked on.
SHAPES = ((1, 1), (2, 7), (5, 23))
TOLERANCE = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-9}
# A runtime computing in the layer's own precision (float32) cannot agree with the float64
# reference better than that precision allows: trained layers with large weights drift by
# more than 1e-5 through rounding alone. The noise floor is measured, per layer and input,
# as the distance between the reference run in the layer's dtype and in float64; the
# default tolerance is the larger of TOLERANCE and NOISE_FACTOR times that floor. A wrong
# conversion (a gate block out of place, a lost bias) is off by orders of magnitude more.
NOISE_FACTOR = 4.0


def verify_bundle(bundle: Bundle, dst: Path, to: str | None = None, tolerance: float | None = None,
                  raise_on_failure: bool = False, seed: int = 0) -> dict:
    if tolerance is not None and not tolerance >= 0:  # also NaN, which no error is ever below
        raise UsageError(f"--tolerance {tolerance} is not a usable error bound; give a number of 0 or more "
                         f"(e.g. 1e-5), or leave it out for the default.")
    if not bundle.layers:
        raise UsageError(nothing_to_verify(bundle))
    fmt = formats.for_writing(dst, to) if to else formats.for_reading(dst)
    runner = formats.load_module(fmt, "run_layer")
    in_target = _held_layers(dst, fmt) if len(bundle.layers) > 1 else None
    if in_target and len(in_target) < len(bundle.layers):
        raise UsageError(subset_message(bundle, in_target, dst))
    rng = np.random.default_rng(seed)
    results = []
    partners = None
    for layer in bundle.layers:
        layer = held(layer)  # read once per layer, not once per reference run (lazy tensors)
        source_name = layer.name
        max_abs = max_rel = noise = 0.0
        for batch, seq in SHAPES:
            x = rng.standard_normal((batch, seq, layer.input_size)).astype(layer.dtype)
            want, _, _ = reference.run_batch_first(layer, x)
            in_own_dtype, _, _ = reference.run_batch_first(layer, x, dtype=layer.dtype)
            noise = max(noise, float(_difference(in_own_dtype.astype(np.float64), want).max()))
            try:
                got = runner.run_layer(dst, layer, x)
            except (FormatError, UsageError):  # the target's own lookup found no layer of that name
                if layer.name != source_name:
                    raise
                partners = partners if partners is not None else _partners(bundle, dst, fmt, in_target)
                partner = partners.get(source_name)
                if partner is None:
                    raise
                layer = _paired(layer, partner, dst)
                got = runner.run_layer(dst, layer, x)
            got = np.asarray(got, np.float64)
            if got.shape != want.shape:
                raise VerificationError(
                    f"{dst}: layer {layer.name!r} returned shape {got.shape}, the reference {want.shape}.")
            diff = _difference(got, want)
            max_abs = max(max_abs, float(diff.max()))
            rel = np.nan_to_num(diff / np.fmax(np.abs(want), 1e-3), nan=np.inf)
            max_rel = max(max_rel, float(rel.max()))
        tol = tolerance if tolerance is not None else max(TOLERANCE[str(layer.dtype)], NOISE_FACTOR * noise)
        paired = {} if layer.name == source_name else {"target_layer": layer.name}
        results.append({"layer": source_name, **paired, "max_abs_error": max_abs, "max_rel_error": max_rel,
                        "noise_floor": noise, "tolerance": tol, "ok": bool(max_abs <= tol)})
    report = {"source": str(bundle.source.get("path", "")), "target": str(dst), "target_format": fmt.name,
              "shapes": [list(s) for s in SHAPES], "layers": results,
              "ok": all(r["ok"] for r in results)}
    if raise_on_failure and not report["ok"]:
        bad = [r for r in results if not r["ok"]]
        raise VerificationError(
            f"{dst} does not compute what its source computes: layer {bad[0]['layer']!r} differs by "
            f"{bad[0]['max_abs_error']:.3g} (tolerance {bad[0]['tolerance']:g}).", report)
    return report


def nothing_to_verify(bundle: Bundle) -> str:
    return (f"{bundle.source.get('path', 'The source')} holds no recurrent layer, so there is nothing to verify: "
            f"rnnx verify proves recurrent layers only.")


def _difference(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """|got - want|, where equal values (also equal infinities and NaN against NaN) differ by 0 and a
    non-finite value against any other by inf: a NaN must never vanish from the maximum."""
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got - want)
    return np.where(same, 0.0, np.nan_to_num(diff, nan=np.inf))


def _held_layers(dst: Path, fmt) -> list | None:
    """The recurrent layers `dst` holds as its own reader sees them; None when it cannot be read."""
    try:
        return formats.load_module(fmt, "read").read(dst).layers
    except RnnxError:
        return None


def subset_message(bundle: Bundle, held: list, dst: Path) -> str:
    """What to do when `dst` holds fewer recurrent layers than the source: a file written with
    `convert --layer NAME` is verified with the same `--layer NAME`."""
    source = bundle.source.get("path") or "the source"
    counterparts = _counterparts(bundle, held)
    modules = {m for m, layers in bundle.stacked_modules().items() if all(l.name in counterparts for l in layers)}
    names = sorted(modules) + [l.name for l in bundle.layers
                               if l.name in counterparts and l.provenance.get("module") not in modules]
    what = (f"{dst} holds {len(held)} of the {len(bundle.layers)} recurrent layers of {source} "
            f"({', '.join(l.name for l in held)}), as `rnnx convert --layer` writes")
    if len(names) == 1:
        return f"{what}; verify it with `--layer {names[0]}`, as it was converted."
    if names:
        return f"{what}; verify it one layer at a time with `--layer NAME`, NAME one of: {', '.join(names)}."
    return (f"{what}, and none of them has the name or shape of a source layer; verify it with `--layer NAME` "
            f"naming the source layer it was converted from.")


def _counterparts(bundle: Bundle, held: list) -> set[str]:
    """Names of the source layers that the layers of `held` were converted from: by name, by the name the
    writers leave (`_stem`), else by shape when only one source layer has it."""
    found: set[str] = set()
    for there in held:
        same = [l for l in bundle.layers if l.name == there.name] or \
            [l for l in bundle.layers if _stem(l.name) == _stem(there.name)]
        if not same:
            shaped = [l for l in bundle.layers if _shape(l) == _shape(there)]
            same = shaped if len(shaped) == 1 else []
        found.update(l.name for l in same[:1])
    return found


def _partners(bundle: Bundle, dst: Path, fmt, held: list | None = None) -> dict:
    """Source layer name -> the layer at its position in `dst`, when both hold as many recurrent layers.

    Converters rename layers (a PyTorch module `lstm` is read back as `lstm.l0`, Keras `a/b`
    is written as `a_b`), so along a chain of conversions a layer may carry another name. A
    source layer that the target's own lookup does not find is paired with the one layer of the
    same stem (`_stem`), else, when both hold as many layers, with the layer at its position
    (checked in `_paired`: a wrong pairing is refused, never passes).
    """
    held = held if held is not None else _held_layers(dst, fmt)
    if held is None:
        return {}
    by_stem: dict[str, list] = {}
    for there in held:
        by_stem.setdefault(_stem(there.name), []).append(there)
    partners = {layer.name: by_stem[_stem(layer.name)][0] for layer in bundle.layers
                if len(by_stem.get(_stem(layer.name), ())) == 1}
    if len(held) == len(bundle.layers):
        for layer, there in zip(bundle.layers, held):
            partners.setdefault(layer.name, there)
    return partners


def _stem(name: str) -> str:
    """A layer name as the writers of every format leave it: `encoder/lstm 1`, `encoder_lstm_1.l0` and
    `encoder_lstm_1` all give `encoder_lstm_1`."""
    return re.sub(r"\W", "_", re.sub(r"\.l0$", "", name), flags=re.ASCII)


def _paired(layer, there, dst: Path):
    if _shape(layer) != _shape(there):
        raise VerificationError(
            f"{dst} has no layer named {layer.name!r}, and the layer at its position, {there.name!r}, is "
            f"{_describe(there)} where the source has {_describe(layer)}; verify with --layer NAME.")
    return dataclasses.replace(layer, name=there.name)


def _shape(layer) -> tuple:
    return layer.cell, layer.input_size, layer.hidden_size, layer.num_directions


def _describe(layer) -> str:
    return (f"a {layer.cell.upper()} of {layer.hidden_size} units on {layer.input_size} inputs, "
            f"{'bidirectional' if layer.num_directions == 2 else 'one direction'}")


def as_text(report: dict) -> str:
    lines = [f"{'layer':<24} {'max abs error':>14} {'max rel error':>14} {'noise floor':>12}  result"]
    for r in report["layers"]:
        name = r["layer"] + (f" -> {r['target_layer']}" if "target_layer" in r else "")
        lines.append(f"{name:<24} {r['max_abs_error']:>14.3g} {r['max_rel_error']:>14.3g} "
                     f"{r['noise_floor']:>12.3g}  {'ok' if r['ok'] else 'FAILED'} (tolerance {r['tolerance']:.3g})")
    lines.append(f"{report['target']}: " + ("matches its source." if report["ok"] else "does NOT match its source."))
    return "\n".join(lines)
