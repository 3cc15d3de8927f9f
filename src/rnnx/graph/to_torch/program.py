"""What a converter writes into: submodules, forward() lines and the state dict of the Model.

A converter sees values (`Value`: the name of a local variable of forward(), its rank and the
variable holding the Keras mask riding on it) and adds code through `Program`. Every identifier
in the code is one rnnx derived (letters, digits, underscores); a name from the file enters only
through `literal()`, as a comment or a string.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

import numpy as np

from ...lazy import LazyArray
from ..to_onnx.context import Context, LayerCall  # the weight lookup of nested / shared layers

MAX_LINE = 100
# nn.Module's own attributes and the names the generated file imports: never a layer's attribute
RESERVED = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children", "compile", "cpu",
    "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state",
    "get_parameter", "get_submodule", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "type", "xpu", "zero_grad", "training", "reset_states", "self", "torch", "nn", "F", "math", "rnnx_nn",
    "Tensor", "List", "Optional", "Tuple", "None", "True", "False", "int", "float", "bool", "list", "len", "range",
    "str", "max", "min", "print", "super", "Model",
    # the names of rnnx.torch_nn, which --standalone copies into the generated file
    "activation", "GATES", "ACTIVATION_SLOTS", "RecurrentLoop", "FastLSTM", "FastGRU", "KerasRecurrent",
    "pad_same", "avg_pool_same", "max_pool_same", "masked_mean", "Affine", "LayerNorm",
})


@dataclass(frozen=True)
class Value:
    """One Keras tensor: a local variable of forward(), its rank (batch axis included) when known,
    and the variable holding its bool [batch, steps] Keras mask, if one rides on it."""

    var: str
    rank: int | None = None
    mask: str | None = None

    def derive(self, var: str, rank: int | None = -1, mask: str | None = "same") -> "Value":
        return Value(var, self.rank if rank == -1 else rank, self.mask if mask == "same" else mask)


@dataclass
class Module:
    attr: str
    construction: str  # Python expression building the submodule
    comment: str


@dataclass
class Program:
    ctx: Context  # weights of the Keras layers, found as the ONNX backend finds them
    modules: list[Module] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    state: dict[str, np.ndarray] = field(default_factory=dict)  # numpy or rnnx.lazy arrays
    notes: list[str] = field(default_factory=list)
    stateful: list[str] = field(default_factory=list)  # attributes holding carried states
    _attrs: dict[str, str] = field(default_factory=dict)  # Keras layer name -> attribute
    _taken: set[str] = field(default_factory=set)  # attributes
    _locals: set[str] = field(default_factory=set)  # variables of forward()

    # --- names -----------------------------------------------------------------------
    def identifier(self, hint: str, local: bool = True) -> str:
        """A fresh Python identifier (a forward() variable, or with local=False an attribute) derived
        from `hint`, a Keras name, possibly hostile."""
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint.rsplit("/", 1)[-1] if len(hint) > 40 else hint)
        base = re.sub(r"_+", "_", base).strip("_").lower()[:40] or "layer"
        if base[0].isdigit() or keyword.iskeyword(base) or base in RESERVED or base.startswith("state_"):
            base = f"layer_{base}"
        taken = self._locals if local else self._taken
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def attribute(self, call: LayerCall) -> str | None:
        """The attribute of a layer already constructed (a shared layer's second call), or None."""
        return self._attrs.get(call.name)

    # --- code -----------------------------------------------------------------------
    def module(self, call: LayerCall, construction: str, params: dict[str, np.ndarray]) -> str:
        """The submodule of Keras layer `call` (built once, however often it is called)."""
        if call.name in self._attrs:
            return self._attrs[call.name]
        attr = self.identifier(call.name, local=False)
        self._attrs[call.name] = attr
        self.modules.append(Module(attr, construction, f"{literal(call.name)} ({call.class_name})"))
        for key, array in params.items():
            # a lazy tensor is read when the state dict is written, tensor by tensor
            self.state[f"{attr}.{key}"] = array if isinstance(array, LazyArray) else np.ascontiguousarray(array)
        return attr

    def constant(self, call: LayerCall, array: np.ndarray) -> str:
        """A constant tensor argument of layer `call` (a tf_keras TF op's), held in the state dict as a
        parameter that does not train; returns the attribute."""
        attr = self.identifier(f"{call.scope}_constant", local=False)
        shape = ", ".join(str(d) for d in array.shape)
        self.modules.append(Module(attr, f"nn.Parameter(torch.zeros([{shape}]), requires_grad=False)",
                                   f"constant argument of {literal(call.name)} ({call.class_name})"))
        self.state[attr] = np.ascontiguousarray(array)
        return attr

    def let(self, hint: str, expr: str, comment: str = "") -> str:
        """`var = expr` as a line of forward(); returns var."""
        var = self.identifier(hint)
        self.emit(f"{var} = {expr}", comment)
        return var

    def comment(self, text: str) -> None:
        """A comment line of forward() (cut to fit the line width)."""
        line = f"# {text}"
        self.lines.append(line if len(line) <= MAX_LINE - 8 else line[:MAX_LINE - 11] + "...")

    def emit(self, line: str, comment: str = "") -> None:
        text = f"{line}  # {comment}" if comment else line
        if len(text) + 8 > MAX_LINE and comment:
            self.lines.append(f"# {comment}")
            text = line
        self.lines.append(text)


def literal(text: str) -> str:
    """`text` safe inside a comment: repr's escapes (no newline can end the comment)."""
    return repr(str(text))


def py(value) -> str:
    """A Python literal of a plain config value (numbers, strings, lists), for constructor calls."""
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, (bool, int, str)) or value is None:
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(py(v) for v in value) + "]"
    raise TypeError(f"not a plain value: {value!r}")
