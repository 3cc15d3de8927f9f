"""The layer-converter registry: one small function per Keras layer class.

    @converter("Dense")
    def dense(ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]: ...

A class registered twice raises at import time; a class with no converter raises
UnsupportedError naming the layer and pointing at the tf2onnx engine.
"""

from __future__ import annotations

from typing import Callable

from ...errors import UnsupportedError

Converter = Callable  # (ctx: Context, call: LayerCall, inputs: list[Value]) -> list[Value]

CONVERTERS: dict[str, Converter] = {}
TF2ONNX_HINT = ("The tf2onnx engine may convert it: rnnx convert SRC DST.onnx --engine tf2onnx "
                "(needs the tf extra: pip install 'rnnx[tf]').")


def converter(*class_names: str):
    """Register the decorated function as the converter of each Keras class in `class_names`."""

    def register(fn: Converter) -> Converter:
        for name in class_names:
            if name in CONVERTERS:
                raise ValueError(f"a converter for Keras layer class {name!r} is already registered "
                                 f"({CONVERTERS[name].__module__}.{CONVERTERS[name].__name__})")
            CONVERTERS[name] = fn
        return fn

    return register


def lookup(class_name: str, layer_name: str) -> Converter:
    _load_families()
    try:
        return CONVERTERS[class_name]
    except KeyError:
        pass
    if class_name == "Lambda":
        raise UnsupportedError(
            f"Layer {layer_name!r} is a Lambda layer: Python code, which rnnx never runs. --engine tf2onnx does not "
            f"run it either (tf_keras's safe mode); if you trust the file, load it in tf_keras with "
            f"safe_mode=False and export it with tf2onnx.convert.from_keras yourself.")
    raise UnsupportedError(
        f"Layer {layer_name!r} is a {class_name} layer, which rnnx's native ONNX export does not convert. "
        f"If {class_name} is a built-in Keras layer, {TF2ONNX_HINT[0].lower()}{TF2ONNX_HINT[1:]} A custom layer "
        f"needs its Python code: load the model in tf_keras with it and use tf2onnx.convert.from_keras.")


def supported() -> list[str]:
    _load_families()
    return sorted(CONVERTERS)


def _load_families() -> None:
    # Importing the family modules runs their @converter registrations.
    from .layers import conv, core, dense, embedding, merge, norm, ops, recurrent, shape, tf_ops, wrappers  # noqa: F401
