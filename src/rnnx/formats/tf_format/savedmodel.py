"""Keras SavedModel directories (format "tf-savedmodel"): TF 2.0-2.15 `model.save("dir")`.

The variables are the tensor bundle `variables/variables`; the Keras model config and each
layer's name come from `keras_metadata.pb` (TF >= 2.5) or from `saved_model.pb`'s object
graph (before 2.5); the layers' variables are found through the checkpoint's object graph
(keras_model.py). The result is the Bundle of a Keras 2 full-model file: every writer gets
the whole model. A TF1 SavedModel (no object graph) goes to the TF1 reader. No TensorFlow is
imported.
"""

from __future__ import annotations

from pathlib import Path

from ...canonical import Bundle
from ...errors import FormatError, UnsupportedError
from . import keras_metadata, keras_model
from .bundle import read_bundle
from .object_graph import read_object_graph

FORMAT = "tf-savedmodel"
VARIABLES = Path("variables") / "variables"


def folder_of(path: Path) -> Path:
    path = Path(path)
    return path.parent if path.name == keras_metadata.SAVED_MODEL else path


def read(path, shapes_only: bool = False, forget_bias: float | None = None, **_options) -> Bundle:
    folder = folder_of(Path(path))
    prefix = folder / VARIABLES
    if not Path(f"{prefix}.index").is_file():
        raise FormatError(f"{folder} is a SavedModel without variables/variables.index; rnnx reads the weights "
                          f"from there, so the folder is incomplete.")
    entries = read_bundle(prefix)
    graph = read_object_graph(entries, prefix)
    if graph is None:  # a TF1 SavedModel (SavedModelBuilder, simple_save): name-based variables
        from .checkpoint import name_based_bundle

        return name_based_bundle(entries, None, forget_bias, folder, shapes_only, container=FORMAT)
    keras_model.refuse_forget_bias(forget_bias, folder)
    metadata = keras_metadata.read(folder)
    config = keras_metadata.model_config(metadata)
    if config is None:
        return _from_variable_names(folder, entries, graph, shapes_only)
    layers = keras_model.layer_nodes(graph, keras_metadata.by_node(metadata, graph), config, folder)
    if not layers:
        raise FormatError(f"{folder}: the object graph reaches no Keras layer from its root.")
    bundle = keras_model.build(entries, graph, layers, folder, config, full_model=True, container=FORMAT,
                               shapes_only=shapes_only)
    bundle.source["read_notes"] = keras_model.ignored_note(entries)
    return bundle


def _from_variable_names(folder: Path, entries, graph, shapes_only: bool) -> Bundle:
    """A SavedModel without Keras layer structure (Keras 3 `model.export()`): the flat list `variables/N`
    is grouped by the names the variables were created with (`sequential/lstm/lstm_cell/kernel`), and
    the cells are recognised from shapes as in a weights-only file. Without such names it is refused."""
    named = keras_metadata.variable_names(folder)
    variables = graph.child(0, "variables")
    found = []
    for local, node in graph.children(variables) if variables is not None else []:
        key, name = graph.variable_key(node), named.get(f"root.variables.{local}")
        if key is None or key not in entries:
            raise FormatError(f"{folder}: the object graph's variables/{local} reaches no tensor of the checkpoint.")
        if entries[key].dtype in keras_model.FLOAT_DTYPES:
            found.append((name, entries[key]))
    if not found or any(name is None or "/" not in name for name, _ in found):
        raise UnsupportedError(
            f"{folder} is a SavedModel without Keras layer structure (no keras_metadata.pb, no Keras objects, no "
            f"variable names that say which layer each belongs to), so rnnx cannot tell its layers apart. Save the "
            f"model with Keras (model.save('model.keras') in Keras 3, model.save_weights in Keras 2) and convert "
            f"that file.")
    layers: dict[str, list] = {}
    for name, entry in found:
        parts = name.split("/")
        group = parts[1] if len(parts) >= 3 else parts[0]  # parts[0] is the model's name
        layers.setdefault(group, []).append(("/".join(parts[1:] if len(parts) >= 3 else parts) + ":0", entry))
    bundle = keras_model.build_groups(
        folder, [(group, [(n, e.lazy(shapes_only)) for n, e in weights])
                 for group, weights in layers.items()],
        keras_version="3", container=FORMAT)
    bundle.source["read_notes"] = [
        "a SavedModel without Keras layer structure (Keras 3 model.export()): layers were grouped by their "
        "variable names and recognised from shapes; activations are Keras 3's defaults (sigmoid gates, tanh)."]
    return bundle
