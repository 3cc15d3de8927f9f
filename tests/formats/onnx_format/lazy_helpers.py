"""Helpers of the lazy inline-ONNX tests: every tensor of a model, the skeleton with its tensors read back
in, and a model that holds tensors in every place onnx.proto allows one."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import make_model  # noqa: E402

from rnnx.formats.onnx_format import model as onnx_model  # noqa: E402


def every_tensor(message):
    """Each TensorProto anywhere in `message` (found through onnx's own descriptors, not rnnx's schema)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in (value if field.is_repeated else [value]):
            if isinstance(item, TensorProto):
                yield item
            yield from every_tensor(item)


def is_own_reference(tensor: TensorProto, path: Path) -> bool:
    """Whether the reader left the data of `tensor` (of the skeleton) in the model file itself."""
    return (tensor.data_location == TensorProto.EXTERNAL
            and {e.key: e.value for e in tensor.external_data}.get("location") == Path(path).resolve().name)


def own_references(model: onnx.ModelProto, path: Path) -> list[TensorProto]:
    """The tensors of the skeleton whose data the reader left in the model file itself."""
    return [t for t in every_tensor(model) if is_own_reference(t, path)]


def read_back(model: onnx.ModelProto, path: Path, parsed: onnx.ModelProto) -> int:
    """Put back the values of every tensor the skeleton `model` left in `path`, in the field `parsed` (onnx's
    parse of the file) holds them in: raw_data, or float_data / double_data; how many there were."""
    count = 0
    with open(path, "rb") as fh:
        for tensor, twin in zip(every_tensor(model), every_tensor(parsed), strict=True):
            if not is_own_reference(tensor, path):
                continue
            info = {e.key: e.value for e in tensor.external_data}
            fh.seek(int(info["offset"]))
            data = fh.read(int(info["length"]))
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
            if twin.HasField("raw_data"):
                tensor.raw_data = data
            elif twin.data_type == TensorProto.DOUBLE:
                tensor.double_data.extend(np.frombuffer(data, "<f8").tolist())
            else:
                tensor.float_data.extend(np.frombuffer(data, "<f4").tolist())
            count += 1
    return count


def large_values(tensor: TensorProto, threshold: int) -> bool:
    """Whether `tensor` (parsed) holds `threshold` bytes of values or more that the reader leaves in the file:
    raw_data, or float32 / float64 values in their own fields (which onnx writes packed)."""
    if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
        return False
    held = [f.name for f, _ in tensor.ListFields() if f.name.endswith("_data")]
    if len(held) != 1:
        return False
    return (len(tensor.raw_data) >= threshold
            or (tensor.data_type == TensorProto.FLOAT and held == ["float_data"]
                and 4 * len(tensor.float_data) >= threshold)
            or (tensor.data_type == TensorProto.DOUBLE and held == ["double_data"]
                and 8 * len(tensor.double_data) >= threshold))


def _weights(rng, name, *shape):
    return numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), name)


def _constant(rng, output, *shape):
    return helper.make_node("Constant", [], [output], value=_weights(rng, f"{output}_value", *shape))


def tensors_everywhere(path: Path, units: int = 16, inputs: int = 16) -> Path:
    """A model with large tensors in each place onnx.proto has for one: initializers; Constant nodes
    (dense and sparse); a Loop body and If branches (subgraph initializers and Constants) with recurrent
    nodes in them; attributes holding lists of tensors, sparse tensors and graphs; sparse initializers;
    a function's Constant node and its default tensor attribute; training graphs. Small tensors sit
    beside the large ones. The LSTM, GRU and RNN nodes read as layers; the rest only has to parse."""
    rng = np.random.default_rng(0)
    u, n = units, inputs
    lstm = helper.make_node("LSTM", ["X", "lstm_W", "lstm_R", "lstm_B"], ["lstm_Y"], name="lstm",
                            hidden_size=u, direction="bidirectional")
    gru = helper.make_node("GRU", ["X", "gru_W", "gru_R"], ["gru_Y"], name="gru", hidden_size=u,
                           linear_before_reset=1)
    body_rnn = helper.make_node("RNN", ["X", "body_W", "body_R", "body_B"], ["body_Y"], name="body_rnn",
                                hidden_size=u)
    body = helper.make_graph(
        [_constant(rng, "body_W", 1, u, n), _constant(rng, "small", 3), body_rnn,
         helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("body_Y", TensorProto.FLOAT, None)],
        [_weights(rng, "body_R", 1, u, u), _weights(rng, "body_B", 1, 2 * u)])
    branch = [helper.make_graph([_constant(rng, f"{side}_out", 40, 10)], side, [],
                                [helper.make_tensor_value_info(f"{side}_out", TensorProto.FLOAT, None)])
              for side in ("then", "else")]
    sparse_values = numpy_helper.from_array(rng.uniform(-1, 1, 300).astype(np.float32), "sparse_values")
    sparse_indices = numpy_helper.from_array(np.arange(0, 600, 2, dtype=np.int64), "sparse_indices")
    sparse = helper.make_sparse_tensor(sparse_values, sparse_indices, [600])
    custom = helper.make_node("Holder", [], ["held"], name="holder", domain="test.custom",
                              tensors=[_weights(rng, "listed_a", 300), _weights(rng, "listed_b", 5)],
                              graphs=branch, sparse_tensors=[sparse])
    nodes = [lstm, _constant(rng, "gru_W", 1, 3 * u, n), gru,
             helper.make_node("Loop", ["", "cond0"], ["loop_Y"], name="loop", body=body),
             helper.make_node("If", ["cond0"], ["if_Y"], name="if", then_branch=branch[0], else_branch=branch[1]),
             helper.make_node("Constant", [], ["sparse_constant"], sparse_value=sparse), custom,
             helper.make_node("Scaled", ["X"], ["scaled"], domain="test.functions")]
    model = make_model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, n]),
                               helper.make_tensor_value_info("cond0", TensorProto.BOOL, [])],
                       [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("lstm_Y", "gru_Y")],
                       [_weights(rng, "lstm_W", 2, 4 * u, n), _weights(rng, "lstm_R", 2, 4 * u, u),
                        _weights(rng, "lstm_B", 2, 8 * u), _weights(rng, "gru_R", 1, 3 * u, u),
                        _weights(rng, "tiny", 2)])
    model.graph.sparse_initializer.append(sparse)
    function = helper.make_function(
        "test.functions", "Scaled", ["x"], ["y"],
        [_constant(rng, "scale", 20, 20), helper.make_node("Mul", ["x", "scale"], ["y"])],
        [helper.make_opsetid("", 14)])
    function.attribute_proto.append(helper.make_attribute("default", _weights(rng, "default", 400)))
    model.functions.append(function)
    training = model.training_info.add()
    training.initialization.CopyFrom(helper.make_graph([], "init", [], [], [_weights(rng, "init_w", 30, 30)]))
    training.algorithm.CopyFrom(helper.make_graph([_constant(rng, "step", 30, 30)], "algo", [], []))
    path.write_bytes(model.SerializeToString())
    return path


def written_lazily(path: Path) -> bool:
    """Whether the reader left at least one of the file's tensors in it."""
    return bool(own_references(onnx_model.load_model(path), path))
