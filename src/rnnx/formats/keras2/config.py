"""Keras 2 `model_config` (model.to_json()) parsing and the CuDNN <-> CPU class rewrite.

Configs of every Keras 2 era are plain dicts: Sequential as a list of layers (Keras
2.0-2.1) or {"name", "layers"}; Model / Functional as {"layers": [...]} where each entry
has class_name, config and (functional) name. Wrappers (Bidirectional, TimeDistributed)
hold their inner layer under config["layer"] (Bidirectional also "backward_layer").
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Iterator

RECURRENT_CLASSES = ("LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU")
CUDNN_CLASSES = ("CuDNNLSTM", "CuDNNGRU")
CELL_OF_CLASS = {"LSTM": "lstm", "CuDNNLSTM": "lstm", "GRU": "gru", "CuDNNGRU": "gru", "SimpleRNN": "rnn"}
LAYER_OF_CELL = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}  # inside RNN(cell=...)
WRAPPERS = ("Bidirectional", "TimeDistributed")
MODEL_CLASSES = ("Sequential", "Model", "Functional")

# Semantics a user's Keras layer carries that rnnx keeps in RecurrentLayer.options.
OPTION_KEYS = ("return_sequences", "return_state", "go_backwards", "stateful", "time_major", "unroll",
               "use_bias", "dropout", "recurrent_dropout", "implementation")

# Keys both a CuDNN layer and its CPU twin understand.
_SHARED_KEYS = ("name", "trainable", "dtype", "batch_input_shape", "input_shape", "batch_size",
                "return_sequences", "return_state", "go_backwards", "stateful", "time_major", "units",
                "kernel_initializer", "recurrent_initializer", "bias_initializer",
                "kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "recurrent_constraint", "bias_constraint")


def parse(text: str | bytes) -> dict:
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    config = json.loads(text)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError("not a Keras model config (no class_name at the top)")
    return config


def layer_entries(entry: dict) -> list[dict]:
    """The layer entries directly inside a model entry (Sequential list or dict form)."""
    config = entry.get("config")
    if isinstance(config, list):
        return [e for e in config if isinstance(e, dict)]
    if isinstance(config, dict) and isinstance(config.get("layers"), list):
        return [e for e in config["layers"] if isinstance(e, dict)]
    return []


def entry_name(entry: dict) -> str | None:
    config = entry.get("config")
    if isinstance(config, dict) and isinstance(config.get("name"), str):
        return config["name"]
    return entry.get("name")


def top_level(model_config: dict) -> dict[str, dict]:
    """Layer name -> entry for the layers of the outermost model."""
    return {entry_name(e): e for e in layer_entries(model_config) if entry_name(e)}


def children(entry: dict) -> Iterator[dict]:
    """Layer entries nested in `entry`: model layers, wrapped layers, and any layer-looking
    dict inside a custom layer's config."""
    config = entry.get("config")
    if entry.get("class_name") in MODEL_CLASSES:
        yield from layer_entries(entry)
        return
    if not isinstance(config, dict):
        return
    for value in config.values():
        for found in _layer_dicts(value):
            yield found


def _layer_dicts(value) -> Iterator[dict]:
    if isinstance(value, dict):
        if isinstance(value.get("class_name"), str) and isinstance(value.get("config"), (dict, list)) \
                and entry_name(value):
            yield value
            return
        for v in value.values():
            yield from _layer_dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _layer_dicts(v)


def find(entry: dict, name: str) -> dict | None:
    """Depth-first search for the layer entry called `name` inside `entry`."""
    for child in children(entry):
        if entry_name(child) == name:
            return child
        hit = find(child, name)
        if hit is not None:
            return hit
    return None


def activation_name(value: Any) -> str | None:
    """'tanh' from 'tanh' or from a serialized {"class_name": "function", "config": "tanh"}."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("config")
        if isinstance(inner, str):
            return inner
        if isinstance(value.get("class_name"), str):
            return value["class_name"]
    return str(value)


def options_of(config: dict) -> dict:
    return {k: config[k] for k in OPTION_KEYS if k in config}


def default_implementation(keras_version: str | None) -> int:
    """LSTM/GRU `implementation` default of the Keras that wrote a file: 0 in Keras 2.0, 1 in 2.1-2.2
    (and TF 1.x tf.keras, which "-tf" versions do not tell apart: 2 is assumed), 2 from 2.3 and in TF 2
    tf.keras. It picks how the gates are computed, not
    what they compute; written out so that every loader reads the file's own choice."""
    major, minor = version_tuple(keras_version)
    if (keras_version and keras_version.endswith("-tf")) or (major, minor) == (0, 0) or (major, minor) >= (2, 3):
        return 2
    return 0 if (major, minor) < (2, 1) else 1


