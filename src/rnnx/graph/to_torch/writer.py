"""Format "torch-model": a Keras model as PyTorch source (OUT.py) and its state dict (OUT.safetensors).

    rnnx convert model.h5 model.py --to torch-model [--standalone]

    import safetensors.torch
    from model import Model
    m = Model()
    m.load_state_dict(safetensors.torch.load_file("model.safetensors"), strict=True)
    m.eval()

The file imports rnnx.torch_nn for the recurrent layers, or holds a copy of it with --standalone.
Writing needs neither torch nor TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

from ... import __version__
from ...canonical import Bundle
from ...errors import UsageError
from ...formats.safetensors_stream import save_file
from ...io import atomic_output
from .builder import build_program
from .program import MAX_LINE, Program, literal

HEADER = '''"""PyTorch model of a Keras model, written by rnnx {version}.

    import safetensors.torch
    model = Model()
    model.load_state_dict(safetensors.torch.load_file({weights!r}), strict=True)
    model.eval()
    outputs = model({args})

Inputs and outputs are Keras's: batch first, in the Keras model's order. torch.jit.script(model)
works on it.{standalone}
"""
# Keras model: {model}; source file: {source}

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
'''


def write(bundle: Bundle, path: Path, standalone: bool = False, layer: str | None = None, **_options) -> list[str]:
    path = Path(path)
    if layer is not None:
        raise UsageError("A torch-model target is the whole Keras model; leave --layer out (or write .pt / "
                         ".safetensors for one layer's weights).")
    if path.suffix != ".py":
        raise UsageError(f"A torch-model target is Python source: name it *.py, not {path.name}.")
    if bundle.source.get("file_format") == "onnx":
        if standalone:
            raise UsageError("--standalone applies to Keras sources; an ONNX model is written as a wrapper of "
                             "onnx2torch's graph module, which needs rnnx and onnx2torch.")
        from .from_onnx import write_from_onnx

        return write_from_onnx(bundle, path)
    prog, model, args, outputs = build_program(bundle)
    text = source_text(prog, model.name, str(bundle.source.get("path", "")), args, outputs, path, standalone)
    compile(text, str(path), "exec")  # what we write must at least be valid Python
    weights_path = path.with_suffix(".safetensors")
    with atomic_output(weights_path) as tmp_weights, atomic_output(path) as tmp_source:
        # tensor by tensor, lazy ones read as they are written: the bytes safetensors.numpy.save_file writes
        save_file(prog.state, tmp_weights, metadata={"format": "pt", "rnnx.version": __version__})
        tmp_source.write_text(text)
    notes = [f"{len(prog.modules)} submodule(s) in class Model; its state dict is {weights_path.name} "
             f"({len(prog.state)} tensors)", *prog.notes]
    return notes


def source_text(prog: Program, model_name: str, source: str, args: list[str], outputs, path: Path,
                standalone: bool) -> str:
    lines = HEADER.format(version=__version__, weights=path.with_suffix(".safetensors").name,
                          args=", ".join(args), model=literal(model_name), source=literal(Path(source).name),
                          standalone=" It needs only torch (rnnx's torch_nn is copied in below)." if standalone
                          else "").splitlines()
    if standalone:
        lines += ["", "", "# ---- rnnx.torch_nn " + "-" * 72, *_torch_nn_body(), "# " + "-" * 90]
    else:
        lines += ["", "from rnnx import torch_nn as rnnx_nn"]
    lines += ["", "", "class Model(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    for module in prog.modules:
        lines.append(_fit(f"        # {module.comment}"))
        lines += wrap(f"        self.{module.attr} = {module.construction}")
    returns = "Tensor" if len(outputs) == 1 else f"Tuple[{', '.join(['Tensor'] * len(outputs))}]"
    lines += ["", *wrap(f"    def forward(self, {', '.join(f'{a}: Tensor' for a in args)}) -> {returns}:")]
    for line in prog.lines:
        lines += wrap(f"        {line}")
    result = outputs[0].var if len(outputs) == 1 else f"({', '.join(v.var for v in outputs)})"
    lines += wrap(f"        return {result}")
    lines += ["", "    @torch.jit.export", "    def reset_states(self) -> None:",
              '        """Zero the states the stateful layers carry between calls (Keras reset_states())."""']
    lines += [f"        self.{attr}.reset_states()" for attr in prog.stateful] or ["        pass"]
    text = "\n".join(lines) + "\n"
    if standalone:
        text = re.sub(r"\brnnx_nn\.", "", text)
    return text


def _torch_nn_body() -> list[str]:
    """rnnx/torch_nn.py without its docstring and imports (the header has the same imports)."""
    source = (Path(__file__).resolve().parent.parent.parent / "torch_nn.py").read_text()
    body = source.split("from torch import Tensor, nn\n", 1)[1]
    return ["import math", *body.splitlines()]


def _fit(comment: str) -> str:
    return comment if len(comment) <= MAX_LINE else comment[:MAX_LINE - 3] + "..."


def wrap(line: str, width: int = MAX_LINE) -> list[str]:
    """`line` as it is, or broken inside its outermost brackets so no line is over `width`."""
    if len(line) <= width:
        return [line]
    indent = line[:len(line) - len(line.lstrip())]
    start, end = _outer_brackets(line)
    if start is None:
        return [line]
    head, inner, tail = line[:start + 1], line[start + 1:end], line[end:]
    pieces = _split_top_level(inner)
    body, current = [], indent + "    "
    for k, piece in enumerate(pieces):
        piece = piece.strip() + ("," if k < len(pieces) - 1 else "")
        candidate = f"{current} {piece}" if current.strip() else current + piece
        if len(candidate) > width and current.strip():
            body.append(current)
            current = indent + "    " + piece
        else:
            current = candidate
    body.append(current)
    out = [head]
    for item in body:
        out += wrap(item, width) if len(item) > width else [item]
    return out + wrap(indent + tail, width)


def _outer_brackets(line: str) -> tuple[int | None, int | None]:
    """The first opening bracket outside strings and its matching closing one."""
    depth, start, quote = 0, None, None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote and line[k - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            break
        elif ch in "([":
            if depth == 0 and start is None:
                start = k
            depth += 1
        elif ch in ")]" and start is not None:  # a closer before any opener belongs to the line before
            depth -= 1
            if depth == 0:
                return start, k
    return None, None


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, current = [], 0, None, ""
    for k, ch in enumerate(text):
        if quote:
            if ch == quote and text[k - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current)
    return parts
