"""Gate orders as named data, and the one function that moves gate blocks.

The canonical order is cuDNN's: LSTM i, f, c, o (PyTorch calls c "g");
GRU r, z, n (Keras and ONNX call n "h"). Every reader and writer states its
framework's order with one of these tuples and calls `reorder`.
"""

from __future__ import annotations

import numpy as np

# LSTM: input, forget, cell candidate, output.
LSTM_CANONICAL = ("i", "f", "c", "o")
LSTM_KERAS = ("i", "f", "c", "o")
LSTM_CUDNN = ("i", "f", "c", "o")
LSTM_TORCH = ("i", "f", "c", "o")
LSTM_ONNX = ("i", "o", "f", "c")
LSTM_TF1 = ("i", "c", "f", "o")  # TF1 LSTMCell, BasicLSTMCell, LSTMBlockCell: i, j, f, o

# GRU: reset, update, new (candidate).
GRU_CANONICAL = ("r", "z", "n")
GRU_KERAS = ("z", "r", "n")  # Keras GRU and the stored order of Keras 2 CuDNNGRU
GRU_CUDNN = ("r", "z", "n")
GRU_TORCH = ("r", "z", "n")
GRU_ONNX = ("z", "r", "n")
GRU_TF1 = ("r", "z", "n")  # TF1 GRUCell: gates/kernel r, u, then candidate/kernel

RNN_CANONICAL = ("h",)

# Peepholes: canonical order i, f, o; ONNX's P is i, o, f.
PEEPHOLE_CANONICAL = ("i", "f", "o")
PEEPHOLE_ONNX = ("i", "o", "f")

CANONICAL_ORDER = {"lstm": LSTM_CANONICAL, "gru": GRU_CANONICAL, "rnn": RNN_CANONICAL}


def gate_count(cell: str) -> int:
    return len(CANONICAL_ORDER[cell])


def reorder(array: np.ndarray, src: tuple[str, ...], dst: tuple[str, ...], axis: int = 0) -> np.ndarray:
    """Permute the equal gate blocks of `array` along `axis` from order `src` to order `dst`."""
    if sorted(src) != sorted(dst):
        raise ValueError(f"gate orders {src} and {dst} name different gates")
    if src == dst:
        return array
    blocks = np.split(array, len(src), axis=axis)
    by_name = dict(zip(src, blocks))
    return np.concatenate([by_name[g] for g in dst], axis=axis)


def split_gates(array: np.ndarray, order: tuple[str, ...], axis: int = 0) -> dict[str, np.ndarray]:
    return dict(zip(order, np.split(array, len(order), axis=axis)))


def fuse(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """a + b computed in float64 and rounded once to a's dtype (exact for the sum of two floats)."""
    if b is None:
        return a
    return (a.astype(np.float64) + b.astype(np.float64)).astype(a.dtype)
