"""Keras SavedModel directories (format "tf-savedmodel"): TF 2.0-2.15 `model.save("dir")`.

The variables are the tensor bundle `variables/variables`; the Keras model config and each
layer's name come from `keras_metadata.pb` (TF >= 2.5) or from `saved_model.pb`'s object
graph (before 2.5); the layers' variables are found through the checkpoint's object graph
(keras_model.py). The result is the Bundle of a Keras 2 full-model file: every writer gets
the whole model. No TensorFlow is imported.
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


def is_savedmodel(path: Path) -> bool:
    return (folder_of(path) / keras_metadata.SAVED_MODEL).is_file()


def read(path, shapes_only: bool = False, **_options) -> Bundle:
    folder = folder_of(Path(path))
    prefix = folder / VARIABLES
    if not Path(f"{prefix}.index").is_file():
        raise FormatError(f"{folder} is a SavedModel without variables/variables.index; rnnx reads the weights "
                          f"from there, so the folder is incomplete.")
    entries = read_bundle(prefix)
    graph = read_object_graph(entries, prefix)
    if graph is None:
        raise FormatError(f"{prefix}.index has no object graph ({'_CHECKPOINTABLE_OBJECT_GRAPH'}); it is not the "
                          f"variables of a TF2 SavedModel.")
    metadata = keras_metadata.read(folder)
    config = keras_metadata.model_config(metadata)
    if config is None:
        raise UnsupportedError(
            f"{folder} is a SavedModel without Keras layer structure (a Keras 3 model.export() or "
            f"tf.saved_model.save of a plain tf.Module): its variables are a flat list that does not say which layer "
            f"or cell each belongs to. Save the model with Keras (model.save('model.keras') in Keras 3, "
            f"model.save_weights in Keras 2) and convert that file.")
    layers = keras_model.layer_nodes(graph, keras_metadata.by_node(metadata, graph), config, folder)
    if not layers:
        raise FormatError(f"{folder}: the object graph reaches no Keras layer from its root.")
    bundle = keras_model.build(entries, graph, layers, folder, config, full_model=True, container=FORMAT,
                               shapes_only=shapes_only)
    bundle.source["read_notes"] = keras_model.ignored_note(entries)
    return bundle
