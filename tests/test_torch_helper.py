"""rnnx.torch.load_state_dict: any file rnnx reads, straight into a live torch module."""

import numpy as np
import pytest
import torch
from torch import nn

import rnnx
import rnnx.torch

RNG = np.random.default_rng(9)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.rnn = nn.LSTM(4, 5, num_layers=2)
        self.encoder.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, 2)


def outputs(module, x):
    with torch.no_grad():
        out, _ = module(torch.from_numpy(x))
    return out.numpy()


def test_checkpoint_by_name_into_its_own_network(fixtures):
    net = Net()
    head_before = net.head.weight.detach().clone()
    pairs = rnnx.torch.load_state_dict(net, fixtures / "torch" / "checkpoint.ckpt", by_name=True)
    assert pairs == [("encoder.rnn.l0", "encoder.rnn.l0"), ("encoder.rnn.l1", "encoder.rnn.l1")]
    model = torch.load(fixtures / "torch" / "checkpoint.ckpt", weights_only=True)["model"]
    for key, tensor in net.encoder.rnn.state_dict().items():
        assert torch.equal(tensor, model[f"module.encoder.rnn.{key}"])
    assert torch.equal(net.head.weight, head_before)  # non-recurrent layers are not loaded


def test_keras_cudnn_file_by_order(fixtures):
    """A CuDNN Keras file into LSTM / GRU modules; tf_keras's own conversion into the CPU twin is the oracle."""
    import tf_keras

    src = fixtures / "keras2" / "cudnn_stack_weights.h5"
    holder = nn.Module()
    holder.a, holder.b, holder.c = (nn.LSTM(4, 5, batch_first=True), nn.GRU(5, 4, batch_first=True),
                                    nn.LSTM(4, 3, batch_first=True))
    assert rnnx.torch.load_state_dict(holder, src) == [("a.l0", "lstm_a"), ("b.l0", "gru_b"), ("c.l0", "lstm_c")]
    oracle = tf_keras.models.model_from_json((fixtures / "keras2" / "cudnn_stack_cpu.json").read_text())
    oracle.load_weights(str(src))
    probe = tf_keras.Model(oracle.inputs, [oracle.get_layer(n).output for n in ("lstm_a", "gru_b", "lstm_c")])
    x = RNG.standard_normal((2, 6, 4)).astype(np.float32)
    want_a, want_b, want_c = probe.predict(x, verbose=0)
    got_a = outputs(holder.a, x)
    got_b = outputs(holder.b, got_a)
    got_c = outputs(holder.c, got_b)[:, -1]  # lstm_c has return_sequences=False
    for got, want in ((got_a, want_a), (got_b, want_b), (got_c, want_c)):
        assert np.abs(got - want).max() <= 1e-5


def test_by_name_for_keras_names(fixtures):
    holder = nn.Module()
    holder.gru_b = nn.GRU(5, 4)
    holder.other = nn.LSTM(2, 2)
    # only the layers of the file named like submodules... every file layer must find one
    with pytest.raises(rnnx.UsageError, match="No submodule matches layer 'lstm_a'"):
        rnnx.torch.load_state_dict(holder, fixtures / "keras2" / "cudnn_stack_weights.h5", by_name=True)
    bundle = rnnx.load(fixtures / "keras2" / "cudnn_stack_weights.h5").only("gru_b")
    assert rnnx.torch.load_state_dict(holder, bundle, by_name=True) == [("gru_b.l0", "gru_b")]


def test_cells_and_stacks_by_order(fixtures):
    holder = nn.Module()
    holder.x, holder.y, holder.z = nn.LSTMCell(3, 4), nn.GRUCell(3, 5), nn.RNNCell(3, 2, bias=False)
    assert [p[0] for p in rnnx.torch.load_state_dict(holder, fixtures / "torch" / "cells.pt")] == ["x", "y", "z"]
    stack = nn.LSTM(5, 6, num_layers=3, bidirectional=True)
    assert len(rnnx.torch.load_state_dict(stack, fixtures / "torch" / "lstm_stack.pt")) == 3
    original = torch.load(fixtures / "torch" / "lstm_stack.pt", weights_only=True)
    assert all(torch.equal(v, original[k]) for k, v in stack.state_dict().items())


@pytest.mark.parametrize("module, words", [
    (nn.LSTM(5, 7, num_layers=3, bidirectional=True), "weight_ih_l0 is (24, 5) in the file and (28, 5)"),
    (nn.GRU(5, 6, num_layers=3, bidirectional=True), "it is a LSTM layer and the submodule is GRU"),
    (nn.LSTM(5, 6, num_layers=3), "it has 2 direction(s), the submodule 1"),
    (nn.LSTM(5, 6, num_layers=3, bidirectional=True, bias=False), "has no biases"),
    (nn.LSTM(5, 6, num_layers=2, bidirectional=True), "the module has 2 recurrent layer(s)"),
])
def test_mismatches_are_refused_before_anything_changes(fixtures, module, words):
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(rnnx.UsageError) as info:
        rnnx.torch.load_state_dict(module, fixtures / "torch" / "lstm_stack.pt")
    assert words.lower() in str(info.value).lower()
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())


def test_inexpressible_layers_are_refused(fixtures):
    with pytest.raises(rnnx.UnsupportedError, match="convert it to ONNX"):
        rnnx.torch.load_state_dict(nn.LSTM(4, 5), fixtures / "keras2" / "cpu_mix_weights.h5")


def test_by_name_after_the_layers_went_through_keras(fixtures, tmp_path):
    """A stacked nn.LSTM converted to .h5 (layers l0, l1, l2) loads back by name into the same module."""
    source = fixtures / "torch" / "lstm_stack.pt"
    rnnx.convert(source, tmp_path / "stack.h5")
    original = nn.LSTM(5, 6, num_layers=3, bidirectional=True)
    original.load_state_dict(torch.load(source, weights_only=True))
    loaded = nn.LSTM(5, 6, num_layers=3, bidirectional=True)
    pairs = rnnx.torch.load_state_dict(loaded, tmp_path / "stack.h5", by_name=True)
    assert pairs == [("l0", "l0"), ("l1", "l1"), ("l2", "l2")]
    x = RNG.standard_normal((7, 2, 5)).astype(np.float32)
    assert np.abs(outputs(loaded, x) - outputs(original, x)).max() < 1e-5
