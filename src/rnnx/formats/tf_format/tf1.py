"""TF1 name-based checkpoints (tf.train.Saver): variables by scope -> canonical layers.

    layers_from_variables(variables, meta_path=None, forget_bias=None, where=None) -> (items, notes)

`variables` maps each checkpoint name to an array-like (.shape, .dtype, numpy on demand);
where the arrays came from (rnnx's bundle reader, TensorFlow) does not matter. Lazy arrays
(rnnx.lazy) give lazy canonical tensors, each computed from its stored variables when read
(a fused kernel is read once for W and once for R); plain arrays give plain ones. A cell is
found by its scope's last name (the names TF gives its cells, table CELLS) and its
variables, with TF 1.0-1.1 names (weights / biases) or later ones (kernel / bias), under
any scope prefix or none:

- LSTM cells: kernel (in + p, 4u) acting on [x, h] in gate order i, j, f, o
  (gates.LSTM_TF1), bias (4u), optional peepholes w_i_diag, w_f_diag, w_o_diag and
  projection/kernel (u, p). forget_bias is not stored: it is read from the `.meta` graph
  when there is one, else TF's default for the cell is used and a note names it; the
  `forget_bias` argument overrides both (except for the cuDNN-compatible cell, which has
  none). It is folded into the f-gate bias.
- GRUCell: gates/kernel (in + u, 2u) in order r, u; candidate/kernel (in + u, u)
  (GRUBlockCell: w_ru, b_ru, w_c, b_c): a reset-before GRU. CudnnCompatibleGRUCell
  (candidate/input_projection and candidate/hidden_projection) is reset-after, with the
  candidate's recurrent bias kept.
- BasicRNNCell: kernel (in + u, u).
- Activations are not stored either: the `.meta` graph says which op follows each kernel
  (tanh, TF's default, when there is no graph).
- MultiRNNCell stacks give one layer per `cell_K`; `bidirectional_dynamic_rnn`'s
  fw / bw cells give one layer with two directions (two MultiRNNCell stacks: a layer per
  cell, the bw ones marked go_backwards). Layers are named after the scope that holds the
  cell (`rnn/multi_rnn_cell/cell_0`, `bidirectional_rnn`).
- CudnnLSTM / CudnnGRU `opaque_kernel` buffers are decoded (tf1_cudnn.py); canonical
  copies saved beside them are read too and must agree.

Optimizer slots (`.../Adam`, `beta1_power`, ...) are dropped with a note; every other
variable rides along as an OpaqueLayer per scope. Keras layers saved by a Saver (kernel
+ recurrent_kernel) are refused: their activations are not in the file. `where` (the
checkpoint's path) starts every error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...canonical import gates
from ...canonical.activations import RELU, SIGMOID, TANH
from ...canonical.model import Direction, OpaqueLayer, RecurrentLayer
from ...errors import FormatError, UnsupportedError
from ...lazy import derived, is_lazy
from . import tf1_cudnn, tf1_meta


@dataclass(frozen=True)
class CellKind:
    cell: str  # canonical cell: lstm | gru | rnn
    class_name: str  # TF's class
    forget_bias: float | None = None  # TF's default (LSTM only)
    reset_after: bool = False  # GRU only


# The scope name TF gives each cell class.
CELLS = {
    "basic_lstm_cell": CellKind("lstm", "BasicLSTMCell", 1.0),
    "lstm_cell": CellKind("lstm", "LSTMCell", 1.0),  # also LSTMBlockCell's scope
    "lstm_fused_cell": CellKind("lstm", "LSTMBlockFusedCell", 1.0),
    "cudnn_compatible_lstm_cell": CellKind("lstm", "CudnnCompatibleLSTMCell", 0.0),
    "gru_cell": CellKind("gru", "GRUCell"),
    "cudnn_compatible_gru_cell": CellKind("gru", "CudnnCompatibleGRUCell", reset_after=True),
    "basic_rnn_cell": CellKind("rnn", "BasicRNNCell"),
}
FIXED_FORGET_BIAS = {"CudnnCompatibleLSTMCell"}  # the class passes forget_bias=0 itself
KERNEL, BIAS = ("kernel", "weights"), ("bias", "biases")
PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")  # canonical P order i, f, o
OPAQUE_KERNEL = "opaque_kernel"
_OTHER_SIDE = {"fw": "bw", "bw": "fw"}  # bidirectional_dynamic_rnn's scopes
TF_ACTIVATIONS = {"Tanh": TANH, "Relu": RELU, "Sigmoid": SIGMOID}

# Optimizer state: slot variables end in these names; the rest are accumulators.
_SLOT = re.compile(r"(Adam|Adam_\d+|Momentum|RMSProp|RMSProp_\d+|Adagrad|AdagradDA|Adadelta|Adadelta_\d+|"
                   r"Ftrl|Ftrl_\d+|ProximalAdagrad|ExponentialMovingAverage|AMSGrad)")
_ACCUMULATORS = {"beta1_power", "beta2_power"}


@dataclass
class Cell:
    """One cell scope and its variables (relative name -> checkpoint name)."""

    scope: str
    kind: CellKind
    names: dict[str, str] = field(default_factory=dict)

    @property
    def basename(self) -> str:
        return self.scope.rpartition("/")[2]


class _Reader:
    def __init__(self, variables, meta_path, forget_bias, where):
        self.variables = variables
        self.meta_path = Path(meta_path) if meta_path is not None else None
        self.forget_bias_override = forget_bias
        self.where = f"{where}: " if where else ""
        self.notes: list[str] = []
        self._graphs = None
        self._lstm_facts = None
        self._activations = None
        self._roles = None

    # --- helpers --------------------------------------------------------------
    def array(self, name: str):
        """The variable as given (a lazy array stays lazy), once its dtype is known to be a float's."""
        value = self.variables[name]
        if np.dtype(value.dtype).kind != "f":
            raise FormatError(f"{self.where}variable {name!r} holds {np.dtype(value.dtype)} values where a "
                              f"float weight is expected; this is not a checkpoint of a TF recurrent cell.")
        return _as_given(value)

    def shape(self, name: str) -> tuple:
        return tuple(int(d) for d in self.variables[name].shape)

    def graphs(self):
        if self._graphs is None and self.meta_path is not None:
            self._graphs = tf1_meta.read(self.meta_path)
        return self._graphs

    # --- the walk ---------------------------------------------------------------
    def read(self):
        names = list(self.variables)
        dropped = [n for n in names if _is_optimizer_state(n)]
        kept = [n for n in names if n not in set(dropped)]
        if dropped:
            self.notes.append(f"ignored {len(dropped)} optimizer variable(s) (slots and accumulators such as "
                              f"{dropped[0]!r}); they are training state, not weights")
        cells, opaque_buffers, loose = _group(kept)
        keras = [c.scope for c in cells if "recurrent_kernel" in c.names] + \
            [scope for scope, members in loose.items() if "recurrent_kernel" in {leaf for leaf, _ in members}]
        if keras:
            raise UnsupportedError(
                f"{self.where}the variables under {keras[0]!r} are a Keras layer's (kernel, recurrent_kernel), not a "
                f"TF1 cell's, and their activations are not in the checkpoint; save the Keras model with "
                f"model.save_weights('weights.h5') and convert that file.")
        self.refuse_unknown_cells(loose)
        copies = {c.scope for c in cells if any(c.scope.startswith(s + "/") for s in opaque_buffers)}

        items: list[tuple[str, object]] = []  # (sort key, item)
        for scope, name in opaque_buffers.items():
            mine = [c for c in cells if c.scope in copies and c.scope.startswith(scope + "/")]
            for layer in tf1_cudnn.layers(self, scope, name, mine):
                items.append((scope, layer))
        for layer in self.recurrent_layers([c for c in cells if c.scope not in copies]):
            items.append((layer.provenance["scope"], layer))
        taken = {it.name for _, it in items}
        for scope, members in loose.items():
            name = _unique(scope, taken)
            taken.add(name)
            class_name, members = self.opaque_class(members)
            weights = [(leaf, _as_given(self.variables[full])) for leaf, full in members]
            items.append((scope, OpaqueLayer(name, class_name, weights, {"format": "tf1", "scope": scope})))
        items.sort(key=lambda pair: _natural(pair[0]))
        return [it for _, it in items], self.notes

    def refuse_unknown_cells(self, loose: dict[str, list[tuple[str, str]]]):
        """A scope named like a TF cell (`..._cell`, TF 0.x `...Cell`) that rnnx does not know is refused,
        rather than carried along as if it were not recurrent."""
        for scope in loose:
            cell_parts = [p for p in scope.split("/") if p.endswith(("_cell", "Cell")) and p != "multi_rnn_cell"]
            if cell_parts:
                known = ", ".join(CELLS)
                raise UnsupportedError(
                    f"{self.where}the variables under {scope!r} belong to a {cell_parts[-1]!r} cell, which rnnx does "
                    f"not read (it reads {known}, and CudnnLSTM / CudnnGRU buffers).")

    def opaque_class(self, members: list[tuple[str, str]]) -> tuple[str | None, list[tuple[str, str]]]:
        """Embedding or Dense when the .meta graph shows the scope's variables used as one (kernel first)."""
        if self.graphs() is None:
            return None, members
        if self._roles is None:  # one pass over the graph for every variable of the file
            self._roles = tf1_meta.layer_roles(self.graphs(), list(self.variables))
        roles = self._roles
        names = [full for _, full in members]
        if len(names) == 1 and roles.get(names[0]) == ("embedding",) and len(self.shape(names[0])) == 2:
            return "Embedding", members
        if len(names) == 2:
            for kernel, bias in (names, names[::-1]):
                if roles.get(kernel) == ("kernel", bias) and len(self.shape(kernel)) == 2 \
                        and self.shape(bias) == self.shape(kernel)[1:]:
                    return "Dense", sorted(members, key=lambda m: m[1] != kernel)
        return None, members

    def recurrent_layers(self, cells: list[Cell]) -> list[RecurrentLayer]:
        """One layer per cell, except that a bidirectional_dynamic_rnn's fw / bw cells form one layer."""
        by_parent = {c.scope.rpartition("/")[0]: c for c in cells}
        done: set[str] = set()
        layers = []
        for cell in sorted(cells, key=lambda c: _natural(c.scope)):
            if cell.scope in done:
                continue
            parent = cell.scope.rpartition("/")[0]
            outer, _, side = parent.rpartition("/")
            partner = by_parent.get(f"{outer}/{_OTHER_SIDE[side]}".lstrip("/")) if side in _OTHER_SIDE else None
            if partner is not None and partner.kind.cell == cell.kind.cell:
                pair = [cell, partner] if side == "fw" else [partner, cell]
                done.update(c.scope for c in pair)
                layers.append(self.layer(outer or "bidirectional_rnn", pair))
                continue
            done.add(cell.scope)
            layer = self.layer(parent or cell.basename, [cell])
            if "bw" in parent.split("/"):
                # The bw half of bidirectional_dynamic_rnn(MultiRNNCell, MultiRNNCell): each of its cells runs
                # over the reversed sequence, and TF returns the outputs in input order (ONNX direction reverse).
                layer.options["go_backwards"] = True
                self.notes.append(f"{layer.name}: runs over the reversed sequence (the bw side of a "
                                  f"bidirectional_dynamic_rnn), its outputs in input order")
            layers.append(layer)
        taken: set[str] = set()
        for layer in layers:
            if layer.name in taken:
                layer.name = layer.provenance["scope"]
            taken.add(layer.name)
        return layers

    def layer(self, name: str, cells: list[Cell]) -> RecurrentLayer:
        kind = cells[0].kind
        built = [self.direction(c) for c in cells]
        directions = [d for d, _ in built]
        facts = [f for _, f in built]
        if len({(d.W.shape, d.R.shape, tuple(d.tensors())) for d in directions}) > 1:
            raise FormatError(f"{self.where}the fw and bw cells of {name!r} differ in shape or variables; "
                              f"a bidirectional layer needs two cells of one size.")
        activations = facts[0].get("activations")
        if len({f.get("activations") for f in facts}) > 1:
            raise UnsupportedError(f"{self.where}the fw and bw cells of {name!r} use different activations; "
                                   f"rnnx holds one set per layer.")
        provenance = {"format": "tf1", "class_name": facts[0].get("class_name", kind.class_name),
                      "scope": cells[0].scope if len(cells) == 1 else name}
        if kind.cell == "lstm":
            provenance["forget_bias"] = [f["forget_bias"] for f in facts]
            provenance["forget_bias_source"] = facts[0]["forget_bias_source"]
        if len(cells) == 2:
            provenance["directions"] = [c.scope for c in cells]
        try:
            return RecurrentLayer(name, kind.cell, directions, activations=activations,
                                  reset_after=kind.reset_after, provenance=provenance)
        except ValueError as e:
            raise FormatError(f"{self.where}TF1 cell {cells[0].scope!r}: {e}.") from None

    def direction(self, cell: Cell) -> tuple[Direction, dict]:
        return {"lstm": self.lstm, "gru": self.gru, "rnn": self.rnn}[cell.kind.cell](cell)

    # --- cells --------------------------------------------------------------------
    def _need(self, cell: Cell, *options: tuple[str, ...]) -> list[str]:
        found = []
        for alternatives in options:
            hit = next((cell.names[a] for a in alternatives if a in cell.names), None)
            if hit is None:
                held = ", ".join(sorted(cell.names)) or "nothing"
                raise FormatError(f"{self.where}TF1 cell {cell.scope!r} ({cell.kind.class_name}) has no "
                                  f"{' or '.join(alternatives)} variable (it holds {held}); this is not a layout "
                                  f"rnnx knows.")
            found.append(hit)
        return found

    def _misfit(self, cell: Cell, shapes: str, expected: str):
        return FormatError(f"{self.where}TF1 cell {cell.scope!r} ({cell.kind.class_name}): {shapes} fit no known "
                           f"layout ({expected}).")

    def lstm(self, cell: Cell) -> tuple[Direction, dict]:
        kernel_name, bias_name = self._need(cell, KERNEL, BIAS)
        ks, bs = self.shape(kernel_name), self.shape(bias_name)
        proj_name = next((cell.names[f"projection/{k}"] for k in KERNEL if f"projection/{k}" in cell.names), None)
        units = bs[0] // 4 if len(bs) == 1 else 0
        proj = self.shape(proj_name) if proj_name else None
        hidden = proj[1] if proj else units
        expected = "kernel (input + units, 4 units), bias (4 units,), projection/kernel (units, proj)"
        if (len(ks) != 2 or len(bs) != 1 or bs[0] % 4 or not units or ks[1] != bs[0] or ks[0] <= hidden
                or (proj and (len(proj) != 2 or proj[0] != units))):
            raise self._misfit(cell, f"kernel {ks}, bias {bs}" + (f", projection {proj}" if proj else ""), expected)
        peephole_names = [cell.names.get(p) for p in PEEPHOLES]
        if any(peephole_names) and not all(peephole_names):
            raise self._misfit(cell, "peepholes " + ", ".join(p for p, n in zip(PEEPHOLES, peephole_names) if n),
                               "all three of w_i_diag, w_f_diag, w_o_diag or none")
        if all(peephole_names) and any(self.shape(n) != (units,) for n in peephole_names):
            raise self._misfit(cell, "peepholes of shapes " + ", ".join(str(self.shape(n)) for n in peephole_names),
                               f"three vectors of {units}")
        inputs = ks[0] - hidden
        K, b = self.array(kernel_name), self.array(bias_name)
        facts = self.lstm_facts(cell, kernel_name)
        forget_bias = facts["forget_bias"]
        f_block = slice(gates.LSTM_CANONICAL.index("f") * units, (gates.LSTM_CANONICAL.index("f") + 1) * units)

        def canonical_bias(b):
            b_w = gates.reorder(b, gates.LSTM_TF1, gates.LSTM_CANONICAL).copy()
            if forget_bias:
                b_w[f_block] = (b_w[f_block].astype(np.float64) + forget_bias).astype(b.dtype)
            return b_w

        def gate_rows(rows):  # the kernel's rows acting on x (or on h) as canonical (4u, rows)
            return lambda k: np.ascontiguousarray(gates.reorder(k[rows].T, gates.LSTM_TF1, gates.LSTM_CANONICAL))

        P = proj = None
        if all(peephole_names):
            diagonals = tuple(self.array(n) for n in peephole_names)
            P = derived(diagonals, (3 * units,), np.result_type(*(v.dtype for v in diagonals)),
                        lambda *v: np.concatenate(v))
        if proj_name:
            Q = self.array(proj_name)
            proj = derived(Q, Q.shape[::-1], Q.dtype, lambda q: np.ascontiguousarray(q.T))
        d = Direction(
            W=derived(K, (4 * units, inputs), K.dtype, gate_rows(slice(None, inputs))),
            R=derived(K, (4 * units, hidden), K.dtype, gate_rows(slice(inputs, None))),
            b_w=derived(b, (4 * units,), b.dtype, canonical_bias),
            P=P,
            proj=proj,
        )
        return d, facts

    def lstm_facts(self, cell: Cell, kernel: str) -> dict:
        """forget_bias (value and where it came from), activations and class, from the .meta graph if any."""
        kind = cell.kind
        facts = {"class_name": kind.class_name, "activations": None}
        graph_facts = None
        if self.graphs() is not None:
            if self._lstm_facts is None:  # one pass over the graph for every LSTM kernel of the file
                kernels = [n for n in self.variables if n.rpartition("/")[2] in KERNEL]
                self._lstm_facts = tf1_meta.lstm_facts(self.graphs(), kernels, list(self.variables))
            graph_facts = self._lstm_facts.get(kernel)
        if graph_facts is not None:
            if graph_facts.clipped:
                raise UnsupportedError(
                    f"{self.where}TF1 cell {cell.scope!r} clips its cell state or projection (cell_clip / "
                    f"proj_clip in the .meta graph); TensorFlow clips the state itself, which no rnnx target "
                    f"expresses, so it is refused rather than converted to different numbers.")
            acts = graph_facts.activations - {"Identity"}
            if len(acts) == 1 and next(iter(acts)) in TF_ACTIVATIONS:
                act = TF_ACTIVATIONS[next(iter(acts))]
                facts["activations"] = (SIGMOID, act, act)
            elif acts:
                raise UnsupportedError(f"{self.where}TF1 cell {cell.scope!r} applies {', '.join(sorted(acts))} to "
                                       f"its candidate; rnnx reads tanh, relu and sigmoid cells.")
            if kind.class_name == "LSTMCell" and graph_facts.op is not None:  # the scope name both share
                facts["class_name"] = "LSTMBlockCell" if graph_facts.op == "LSTMBlockCell" else "LSTMBlockFusedCell"
        if kind.class_name in FIXED_FORGET_BIAS:
            facts.update(forget_bias=kind.forget_bias, forget_bias_source="class")
        elif self.forget_bias_override is not None:
            facts.update(forget_bias=float(self.forget_bias_override), forget_bias_source="argument")
        elif graph_facts is not None and len(graph_facts.forget_bias) == 1:
            facts.update(forget_bias=next(iter(graph_facts.forget_bias)), forget_bias_source="meta")
        elif graph_facts is not None and graph_facts.forget_bias:
            raise UnsupportedError(f"{self.where}the .meta graph adds several forget biases to cell {cell.scope!r} "
                                   f"({sorted(graph_facts.forget_bias)}); pass --forget-bias F to say which.")
        else:
            why = "no .meta graph was read" if self.graphs() is None else "the .meta graph does not show it"
            facts.update(forget_bias=kind.forget_bias, forget_bias_source=f"default ({why})")
        return facts

    def gru(self, cell: Cell) -> tuple[Direction, dict]:
        gk, gb = self._need(cell, (*(f"gates/{k}" for k in KERNEL), "w_ru"), (*(f"gates/{b}" for b in BIAS), "b_ru"))
        gks, gbs = self.shape(gk), self.shape(gb)
        units = gks[1] // 2 if len(gks) == 2 else 0
        if cell.kind.reset_after:
            ik, ib, hk, hb = self._need(cell, *(tuple(f"candidate/{p}_projection/{k}" for k in names)
                                                for p in ("input", "hidden") for names in (KERNEL, BIAS)))
            iks, ibs, hks, hbs = (self.shape(n) for n in (ik, ib, hk, hb))
            inputs = gks[0] - units if units else 0
            if (len(gks) != 2 or gks[1] % 2 or inputs <= 0 or gbs != (2 * units,) or iks != (inputs, units)
                    or ibs != (units,) or hks != (units, units) or hbs != (units,)):
                raise self._misfit(cell, f"gates/kernel {gks}, gates/bias {gbs}, input_projection {iks}, "
                                         f"hidden_projection {hks}",
                                   "gates (input + units, 2 units), projections (input, units) and (units, units)")
            G, bg, IK, IB, HK, HB = (self.array(n) for n in (gk, gb, ik, ib, hk, hb))
            zeros_dtype = bg.dtype

            def beside(rows):  # [gate rows; the projection's]: canonical (3u, rows), TF's r, u order kept
                return lambda g, k: np.concatenate([g[rows].T, k.T])

            d = Direction(
                W=derived((G, IK), (3 * units, inputs), np.result_type(G.dtype, IK.dtype),
                          beside(slice(None, inputs))),
                R=derived((G, HK), (3 * units, units), np.result_type(G.dtype, HK.dtype),
                          beside(slice(inputs, None))),
                b_w=derived((bg, IB), (3 * units,), np.result_type(bg.dtype, IB.dtype),
                            lambda g, i: np.concatenate([g, i])),
                b_r=derived(HB, (3 * units,), np.result_type(zeros_dtype, HB.dtype),
                            lambda h: np.concatenate([np.zeros(2 * units, zeros_dtype), h])),
            )
            return d, {}
        ck, cb = self._need(cell, (*(f"candidate/{k}" for k in KERNEL), "w_c"),
                            (*(f"candidate/{b}" for b in BIAS), "b_c"))
        cks, cbs = self.shape(ck), self.shape(cb)
        inputs = gks[0] - units if units else 0
        if (len(gks) != 2 or gks[1] % 2 or inputs <= 0 or gbs != (2 * units,) or cks != (gks[0], units)
                or cbs != (units,)):
            raise self._misfit(cell, f"gates/kernel {gks}, gates/bias {gbs}, candidate/kernel {cks}, "
                                     f"candidate/bias {cbs}",
                               "gates (input + units, 2 units) and candidate (input + units, units)")
        G, C, GB, CB = (self.array(n) for n in (gk, ck, gb, cb))
        act = self.activation_after(cell, ck)

        def stacked(rows):  # [gates; candidate] (of the rows acting on x, or on h) in canonical order
            return lambda g, c: gates.reorder(np.concatenate([g[rows].T, c[rows].T]), gates.GRU_TF1,
                                              gates.GRU_CANONICAL)

        d = Direction(
            W=derived((G, C), (3 * units, inputs), np.result_type(G.dtype, C.dtype), stacked(slice(None, inputs))),
            R=derived((G, C), (3 * units, units), np.result_type(G.dtype, C.dtype), stacked(slice(inputs, None))),
            b_w=derived((GB, CB), (3 * units,), np.result_type(GB.dtype, CB.dtype),
                        lambda g, c: gates.reorder(np.concatenate([g, c]), gates.GRU_TF1, gates.GRU_CANONICAL)),
        )
        facts = {"activations": None if act is None else (SIGMOID, act)}
        if "w_ru" in cell.names:
            facts["class_name"] = "GRUBlockCell"
        return d, facts

    def rnn(self, cell: Cell) -> tuple[Direction, dict]:
        kernel_name, bias_name = self._need(cell, KERNEL, BIAS)
        ks, bs = self.shape(kernel_name), self.shape(bias_name)
        if len(ks) != 2 or len(bs) != 1 or ks[1] != bs[0] or ks[0] <= bs[0]:
            raise self._misfit(cell, f"kernel {ks}, bias {bs}", "kernel (input + units, units), bias (units,)")
        K = self.array(kernel_name)
        inputs, units = ks[0] - bs[0], bs[0]
        act = self.activation_after(cell, kernel_name)
        W = derived(K, (units, inputs), K.dtype, lambda k: np.ascontiguousarray(k[:inputs].T))
        R = derived(K, (units, units), K.dtype, lambda k: np.ascontiguousarray(k[inputs:].T))
        return Direction(W=W, R=R, b_w=self.array(bias_name)), {"activations": None if act is None else (act,)}

    def activation_after(self, cell: Cell, kernel: str):
        """The activation the .meta graph applies to MatMul(kernel) + bias, or None (TF's default, tanh)."""
        if self.graphs() is None:
            return None
        if self._activations is None:  # one pass over the graph for every kernel of the file
            kernels = [n for n in self.variables if n.rpartition("/")[2] in KERNEL]
            self._activations = tf1_meta.activations_after(self.graphs(), kernels, list(self.variables))
        ops = self._activations.get(kernel, set())
        if not ops:
            return None
        if len(ops) == 1 and next(iter(ops)) in TF_ACTIVATIONS:
            return TF_ACTIVATIONS[next(iter(ops))]
        raise UnsupportedError(f"{self.where}TF1 cell {cell.scope!r} applies {', '.join(sorted(ops))} where its "
                               f"activation should be; rnnx reads tanh, relu and sigmoid cells.")


