"""Keras 2 model config (a `.h5` file's model_config, or model.to_json()) -> Keras 3 config.json.

Keras 3's own legacy loader mis-reads many Keras 2 configs, so rnnx writes the Keras 3
schema itself, as Keras 3.15 `model.save("x.keras")` does: every layer as
`{module, class_name, config, registered_name, build_config}`, Sequential with an
explicit InputLayer (made from the first layer's `batch_input_shape`), Functional with
`inbound_nodes` of `__keras_tensor__` arguments. Output shapes are inferred here (no
keras import) for `build_config` and the tensors' `shape`.

What changes on the way:
- CuDNNLSTM -> LSTM(tanh, sigmoid), CuDNNGRU -> GRU(reset_after=True, tanh, sigmoid);
  every recurrent layer's activations, reset_after and use_bias are taken from the
  canonical layer rnnx read (the weights' truth), not from the config text; so an era default
  a Keras 2 config leaves out (a Keras 2.0 GRU has no reset_after) is stated as it was meant.
  A recurrent layer (or Bidirectional) inside TimeDistributed is found under the
  TimeDistributed's name, as the readers name it.
- Initializers, regularizers and constraints Keras 3 has are carried over with the keys
  Keras 3 accepts; others are dropped and said so in the notes.
- Keras 2 options Keras 3 has no counterpart for (implementation, input_length, ...) are
  dropped, with a note when they held a non-default value; time_major=True is refused.
- Keras 2 hard_sigmoid (slope 0.2) is not Keras 3's (slope 1/6): refused unless the
  caller accepts the change.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ...canonical import RecurrentLayer
from ...errors import FormatError, UnsupportedError
from .layout import KERAS_CLASS, RECURRENT_CLASSES, activation_names

Shape = list  # [None, 5, 3]

# The config keys of each Keras 3.15 layer class besides name, trainable and dtype
# (read from each class's get_config(); tests/formats/keras3/test_config.py checks them).
KEYS3: dict[str, tuple[str, ...]] = {
    "Embedding": ("input_dim", "output_dim", "embeddings_initializer", "embeddings_regularizer",
                  "activity_regularizer", "embeddings_constraint", "mask_zero"),
    "Masking": ("mask_value",),
    "LSTM": ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask",
             "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
             "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
             "recurrent_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
             "recurrent_constraint", "bias_constraint", "dropout", "recurrent_dropout", "seed"),
    "GRU": ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask",
            "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
            "recurrent_initializer", "bias_initializer", "kernel_regularizer", "recurrent_regularizer",
            "bias_regularizer", "activity_regularizer", "kernel_constraint", "recurrent_constraint",
            "bias_constraint", "dropout", "recurrent_dropout", "reset_after", "seed"),
    "SimpleRNN": ("return_sequences", "return_state", "go_backwards", "stateful", "unroll", "zero_output_for_mask",
                  "units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
                  "bias_initializer", "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                  "activity_regularizer", "kernel_constraint", "recurrent_constraint", "bias_constraint",
                  "dropout", "recurrent_dropout"),
    "Bidirectional": ("merge_mode", "layer", "backward_layer"),
    "TimeDistributed": ("layer",),
    "Dense": ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
              "bias_regularizer", "kernel_constraint", "bias_constraint"),
    "Activation": ("activation",),
    "Dropout": ("rate", "seed", "noise_shape"),
    "SpatialDropout1D": ("rate", "seed"),
    "GaussianNoise": ("stddev", "seed"),
    "GaussianDropout": ("rate", "seed"),
    "AlphaDropout": ("rate", "seed", "noise_shape"),
    "ActivityRegularization": ("l1", "l2"),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
    "Permute": ("dims",),
    "RepeatVector": ("n",),
    "Concatenate": ("axis",),
    "Add": (), "Subtract": (), "Multiply": (), "Average": (), "Maximum": (), "Minimum": (),
    "Conv1D": ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "groups",
               "activation", "use_bias", "kernel_initializer", "bias_initializer", "kernel_regularizer",
               "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint"),
    "MaxPooling1D": ("pool_size", "padding", "strides", "data_format"),
    "AveragePooling1D": ("pool_size", "padding", "strides", "data_format"),
    "GlobalMaxPooling1D": ("data_format", "keepdims"),
    "GlobalAveragePooling1D": ("data_format", "keepdims"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale", "beta_initializer",
                           "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
                           "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
                           "synchronized", "renorm", "renorm_clipping", "renorm_momentum"),
    "LayerNormalization": ("axis", "epsilon", "center", "scale", "rms_scaling", "beta_initializer",
                           "gamma_initializer", "beta_regularizer", "gamma_regularizer", "beta_constraint",
                           "gamma_constraint"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "LeakyReLU": ("negative_slope",),
    "ELU": ("alpha",),
    "Softmax": ("axis",),
    "PReLU": ("alpha_initializer", "alpha_regularizer", "alpha_constraint", "shared_axes"),
}
# Keras 3 key -> the Keras 2 key holding the same value, where they were renamed.
RENAMED_KEYS = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keras 3.15 writes `trainable` for these but their constructor refuses it, so it is left out.
NO_TRAINABLE_ARGUMENT = {"SpatialDropout1D"}
# Layers Keras 3 gives a build_config (those that build weights or shapes in build()).
WITH_BUILD_CONFIG = {"PReLU", "Embedding", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "TimeDistributed", "Dense",
                     "Flatten", "Permute", "RepeatVector", "Conv1D", "BatchNormalization", "LayerNormalization",
                     "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Keras 2 class -> Keras 3 class where they differ.
RENAMED_CLASSES = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
# Keras 2 options with no Keras 3 counterpart, silently dropped (they never change numbers).
IGNORED_KEYS = {"name", "trainable", "dtype", "batch_input_shape", "batch_size", "input_dim", "input_length",
                "implementation", "build_input_shape", "time_major", "fused", "virtual_batch_size",
                "adjustment", "input_spec", "dynamic"}

INITIALIZER_KEYS = {
    "Zeros": (), "Ones": (), "Constant": ("value",), "Identity": (),
    "RandomNormal": ("seed", "mean", "stddev"), "RandomUniform": ("seed", "minval", "maxval"),
    "TruncatedNormal": ("seed", "mean", "stddev"), "VarianceScaling": ("seed", "scale", "mode", "distribution"),
    "Orthogonal": ("seed", "gain"), "GlorotUniform": ("seed",), "GlorotNormal": ("seed",), "HeNormal": ("seed",),
    "HeUniform": ("seed",), "LecunNormal": ("seed",), "LecunUniform": ("seed",),
}
INITIALIZER_ALIASES = {"zeros": "Zeros", "zero": "Zeros", "ones": "Ones", "one": "Ones", "constant": "Constant",
                       "identity": "Identity", "orthogonal": "Orthogonal", "glorot_uniform": "GlorotUniform",
                       "glorot_normal": "GlorotNormal", "he_normal": "HeNormal", "he_uniform": "HeUniform",
                       "lecun_normal": "LecunNormal", "lecun_uniform": "LecunUniform",
                       "random_normal": "RandomNormal", "random_uniform": "RandomUniform",
                       "truncated_normal": "TruncatedNormal", "OrthogonalInitializer": "Orthogonal",
                       "IdentityInitializer": "Identity"}
REGULARIZER_KEYS = {"L1": ("l1",), "L2": ("l2",), "L1L2": ("l1", "l2")}
CONSTRAINT_KEYS = {"MaxNorm": ("max_value", "axis"), "MinMaxNorm": ("min_value", "max_value", "rate", "axis"),
                   "NonNeg": (), "UnitNorm": ("axis",)}
CONSTRAINT_ALIASES = {"max_norm": "MaxNorm", "min_max_norm": "MinMaxNorm", "non_neg": "NonNeg",
                      "unit_norm": "UnitNorm", "maxnorm": "MaxNorm", "nonneg": "NonNeg", "unitnorm": "UnitNorm"}
ACTIVATIONS3 = {"linear", "relu", "sigmoid", "tanh", "softmax", "softplus", "softsign", "elu", "selu",
                "exponential", "swish", "silu", "gelu", "relu6", "leaky_relu", "log_softmax", "mish",
                "hard_silu", "hard_swish", "hard_sigmoid"}
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
PASS_THROUGH = ("Masking", "Activation", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
                "AlphaDropout", "ActivityRegularization", "BatchNormalization", "LayerNormalization", "ReLU",
                "LeakyReLU", "ELU", "Softmax", "PReLU")


@dataclass
class Context:
    """What the translation needs besides the config, and the notes it gathers."""

    recurrent: dict[str, RecurrentLayer]  # canonical layers by Keras layer name ("outer/inner" when nested)
    accept_activation_change: bool = False
    notes: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)  # names of the nested models being translated

    def find(self, name: str) -> RecurrentLayer | None:
        if self.scope:
            return self.recurrent.get("/".join(self.scope + [name]))
        return self.recurrent.get(name)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def translate(model_config: dict, recurrent: dict[str, RecurrentLayer],
              accept_activation_change: bool = False, source: str | None = None) -> tuple[dict, list[str]]:
    """The Keras 3 config.json of a Keras 2 model config, and notes on what changed."""
    ctx = Context(recurrent, accept_activation_change)
    if not isinstance(model_config, dict) or "class_name" not in model_config:
        raise UnsupportedError("The Keras 2 model config is not a serialized model (no class_name).")
    try:
        model, _ = _model(model_config, ctx)
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:  # an entry missing or mistyped
        raise FormatError(f"{source or 'The source'}: its Keras 2 model config is malformed ({type(exc).__name__}: "
                          f"{exc}), so it cannot be translated; the file is damaged or not written by Keras.") \
            from None
    return model, ctx.notes


def _model(entry: dict, ctx: Context, input_shape: Shape | None = None) -> tuple[dict, list[Shape]]:
    """A Keras 3 model entry and its output shapes."""
    kind = entry["class_name"]
    if kind == "Sequential":
        return _sequential(entry, ctx, input_shape)
    if kind in ("Model", "Functional"):
        return _functional(entry, ctx)
    raise UnsupportedError(f"The model is a {kind!r}; rnnx writes .keras files for Sequential and functional "
                           f"models only. Write .weights.h5 and build the model in code instead.")


# --- Sequential -------------------------------------------------------------------


def _sequential(entry: dict, ctx: Context, input_shape: Shape | None = None) -> tuple[dict, list[Shape]]:
    config = entry.get("config")
    if isinstance(config, list):  # Keras <= 2.1: the layer list itself
        name, layers, build_shape = "sequential", config, None
    else:
        name, layers = config.get("name", "sequential"), config.get("layers", [])
        build_shape = config.get("build_input_shape")
    if not layers:
        raise UnsupportedError("The Sequential model has no layers.")
    first = layers[0]
    if first.get("class_name") == "InputLayer":
        input_cfg = first.get("config", {})
        shape = input_cfg.get("batch_input_shape") or input_cfg.get("batch_shape")
        dtype = input_cfg.get("dtype") or "float32"
        input_name = input_cfg.get("name", "input_layer")
        layers = layers[1:]
    else:
        cfg = first.get("config", {})
        shape = cfg.get("batch_input_shape") or build_shape or input_shape
        if shape is None and cfg.get("input_dim") is not None and first.get("class_name") != "Embedding":
            shape = [None, cfg.get("input_length"), cfg["input_dim"]] if first.get("class_name") in RECURRENT_LIKE \
                else [None, cfg["input_dim"]]
        dtype = cfg.get("dtype") if isinstance(cfg.get("dtype"), str) else "float32"
        taken = {l.get("config", {}).get("name") for l in layers}
        input_name = "input_layer" if "input_layer" not in taken else f"{cfg.get('name', 'model')}_input"
    if shape is None:
        raise UnsupportedError("The Sequential model does not say its input shape (no batch_input_shape); "
                               "Keras 3 cannot build it. Write .weights.h5 and build the model in code instead.")
    shape = list(shape)
    out_layers = [_input_layer(input_name, shape, dtype)]
    current = shape
    for layer in layers:
        translated, outputs = _layer(layer, [current], ctx)
        if len(outputs) != 1:
            raise UnsupportedError(f"Layer {layer.get('config', {}).get('name')!r} returns several tensors "
                                   f"(return_state), which a Sequential model cannot pass on.")
        out_layers.append(translated)
        current = outputs[0]
    return {
        "module": "keras", "class_name": "Sequential",
        "config": {"name": name, "trainable": True, "dtype": _policy("float32"), "layers": out_layers,
                   "build_input_shape": shape},
        "registered_name": None, "build_config": {"input_shape": shape},
    }, [current]


RECURRENT_LIKE = {"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "Bidirectional", "Conv1D", "TimeDistributed"}


def _input_layer(name: str, batch_shape: Shape, dtype: str) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": list(batch_shape), "dtype": dtype, "sparse": False, "ragged": False,
                       "name": name, "optional": False},
            "registered_name": None}


# --- Functional -------------------------------------------------------------------


def _functional(entry: dict, ctx: Context) -> tuple[dict, list[Shape]]:
    config = entry.get("config", {})
    layers = config.get("layers", [])
    outputs: dict[tuple[str, int], list[Shape]] = {}  # (layer, Keras 2 node index) -> output shapes
    translated: dict[str, dict] = {}
    # A nested model's first node is its own input-to-output link: Keras 2 counts it in node indices for
    # every nested model with an input, Keras 3 only for Functional ones.
    renumber = {l["name"]: _keras3_first_node(l) - _keras2_first_node(l) for l in layers}
    pending = list(layers)
    while pending:  # Keras 2 lists layers topologically; a second pass covers odd orders
        progress = False
        for layer in list(pending):
            nodes = _inbound(layer)
            if all(all((t[0], t[1]) in outputs for t in node) for node in nodes):
                translated[layer["name"]] = _functional_layer(layer, nodes, outputs, renumber, ctx)
                pending.remove(layer)
                progress = True
        if not progress:
            names = ", ".join(repr(l.get("name")) for l in pending)
            raise UnsupportedError(f"The functional model's layers {names} take inputs no layer produces.")
    out_layers = [translated[l["name"]] for l in layers]
    ends = [list(x[:3]) for x in config.get("output_layers", [])]
    return {
        "module": "keras.src.models.functional", "class_name": "Functional",
        "config": {"name": config.get("name", "functional"), "trainable": True, "layers": out_layers,
                   "input_layers": _endpoints(config.get("input_layers", []), renumber),
                   "output_layers": _endpoints(config.get("output_layers", []), renumber)},
        "registered_name": "Functional", "build_config": {"input_shape": None},
    }, [outputs[(n, k)][i] for n, k, i in ends]


def _inbound(layer: dict) -> list[list[list]]:
    """Keras 2 inbound nodes as lists of [layer, node_index, tensor_index, kwargs]."""
    nodes = layer.get("inbound_nodes", [])
    out = []
    for node in nodes:
        if isinstance(node, dict):  # already the Keras 3 form
            raise UnsupportedError(f"Layer {layer.get('name')!r}: its config is already in Keras 3 form; "
                                   f"read it as a .keras file.")
        tensors = []
        for t in node:
            kwargs = t[3] if len(t) > 3 and isinstance(t[3], dict) else {}
            extra = {k: v for k, v in kwargs.items() if k not in ("training", "mask") or v not in (None, True, False)}
            if extra:
                raise UnsupportedError(f"Layer {layer.get('name')!r} is called with {sorted(extra)}, which rnnx "
                                       f"does not translate to Keras 3; write .weights.h5 and build the model in code.")
            tensors.append([t[0], int(t[1]), int(t[2])])
        out.append(tensors)
    return out


def _keras2_first_node(layer: dict) -> int:
    if layer.get("class_name") in ("Model", "Functional"):
        return 1
    if layer.get("class_name") == "Sequential":
        config = layer.get("config")
        first = (config if isinstance(config, list) else (config or {}).get("layers", [{}]))[:1] or [{}]
        has_input = first[0].get("class_name") == "InputLayer" or "batch_input_shape" in first[0].get("config", {})
        return 1 if has_input else 0
    return 0


def _keras3_first_node(layer: dict) -> int:
    return 1 if layer.get("class_name") in ("Model", "Functional") else 0


def _functional_layer(layer: dict, nodes: list, outputs: dict, renumber: dict, ctx: Context) -> dict:
    name = layer["name"]
    if layer.get("class_name") == "InputLayer":
        cfg = layer.get("config", {})
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if shape is None:
            raise UnsupportedError(f"Input layer {name!r} has no batch_input_shape.")
        outputs[(name, 0)] = [list(shape)]
        entry = _input_layer(cfg.get("name", name), shape, cfg.get("dtype") or "float32")
        entry.update(name=name, inbound_nodes=[])
        return entry
    entry = None
    inbound = []
    takes_state = layer.get("class_name") in RECURRENT_CLASSES or layer.get("class_name") in (
        "Bidirectional", "CuDNNLSTM", "CuDNNGRU")
    for k, node in enumerate(nodes):
        in_shapes = [outputs[(t[0], t[1])][t[2]] for t in node]
        tensors = [_keras_tensor(t, outputs[(t[0], t[1])][t[2]], renumber) for t in node]
        if takes_state and len(node) > 1:
            # Keras 2 lists an RNN's initial states after its input; Keras 3 takes them as initial_state=
            translated, out_shapes = _layer(layer, in_shapes[:1], ctx)
            inbound.append({"args": [tensors[0]], "kwargs": {"initial_state": tensors[1:]}})
        else:
            translated, out_shapes = _layer(layer, in_shapes, ctx)
            inbound.append({"args": [tensors[0] if len(tensors) == 1 else tensors], "kwargs": {}})
        if entry is None:
            entry = translated
        outputs[(name, k + _keras2_first_node(layer))] = out_shapes
    if entry is None:
        raise UnsupportedError(f"Layer {name!r} is never called in the functional model.")
    entry.update(name=name, inbound_nodes=inbound)
    return entry


def _keras_tensor(t: list, shape: Shape, renumber: dict) -> dict:
    history = [t[0], t[1] + renumber.get(t[0], 0), t[2]]
    return {"class_name": "__keras_tensor__",
            "config": {"shape": list(shape), "dtype": "float32", "keras_history": history}}


def _endpoints(items: list, renumber: dict) -> list:
    items = [[x[0], x[1] + renumber.get(x[0], 0), x[2]] for x in items]
    return items[0] if len(items) == 1 else items


# --- one layer --------------------------------------------------------------------


def _layer(layer: dict, in_shapes: list[Shape], ctx: Context) -> tuple[dict, list[Shape]]:
    class_name = layer.get("class_name")
    cfg = layer.get("config", {})
    name = cfg.get("name", layer.get("name"))
    if class_name in ("Sequential", "Model", "Functional"):
        return _nested(layer, name, in_shapes, ctx)
    handler = HANDLERS.get(class_name)
    if handler is None:
        raise UnsupportedError(
            f"Layer {name!r} is a {class_name!r}, which rnnx does not know how to write to a Keras 3 config; "
            f"write .weights.h5 and build the model in code instead.")
    k3_class, k3_config, out_shapes = handler(class_name, cfg, in_shapes, ctx)
    entry = {"module": "keras.layers", "class_name": k3_class, "config": k3_config, "registered_name": None}
    if k3_class in WITH_BUILD_CONFIG:
        entry["build_config"] = {"input_shape": in_shapes[0] if len(in_shapes) == 1 else in_shapes}
    return entry, out_shapes


def _nested(layer: dict, name: str, in_shapes: list[Shape], ctx: Context) -> tuple[dict, list[Shape]]:
    """A model used as a layer: translated whole, its recurrent layers found as "outer/inner"."""
    if len(in_shapes) != 1:
        raise UnsupportedError(f"Nested model {name!r} takes several inputs, which rnnx does not translate; "
                               f"write .weights.h5 and build the model in code instead.")
    ctx.scope.append(name)
    try:
        entry, out_shapes = _model({"class_name": layer["class_name"], "config": layer.get("config")}, ctx,
                                   in_shapes[0])
    finally:
        ctx.scope.pop()
    if entry["class_name"] == "Sequential":
        entry["config"]["name"] = name
    return entry, out_shapes


def _common(cfg: dict, k3_class: str, ctx: Context, skip: tuple = ()) -> dict:
    """name, trainable, dtype and every key Keras 3 accepts, values translated; notes what is dropped."""
    name = cfg.get("name")
    out = {"name": name, "trainable": cfg.get("trainable", True), "dtype": _policy(cfg.get("dtype"))}
    if k3_class in NO_TRAINABLE_ARGUMENT:
        if not out.pop("trainable"):
            ctx.note(f"layer {name!r}: Keras 3 {k3_class} cannot be created frozen; it is trainable now.")
    keys = KEYS3[k3_class]
    renamed = RENAMED_KEYS.get(k3_class, {})
    for key in keys:
        src = renamed.get(key, key)
        if src in cfg and key not in skip:
            out[key] = _value(key, cfg[src], name, ctx)
    if cfg.get("time_major"):
        raise UnsupportedError(f"Layer {name!r} is time_major, which Keras 3 layers are not; "
                               f"write .weights.h5 or ONNX (rnnx convert --time-major) instead.")
    for key, value in cfg.items():
        if key in keys or key in renamed.values() or key in IGNORED_KEYS or key in skip or \
                value in (None, False, 0, 0.0, "", [], {}):
            continue
        ctx.note(f"layer {name!r}: the Keras 2 option {key}={value!r} has no Keras 3 counterpart and was dropped.")
    return out


def _value(key: str, value: Any, layer: str, ctx: Context) -> Any:
    if key.endswith("_initializer"):
        return _initializer(value, layer, key, ctx)
    if key.endswith("_regularizer"):
        return _serialized(value, layer, key, ctx, "keras.regularizers", REGULARIZER_KEYS, {})
    if key.endswith("_constraint"):
        return _serialized(value, layer, key, ctx, "keras.constraints", CONSTRAINT_KEYS, CONSTRAINT_ALIASES)
    if key == "activation":
        return _activation(value, layer, ctx)
    return copy.deepcopy(value)


def _initializer(value, layer: str, key: str, ctx: Context):
    if value is None:
        return None
    if isinstance(value, str):
        value = {"class_name": value, "config": {}}
    class_name = INITIALIZER_ALIASES.get(value.get("class_name"), value.get("class_name"))
    config = dict(value.get("config") or {})
    if class_name == "VarianceScaling" and config.get("distribution") == "normal":
        config["distribution"] = "truncated_normal"  # what 'normal' meant in Keras 2
    if class_name not in INITIALIZER_KEYS:
        ctx.note(f"layer {layer!r}: {key} {value.get('class_name')!r} has no Keras 3 counterpart; "
                 f"Keras 3's default is used (it only matters for training from scratch).")
        return None
    keys = INITIALIZER_KEYS[class_name]
    return {"module": "keras.initializers", "class_name": class_name,
            "config": {k: config[k] for k in keys if k in config}, "registered_name": None}


def _serialized(value, layer: str, key: str, ctx: Context, module: str, table: dict, aliases: dict):
    if value is None:
        return None
    if isinstance(value, str):
        value = {"class_name": value, "config": {}}
    class_name = aliases.get(value.get("class_name"), value.get("class_name"))
    config = dict(value.get("config") or {})
    if class_name == "L1L2" and not config.get("l1"):
        class_name, config = "L2", {"l2": config.get("l2", 0.0)}
    if class_name not in table:
        ctx.note(f"layer {layer!r}: {key} {value.get('class_name')!r} has no Keras 3 counterpart and was dropped.")
        return None
    return {"module": module, "class_name": class_name,
            "config": {k: config[k] for k in table[class_name] if k in config}, "registered_name": None}


def _activation(value, layer: str, ctx: Context) -> str:
    if isinstance(value, dict):  # tf.keras 2.13+ may serialize a function as a dict
        value = value.get("config") if isinstance(value.get("config"), str) else value.get("class_name")
    if value not in ACTIVATIONS3:
        raise UnsupportedError(f"Layer {layer!r} uses the activation {value!r}, which Keras 3 does not have; "
                               f"write .weights.h5 and build the model in code instead.")
    if value == "hard_sigmoid":
        if not ctx.accept_activation_change:
            raise UnsupportedError(
                f"Layer {layer!r} uses Keras 2 hard_sigmoid (slope 0.2), and Keras 3 has no equal built-in (its "
                f"hard_sigmoid has slope 1/6); pass --accept-activation-change to write it anyway.")
        ctx.note(f"layer {layer!r}: activation hard_sigmoid now means Keras 3's clip(x/6 + 0.5, 0, 1) instead of "
                 f"Keras 2's clip(0.2x + 0.5, 0, 1) (pointwise up to 0.0833 apart).")
    return value


def _policy(dtype) -> dict:
    if isinstance(dtype, dict):  # a Keras 2 mixed-precision Policy
        dtype = (dtype.get("config") or {}).get("name", "float32")
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": dtype or "float32"},
            "registered_name": None}


# --- handlers: (Keras 2 class, config, input shapes, ctx) -> (Keras 3 class, config, output shapes) -----


def _recurrent(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context, wrapped_name: str | None = None):
    k3_class = RENAMED_CLASSES.get(class_name, class_name)
    name = cfg.get("name")
    canonical = ctx.find(wrapped_name or name)
    if canonical is None:
        raise UnsupportedError(f"Layer {name!r} ({class_name}) has no weights in the source; "
                               f"the .keras file would be incomplete.")
    out = _common(cfg, k3_class, ctx, skip=("activation", "recurrent_activation", "use_bias", "reset_after"))
    out.update(activation_names(canonical, ctx.accept_activation_change))
    out["use_bias"] = canonical.has_bias
    if k3_class == "GRU":
        out["reset_after"] = canonical.reset_after
    if k3_class != KERAS_CLASS[canonical.cell]:
        raise UnsupportedError(f"Layer {name!r} is a {class_name} in the config but its weights are a "
                               f"{canonical.cell.upper()} cell.")
    if wrapped_name is None and canonical.num_directions != 1:
        raise UnsupportedError(f"Layer {name!r} is a plain {class_name} but its weights have two directions.")
    # (the output change of a Keras 2 hard_sigmoid written as Keras 3's is measured by the writers, which
    # read the layer once for the measurement and the file: layout.write_tree)
    return k3_class, out, _rnn_shapes(k3_class, out, in_shapes[0])


def _rnn_shapes(k3_class: str, cfg: dict, shape: Shape) -> list[Shape]:
    units = cfg["units"]
    out = [shape[0], shape[1], units] if cfg.get("return_sequences") else [shape[0], units]
    if not cfg.get("return_state"):
        return [out]
    states = 2 if k3_class == "LSTM" else 1
    return [out] + [[shape[0], units]] * states


def _bidirectional(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context, wrapped_name: str | None = None):
    name = cfg.get("name")
    inner = cfg.get("layer", {})
    inner_class = inner.get("class_name")
    if inner_class not in RECURRENT_CLASSES and inner_class not in RENAMED_CLASSES:
        raise UnsupportedError(f"Layer {name!r} wraps a {inner_class!r}; rnnx writes Bidirectional LSTM, GRU, "
                               f"SimpleRNN, CuDNNLSTM and CuDNNGRU to Keras 3.")
    canonical = ctx.find(wrapped_name or name)
    if canonical is None or canonical.num_directions != 2:
        raise UnsupportedError(f"Bidirectional layer {name!r} has no two-direction weights in the source.")
    inner_cfg = dict(inner.get("config", {}))
    inner_name = inner_cfg.get("name", "rnn")
    k3_inner, fwd, shapes = _recurrent(inner_class, inner_cfg, in_shapes, ctx, wrapped_name=wrapped_name or name)
    if "backward_layer" in cfg:
        ctx.note(f"layer {name!r}: its separate backward_layer config was replaced by a mirror of the forward one.")
    fwd = dict(fwd, name=f"forward_{inner_name}", go_backwards=False)
    bwd = dict(fwd, name=f"backward_{inner_name}", go_backwards=True)
    for sub in (fwd, bwd):
        sub["zero_output_for_mask"] = bool(sub.get("return_sequences"))
    merge_mode = cfg.get("merge_mode", "concat")
    out = {"name": name, "trainable": cfg.get("trainable", True), "dtype": _policy(cfg.get("dtype")),
           "merge_mode": merge_mode,
           "layer": _wrapped(k3_inner, fwd, in_shapes[0]), "backward_layer": _wrapped(k3_inner, bwd, in_shapes[0])}
    seq = shapes[0]
    if merge_mode == "concat":
        outputs = [seq[:-1] + [seq[-1] * 2]]
    elif merge_mode is None:
        outputs = [seq, seq]
    else:
        outputs = [seq]
    if fwd.get("return_state"):
        outputs += shapes[1:] * 2
    return "Bidirectional", out, outputs


def _wrapped(k3_class: str, config: dict, input_shape: Shape) -> dict:
    return {"module": "keras.layers", "class_name": k3_class, "config": config, "registered_name": None,
            "build_config": {"input_shape": input_shape}}


def _time_distributed(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context):
    shape = in_shapes[0]
    inner = cfg.get("layer", {})
    step = [shape[0]] + shape[2:]
    inner_class = inner.get("class_name")
    if inner_class in RECURRENT_CLASSES or inner_class in RENAMED_CLASSES:
        # readers name a wrapped recurrent layer after its TimeDistributed
        canonical = ctx.find(cfg.get("name"))
        if canonical is not None and canonical.num_directions != 1:
            raise UnsupportedError(f"Layer {cfg.get('name')!r} wraps a plain {inner_class} but its weights have "
                                   f"two directions.")
        k3_inner, inner_cfg, inner_out = _recurrent(inner_class, dict(inner.get("config", {})), [step], ctx,
                                                    wrapped_name=cfg.get("name"))
        inner_entry = _wrapped(k3_inner, inner_cfg, step)
    elif inner_class == "Bidirectional":
        k3_inner, inner_cfg, inner_out = _bidirectional(inner_class, dict(inner.get("config", {})), [step], ctx,
                                                        wrapped_name=cfg.get("name"))
        inner_entry = _wrapped(k3_inner, inner_cfg, step)
    else:
        inner_entry, inner_out = _layer(inner, [step], ctx)
    out = {"name": cfg.get("name"), "trainable": cfg.get("trainable", True), "dtype": _policy(cfg.get("dtype")),
           "layer": inner_entry}
    return "TimeDistributed", out, [[shape[0], shape[1]] + inner_out[0][1:]]


def _plain(shape_fn: Callable[[dict, list[Shape]], list[Shape]]):
    def handler(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context):
        out = _common(cfg, class_name, ctx)
        return class_name, out, shape_fn(out, in_shapes)
    return handler


def _same(cfg, shapes):
    return [shapes[0]]


def _embedding(cfg, shapes):
    return [shapes[0] + [cfg["output_dim"]]]


def _dense(cfg, shapes):
    return [shapes[0][:-1] + [cfg["units"]]]


def _flatten(cfg, shapes):
    rest = shapes[0][1:]
    return [[shapes[0][0], None if None in rest else math.prod(rest)]]


def _reshape(cfg, shapes):
    target = list(cfg["target_shape"])
    rest = shapes[0][1:]
    if -1 in target and None not in rest:
        known = math.prod(d for d in target if d != -1)
        target[target.index(-1)] = math.prod(rest) // known
    return [[shapes[0][0]] + [None if d == -1 else d for d in target]]


def _permute(cfg, shapes):
    s = shapes[0]
    return [[s[0]] + [s[d] for d in cfg["dims"]]]


def _repeat(cfg, shapes):
    return [[shapes[0][0], cfg["n"], shapes[0][1]]]


def _concatenate(cfg, shapes):
    axis = cfg.get("axis", -1)
    out = list(shapes[0])
    dims = [s[axis] for s in shapes]
    out[axis] = None if None in dims else sum(dims)
    return [out]


def _steps(length, window, stride, padding, dilation=1):
    if length is None:
        return None
    if padding in ("same", "causal"):
        return -(-length // stride)
    return (length - dilation * (window - 1) - 1) // stride + 1


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _conv1d(cfg, shapes):
    s = shapes[0]
    first = cfg.get("data_format", "channels_last") == "channels_first"
    length = s[2] if first else s[1]
    steps = _steps(length, _first(cfg["kernel_size"]), _first(cfg.get("strides", 1)),
                   cfg.get("padding", "valid"), _first(cfg.get("dilation_rate", 1)))
    return [[s[0], cfg["filters"], steps] if first else [s[0], steps, cfg["filters"]]]


def _pooling1d(cfg, shapes):
    s = shapes[0]
    first = cfg.get("data_format", "channels_last") == "channels_first"
    pool = _first(cfg.get("pool_size", 2))
    stride = _first(cfg.get("strides")) or pool
    length = s[2] if first else s[1]
    steps = _steps(length, pool, stride, cfg.get("padding", "valid"))
    return [[s[0], s[1], steps] if first else [s[0], steps, s[2]]]


def _global_pooling1d(cfg, shapes):
    s = shapes[0]
    first = cfg.get("data_format", "channels_last") == "channels_first"
    features = s[1] if first else s[2]
    if cfg.get("keepdims"):
        return [[s[0], features, 1] if first else [s[0], 1, features]]
    return [[s[0], features]]


def _batch_norm(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context):
    cfg = dict(cfg)
    if isinstance(cfg.get("axis"), list):
        if len(cfg["axis"]) != 1:
            raise UnsupportedError(f"Layer {cfg.get('name')!r} normalises over axes {cfg['axis']}; Keras 3 "
                                   f"BatchNormalization takes one axis.")
        cfg["axis"] = cfg["axis"][0]
    out = _common(cfg, "BatchNormalization", ctx)
    return "BatchNormalization", out, [in_shapes[0]]


def _merge(class_name: str, cfg: dict, in_shapes: list[Shape], ctx: Context):
    out = _common(cfg, class_name, ctx)
    return class_name, out, (_concatenate(out, in_shapes) if class_name == "Concatenate" else [in_shapes[0]])


HANDLERS: dict[str, Callable] = {
    "LSTM": _recurrent, "GRU": _recurrent, "SimpleRNN": _recurrent, "CuDNNLSTM": _recurrent, "CuDNNGRU": _recurrent,
    "Bidirectional": _bidirectional, "TimeDistributed": _time_distributed,
    "Embedding": _plain(_embedding), "Dense": _plain(_dense), "Flatten": _plain(_flatten),
    "Reshape": _plain(_reshape), "Permute": _plain(_permute), "RepeatVector": _plain(_repeat),
    "Conv1D": _plain(_conv1d), "MaxPooling1D": _plain(_pooling1d), "AveragePooling1D": _plain(_pooling1d),
    "GlobalMaxPooling1D": _plain(_global_pooling1d), "GlobalAveragePooling1D": _plain(_global_pooling1d),
    "BatchNormalization": _batch_norm, "Concatenate": _merge,
    **{name: _plain(_same) for name in PASS_THROUGH if name != "BatchNormalization"},
    **{name: _merge for name in MERGES},
}
