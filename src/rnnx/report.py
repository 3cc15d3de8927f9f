"""What `rnnx inspect` says about a Bundle, as JSON-ready data and as text."""

from __future__ import annotations

import importlib

from . import __version__, formats
from .canonical import Bundle, RecurrentLayer

# Provenance keys shown in the text report, in this order, when present.
_SHOWN_PROVENANCE = ("class_name", "module", "rebuild", "keras_version", "assumption")


def describe(bundle: Bundle) -> dict:
    return {
        "rnnx_version": __version__,
        "path": str(bundle.source.get("path", "")),
        "format": bundle.source.get("file_format") or bundle.source.get("format", "unknown"),
        "source": {k: v for k, v in bundle.source.items()
                   if k in ("keras_version", "backend", "producer", "opset", "has_architecture")}
        | _converted_from(bundle.source),
        "layers": [_describe_layer(layer) for layer in bundle.layers],
        "other_layers": [
            {"name": o.name, "class_name": o.class_name,
             "weights": [{"name": n, "shape": list(a.shape), "dtype": str(a.dtype)} for n, a in o.weights]}
            for o in bundle.others],
    }


def _describe_layer(layer: RecurrentLayer) -> dict:
    return {
        "name": layer.name,
        "class_name": str(layer.provenance.get("class_name", layer.cell.upper())),
        "kind": layer.kind,
        "units": layer.units,
        "input_size": layer.input_size,
        "hidden_size": layer.hidden_size,
        "directions": layer.num_directions,
        "bias_layout": layer.bias_layout,
        "activations": [a.to_json() for a in layer.activations],
        "dtype": str(layer.dtype),
        "peepholes": layer.has_peepholes,
        "clip": layer.clip,
        "provenance": {k: v for k, v in layer.provenance.items() if isinstance(v, (str, int, float, bool))},
        "targets": _targets(layer),
    }


def _targets(layer: RecurrentLayer) -> dict[str, str]:
    """For each writable format: "ok" or the reason it would refuse this layer."""
    out = {}
    for fmt in formats.FORMATS:
        try:
            module = importlib.import_module(fmt.module)
        except ModuleNotFoundError:
            continue
        if not hasattr(module, "write"):
            continue
        refusal = getattr(module, "refusal", None)
        reason = refusal(layer) if refusal else None
        out[fmt.name] = reason or "ok"
    return out


def _converted_from(source: dict) -> dict:
    """A .rnnx file remembers the format it was made from (its writers depend on it); say so."""
    origin = source.get("format")
    if source.get("container") == source.get("file_format"):  # a TensorFlow file holding a Keras 2 model
        return {}
    return {"converted_from": origin} if origin and origin != source.get("file_format", origin) else {}


def as_text(report: dict) -> str:
    lines = [f"{report['path']}: {report['format']}"
             + "".join(f", {k} {v}" for k, v in report["source"].items() if k != "has_architecture")]
    layers = report["layers"]
    lines.append(f"{len(layers)} recurrent layer{'s' * (len(layers) != 1)}:")
    for layer in layers:
        dirs = "bidirectional" if layer["directions"] == 2 else "one direction"
        hidden = f", proj {layer['hidden_size']}" if layer["hidden_size"] != layer["units"] else ""
        lines.append(
            f"  {layer['name']}: {layer['class_name']} ({layer['kind']}), units {layer['units']}{hidden}, "
            f"input {layer['input_size']}, {dirs}, bias {layer['bias_layout']}, {layer['dtype']}")
        acts = ", ".join(_act(a) for a in layer["activations"])
        lines.append(f"      activations: {acts}")
        for key in _SHOWN_PROVENANCE[1:]:
            if key in layer["provenance"]:
                lines.append(f"      {key}: {layer['provenance'][key]}")
        ok = [f for f, r in layer["targets"].items() if r == "ok"]
        lines.append(f"      converts to: {', '.join(ok) or 'nothing'}")
        refused: dict[str, list[str]] = {}  # one line per reason, naming every format it stops
        for fmt, reason in layer["targets"].items():
            if reason != "ok":
                refused.setdefault(reason, []).append(fmt)
        for reason, fmts in refused.items():
            lines.append(f"      not to {', '.join(fmts)}: {reason}")
    others = report["other_layers"]
    if others:
        lines.append(f"{len(others)} other layer{'s' * (len(others) != 1)} carried along: "
                     + ", ".join(f"{o['name']} ({o['class_name'] or '?'})" for o in others))
    return "\n".join(lines)


def _act(a: dict) -> str:
    if "alpha" in a:
        return f"{a['name']}(alpha={a['alpha']:.4g}, beta={a.get('beta', 0):.4g})"
    return a["name"]
