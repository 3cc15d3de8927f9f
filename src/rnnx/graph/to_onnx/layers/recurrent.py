"""LSTM, GRU, SimpleRNN, CuDNNLSTM, CuDNNGRU and Bidirectional as real ONNX LSTM / GRU / RNN ops.

The weights come canonical from the Keras reader (CuDNN kernels already untangled); the node
comes from `rnnx.formats.onnx_format.nodes.emit_layer`. Around it this module does what Keras does
around its cell:

- a Keras mask becomes `sequence_lens` (the count of kept steps), exact for right-padded batches;
  a forward layer that returns sequences repeats its last kept output over the padding, as Keras
  does (zero_output_for_mask=False), while a Bidirectional layer zeroes it (Keras sets
  zero_output_for_mask there), which is what ONNX computes;
- go_backwards runs the op in reverse and returns the sequence in the order Keras does
  (reversed time);
- return_state adds the final states as further outputs; stateful layers get their states as
  optional graph inputs (zeros by default) and their final states as graph outputs;
- Bidirectional merges the two directions with its merge_mode, or returns both (None);
- `RNN(LSTMCell / GRUCell / SimpleRNNCell)` is the layer of that cell; `RNN(StackedRNNCells)` is one
  node per cell, chained time-major (each cell's weights are the canonical layer "rnn/<cell name>");
- a time-major layer (`time_major=True`) takes and returns [seq, batch, ...] as the op does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from onnx import TensorProto, helper

from ....errors import UnsupportedError
from ....formats.keras2.config import LAYER_OF_CELL  # RNN(LSTMCell) computes as LSTM, ...
from ....formats.onnx_format import nodes as onnx_nodes
from ..context import Context, LayerCall, Value
from ..registry import TF2ONNX_HINT, converter

RECURRENT_CLASSES = ("LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "LSTMV1", "GRUV1")
_STATES_OF_CELL = {"LSTMCell": 2, "GRUCell": 1, "SimpleRNNCell": 1}


@converter(*RECURRENT_CLASSES)
def recurrent(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    run = _run(ctx, call, call.config, inputs, directions=1)
    keras_go_backwards = bool(call.option("go_backwards", False))
    if call.option("return_sequences", False):
        outputs = [_keras_sequence(ctx, call, run, keras_go_backwards)]
    else:
        outputs = [Value(run.final(0, "h"), 2)]
    if call.option("return_state", False):
        outputs += [Value(run.final(0, s), 2) for s in run.state_names]
    return outputs


@converter("RNN")
def rnn(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    """RNN(cell): a built-in cell is its layer; StackedRNNCells is a chain of nodes."""
    cell = call.config.get("cell") or {}
    if cell.get("class_name") == "StackedRNNCells":
        return _stacked(ctx, call, inputs, (cell.get("config") or {}).get("cells") or [])
    return recurrent(ctx, _cell_call(call), inputs)


def _cell_call(call: LayerCall, cell: dict | None = None, name: str | None = None) -> LayerCall:
    """The call of an RNN layer as the call of the plain layer of its cell: the cell's config plus the
    RNN's options (return_sequences, go_backwards, ...)."""
    cell = call.config.get("cell") if cell is None else cell
    if not isinstance(cell, dict) or cell.get("class_name") not in LAYER_OF_CELL:
        kind = cell.get("class_name") if isinstance(cell, dict) else None
        raise UnsupportedError(f"Layer {call.name!r} is an RNN around a {kind} cell; rnnx's native export converts "
                               f"LSTMCell, GRUCell, SimpleRNNCell and StackedRNNCells of them. {TF2ONNX_HINT}")
    options = {k: v for k, v in call.config.items() if k not in ("cell", "name")}
    return replace(call, name=name or call.name, config={**(cell.get("config") or {}), **options})


def _stacked(ctx: Context, call: LayerCall, inputs: list[Value], cells: list) -> list[Value]:
    """RNN(StackedRNNCells([...])): cell k reads the whole output sequence of cell k-1, which is what
    Keras computes step by step (under a right-padded mask too: each node gets the same lengths)."""
    if not cells:
        raise UnsupportedError(f"Layer {call.name!r} is an RNN around an empty StackedRNNCells.")
    go_backwards = bool(call.option("go_backwards", False))
    given = inputs[1:]
    counts = [_STATES_OF_CELL.get(c.get("class_name"), 1) if isinstance(c, dict) else 1 for c in cells]
    if given and len(given) != sum(counts):
        raise UnsupportedError(f"Layer {call.name!r} (RNN) is called with {len(given)} initial state tensors; its "
                               f"{len(cells)} stacked cells have {sum(counts)}.")
    x, states, starts = inputs[0], [], np.cumsum([0, *counts])
    for k, cell in enumerate(cells):
        cell_name = (cell.get("config") or {}).get("name") if isinstance(cell, dict) else None
        sub = _cell_call(call, cell, f"{call.name}/{cell_name or k}")
        run = _run(ctx, sub, sub.config, [x, *given[starts[k]:starts[k + 1]]], directions=1)
        states += [Value(run.final(0, s), 2) for s in run.state_names]
        if k < len(cells) - 1:  # the next node reads this one's sequence time-major, in the node's time order
            x = Value(run.sequence(0), 3, x.mask) if sub.option("time_major", False) else \
                _batch_major(ctx, sub, run.sequence(0), x.mask)
        elif call.option("return_sequences", False):
            x = _keras_sequence(ctx, sub, run, go_backwards)
        else:
            x = Value(run.final(0, "h"), 2)
    return [x, *states] if call.option("return_state", False) else [x]


