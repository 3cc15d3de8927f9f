"""Activations as data, so that Keras 2 and Keras 3 hard_sigmoid stay distinct.

Names and alpha/beta follow the ONNX operator spec (HardSigmoid(x) = clip(alpha*x + beta, 0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Activation:
    name: str  # ONNX spelling: Sigmoid, Tanh, Relu, HardSigmoid, Affine, ...
    alpha: float | None = None
    beta: float | None = None

    def __post_init__(self):
        if self.name not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise ValueError(f"unknown activation {self.name!r}; known: {known}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _FUNCTIONS[self.name](x, self.alpha, self.beta)

    def describe(self) -> str:
        if self.alpha is None and self.beta is None:
            return self.name
        return f"{self.name}(alpha={self.alpha:g}, beta={self.beta:g})"

    def to_json(self) -> dict:
        out = {"name": self.name}
        if self.alpha is not None:
            out["alpha"] = self.alpha
        if self.beta is not None:
            out["beta"] = self.beta
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Activation":
        return cls(data["name"], data.get("alpha"), data.get("beta"))


def _sigmoid(x, a, b):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def _hard_sigmoid(x, a, b):
    return np.clip(a * x + b, 0.0, 1.0)


_FUNCTIONS = {
    "Sigmoid": _sigmoid,
    "Tanh": lambda x, a, b: np.tanh(x),
    "Relu": lambda x, a, b: np.maximum(x, 0.0),
    "HardSigmoid": _hard_sigmoid,
    "Affine": lambda x, a, b: a * x + b,
    "LeakyRelu": lambda x, a, b: np.where(x >= 0, x, a * x),
    "ThresholdedRelu": lambda x, a, b: np.where(x > a, x, 0.0),
    "ScaledTanh": lambda x, a, b: a * np.tanh(b * x),
    "Elu": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1.0)),
    "Softsign": lambda x, a, b: x / (1.0 + np.abs(x)),
    "Softplus": lambda x, a, b: np.logaddexp(0.0, x),
}

SIGMOID = Activation("Sigmoid")
TANH = Activation("Tanh")
RELU = Activation("Relu")
LINEAR = Activation("Affine", 1.0, 0.0)
HARD_SIGMOID_KERAS2 = Activation("HardSigmoid", 0.2, 0.5)  # clip(0.2x + 0.5, 0, 1)
HARD_SIGMOID_KERAS3 = Activation("HardSigmoid", 1.0 / 6.0, 0.5)  # relu6(x + 3) / 6

# Keras activation names (both generations) -> canonical activation.
# hard_sigmoid depends on the Keras generation that wrote the file.
KERAS_ACTIVATIONS = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "linear": LINEAR,
    "softsign": Activation("Softsign"),
    "softplus": Activation("Softplus"),
    "elu": Activation("Elu", 1.0),
}


def from_keras(name: str, keras_major: int) -> Activation:
    """Canonical activation of a Keras activation name as written by Keras `keras_major`."""
    if name == "hard_sigmoid":
        return HARD_SIGMOID_KERAS2 if keras_major < 3 else HARD_SIGMOID_KERAS3
    try:
        return KERAS_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(name) from None


def to_keras(act: Activation, keras_major: int) -> str | None:
    """The Keras activation name computing exactly `act` in Keras `keras_major`, or None."""
    if act == (HARD_SIGMOID_KERAS2 if keras_major < 3 else HARD_SIGMOID_KERAS3):
        return "hard_sigmoid"
    for name, known in KERAS_ACTIVATIONS.items():
        if known == act:
            return name
    return None
