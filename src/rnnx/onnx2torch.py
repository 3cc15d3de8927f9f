"""ONNX LSTM / GRU / RNN converters for onnx2torch: `import rnnx.onnx2torch`, then `onnx2torch.convert(model)`.

onnx2torch (pip install 'rnnx[onnx2torch]') has no converter for the recurrent operators. This
module registers one for LSTM, GRU and RNN at every opset rnnx reads (LSTM 1/7/14/22, GRU
1/3/7/14/22, RNN 1/7/14/22). The node's weights are read by rnnx's own ONNX reader
(formats/onnx_format/nodes.py: gate orders, activations with alpha / beta, clip,
input_forget, linear_before_reset) and run in rnnx.torch_nn: nn.LSTM / nn.GRU / nn.RNN where
they are exact, the step loop otherwise (and always when the node takes sequence_lens).
Layout 0 and 1, every direction, peepholes, initial_h / initial_c are handled. W, R, B, P that
are initializers or Constant nodes (through Identity too) become the module's parameters in
PyTorch's gate order; weights fed at run time (graph inputs, or computed by other nodes) are taken
as further forward() inputs and reordered on each call (then the step loop always runs).

torchvision: onnx2torch declares it as a requirement but uses it only in two converter modules,
NonMaxSuppression (torchvision.ops.nms / box_convert) and RoiAlign (torchvision.ops.roi_align),
which it imports with everything else. Where torchvision is missing, or is a build that does not
load with the installed torch ("operator torchvision::nms does not exist"), this module lets
onnx2torch import against a stand-in whose three functions raise an error saying so; the
stand-in is removed from sys.modules right after, so nothing else sees it. Every other
converter, these included, works as usual.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from .errors import UnsupportedError

VERSIONS = {"LSTM": (1, 7, 14, 22), "GRU": (1, 3, 7, 14, 22), "RNN": (1, 7, 14, 22)}
EXTRA_HINT = "pip install 'rnnx[onnx2torch]'"


def _import_onnx2torch():
    try:
        import onnx2torch  # noqa: F401

        return onnx2torch
    except ModuleNotFoundError as exc:
        if exc.name == "onnx2torch":
            raise UnsupportedError(f"rnnx.onnx2torch needs the onnx2torch package: {EXTRA_HINT}.") from None
        if exc.name != "torchvision":
            raise
    except (RuntimeError, ImportError, AttributeError):  # a torchvision built for another torch
        pass
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported torchvision
    for name in [n for n in sys.modules if n == "onnx2torch" or n.startswith("onnx2torch.")]:
        del sys.modules[name]
    stand_in, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

    def unavailable(*_args, **_kwargs):
        raise UnsupportedError("This ONNX model needs torchvision (NonMaxSuppression or RoiAlign), which is not "
                               "installed or does not load with this torch; install the torchvision build that "
                               "matches torch.")

    ops.nms = ops.box_convert = ops.roi_align = unavailable
    stand_in.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, ops
    try:
        import onnx2torch  # noqa: F401
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return onnx2torch


onnx2torch = _import_onnx2torch()

import torch  # noqa: E402
from onnx2torch.node_converters.registry import add_converter  # noqa: E402
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult  # noqa: E402
from torch import nn  # noqa: E402

from . import torch_nn  # noqa: E402
from .formats.onnx_format.model import node_attributes  # noqa: E402
from .canonical import gates  # noqa: E402
from .formats.onnx_format.nodes import CELL_OF_OP, ONNX_GATES, layer_from_onnx  # noqa: E402
from .graph.to_torch.layers.recurrent import core_module, is_fast  # noqa: E402


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """One ONNX LSTM / GRU / RNN node: forward(X, sequence_lens, initial_h, initial_c[, W, R, B, P]) ->
    Y, Y_h[, Y_c] (the outputs the node has), in the node's layout. W, R, B, P are given only when the
    model feeds them at run time (ONNX layout and gate order); otherwise they are the rnn's own."""

    def __init__(self, rnn: nn.Module, layout: int, outputs: int, roles: list[str],
                 gate_order: list[int] | None = None, peephole_order: list[int] | None = None):
        super().__init__()
        self.rnn = rnn
        self.roles = roles  # which of forward()'s arguments the node feeds, in the order they come
        self.layout = layout
        self.outputs = outputs
        self.gate_order = gate_order  # canonical position -> ONNX row, for weights given at run time
        self.peephole_order = peephole_order

    def forward(self, *fed):
        # onnx2torch passes only the inputs the node has (an empty name would resolve to a node output)
        given = dict(zip(self.roles, fed))
        x, sequence_lens, initial_h, initial_c = (given.get(k) for k in ("X", "sequence_lens", "initial_h",
                                                                          "initial_c"))
        W, R, B, P = (given.get(k) for k in ("W", "R", "B", "P"))
        if self.layout == 1:  # X [batch, seq, in], states [batch, D, hidden]
            x = x.transpose(0, 1)
            initial_h = None if initial_h is None else initial_h.transpose(0, 1)
            initial_c = None if initial_c is None else initial_c.transpose(0, 1)
        lengths = None if sequence_lens is None else sequence_lens.to(torch.int64)
        if W is None:
            y, h, c = self.rnn(x, lengths, initial_h, initial_c)
        else:
            y, h, c = self.rnn.run(x, *self._canonical(W, R, B, P), lengths, initial_h, initial_c)
        if self.layout == 1:
            y, h, c = y.permute(2, 0, 1, 3), h.transpose(0, 1), c.transpose(0, 1)
        results = (y, h, c)[:self.outputs]
        return results[0] if self.outputs == 1 else results

    def _canonical(self, W, R, B, P):
        """ONNX W [D, G*H, I], R, B [D, 2*G*H], P [D, 3H] -> the loop's weights in canonical gate order."""
        order = torch.tensor(self.gate_order, device=W.device)
        size = R.shape[1]
        if B is None:
            B = W.new_zeros([W.shape[0], 2 * size])
        peephole = W.new_zeros([W.shape[0], 0]) if P is None else \
            P[:, torch.tensor(self.peephole_order, device=P.device)]
        return W[:, order], R[:, order], B[:, :size][:, order], B[:, size:][:, order], peephole