def _keras_sequence(ctx: Context, call: LayerCall, run: "_Run", keras_go_backwards: bool) -> Value:
    """The sequence output of a one-direction layer as Keras returns it."""
    seq = run.sequence(0, reverse_time=keras_go_backwards)
    if run.mask is not None and not keras_go_backwards and not call.option("zero_output_for_mask", False):
        seq = _repeat_last_over_padding(ctx, call, seq, run.mask, run.final(0, "h"))
    if call.option("time_major", False):
        return Value(seq, 3)
    return _batch_major(ctx, call, seq, run.mask)


@converter("Bidirectional")
def bidirectional(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    inner = call.inner()
    if inner.class_name == "RNN":
        if (inner.config.get("cell") or {}).get("class_name") == "StackedRNNCells":
            raise UnsupportedError(f"Layer {call.name!r} is a Bidirectional around an RNN(StackedRNNCells), which "
                                   f"rnnx's native export does not handle. {TF2ONNX_HINT}")
        inner = _cell_call(inner)
    if inner.class_name not in RECURRENT_CLASSES + ("RNN",):
        raise UnsupportedError(f"Layer {call.name!r} is a Bidirectional around a {inner.class_name}, which rnnx's "
                               f"native export does not handle. {TF2ONNX_HINT}")
    if inner.option("go_backwards", False):
        raise UnsupportedError(f"Layer {call.name!r}: a Bidirectional whose forward layer has go_backwards=True is "
                               f"not handled by rnnx's native export. {TF2ONNX_HINT}")
    run = _run(ctx, call, inner.config, inputs, directions=2)
    merge_mode = call.config.get("merge_mode", "concat")
    if inner.option("return_sequences", False):  # merged time-major, then one Transpose
        parts = [run.sequence(k) for k in range(2)]
        merged = parts if merge_mode is None else [_merge(ctx, call, merge_mode, parts)]
        if inner.option("time_major", False):
            outputs = [Value(p, 3) for p in merged]
        else:
            outputs = [_batch_major(ctx, call, p, run.mask) for p in merged]
    else:
        parts = [run.final(k, "h") for k in range(2)]
        outputs = [Value(p, 2) for p in parts] if merge_mode is None else \
            [Value(_merge(ctx, call, merge_mode, parts), 2)]
    if inner.option("return_state", False):
        outputs += [Value(run.final(k, s), 2) for k in range(2) for s in run.state_names]
    return outputs


def _batch_major(ctx: Context, call: LayerCall, time_major: str, mask: str | None) -> Value:
    """The Keras tensor [batch, seq, features] of a time-major sequence (which rides along)."""
    y = ctx.op("Transpose", [time_major], call.scope, perm=[1, 0, 2])
    return Value(y, 3, mask, time_major=time_major)


def _merge(ctx: Context, call: LayerCall, mode: str, parts: list[str]) -> str:
    a, b = parts
    hint = f"{call.scope}_{mode}"
    if mode == "concat":
        y = ctx.op("Concat", [a, b], hint, axis=-1)
    elif mode == "sum":
        y = ctx.op("Add", [a, b], hint)
    elif mode == "mul":
        y = ctx.op("Mul", [a, b], hint)
    elif mode == "ave":
        y = ctx.op("Mul", [ctx.op("Add", [a, b], hint), ctx.scalar(0.5)], hint)
    else:
        raise UnsupportedError(f"Layer {call.name!r} (Bidirectional) has merge_mode {mode!r}; rnnx knows concat, "
                               f"sum, mul, ave and None.")
    return y


class _Run:
    """The emitted recurrent node, with accessors that cut its outputs into Keras tensors."""

    def __init__(self, ctx: Context, call: LayerCall, Y: str, Y_h: str, Y_c: str | None, mask: str | None,
                 directions: int):
        self.ctx, self.call, self.Y, self.mask, self.directions = ctx, call, Y, mask, directions
        self.states = {"h": Y_h, "c": Y_c}
        self.state_names = ("h", "c") if Y_c is not None else ("h",)
        self._finals: dict[tuple[int, str], str] = {}

    def sequence(self, direction: int, reverse_time: bool = False) -> str:
        """[seq, batch, hidden] of one direction (time reversed when `reverse_time`)."""
        ctx, hint = self.ctx, self.call.scope
        y = self.Y
        if self.directions == 2:
            y = ctx.op("Slice", [y, ctx.ints([direction]), ctx.ints([direction + 1]), ctx.ints([1])], hint)
        y = ctx.squeeze(y, [1], hint)
        if reverse_time:
            y = ctx.op("Slice", [y, ctx.ints([-1]), ctx.ints([np.iinfo(np.int64).min]), ctx.ints([0]),
                                 ctx.ints([-1])], f"{hint}_reversed")
        return y

    def final(self, direction: int, state: str) -> str:
        """[batch, size] final state `state` ("h" or "c") of one direction."""
        key = (direction, state)
        if key not in self._finals:
            ctx, hint = self.ctx, f"{self.call.scope}_{state}"
            source = self.states[state]
            if self.directions == 2:
                source = ctx.op("Slice", [source, ctx.ints([direction]), ctx.ints([direction + 1]), ctx.ints([0])],
                                hint)
            self._finals[key] = ctx.squeeze(source, [0], hint)
        return self._finals[key]


def _run(ctx: Context, call: LayerCall, config: dict, inputs: list[Value], directions: int) -> _Run:
    time_major = bool(config.get("time_major", False))
    if time_major and inputs[0].mask is not None:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) is time-major and masked; rnnx's native "
                               f"export handles masks on batch-major layers. {TF2ONNX_HINT}")
    # the op is named after its layer (rnnx verify finds layers by node name): claim the name first
    node_name = ctx.unique_node(call.name if call.node_index == 0 else call.scope)
    layer = ctx.recurrent(call)
    if layer.num_directions != directions:
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) was read with {layer.num_directions} "
                               f"direction(s); its config needs {directions}.")
    x = inputs[0]
    hint = call.scope
    seq_lens = None
    if x.mask is not None:
        counts = ctx.reduce("ReduceSum", ctx.op("Cast", [x.mask], hint, to=TensorProto.INT32), [1], hint,
                            keepdims=0)
        seq_lens = ctx.op("Identity", [counts], f"{hint}_sequence_lens")
    initial = _initial_states(ctx, call, config, layer, x, inputs[1:])
    prefix = ctx.unique(f"{call.scope}/rnn")
    # a time-major layer's Keras tensor is already [seq, batch, features], as the op wants it
    sequence = x.name if time_major else (x.time_major or x.name)
    emitted = onnx_nodes.emit_layer(layer, sequence, prefix, ctx.opset, sequence_lens=seq_lens,
                                    initial_h=initial.get("h"), initial_c=initial.get("c"),
                                    batch_first=not time_major and x.time_major is None, node_name=node_name,
                                    tensor=ctx.tensor)
    if directions == 1 and config.get("go_backwards", False):
        emitted.node.attribute.append(helper.make_attribute("direction", "reverse"))
    ctx.adopt(emitted.nodes, emitted.initializers)
    run = _Run(ctx, call, emitted.Y, emitted.Y_h, emitted.Y_c, x.mask, directions)
    if config.get("stateful", False):
        for state in run.state_names:
            ctx.add_output(run.states[state], f"{call.name}/state_{state}_out")
    return run


