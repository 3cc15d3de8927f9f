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

import os

import numpy as np

from ...canonical import Direction
from ...canonical.gates import CANONICAL_ORDER, GRU_KERAS, LSTM_KERAS, RNN_CANONICAL, fuse, gate_count, reorder
from ...lazy import derived, undo

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
    """Canonical Direction from the arrays one Keras 2 layer (one direction) stores. Lazy inputs
    (rnnx.lazy) give lazy tensors, each computed from its own stored tensor when read."""
    stored = ("keras2", cell, variant)  # what from_direction undoes without computing anything
    W = derived(kernel, (kernel.shape[1], kernel.shape[0]), kernel.dtype,
                lambda k: matrix_to_canonical(cell, variant, k), layout=stored)
    R = derived(recurrent_kernel, (recurrent_kernel.shape[1], recurrent_kernel.shape[0]), recurrent_kernel.dtype,
                lambda k: matrix_to_canonical(cell, variant, k), layout=stored)
    b_w = b_r = None
    if bias is not None:
        nu = kernel.shape[1]
        b_w = derived(bias, (nu,), bias.dtype, lambda b: biases_to_canonical(cell, variant, b)[0])
        if variant in ("cudnn", "gru-2row"):
            b_r = derived(bias, (nu,), bias.dtype, lambda b: biases_to_canonical(cell, variant, b)[1])
    return Direction(W=W, R=R, b_w=b_w, b_r=b_r)


def matrix_to_canonical(cell: str, variant: str, kernel: np.ndarray) -> np.ndarray:
    """A stored kernel or recurrent_kernel (rows, gates*u) -> canonical (gates*u, rows)."""
    kernel = np.asarray(kernel)
    if variant == "cudnn":
        M = _cudnn_blocks_to_w(kernel, gate_count(cell))
    else:
        M = transposed(kernel)
    return np.ascontiguousarray(reorder(M, KERAS_ORDER[cell], CANONICAL_ORDER[cell]))


def biases_to_canonical(cell: str, variant: str, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A stored bias -> canonical (b_w, b_r); b_r is None for the single-bias variant."""
    bias = np.asarray(bias)
    order, canon = KERAS_ORDER[cell], CANONICAL_ORDER[cell]
    b_r = None
    if variant == "cudnn":
        b_w, b_r = np.split(bias, 2)
    elif variant == "gru-2row":
        b_w, b_r = bias[0], bias[1]
    else:
        b_w = bias
    b_w = np.ascontiguousarray(reorder(b_w, order, canon))
    if b_r is not None:
        b_r = np.ascontiguousarray(reorder(b_r, order, canon))
    return b_w, b_r


def from_direction(cell: str, variant: str, d: Direction, use_bias: bool = True) -> list[np.ndarray]:
    """The arrays a Keras 2 layer of `variant` stores for canonical direction `d` (bias omitted
    when use_bias is False; the caller checks that the direction then has no bias). Lazy tensors
    in `d` give lazy arrays, each computed when read."""
    # A matrix read from a Keras 2 layer of the same layout is written back as stored (the two
    # changes are exact inverses), so it is neither transposed nor permuted twice.
    out = [undo(M, ("keras2", cell, variant)) or
           derived(M, (M.shape[1], M.shape[0]), M.dtype, lambda m: matrix_from_canonical(cell, variant, m))
           for M in (d.W, d.R)]
    if not use_bias:
        return out
    size = d.W.shape[0]
    shape = {"plain": (size,), "gru-2row": (2, size), "cudnn": (2 * size,)}[variant]
    # b_w and b_r are often the two halves of one stored bias: read together, it is read once
    out.append(derived((d.b_w, d.b_r), shape, d.W.dtype,
                       lambda b_w, b_r: bias_from_canonical(cell, variant, b_w, b_r, size, d.W.dtype), together=True))
    return out


def matrix_from_canonical(cell: str, variant: str, M: np.ndarray) -> np.ndarray:
    """A canonical W or R (gates*u, cols) -> the stored kernel or recurrent_kernel (cols, gates*u)."""
    M = reorder(np.asarray(M), CANONICAL_ORDER[cell], KERAS_ORDER[cell])
    if variant == "cudnn":
        return _w_to_cudnn_blocks(M, gate_count(cell))
    return transposed(M)


def bias_from_canonical(cell: str, variant: str, b_w, b_r, size: int, dtype) -> np.ndarray:
    """The stored bias of `variant` from canonical b_w, b_r (either may be None: zeros)."""
    order, canon = KERAS_ORDER[cell], CANONICAL_ORDER[cell]
    zeros = np.zeros(size, dtype)
    if variant == "plain":  # one bias: the two summed in float64 and rounded once
        if b_w is None:
            single = zeros if b_r is None else np.asarray(b_r)
        else:
            single = fuse(np.asarray(b_w), None if b_r is None else np.asarray(b_r))
        bias = reorder(single, canon, order)
    else:
        halves = [reorder(zeros if b is None else np.asarray(b), canon, order) for b in (b_w, b_r)]
        bias = np.concatenate(halves) if variant == "cudnn" else np.stack(halves)
    return np.ascontiguousarray(bias)


TRANSPOSE_BLOCK = 128  # rows and columns per tile (measured: 128 copied a 4096 x 16384 float32 matrix 3x faster than 1024 or a plain .T copy)


THREADED_BYTES = 8 << 20  # matrices from this size are transposed by several threads (numpy copies without the GIL)


def transposed(a: np.ndarray) -> np.ndarray:
    """A contiguous copy of a 2-D array's transpose, copied tile by tile (a plain strided copy of a large
    matrix misses the cache on every element of one side); a large one by up to four threads, each taking a
    band of rows (measured on 2 cores: a 268 MB kernel in 0.13-0.15 s instead of 0.23 s)."""
    rows, cols = a.shape
    if rows * cols <= TRANSPOSE_BLOCK * TRANSPOSE_BLOCK:
        return np.ascontiguousarray(a.T)
    out = np.empty((cols, rows), a.dtype)
    step = TRANSPOSE_BLOCK

    def band(first: int, stop: int) -> None:
        for i in range(first, stop, step):
            for j in range(0, cols, step):
                out[j:j + step, i:i + step] = a[i:i + step, j:j + step].T

    workers = min(4, os.cpu_count() or 1, -(-rows // step))
    if a.nbytes < THREADED_BYTES or workers < 2:
        band(0, rows)
        return out
    from concurrent.futures import ThreadPoolExecutor

    bands = -(-rows // step)
    edges = [min(rows, (bands * k // workers) * step) for k in range(workers + 1)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(band, edges[k], edges[k + 1]) for k in range(workers)]:
            done.result()
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