class _RunTime(Exception):
    """A weight of the node is not a constant."""


def _constant(name: str, graph) -> np.ndarray:
    """An input of the node that is an initializer or a Constant node (through Identity)."""
    while True:
        if name in graph.initializers:
            return graph.initializers[name].to_numpy()
        try:
            producer, _ = graph.value_as_node_output(name)
        except KeyError:
            raise _RunTime() from None
        if producer.operation_type == "Identity":
            name = producer.input_values[0]
            continue
        if producer.operation_type == "Constant" and "value" in producer.attributes:
            return producer.attributes["value"].to_numpy()
        raise _RunTime()


def convert_node(node, graph) -> OperationConverterResult:
    """The OnnxRecurrent module of one LSTM / GRU / RNN node and how its inputs map."""
    op = node.operation_type
    inputs = list(node.input_values) + [""] * 8
    name = node.name or node.unique_name
    attributes = node_attributes(node.proto)
    direction = attributes.get("direction", "forward")
    layout = int(attributes.get("layout", 0))
    state_inputs = {"X": inputs[0], "sequence_lens": inputs[4], "initial_h": inputs[5],
                    "initial_c": inputs[6] if op == "LSTM" else ""}
    weight_inputs = {"W": inputs[1], "R": inputs[2], "B": inputs[3], "P": inputs[7] if op == "LSTM" else ""}
    weight_names = list(weight_inputs.values())
    try:
        W, R, B, P = [_constant(n, graph) if n else None for n in weight_names]
        constant = True
    except _RunTime:
        constant = False
    if constant:
        layer = layer_from_onnx(name, op, W, R, B, P, attributes)
        fast = is_fast(layer) and not inputs[4]
        class_name, args, kwargs, params = core_module(layer, direction, fast=fast)
        rnn = getattr(torch_nn, class_name)(*args, **kwargs).to(torch.from_numpy(W[:0]).dtype)
        rnn.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}, strict=True)
        return _result(node, rnn, layout, state_inputs)
    # weights fed at run time: the node's attributes (activations, clip, ...) read from a stand-in layer
    hidden = attributes.get("hidden_size")
    if not hidden:
        raise UnsupportedError(f"ONNX node {name!r} ({op}) takes its weights at run time and has no hidden_size "
                               f"attribute; rnnx needs one of the two.")
    count, D = gates.gate_count(CELL_OF_OP[op]), 2 if direction == "bidirectional" else 1
    stand_in = layer_from_onnx(name, op, np.zeros((D, count * hidden, 1), np.float32),
                               np.zeros((D, count * hidden, hidden), np.float32), attributes=attributes)
    _, args, kwargs, _ = core_module(stand_in, direction, fast=False)
    kwargs["peepholes"] = bool(weight_names[3])
    rnn = torch_nn.RecurrentLoop(*args, **kwargs)
    cell = CELL_OF_OP[op]
    rows = np.arange(count * hidden)
    gate_order = gates.reorder(rows, ONNX_GATES[cell], gates.CANONICAL_ORDER[cell]).tolist()
    peephole_order = gates.reorder(np.arange(3 * hidden), gates.PEEPHOLE_ONNX, gates.PEEPHOLE_CANONICAL).tolist()
    return _result(node, rnn, layout, state_inputs | weight_inputs, gate_order, peephole_order)