def _initial_states(ctx: Context, call: LayerCall, config: dict, layer, x: Value, given: list[Value]) -> dict:
    """Initial h / c as ONNX [D, batch, size] tensors: passed tensors, stateful graph inputs, or none."""
    names = ("h", "c") if layer.cell == "lstm" else ("h",)
    D = layer.num_directions
    if given:
        if len(given) != D * len(names):
            raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) is called with {len(given)} initial "
                                   f"state tensors; rnnx expected {D * len(names)}.")
        states = {}
        for k, state in enumerate(names):
            per_direction = [ctx.unsqueeze(given[d * len(names) + k].name, [0], call.scope) for d in range(D)]
            states[state] = per_direction[0] if D == 1 else ctx.op("Concat", per_direction, call.scope, axis=0)
        return states
    if not config.get("stateful", False):
        return {}
    states = {}
    for state in names:
        size = layer.hidden_size if state == "h" else layer.units
        # an optional graph input: its zero initializer is the default (Keras's states after reset_states)
        name = ctx.add_input(f"{call.name}/state_{state}", onnx_nodes.onnx_dtype(layer.dtype), [D, "batch", size])
        emitted = onnx_nodes.default_state(name, x.name, D, size, layer.dtype, ctx.unique(f"{name}/default"),
                                           batch_axis=1 if config.get("time_major", False) else 0,
                                           opset=ctx.opset)
        ctx.adopt(emitted.nodes, emitted.initializers)
        states[state] = emitted.output
    return states


def _repeat_last_over_padding(ctx: Context, call: LayerCall, seq: str, mask: str, last: str) -> str:
    """Keras keeps returning the last kept output over masked steps (seq is time-major)."""
    hint = f"{call.scope}_masked"
    keep = ctx.unsqueeze(ctx.op("Transpose", [mask], hint, perm=[1, 0]), [2], hint)
    return ctx.op("Where", [keep, seq, ctx.unsqueeze(last, [0], hint)], hint)