def layers_from_variables(variables, meta_path=None, forget_bias: float | None = None, where: str | None = None):
    """Canonical layers (RecurrentLayer and OpaqueLayer, in scope order) and notes for the user."""
    reader = _Reader(variables, meta_path, forget_bias, where)
    items, notes = reader.read()
    notes = notes + _forget_bias_notes([it for it in items if isinstance(it, RecurrentLayer)])
    return items, notes


def _forget_bias_notes(layers: list[RecurrentLayer]) -> list[str]:
    by_value: dict[tuple, list[str]] = {}
    for layer in layers:
        p = layer.provenance
        if p.get("format") == "tf1" and p.get("forget_bias_source", "").startswith("default"):
            key = (float(np.float32(p["forget_bias"][0])), p["class_name"], p["forget_bias_source"][9:-1])
            by_value.setdefault(key, []).append(layer.name)
    return [f"forget_bias {value:g} (TF's default for {cls}) folded into the forget-gate bias of "
            f"{', '.join(names)}: the checkpoint does not store it and {why}; pass --forget-bias F if the "
            f"model was built with another value"
            for (value, cls, why), names in by_value.items()]


def _as_given(value):
    """A variable as the layers hold it: lazy arrays stay lazy."""
    return value if is_lazy(value) else np.asarray(value)


def _is_optimizer_state(name: str) -> bool:
    leaf = name.rpartition("/")[2]
    return leaf in _ACCUMULATORS or ("/" in name and _SLOT.fullmatch(leaf) is not None)


def _group(names: list[str]):
    """Cells (by the deepest scope named like a TF cell), opaque cuDNN buffers, and loose variables by scope."""
    cells: dict[str, Cell] = {}
    opaque: dict[str, str] = {}
    loose: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        parts = name.split("/")
        if parts[-1] == OPAQUE_KERNEL:
            opaque["/".join(parts[:-1])] = name
            continue
        cut = next((i for i in range(len(parts) - 2, -1, -1) if parts[i] in CELLS), None)
        if cut is None:  # a root-level variable is its own item, named after itself
            scope, _, leaf = name.rpartition("/")
            loose.setdefault(scope or name, []).append((leaf, name))
            continue
        scope = "/".join(parts[:cut + 1])
        cell = cells.setdefault(scope, Cell(scope, CELLS[parts[cut]]))
        cell.names["/".join(parts[cut + 1:])] = name
    return list(cells.values()), opaque, loose


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _unique(name: str, taken: set) -> str:
    if name not in taken:
        return name
    k = 1
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"
