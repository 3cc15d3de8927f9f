"""`rnnx convert model.onnx OUT.py --to torch-model`: onnx2torch's graph module, wrapped.

Writes OUT.py (a Model whose __init__ builds onnx2torch's graph module from OUT.onnx, with rnnx's
LSTM / GRU / RNN converters registered), OUT.onnx (the source model, copied) and OUT.safetensors
(the graph module's state dict, so `load_state_dict(..., strict=True)` works as for Keras models).
Every node must be one onnx2torch takes; otherwise nothing is written and the first node that is
not is named. Needs torch and onnx2torch (pip install 'rnnx[onnx2torch]').
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import __version__
from ...io import atomic_output
from .program import literal

SOURCE = '''"""PyTorch model of the ONNX model {source}, written by rnnx {version}: onnx2torch's graph module
with rnnx's ONNX LSTM / GRU / RNN converters, built from {onnx_name} beside this file.

    import safetensors.torch
    model = Model()
    model.load_state_dict(safetensors.torch.load_file({weights!r}), strict=True)
    model.eval()
    outputs = model(*inputs)   # the ONNX graph's inputs, in its order and layout

Needs torch, onnx, onnx2torch and rnnx.
"""

from pathlib import Path

import onnx
import onnx2torch
from torch import nn

import rnnx.onnx2torch  # noqa: F401  (registers ONNX LSTM / GRU / RNN into onnx2torch)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.graph = onnx2torch.convert(onnx.load(str(Path(__file__).with_name({onnx_name!r}))))

    def forward(self, *inputs):
        return self.graph(*inputs)
'''


def write_from_onnx(bundle, path: Path) -> list[str]:
    import onnx

    from ...formats.onnx_format.model import load_model
    from ... import onnx2torch as rnnx_onnx2torch

    source = Path(bundle.source["path"])
    model = load_model(source, lazy=False)  # onnx2torch converts every tensor, and the copy holds them
    rnnx_onnx2torch.check_convertible(model)
    graph_module = rnnx_onnx2torch.onnx2torch.convert(model)
    state = {f"graph.{k}": np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in graph_module.state_dict().items()}
    onnx_path, weights_path = path.with_suffix(".onnx"), path.with_suffix(".safetensors")
    text = SOURCE.format(source=literal(source.name), version=__version__, onnx_name=onnx_path.name,
                         weights=weights_path.name)
    compile(text, str(path), "exec")
    from safetensors.numpy import save_file

    with atomic_output(onnx_path) as tmp_onnx, atomic_output(weights_path) as tmp_weights, \
            atomic_output(path) as tmp_source:
        onnx.save(model, str(tmp_onnx))
        save_file(state, str(tmp_weights), metadata={"format": "pt", "rnnx.version": __version__})
        tmp_source.write_text(text)
    recurrent = sum(n.op_type in ("LSTM", "GRU", "RNN") for n in model.graph.node)
    return [f"{path.name} wraps onnx2torch's graph module of {len(model.graph.node)} nodes ({recurrent} recurrent); "
            f"it builds it from {onnx_path.name} (a copy of the source); {weights_path.name} holds its state dict"]
