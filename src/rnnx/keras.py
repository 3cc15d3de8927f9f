"""Load recurrent weights from any file rnnx reads straight into a live Keras model.

    import rnnx.keras
    model = build_my_model()                       # tf_keras or Keras 3, built (it has weights)
    rnnx.keras.load_weights(model, "cudnn_model.h5")   # or .pt, .onnx, .rnnx, .keras ...

The model's recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional of those, nested models
included) are matched with the file's recurrent layers in order, or by layer name with
`by_name=True`. Everything is checked first (cell kind, directions, units, input size,
GRU reset_after, bias, activations as that Keras generation computes them); any mismatch
raises UsageError before a single weight is touched. Non-recurrent layers are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .canonical import RecurrentLayer
from .canonical.activations import from_keras
from .errors import UsageError
from .formats.keras3.layout import direction_to_vars, refusal

CELL_CLASSES = {"LSTMCell": "lstm", "GRUCell": "gru", "SimpleRNNCell": "rnn"}


@dataclass
class _Target:
    """One recurrent layer of the live model: its name and the cells holding its variables."""

    name: str
    cells: list  # one per direction, forward first


def load_weights(model, path, by_name: bool = False, config=None,
                 accept_activation_change: bool = False) -> list[str]:
    """Copy the recurrent layers of `path` into `model`; returns notes. Raises UsageError on any mismatch."""
    from .api import load

    bundle = load(path, config=config)
    targets = recurrent_layers(model)
    if not targets:
        raise UsageError("The model has no LSTM, GRU or SimpleRNN layer to load weights into.")
    if not bundle.layers:
        raise UsageError(f"{path} holds no recurrent layer.")
    pairs, notes = _match(targets, bundle.layers, by_name, path)
    major = keras_generation(model)
    plan = [(target, source, _arrays_for(target, source, major, accept_activation_change, path))
            for target, source in pairs]
    for target, _, arrays in plan:  # every check passed: now write
        for cell, values in zip(target.cells, arrays):
            for variable, value in zip(cell.weights, values):
                variable.assign(value)
    return notes


def keras_generation(model) -> int:
    """2 for a tf_keras (or tf.keras 2) model, 3 for a Keras 3 model."""
    module = type(model).__module__
    if module.startswith("keras.") or module == "keras":
        return 3
    if module.startswith(("tf_keras", "tensorflow", "keras.src.engine")):
        return 2
    raise UsageError(f"{type(model).__name__} is not a Keras model; build the model with tf_keras or Keras 3.")


def recurrent_layers(model) -> list[_Target]:
    """The recurrent layers of `model` in the order Keras lists them, nested models walked."""
    out = []
    for layer in getattr(model, "layers", []):
        forward, backward = getattr(layer, "forward_layer", None), getattr(layer, "backward_layer", None)
        if forward is not None and backward is not None and _cell(forward) is not None:
            out.append(_Target(layer.name, [_cell(forward), _cell(backward)]))
        elif _cell(layer) is not None:
            out.append(_Target(layer.name, [_cell(layer)]))
        elif type(layer).__name__.startswith("CuDNN"):
            raise UsageError(f"Layer {layer.name!r} is a {type(layer).__name__}; rnnx loads into LSTM / GRU "
                             f"layers (build the model with those; they compute the same on CPU).")
        elif hasattr(layer, "layers"):
            out.extend(recurrent_layers(layer))
    return out


def _cell(layer):
    cell = getattr(layer, "cell", None)
    return cell if type(cell).__name__ in CELL_CLASSES else None


def _match(targets, sources: list[RecurrentLayer], by_name: bool, path):
    if by_name:
        by = {s.name: s for s in sources}
        by.update({s.name.rsplit("/", 1)[-1]: s for s in sources if s.name.rsplit("/", 1)[-1] not in by})
        # a one-layer PyTorch module `lstm` is read as `lstm.l0`, also after Keras -> PyTorch -> ...
        by.update({s.name[:-3]: s for s in sources if s.name.endswith(".l0") and s.name[:-3] not in by})
        pairs = [(t, by[t.name]) for t in targets if t.name in by]
        if not pairs:
            raise UsageError(f"No recurrent layer of the model has a name found in {path} "
                             f"(model: {', '.join(t.name for t in targets)}; file: "
                             f"{', '.join(s.name for s in sources)}).")
        skipped = [t.name for t in targets if t.name not in by]
        notes = [f"left unchanged (no layer of that name in the file): {', '.join(skipped)}"] if skipped else []
        return pairs, notes
    if len(targets) != len(sources):
        raise UsageError(
            f"The model has {len(targets)} recurrent layers ({', '.join(t.name for t in targets)}) and {path} "
            f"has {len(sources)} ({', '.join(s.name for s in sources)}); nothing was loaded. Pass by_name=True "
            f"to match by name.")
    return list(zip(targets, sources)), []


def _arrays_for(target: _Target, source: RecurrentLayer, major: int, accept_activation_change: bool, path):
    """The variable values of each of `target`'s cells, after checking `source` fits them exactly."""
    where = f"Layer {target.name!r} of the model and layer {source.name!r} of {path}"
    reason = refusal(source, accept_activation_change=True)
    if reason:
        raise UsageError(f"{where}: {reason}")
    cell = target.cells[0]
    kind = CELL_CLASSES[type(cell).__name__]
    if kind != source.cell:
        raise UsageError(f"{where} differ: {kind.upper()} in the model, {source.cell.upper()} in the file.")
    if len(target.cells) != source.num_directions:
        raise UsageError(f"{where} differ: {len(target.cells)} direction(s) in the model, "
                         f"{source.num_directions} in the file.")
    if kind == "gru" and bool(cell.reset_after) != source.reset_after:
        raise UsageError(f"{where} differ: the model's GRU has reset_after={bool(cell.reset_after)}, the file's "
                         f"{source.reset_after}; build the GRU with reset_after={source.reset_after}.")
    _check_activations(cell, kind, source, major, accept_activation_change, where)
    use_bias = bool(getattr(cell, "use_bias", True))
    if not use_bias and source.has_bias and any(np.any(d.fused_bias()) for d in source.directions):
        raise UsageError(f"{where} differ: the file has biases but the model's layer has use_bias=False.")
    arrays = []
    for keras_cell, d in zip(target.cells, source.directions):
        values = direction_to_vars(_with_bias(source, use_bias), d)
        if not use_bias:
            values = values[:2]
        shapes = [tuple(v.shape) for v in keras_cell.weights]
        if shapes != [v.shape for v in values]:
            raise UsageError(f"{where} differ in shape: the model's variables are {shapes}, the file gives "
                             f"{[v.shape for v in values]} (units {source.units}, input {source.input_size}); "
                             f"nothing was loaded.")
        arrays.append([v.astype(_dtype(w)) for v, w in zip(values, keras_cell.weights)])
    return arrays