def version_tuple(version: str | None) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def default_recurrent_activation(keras_version: str | None) -> str:
    """LSTM/GRU recurrent_activation default of the Keras that wrote a file (rnn-conventions.md):
    hard_sigmoid up to standalone Keras 2.2.5 (and Keras 1), sigmoid from 2.3 and in tf.keras
    ("-tf" versions, which TF 2 writes; TF 1.x tf.keras also wrote "-tf" with hard_sigmoid
    defaults, which only a config can tell)."""
    if keras_version and keras_version.endswith("-tf"):
        return "sigmoid"
    major, minor = version_tuple(keras_version)
    if (major, minor) == (0, 0):
        return "sigmoid"
    return "hard_sigmoid" if (major, minor) < (2, 3) else "sigmoid"


# --- rewriting classes ----------------------------------------------------------------------

def _walk(entry, visit, classes=RECURRENT_CLASSES) -> None:
    if isinstance(entry, dict):
        if entry.get("class_name") in classes and isinstance(entry.get("config"), dict):
            visit(entry)
        for v in entry.values():
            _walk(v, visit, classes)
    elif isinstance(entry, list):
        for v in entry:
            _walk(v, visit, classes)


CELL_CLASSES = tuple(LAYER_OF_CELL)


def with_era_defaults(model_config: dict, keras_version: str | None) -> dict:
    """`model_config` with every recurrent default a later Keras changed written out as the writing Keras
    meant it, so that tf_keras 2.21 and Keras 3 load the layer that was saved:

    - GRU `reset_after`: Keras 2.0 and the 2.1 releases before keras-team/keras#9112 (January 2018) had
      no such argument (always reset-before), later standalone Keras 2 defaults to False, while tf.keras 2
      and Keras 3 default a missing key to True;
    - LSTM/GRU `recurrent_activation`: hard_sigmoid before Keras 2.3 (default_recurrent_activation);
    - `activation` (tanh in every era), so no reader has to assume;
    - LSTM/GRU `implementation` (0, 1 or 2 by era; default_implementation).
    The reader applies the same rules, so the written config says what rnnx read. CuDNN layers have
    none of these options."""
    out = copy.deepcopy(model_config)

    def visit(entry):
        cls, config = entry["class_name"], entry["config"]
        if cls in CUDNN_CLASSES:
            return
        config.setdefault("activation", "tanh")
        if cls in ("SimpleRNN", "SimpleRNNCell"):
            return
        config.setdefault("recurrent_activation", default_recurrent_activation(keras_version))
        config.setdefault("implementation", default_implementation(keras_version))
        if cls in ("GRU", "GRUCell"):
            config.setdefault("reset_after", False)

    _walk(out, visit, RECURRENT_CLASSES + CELL_CLASSES)
    return out


def to_cpu(model_config: dict) -> tuple[dict, list[str]]:
    """CuDNNLSTM -> LSTM, CuDNNGRU -> GRU(reset_after=True) with the activations cuDNN used."""
    out = copy.deepcopy(model_config)
    notes: list[str] = []

    def visit(entry):
        cls = entry["class_name"]
        if cls not in CUDNN_CLASSES:
            return
        old = entry["config"]
        new = {k: old[k] for k in _SHARED_KEYS if k in old}
        if not new.get("time_major", True):
            del new["time_major"]  # the default everywhere; Keras 3 rejects the key
        new.update(activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                   dropout=0.0, recurrent_dropout=0.0, implementation=2, unroll=False)
        if cls == "CuDNNLSTM":
            new["unit_forget_bias"] = old.get("unit_forget_bias", True)
            entry["class_name"] = "LSTM"
        else:
            new["reset_after"] = True
            entry["class_name"] = "GRU"
        _drop_custom_module(entry)
        entry["config"] = new
        notes.append(f"{old.get('name')}: config class {cls} -> {entry['class_name']}")

    _walk(out, visit)
    return out, notes


def to_cudnn(model_config: dict) -> tuple[dict, list[str]]:
    """LSTM -> CuDNNLSTM, GRU(reset_after=True) -> CuDNNGRU (refusals are checked by the caller)."""
    out = copy.deepcopy(model_config)
    notes: list[str] = []

    def visit(entry):
        cls = entry["class_name"]
        if cls not in ("LSTM", "GRU"):
            return
        old = entry["config"]
        new = {k: old[k] for k in _SHARED_KEYS if k in old}
        if cls == "LSTM":
            new["unit_forget_bias"] = old.get("unit_forget_bias", True)
        dropped = [k for k in ("dropout", "recurrent_dropout") if old.get(k)]
        entry["class_name"] = f"CuDNN{cls}"
        _drop_custom_module(entry)
        entry["config"] = new
        note = f"{old.get('name')}: config class {cls} -> {entry['class_name']}"
        if dropped:
            note += f" (CuDNN layers have no {' or '.join(dropped)}; dropped)"
        notes.append(note)

    _walk(out, visit)
    return out, notes


def _drop_custom_module(entry: dict) -> None:
    """Keep a "keras.layers" module tag (Keras 3 uses it to find nested classes); drop any other."""
    if entry.get("module") != "keras.layers":
        entry.pop("module", None)
    entry.pop("registered_name", None)
