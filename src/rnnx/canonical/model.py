"""The canonical recurrent layer and the Bundle that carries a whole file.

Matrices are in `W x` style, gate blocks in cuDNN order (see gates.py):
W (gates*u, in), R (gates*u, u or proj). Biases stay as the source stored them:
`b_w` always, `b_r` only when the source had a second (recurrent) bias. Keeping
both costs nothing and makes every round trip exact; a target with a single bias
fuses them with `gates.fuse` (float64 sum, rounded once), which is exact for LSTM,
SimpleRNN, the r/z gates of any GRU and all of a reset-before GRU. A reset-after
GRU's recurrent candidate bias can never be folded, so writers with one bias refuse it
unless it is zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .activations import SIGMOID, TANH, Activation
from .gates import gate_count

CELLS = ("lstm", "gru", "rnn")
ACTIVATION_COUNT = {"lstm": 3, "gru": 2, "rnn": 1}  # ONNX f, g, h slots
DEFAULT_ACTIVATIONS = {
    "lstm": (SIGMOID, TANH, TANH),
    "gru": (SIGMOID, TANH),
    "rnn": (TANH,),
}
FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass
class Direction:
    """The weights of one direction of one layer."""

    W: np.ndarray  # (gates*u, in)
    R: np.ndarray  # (gates*u, u) or (gates*u, proj)
    b_w: np.ndarray | None = None  # (gates*u,) input bias, None = no bias at all
    b_r: np.ndarray | None = None  # (gates*u,) recurrent bias, when the source kept one
    P: np.ndarray | None = None  # (3u,) LSTM peepholes, canonical order i, f, o
    proj: np.ndarray | None = None  # (proj, u) LSTM projection (PyTorch weight_hr)

    def tensors(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in vars(self).items() if v is not None}

    def fused_bias(self) -> np.ndarray:
        """b_w + b_r rounded once; zeros when the layer has no bias."""
        from .gates import fuse

        if self.b_w is None and self.b_r is None:
            return np.zeros(self.W.shape[0], self.W.dtype)
        if self.b_w is None:
            return self.b_r
        return fuse(self.b_w, self.b_r)


@dataclass
class RecurrentLayer:
    name: str
    cell: str  # "lstm" | "gru" | "rnn"
    directions: list[Direction]
    activations: tuple[Activation, ...] | None = None  # ONNX slots: LSTM f,g,h; GRU f,g; RNN f
    reset_after: bool = True  # GRU only: True = cuDNN/PyTorch form, False = Keras reset_after=False
    clip: float | None = None
    input_forget: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)  # format, class_name, keras_version, ...
    options: dict[str, Any] = field(default_factory=dict)  # source semantics: return_sequences, ...

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"layer {self.name!r}: cell must be one of {CELLS}, not {self.cell!r}")
        if self.activations is None:
            self.activations = DEFAULT_ACTIVATIONS[self.cell]
        self.activations = tuple(self.activations)
        if len(self.activations) != ACTIVATION_COUNT[self.cell]:
            raise ValueError(f"layer {self.name!r}: {self.cell} needs {ACTIVATION_COUNT[self.cell]} activations")
        if len(self.directions) not in (1, 2):
            raise ValueError(f"layer {self.name!r}: 1 or 2 directions, not {len(self.directions)}")
        if self.cell != "gru":
            self.reset_after = True
        if self.clip is not None and not 0 < self.clip < float("inf"):
            raise ValueError(f"layer {self.name!r}: cell clip {self.clip} is not a positive threshold")
        self._check_shapes()

    def _check_shapes(self):
        n = gate_count(self.cell)
        first = self.directions[0]
        if first.W.ndim != 2 or first.W.shape[0] % n:
            raise ValueError(f"layer {self.name!r}: W of shape {first.W.shape} does not hold {n} gates")
        u, inp = first.W.shape[0] // n, first.W.shape[1]
        hidden = first.proj.shape[0] if first.proj is not None else u
        if not (u and inp and hidden):
            raise ValueError(f"layer {self.name!r} has {u} units, input size {inp} and output size {hidden}; "
                             f"a recurrent layer needs at least one of each")
        expected = {
            "W": (n * u, inp), "R": (n * u, hidden), "b_w": (n * u,), "b_r": (n * u,),
            "P": (3 * u,), "proj": (hidden, u),
        }
        for k, d in enumerate(self.directions):
            for key, arr in d.tensors().items():
                if arr.shape != expected[key]:
                    raise ValueError(
                        f"layer {self.name!r} direction {k}: {key} has shape {arr.shape}, expected {expected[key]}")
                if arr.dtype != first.W.dtype:
                    raise ValueError(f"layer {self.name!r}: mixed dtypes {arr.dtype} and {first.W.dtype}")
            if set(d.tensors()) != set(first.tensors()):
                raise ValueError(f"layer {self.name!r}: directions hold different tensors")
        if first.W.dtype.type not in FLOAT_DTYPES:
            raise ValueError(f"layer {self.name!r} holds {first.W.dtype} weights; rnnx reads float16, float32 and "
                             f"float64 recurrent weights, so save the model with float weights")
        if (first.P is not None or first.proj is not None) and self.cell != "lstm":
            raise ValueError(f"layer {self.name!r}: peepholes and projections exist only on LSTM")

    # --- derived facts -------------------------------------------------------
    @property
    def units(self) -> int:
        return self.directions[0].W.shape[0] // gate_count(self.cell)

    @property
    def input_size(self) -> int:
        return self.directions[0].W.shape[1]

    @property
    def hidden_size(self) -> int:
        """Size of h (the projection size when there is one)."""
        return self.directions[0].R.shape[1]

    @property
    def proj_size(self) -> int | None:
        p = self.directions[0].proj
        return None if p is None else p.shape[0]

    @property
    def num_directions(self) -> int:
        return len(self.directions)

    @property
    def dtype(self) -> np.dtype:
        return self.directions[0].W.dtype

    @property
    def has_bias(self) -> bool:
        return self.directions[0].b_w is not None or self.directions[0].b_r is not None

    @property
    def has_peepholes(self) -> bool:
        return self.directions[0].P is not None

    @property
    def kind(self) -> str:
        """lstm, gru (reset after), gru-reset-before, rnn: the cell as a user reads it."""
        if self.cell == "gru" and not self.reset_after:
            return "gru-reset-before"
        return self.cell

    @property
    def bias_layout(self) -> str:
        d = self.directions[0]
        if d.b_w is None and d.b_r is None:
            return "none"
        return "input+recurrent" if d.b_r is not None else "single"

    def candidate_bias_foldable(self) -> bool:
        """True when a single-bias target can hold this layer exactly."""
        if self.cell != "gru" or not self.reset_after:
            return True
        u = self.units
        return all(d.b_r is None or not np.any(d.b_r[2 * u:]) for d in self.directions)

    def uses_only(self, gate: Activation, cell_act: Activation = TANH) -> bool:
        """Whether the gates use `gate` and the candidate/output use `cell_act`."""
        return self.activations[0] == gate and all(a == cell_act for a in self.activations[1:])

    def describe_activations(self) -> str:
        return ", ".join(a.describe() for a in self.activations)


@dataclass
class OpaqueLayer:
    """A non-recurrent layer carried along verbatim (Dense, Embedding, a custom layer...)."""

    name: str
    class_name: str | None
    weights: list[tuple[str, np.ndarray]] = field(default_factory=list)  # stored order
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bundle:
    """Everything read from one file: recurrent layers plus what rides along, in source order."""

    items: list[RecurrentLayer | OpaqueLayer]
    source: dict[str, Any] = field(default_factory=dict)  # format, path, keras_version, model_config...

    def __post_init__(self):
        names = [it.name for it in self.items]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"layer names must be unique, repeated: {dupes}")

    @property
    def layers(self) -> list[RecurrentLayer]:
        return [it for it in self.items if isinstance(it, RecurrentLayer)]

    @property
    def others(self) -> list[OpaqueLayer]:
        return [it for it in self.items if isinstance(it, OpaqueLayer)]

    def layer(self, name: str) -> RecurrentLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        from ..errors import UsageError

        known = ", ".join(l.name for l in self.layers) or "none"
        modules = sorted(self.stacked_modules())
        if modules:
            known += f" (stacked modules, each one unit: {', '.join(modules)})"
        where = f"{self.source['path']} has" if self.source.get("path") else "There is"
        raise UsageError(f"{where} no recurrent layer named {name!r}; the layers are: {known}.")

    def stacked_modules(self) -> dict[str, list[RecurrentLayer]]:
        """Module name -> its layers in stack order, for the PyTorch modules with num_layers > 1 a reader
        split into one layer per stack level (provenance `module` and `stack_index`)."""
        modules: dict[str, list[RecurrentLayer]] = {}
        for layer in self.layers:
            module, index = layer.provenance.get("module"), layer.provenance.get("stack_index")
            if isinstance(module, str) and module and isinstance(index, int):
                modules.setdefault(module, []).append(layer)
        return {m: sorted(ls, key=lambda l: l.provenance["stack_index"]) for m, ls in modules.items()
                if len(ls) > 1}

    def only(self, name: str) -> "Bundle":
        """A bundle holding just the recurrent layer `name`, or every layer of the stacked module `name`
        (PyTorch `encoder` -> `encoder.l0`, `encoder.l1`, ...), which writers keep as one chained unit."""
        if not any(layer.name == name for layer in self.layers) and name in self.stacked_modules():
            return Bundle(list(self.stacked_modules()[name]), dict(self.source))
        return Bundle([self.layer(name)], dict(self.source))

