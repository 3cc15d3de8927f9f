"""Keras layer class -> the converter that writes its PyTorch code (one function per family).

    @converter("Dense")
    def dense(prog: Program, call: LayerCall, inputs: list[Value]) -> list[Value]: ...
"""

from __future__ import annotations

from typing import Callable

from ...errors import UnsupportedError

CONVERTERS: dict[str, Callable] = {}


def converter(*class_names: str):
    def register(fn: Callable) -> Callable:
        for name in class_names:
            if name in CONVERTERS:
                raise ValueError(f"a PyTorch converter for Keras layer class {name!r} is already registered")
            CONVERTERS[name] = fn
        return fn
    return register


def lookup(class_name: str, layer_name: str) -> Callable:
    from .layers import conv, core, dense, merge, norm, ops, recurrent, shape, tf_ops, wrappers  # noqa: F401

    try:
        return CONVERTERS[class_name]
    except KeyError:
        pass
    if class_name == "Lambda":
        raise UnsupportedError(f"Layer {layer_name!r} is a Lambda layer: Python code, which rnnx never runs. "
                               f"Write that step of forward() yourself, or convert to ONNX with --engine tf2onnx.")
    raise UnsupportedError(f"Layer {layer_name!r} is a {class_name} layer, which rnnx's PyTorch model export "
                           f"does not convert; write .pt or .safetensors for the recurrent weights and build "
                           f"the model by hand.")


def supported() -> list[str]:
    lookup("Dense", "")
    return sorted(CONVERTERS)
