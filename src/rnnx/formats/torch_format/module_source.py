"""Format "torch-module": Python source of an nn.Module holding the modules a PyTorch target would fill.

    rnnx convert model.h5 model.pt
    rnnx convert model.h5 model_modules.py --to torch-module

    from model_modules import Model
    model = Model()
    model.load_state_dict(torch.load("model.pt"))   # strict: the keys are exactly those of model.pt

Only the structure is written (no weights, no forward: how the layers connect is the
source's business). Modules rnnx cannot construct (a LayerNorm or a convolution read from
a PyTorch state dict: a state dict does not name classes) are listed in a comment; load
with strict=False then, or add them. Every name from the source enters the file as a
string literal (repr), never as code.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from ... import __version__
from ...canonical import Bundle
from ...errors import UnsupportedError
from ...io import atomic_output
from . import layout as torch_layout
from .layout import refusal  # noqa: F401  (the format protocol: refusal(layer))

_HELPER = '''

def _add(root: nn.Module, path: str, module: nn.Module) -> None:
    """Attach `module` at the dotted `path`, creating plain containers on the way."""
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(name, module)
'''


def write(bundle: Bundle, path: Path, **_options) -> list[str]:
    target = torch_layout.build_target(bundle)
    known = [(prefix, call, sources) for prefix, call, sources in target.modules if call]
    unknown = [prefix for prefix, call, _ in target.modules if not call]
    if any(prefix == "" for prefix, _, _ in known):
        if len(target.modules) > 1:
            raise UnsupportedError(
                "The state dict has recurrent weights at its root next to other modules; no single nn.Module "
                "source can hold that. Write .pt or .safetensors instead.")
    for prefix, _, _ in known:
        if prefix and any(not part for part in prefix.split(".")):
            raise UnsupportedError(f"Module path {prefix!r} has an empty part; no nn.Module can be named so.")
    source = str(bundle.source.get("path", "")) or "a Bundle"
    lines = [
        f'"""PyTorch modules for the layers of {_literal_text(source)}, written by rnnx {__version__}.',
        "",
        "Load the weights written by `rnnx convert SRC model.pt` (or .safetensors) with",
        "model.load_state_dict(...). forward() is yours to write.",
        '"""',
        "",
        "from torch import nn",
    ]
    if len(known) == 1 and known[0][0] == "":
        _, call, sources = known[0]
        lines += ["", "", f"def Model() -> nn.Module:  # noqa: N802", f"    return {call}  # from {_names(sources)}"]
    else:
        lines += ["", "", "class Model(nn.Module):", "    def __init__(self):", "        super().__init__()"]
        for prefix, call, sources in known:
            lines.append(f"        _add(self, {prefix!r}, {call})  # from {_names(sources)}")
        if unknown:
            listed = ", ".join(_literal_text(p or "(root)") for p in unknown)
            lines += textwrap.wrap("not built here (a state dict does not name their classes): " + listed,
                                   width=100, initial_indent="        # ", subsequent_indent="        #   ",
                                   break_long_words=False, break_on_hyphens=False)
        lines += _HELPER.splitlines()
    text = "\n".join(lines) + "\n"
    compile(text, str(path), "exec")  # what we write must at least be valid Python
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    notes = [f"{len(known)} module(s) in class Model; load the weights of a .pt / .safetensors written from "
             f"the same source with model.load_state_dict(...)"]
    if unknown:
        shown = ", ".join(p or "(root)" for p in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        notes.append(f"not built (a state dict does not name their classes): {shown}; load with strict=False "
                     f"or add them")
    return notes


def _names(sources: list[str]) -> str:
    return ", ".join(_literal_text(s) for s in sources)


def _literal_text(text: str) -> str:
    """`text` safe inside a comment or docstring: repr's escapes, without the quotes' meaning."""
    return repr(text).replace('"""', "'''")
