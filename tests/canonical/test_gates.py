import numpy as np
import pytest

from rnnx.canonical import gates


def test_reorder_moves_whole_gate_blocks_and_back():
    blocks = np.repeat(np.arange(4), 3)[:, None] * np.ones((1, 2))  # gate k filled with k, 3 units each
    onnx = gates.reorder(blocks, gates.LSTM_CANONICAL, gates.LSTM_ONNX)
    assert [int(b[0, 0]) for b in np.split(onnx, 4)] == [gates.LSTM_CANONICAL.index(g) for g in gates.LSTM_ONNX]
    assert np.array_equal(gates.reorder(onnx, gates.LSTM_ONNX, gates.LSTM_CANONICAL), blocks)


def test_reorder_refuses_orders_naming_other_gates():
    with pytest.raises(ValueError):
        gates.reorder(np.zeros(6), gates.GRU_KERAS, gates.LSTM_CANONICAL[:3])


def test_fuse_rounds_once_from_float64():
    a = np.array([1.0, 1e-8], np.float32)
    b = np.array([1e-8, 1.0], np.float32)
    fused = gates.fuse(a, b)
    assert fused.dtype == np.float32
    assert np.array_equal(fused, (a.astype(np.float64) + b.astype(np.float64)).astype(np.float32))
    assert gates.fuse(a, None) is a
