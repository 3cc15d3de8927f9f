"""TensorFlow checkpoints (format "tf-checkpoint"): a prefix with `.index` and `.data-*` files.

TF2 object-based checkpoints (Keras `save_weights` without `.h5`, `ModelCheckpoint`) carry an
object graph: layers by object path (`layer_with_weights-K`, `forward_layer` / `backward_layer`),
cells recognised from shapes as in a weights-only HDF5 file; `config=model.json` names them and
gives the full model (keras_model.py). TF1 name-based checkpoints (`tf.train.Saver`) have no
object graph and go to tf1.py. Optimizer slots and counters are left out, with a note.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...canonical import Bundle
from ...errors import FormatError
from ...lazy import LazyArray
from ..keras2.h5 import _config_file
from . import keras_model
from .bundle import read_bundle, resolve_prefix
from .object_graph import read_object_graph

FORMAT = "tf-checkpoint"


def read(path, config=None, forget_bias=None, shapes_only: bool = False, **_options) -> Bundle:
    prefix = resolve_prefix(Path(path))
    entries = read_bundle(prefix)
    graph = read_object_graph(entries, Path(f"{prefix}.index"))
    if graph is None:
        meta = Path(f"{prefix}.meta")
        return name_based_bundle(entries, meta if meta.is_file() else None, forget_bias, prefix, shapes_only)
    keras_model.refuse_forget_bias(forget_bias, prefix)
    model_config = _config_file(Path(config)) if config is not None else None
    layers = keras_model.layer_nodes(graph, None, model_config, prefix)
    layers = [layer for layer in layers if keras_model.weights_of(graph, layer)] if model_config is None else layers
    if not layers:
        raise FormatError(f"{prefix}.index: the object graph reaches no layer with weights from its root "
                          f"(children: {', '.join(n for n, _ in graph.children(0)) or 'none'}).")
    bundle = keras_model.build(entries, graph, layers, prefix, model_config, full_model=False, container=FORMAT,
                               shapes_only=shapes_only)
    bundle.source["read_notes"] = keras_model.ignored_note(entries)
    return bundle


def name_based_bundle(entries: dict, meta, forget_bias, where: Path, shapes_only: bool = False,
                      container: str = FORMAT) -> Bundle:
    """A TF1 name-based checkpoint (no object graph) read by tf1.py into a Bundle."""
    from . import tf1

    variables = {name: _variable(entry, shapes_only) for name, entry in entries.items()}
    items, notes = tf1.layers_from_variables(variables, meta, forget_bias, where=str(where))
    bundle = Bundle(list(items), {"format": container, "tf1": True})
    bundle.source["read_notes"] = list(notes)
    return bundle


def _variable(entry, shapes_only: bool):
    """A bundle entry as tf1.py takes a variable: numeric ones as rnnx.lazy.LazyArray; strings read now (as
    bytes); other dtypes by their shape, refused by the read if a layer uses them (optimizer state is
    dropped unread)."""
    if entry.is_numeric or entry.dtype == "string":
        value = entry.lazy(shapes_only)
        return value if isinstance(value, LazyArray) else np.asarray(value)
    return LazyArray(entry.shape, object, entry.read, f"{entry.shard.name}:{entry.name}")