def _with_bias(source: RecurrentLayer, use_bias: bool) -> RecurrentLayer:
    """`source`, given zero biases when it has none but the Keras layer wants them."""
    if source.has_bias or not use_bias:
        return source
    from dataclasses import replace

    from .canonical import Direction

    dirs = [Direction(W=d.W, R=d.R, b_w=np.zeros(d.W.shape[0], d.W.dtype)) for d in source.directions]
    return replace(source, directions=dirs)


def _dtype(variable) -> np.dtype:
    dtype = getattr(variable, "dtype", "float32")
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def _check_activations(cell, kind, source: RecurrentLayer, major: int, accept: bool, where: str) -> None:
    names = [getattr(cell.activation, "__name__", str(cell.activation))]
    if kind != "rnn":
        names.insert(0, getattr(cell.recurrent_activation, "__name__", str(cell.recurrent_activation)))
    try:
        acts = [from_keras(n, major) for n in names]
    except ValueError:
        raise UsageError(f"{where}: the model's layer uses the activation(s) {names}, which rnnx cannot compare "
                         f"with the file's ({source.describe_activations()}).") from None
    wanted = list(source.activations[:2])  # LSTM: gate, candidate (Keras has no separate output activation)
    if acts != wanted and not accept:
        raise UsageError(
            f"{where} compute differently: the model uses {', '.join(a.describe() for a in acts)}, the file "
            f"{', '.join(a.describe() for a in wanted)}. Build the layer with matching activations (Keras 2's "
            f"hard_sigmoid is not Keras 3's), or pass accept_activation_change=True.")
