"""Numpy reference forward pass of every canonical cell: the oracle conversions are checked against.

Written with the equations of rnn-conventions.md and ONNX's operator spec; computed
in float64 whatever the layer's dtype (or in `dtype`, to measure what a runtime working
in the layer's own precision can be expected to get). Shapes follow ONNX layout 0:
X [seq, batch, in] -> Y [seq, directions, batch, hidden], Y_h [directions, batch, hidden],
Y_c [directions, batch, units] (LSTM only, else None).
"""

from __future__ import annotations

import numpy as np

from .model import Direction, RecurrentLayer


def run(layer: RecurrentLayer, X: np.ndarray, initial_h: np.ndarray | None = None,
        initial_c: np.ndarray | None = None, sequence_lens: np.ndarray | None = None, dtype=np.float64):
    X = np.asarray(X, dtype)
    seq, batch, _ = X.shape
    if X.shape[2] != layer.input_size:
        raise ValueError(f"layer {layer.name!r} takes {layer.input_size} features, got {X.shape[2]}")
    lens = np.full(batch, seq) if sequence_lens is None else np.asarray(sequence_lens).astype(np.int64)
    D, hidden, u = layer.num_directions, layer.hidden_size, layer.units
    h0 = np.zeros((D, batch, hidden), dtype) if initial_h is None else np.asarray(initial_h, dtype)
    c0 = np.zeros((D, batch, u), dtype) if initial_c is None else np.asarray(initial_c, dtype)

    Y = np.zeros((seq, D, batch, hidden), dtype)
    Y_h = np.zeros((D, batch, hidden), dtype)
    Y_c = np.zeros((D, batch, u), dtype)
    for k, direction in enumerate(layer.directions):
        steps = range(seq) if k == 0 else range(seq - 1, -1, -1)
        h, c = h0[k].copy(), c0[k].copy()
        weights = _weights_as(direction, dtype)
        for t in steps:
            active = (t < lens)[:, None]
            h_new, c_new = _STEP[layer.cell](layer, weights, X[t], h, c)
            h = np.where(active, h_new, h)
            c = np.where(active, c_new, c)
            Y[t, k] = np.where(active, h, 0)
        Y_h[k], Y_c[k] = h, c
    return Y, Y_h, (Y_c if layer.cell == "lstm" else None)


def run_batch_first(layer: RecurrentLayer, x: np.ndarray, **kwargs):
    """x [batch, seq, in] -> Y [batch, seq, directions, hidden], Y_h, Y_c as in `run`."""
    Y, Y_h, Y_c = run(layer, np.swapaxes(np.asarray(x), 0, 1), **kwargs)
    return np.transpose(Y, (2, 0, 1, 3)), Y_h, Y_c


def _weights_as(d: Direction, dtype) -> dict:
    w = {k: v.astype(dtype) for k, v in d.tensors().items()}
    zeros = np.zeros(d.W.shape[0], dtype)
    w.setdefault("b_w", zeros)
    w.setdefault("b_r", zeros)
    return w


def _clip(layer, v):
    return v if layer.clip is None else np.clip(v, -layer.clip, layer.clip)


def _lstm_step(layer, w, x, h, c):
    f_act, g_act, h_act = layer.activations
    gates = x @ w["W"].T + h @ w["R"].T + w["b_w"] + w["b_r"]
    gi, gf, gc, go = np.split(gates, 4, axis=1)
    P = w.get("P")
    pi, pf, po = np.split(P, 3) if P is not None else (0.0, 0.0, 0.0)
    i = f_act(_clip(layer, gi + pi * c))
    f = 1.0 - i if layer.input_forget else f_act(_clip(layer, gf + pf * c))
    c_new = f * c + i * g_act(_clip(layer, gc))
    o = f_act(_clip(layer, go + po * c_new))
    h_new = o * h_act(c_new)
    if "proj" in w:
        h_new = h_new @ w["proj"].T
    return h_new, c_new


def _gru_step(layer, w, x, h, c):
    f_act, g_act = layer.activations
    xr, xz, xn = np.split(x @ w["W"].T + w["b_w"], 3, axis=1)
    Rr, Rz, Rn = np.split(w["R"], 3, axis=0)
    br, bz, bn = np.split(w["b_r"], 3)
    r = f_act(_clip(layer, xr + h @ Rr.T + br))
    z = f_act(_clip(layer, xz + h @ Rz.T + bz))
    if layer.reset_after:
        n = g_act(_clip(layer, xn + r * (h @ Rn.T + bn)))
    else:
        n = g_act(_clip(layer, xn + (r * h) @ Rn.T + bn))
    return (1.0 - z) * n + z * h, c


def _rnn_step(layer, w, x, h, c):
    (f_act,) = layer.activations
    return f_act(_clip(layer, x @ w["W"].T + h @ w["R"].T + w["b_w"] + w["b_r"])), c


_STEP = {"lstm": _lstm_step, "gru": _gru_step, "rnn": _rnn_step}
