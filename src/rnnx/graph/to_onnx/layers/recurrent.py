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
- Bidirectional merges the two directions with its merge_mode, or returns both (None).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ....errors import UnsupportedError
from ....formats.onnx_format import nodes as onnx_nodes
from ..context import Context, LayerCall, Value
from ..registry import TF2ONNX_HINT, converter

RECURRENT_CLASSES = ("LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "LSTMV1", "GRUV1")


@converter(*RECURRENT_CLASSES)
def recurrent(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    run = _run(ctx, call, call.config, inputs, directions=1)
    keras_go_backwards = bool(call.option("go_backwards", False))
    if call.option("return_sequences", False):
        seq = run.sequence(0, reverse_time=keras_go_backwards)
        if run.mask is not None and not keras_go_backwards and not call.option("zero_output_for_mask", False):
            seq = _repeat_last_over_padding(ctx, call, seq, run.mask, run.final(0, "h"))
        outputs = [_batch_major(ctx, call, seq, run.mask)]
    else:
        outputs = [Value(run.final(0, "h"), 2)]
    if call.option("return_state", False):
        outputs += [Value(run.final(0, s), 2) for s in run.state_names]
    return outputs


@converter("Bidirectional")
def bidirectional(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]:
    inner = call.inner()
    if inner.class_name not in RECURRENT_CLASSES:
        raise UnsupportedError(f"Layer {call.name!r} is a Bidirectional around a {inner.class_name}, which rnnx's "
                               f"native export does not handle. {TF2ONNX_HINT}")
    if inner.option("go_backwards", False):
        raise UnsupportedError(f"Layer {call.name!r}: a Bidirectional whose forward layer has go_backwards=True is "
                               f"not handled by rnnx's native export. {TF2ONNX_HINT}")
    run = _run(ctx, call, inner.config, inputs, directions=2)
    merge_mode = call.config.get("merge_mode", "concat")
    if inner.option("return_sequences", False):  # merged time-major, then one Transpose
        parts = [run.sequence(k) for k in range(2)]
        if merge_mode is None:
            outputs = [_batch_major(ctx, call, p, run.mask) for p in parts]
        else:
            outputs = [_batch_major(ctx, call, _merge(ctx, call, merge_mode, parts), run.mask)]
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
    if config.get("time_major", False):
        raise UnsupportedError(f"Layer {call.name!r} ({call.class_name}) is time-major; rnnx's native export "
                               f"handles batch-major recurrent layers. {TF2ONNX_HINT}")
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
    emitted = onnx_nodes.emit_layer(layer, x.time_major or x.name, prefix, ctx.opset, sequence_lens=seq_lens,
                                    initial_h=initial.get("h"), initial_c=initial.get("c"),
                                    batch_first=x.time_major is None, node_name=node_name)
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
                                           batch_axis=0, opset=ctx.opset)
        ctx.adopt(emitted.nodes, emitted.initializers)
        states[state] = emitted.output
    return states


def _repeat_last_over_padding(ctx: Context, call: LayerCall, seq: str, mask: str, last: str) -> str:
    """Keras keeps returning the last kept output over masked steps (seq is time-major)."""
    hint = f"{call.scope}_masked"
    keep = ctx.unsqueeze(ctx.op("Transpose", [mask], hint, perm=[1, 0]), [2], hint)
    return ctx.op("Where", [keep, seq, ctx.unsqueeze(last, [0], hint)], hint)
