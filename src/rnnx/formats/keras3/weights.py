"""`.weights.h5`: Keras 3 `model.save_weights` / `model.load_weights` files.

Reading (any Keras 3 release, Windows-written files included): the tree described in
layout.py becomes a Bundle. Bundle conventions:

- source: format "keras3-weights", has_architecture False, keras_version None (the file
  does not say; it is a Keras 3 file). Read with `config=` (a Keras 3 `model.to_json()`),
  has_architecture is True, source["model_config"] holds that config and the items follow
  the `.keras` reader's conventions (names, activations and options from the config).
- items in file order: a RecurrentLayer for every LSTM / GRU / SimpleRNN cell
  (Bidirectional: two directions), named by the `name` attribute Keras stores on the
  layer's `vars` group (the path's last part when absent), with provenance class_name
  (the cell's class: LSTM, GRU or SimpleRNN), wrapper ("Bidirectional", when wrapped) and
  keras3_path (the layer's path in the file). A weights file does not say its
  activations: Keras 3 defaults (sigmoid gates, tanh) are assumed and said so in
  source["notes"]; a GRU's reset_after follows its bias shape. Every other layer with
  variables is an OpaqueLayer(name, class_name None, weights named by their path relative
  to the layer, e.g. `vars/0`, `layer/vars/1`), options["keras3_path"].

Writing: from any bundle. A layer goes where Keras 3 looks for it:
- a Keras 3 source keeps its paths (a byte-exact round trip);
- a Keras 2 source with a model config gets the paths of the translated Keras 3 model
  (the same tree `.keras` writes), so `load_weights` into the equivalent Keras 3 model works;
- otherwise layers are numbered as Keras 3 numbers the layers of a Sequential or
  Functional model: `layers/<snake_case class>[_<n>]` in bundle order, e.g. `layers/lstm`,
  `layers/lstm_1`, `layers/bidirectional`, `layers/dense`. Keras 3 matches by class and
  order within a class, not by layer name: build the model with the same recurrent (and
  Dense, Embedding...) layers in the same order. Non-recurrent layers without a Keras
  class (from torch or ONNX sources) are left out, with a note.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ...canonical import Bundle, RecurrentLayer
from ...errors import FormatError, UnsupportedError, UsageError
from ...io import atomic_output
from ...mapped import map_range
from . import layout
from .. import unheld_call_options


def read(path: Path, config=None, **_options) -> Bundle:
    """`config`: the model's Keras 3 `model.to_json()` (or a .keras archive's config.json), which gives the
    layers their names, activations and options and lets the bundle be written as a .keras archive."""
    import h5py

    path = Path(path)
    model_config = _keras3_config_file(Path(config)) if config else None
    source = {"format": "keras3-weights", "has_architecture": model_config is not None, "keras_version": None}
    if model_config is not None:
        source["model_config"] = model_config
    try:
        with h5py.File(path, "r") as h5:
            return bundle_from_h5(h5, str(path), source, lambda: reopened(lambda: h5py.File(path, "r"), str(path)),
                                  path.stat().st_size, model_config=model_config,
                                  map_plain=lambda offset, shape, dtype: map_range(path, offset, shape, dtype))
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError on damaged structures
        raise FormatError(f"{path} cannot be read as HDF5 ({exc}); it may be truncated.") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if config is None:
            raise FormatError(f"{path}: a variable cannot be read ({exc}); the file is truncated or damaged.") \
                from None
        raise FormatError(f"{config} does not describe the weights in {path} ({type(exc).__name__}: {exc}).") \
            from None


def _keras3_config_file(path: Path) -> dict:
    import json

    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a readable JSON model config ({exc}).") from None
    if not isinstance(config, dict) or "module" not in config or "class_name" not in config:
        raise UsageError(f"{path} is not a Keras 3 model config (model.to_json() of a Keras 3 model); a Keras 3 "
                         f"weights file needs one.")
    return config


@contextmanager
def reopened(open_file: Callable, where: str):
    """The HDF5 file the context manager `open_file()` gives, to read a variable after the reader returned;
    failures are FormatErrors naming `where`."""
    with ExitStack() as stack:
        try:
            h5 = stack.enter_context(open_file())
        except OSError as exc:
            raise FormatError(f"{where} cannot be opened again to read a variable ({exc}); it was moved, changed "
                              f"or deleted after it was read.") from None
        try:
            yield h5
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # h5py on damaged data
            raise FormatError(f"{where}: a variable cannot be read ({exc}); the file is truncated, damaged or "
                              f"was changed after it was read.") from None


def bundle_from_h5(h5, where: str, source: dict, reopen: Callable, file_bytes: int,
                   model_config: dict | None = None, map_plain: Callable | None = None) -> Bundle:
    """The bundle of an open Keras 3 HDF5 file `h5` of `file_bytes` bytes; its variables are read later through
    `reopen()`, a context manager giving the file opened again, or mapped by `map_plain` (layout.read_tree)."""
    if "layer_names" in h5.attrs or "model_weights" in h5:
        raise FormatError(f"{where} is a Keras 2 HDF5 file, not a Keras 3 weights file; name it .h5 to read it.")
    tree = layout.read_tree(h5, where, reopen, file_bytes, map_plain)
    if not tree:
        raise FormatError(f"{where} holds no Keras 3 variables (no `vars` groups).")
    provenance = {"format": source["format"]}
    if source.get("keras_version"):
        provenance["keras_version"] = source["keras_version"]
    items, notes = layout.items_from_tree(tree, model_config, where, provenance)
    if notes:
        source = dict(source, notes=notes)
    return Bundle(items, source)


def write(bundle: Bundle, path: Path, accept_activation_change: bool = False, layer: str | None = None,
          **_options) -> list[str]:
    import h5py

    # one layer picked with --layer: the model's config no longer describes the bundle
    entries, notes = tree_entries(bundle, accept_activation_change, use_config=layer is None)
    if not any(e.arrays for e in entries):
        raise UnsupportedError(f"Nothing to write to {path}: the source has no layers Keras 3 can hold.")
    changed = changed_activation_layers(bundle, accept_activation_change)
    with atomic_output(Path(path)) as tmp:
        with h5py.File(tmp, "w") as h5:
            measured = layout.write_tree(h5, entries, measured=changed)
    return (deviation_notes(changed, measured) + notes +
            unheld_call_options(bundle.layers, "a .weights.h5 file", "build the Keras layer with it"))


def tree_entries(bundle: Bundle, accept_activation_change: bool, use_config: bool = True) -> tuple[list, list[str]]:
    """Where every variable goes, using the model's Keras 3 config when the source has one, and notes (the
    deviation notes of changed activations aside: see deviation_notes)."""
    refuse_activations(bundle, accept_activation_change)
    notes = []
    config = None
    fmt = bundle.source.get("format") if use_config else None
    if bundle.source.get("model_config") and fmt in ("keras", "keras3-weights"):
        config = bundle.source["model_config"]
    elif bundle.source.get("model_config") and fmt == "keras-h5":
        from . import config as keras3_config

        try:
            config, _ = keras3_config.translate(bundle.source["model_config"],
                                                {l.name: l for l in bundle.layers}, accept_activation_change,
                                                source=bundle.source.get("path"))
        except (UnsupportedError, FormatError) as exc:
            notes.append(f"the model config could not be translated to Keras 3 ({exc.args[0]}); layers are "
                         f"numbered in order instead.")
    entries, more = layout.entries_from_bundle(bundle, config, accept_activation_change)
    return entries, notes + more


def refuse_activations(bundle: Bundle, accept_activation_change: bool) -> None:
    """Refuse layers Keras 3 cannot hold (before anything is read)."""
    for layer in bundle.layers:
        reason = layout.refusal(layer, accept_activation_change)
        if reason:
            raise UnsupportedError(reason)


def changed_activation_layers(bundle: Bundle, accept_activation_change: bool) -> list[RecurrentLayer]:
    """The layers written with Keras 3's hard_sigmoid in place of Keras 2's (the change accepted)."""
    return [layer for layer in bundle.layers if accept_activation_change and layout.refusal(layer)]


def deviation_notes(changed: list[RecurrentLayer], measured: dict[int, str]) -> list[str]:
    """How far each changed layer's output moves: as measured while writing it (write_tree), else now (a
    layer the file leaves out)."""
    return [measured.get(id(layer)) or layout.deviation_note(layer) for layer in changed]


def refusal(layer: RecurrentLayer) -> str | None:
    return layout.refusal(layer)


def run_layer(path: Path, layer: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """Run the layer stored in `path` under `layer.name` with Keras 3: x [b, s, in] -> [b, s, dirs, hidden]."""
    bundle = read(path)
    stored = _find(bundle, layer.name, path)
    return run_keras3_layer(stored, x)


def _find(bundle: Bundle, name: str, path) -> RecurrentLayer:
    for item in bundle.layers:
        if item.name == name:
            return item
    if len(bundle.layers) == 1:
        return bundle.layers[0]
    raise FormatError(f"{path} has no recurrent layer named {name!r}.")


def run_keras3_layer(stored: RecurrentLayer, x: np.ndarray) -> np.ndarray:
    """Build a Keras 3 layer holding `stored`'s variables as Keras stores them, and run it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    names = layout.activation_names(stored, accept_activation_change=True)
    kwargs = dict(units=stored.units, use_bias=stored.has_bias, return_sequences=True, **names)
    if stored.cell == "gru":
        kwargs["reset_after"] = stored.reset_after
    if stored.dtype == np.float64:  # Keras computes in float32 unless told; float16 weights run in float32
        kwargs["dtype"] = "float64"
    cls = getattr(keras.layers, layout.KERAS_CLASS[stored.cell])
    inputs = keras.Input((None, stored.input_size), dtype=str(stored.dtype))
    if stored.num_directions == 2:
        rnn = keras.layers.Bidirectional(cls(**kwargs), merge_mode=None, dtype=kwargs.get("dtype"))
        outputs = rnn(inputs)
        cells = [rnn.forward_layer.cell, rnn.backward_layer.cell]
    else:
        rnn = cls(**kwargs)
        outputs = [rnn(inputs)]
        cells = [rnn.cell]
    for cell, d in zip(cells, stored.directions):
        for variable, value in zip(cell.weights, layout.direction_to_vars(stored, d)):
            variable.assign(value)
    model = keras.Model(inputs, outputs)
    ys = model(x.astype(str(stored.dtype)))
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    return np.stack([np.asarray(y) for y in ys], axis=2)