def _result(node, rnn, layout: int, named_inputs: dict, *orders) -> OperationConverterResult:
    fed = {role: value for role, value in named_inputs.items() if value}
    module = OnnxRecurrent(rnn, layout, len(node.output_values), list(fed), *orders)
    return OperationConverterResult(module, OnnxMapping(inputs=tuple(fed.values()), outputs=node.output_values))


for _op, _versions in VERSIONS.items():
    for _version in _versions:
        add_converter(operation_type=_op, version=_version)(convert_node)


class BatchNormAnyRank(nn.Module, OnnxToTorchModule):
    """ONNX BatchNormalization with its statistics as buffers, for an input of any rank."""

    def __init__(self, scale, bias, mean, var, epsilon: float, momentum: float):
        super().__init__()
        self.epsilon, self.momentum = epsilon, momentum
        for name, value in (("weight", scale), ("bias", bias), ("running_mean", mean), ("running_var", var)):
            self.register_buffer(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, momentum=self.momentum, eps=self.epsilon)


def _batch_norm_of_any_rank(converter):
    """onnx2torch's BatchNormalization converter picks nn.BatchNorm1d / 2d / 3d from the input's rank as the
    graph's value_info records it, and refuses a node whose input shape is not recorded ("spatial rank ==
    -2": GTCRN's, before its GRU nodes). Inference batch normalisation is one formula at every rank, so such
    a node gets the same computation from F.batch_norm; every other node keeps onnx2torch's own module."""
    def convert(node, graph) -> OperationConverterResult:
        try:
            return converter(node, graph)
        except NotImplementedError as exc:
            weights = node.input_values[1:5]
            if "spatial rank" not in str(exc) or len(node.output_values) != 1 or \
                    not all(name in graph.initializers for name in weights):
                raise
        scale, bias, mean, var = (graph.initializers[name].to_torch() for name in weights)
        attributes = node.attributes
        module = BatchNormAnyRank(scale, bias, mean, var, attributes.get("epsilon", 1e-5),
                                  1 - attributes.get("momentum", 0.9))
        return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
            inputs=(node.input_values[0],), outputs=node.output_values))

    return convert


def _patch_batch_norm() -> None:
    from onnx import defs
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    for version in (9, 14, 15):
        key = OperationDescription(domain=defs.ONNX_DOMAIN, operation_type="BatchNormalization", version=version)
        if key in _CONVERTER_REGISTRY:
            _CONVERTER_REGISTRY[key] = _batch_norm_of_any_rank(_CONVERTER_REGISTRY[key])


_patch_batch_norm()


def check_convertible(model) -> None:
    """Raise UnsupportedError naming the first node of `model` (an onnx.ModelProto) that onnx2torch, with
    these converters, cannot take: no converter for its operator, or its converter refuses it."""
    from onnx2torch.converter import _remove_initializers_from_input
    from onnx2torch.node_converters import get_converter
    from onnx2torch.onnx_graph import OnnxGraph
    from onnx2torch.utils.safe_shape_inference import safe_shape_inference

    model = _remove_initializers_from_input(safe_shape_inference(model))
    opsets = {o.domain: o.version for o in model.opset_import}
    graph = OnnxGraph(model.graph)
    for node in graph.nodes.values():
        where = f"node {node.name or node.unique_name!r} ({node.operation_type}, opset {opsets.get(node.domain)})"
        try:
            converter = get_converter(domain=node.domain, operation_type=node.operation_type,
                                      version=opsets.get(node.domain, 1))
        except NotImplementedError:
            raise UnsupportedError(f"onnx2torch has no converter for {where}; rnnx cannot write this model as "
                                   f"PyTorch source.") from None
        try:
            converter(node, graph)
        except UnsupportedError:
            raise
        except Exception as exc:  # onnx2torch's converters raise assorted errors on what they do not take
            raise UnsupportedError(f"onnx2torch cannot convert {where}: {exc}") from None
