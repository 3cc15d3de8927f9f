"""Keras 2 weight layouts <-> canonical Directions (pure numpy).

Keras keeps kernels as (in, gates*u) and computes `x @ K`; the canonical form keeps
W (gates*u, in). Per gate block, plain Keras is a transpose. Keras 2's CuDNN layers are
not: each (in, u) gate slice is handed to cuDNN as a flat row-major buffer that cuDNN
reads as its (u, in) matrix, so W_g = K[:, g].reshape(u, in) (the "CuDNN trap", see
docs/rnn-conventions.md). Gate orders come from canonical/gates.py: Keras LSTM and
CuDNNLSTM store i, f, c, o; Keras GRU and CuDNNGRU store z, r, h.

Variants (what a Keras layer stores):
    "plain"      LSTM / SimpleRNN / GRU(reset_after=False): kernel, recurrent_kernel, bias (n*u,)
    "gru-2row"   GRU(reset_after=True): bias (2, 3u) = [input row, recurrent row]
    "cudnn"      CuDNNLSTM / CuDNNGRU: bias (2*n*u,) = [input half || recurrent half]
"""

from __future__ import annotations

import numpy as np

from ...canonical import Direction
from ...canonical.gates import CANONICAL_ORDER, GRU_KERAS, LSTM_KERAS, RNN_CANONICAL, gate_count, reorder

KERAS_ORDER = {"lstm": LSTM_KERAS, "gru": GRU_KERAS, "rnn": RNN_CANONICAL}
VARIANTS = ("plain", "gru-2row", "cudnn")


def _cudnn_blocks_to_w(kernel: np.ndarray, n: int) -> np.ndarray:
    """(in, n*u) CuDNN-stored kernel -> (n*u, in), each gate slice re-read row-major as (u, in)."""
    rows, cols = kernel.shape
    u = cols // n
    per_gate = kernel.reshape(rows, n, u).transpose(1, 0, 2)  # (n, in, u): the gate slices
    return np.ascontiguousarray(per_gate).reshape(n * u, rows)


def _w_to_cudnn_blocks(w: np.ndarray, n: int) -> np.ndarray:
    """Inverse of _cudnn_blocks_to_w: (n*u, in) -> (in, n*u)."""
    nu, rows = w.shape
    u = nu // n
    per_gate = w.reshape(n, rows, u)  # the flat buffer of each gate, re-read as (in, u)
    return np.ascontiguousarray(per_gate.transpose(1, 0, 2)).reshape(rows, nu)


def to_direction(cell: str, variant: str, kernel: np.ndarray, recurrent_kernel: np.ndarray,
                 bias: np.ndarray | None) -> Direction:
    """Canonical Direction from the arrays one Keras 2 layer (one direction) stores."""
    n = gate_count(cell)
    order = KERAS_ORDER[cell]
    canon = CANONICAL_ORDER[cell]
    if variant == "cudnn":
        W = _cudnn_blocks_to_w(kernel, n)
        R = _cudnn_blocks_to_w(recurrent_kernel, n)
    else:
        W = kernel.T
        R = recurrent_kernel.T
    W = np.ascontiguousarray(reorder(W, order, canon))
    R = np.ascontiguousarray(reorder(R, order, canon))
    b_w = b_r = None
    if bias is not None:
        if variant == "cudnn":
            b_w, b_r = np.split(bias, 2)
        elif variant == "gru-2row":
            b_w, b_r = bias[0], bias[1]
        else:
            b_w = bias
        b_w = np.ascontiguousarray(reorder(b_w, order, canon))
        if b_r is not None:
            b_r = np.ascontiguousarray(reorder(b_r, order, canon))
    return Direction(W=W, R=R, b_w=b_w, b_r=b_r)


def from_direction(cell: str, variant: str, d: Direction, use_bias: bool = True) -> list[np.ndarray]:
    """The arrays a Keras 2 layer of `variant` stores for canonical direction `d` (bias omitted
    when use_bias is False; the caller checks that the direction then has no bias)."""
    n = gate_count(cell)
    order = KERAS_ORDER[cell]
    canon = CANONICAL_ORDER[cell]
    W = reorder(d.W, canon, order)
    R = reorder(d.R, canon, order)
    if variant == "cudnn":
        out = [_w_to_cudnn_blocks(W, n), _w_to_cudnn_blocks(R, n)]
    else:
        out = [np.ascontiguousarray(W.T), np.ascontiguousarray(R.T)]
    if not use_bias:
        return out
    zeros = np.zeros(d.W.shape[0], d.W.dtype)
    b_w = zeros if d.b_w is None else d.b_w
    if variant == "plain":
        bias = reorder(d.fused_bias(), canon, order)
    else:
        b_r = zeros if d.b_r is None else d.b_r
        halves = [reorder(b_w, canon, order), reorder(b_r, canon, order)]
        bias = np.concatenate(halves) if variant == "cudnn" else np.stack(halves)
    out.append(np.ascontiguousarray(bias))
    return out


def fits(cell: str, variant: str, kernel_shape, recurrent_shape, bias_shape) -> bool:
    """Whether stored shapes are what `variant` of `cell` holds (bias_shape None = no bias)."""
    n = gate_count(cell)
    if len(kernel_shape) != 2 or len(recurrent_shape) != 2:
        return False
    u = recurrent_shape[0]
    if u < 1 or recurrent_shape != (u, n * u) or kernel_shape[1] != n * u or kernel_shape[0] < 1:
        return False
    if bias_shape is None:
        return variant == "plain"
    expected = {"plain": (n * u,), "gru-2row": (2, n * u), "cudnn": (2 * n * u,)}[variant]
    return tuple(bias_shape) == expected


def classify(kernel_shape, recurrent_shape, bias_shape) -> tuple[str, str] | None:
    """(cell, variant) from shapes alone, or None when no Keras 2 layout fits.

    Units come from recurrent_kernel (u, n*u), never from the bias length: a (1024,) bias is
    LSTM(256) next to a (256, 1024) recurrent kernel and CuDNNLSTM(128) next to (128, 512).
    """
    if len(recurrent_shape) != 2 or recurrent_shape[0] < 1:
        return None
    u = recurrent_shape[0]
    cell = {4: "lstm", 3: "gru", 1: "rnn"}.get(recurrent_shape[1] // u if recurrent_shape[1] % u == 0 else 0)
    if cell is None:
        return None
    for variant in VARIANTS:
        if (cell, variant) in (("lstm", "gru-2row"), ("rnn", "gru-2row"), ("rnn", "cudnn")):
            continue
        if fits(cell, variant, tuple(kernel_shape), tuple(recurrent_shape),
                None if bias_shape is None else tuple(bias_shape)):
            return cell, variant
    return None


__all__ = ["to_direction", "from_direction", "fits", "classify", "KERAS_ORDER"]
