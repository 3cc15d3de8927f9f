"""torch_layout: state-dict grouping, checkpoint search, naming and refusals (numpy only)."""

from pathlib import Path

import numpy as np
import pytest

from rnnx import Bundle, Direction, OpaqueLayer, RecurrentLayer, UnsupportedError
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, RELU, SIGMOID, TANH
from rnnx.formats.torch_format import layout as torch_layout

RNG = np.random.default_rng(2)


def _arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _layer(name="rnn", cell="lstm", **kwargs):
    g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    return RecurrentLayer(name, cell, [Direction(_arr(g * 2, 3), _arr(g * 2, 2), b_w=_arr(g * 2))], **kwargs)


def test_find_state_dict_descends_to_the_recurrent_weights():
    lstm = {"rnn.weight_ih_l0": 1, "rnn.weight_hh_l0": 2, "fc.weight": 3}
    tree = {"epoch": 3, "state_dict": {"model.rnn.weight_ih_l0": 1, "model.rnn.weight_hh_l0": 2},
            "optimizer_states": [{"state": {}}], "lr_schedulers": {"last": 4}}
    state, at = torch_layout.find_state_dict(tree, lambda v: isinstance(v, int))
    assert at == "state_dict"
    assert torch_layout.strip_wrappers(state, in_checkpoint=True) == (
        {"rnn.weight_ih_l0": 1, "rnn.weight_hh_l0": 2}, "model.")
    assert torch_layout.find_state_dict(lstm, lambda v: True) == (lstm, "")
    # a plain state dict keeps a child really called `model`; `module.` is always a wrapper
    assert torch_layout.strip_wrappers({"model.w": 1}, in_checkpoint=False) == ({"model.w": 1}, "")
    assert torch_layout.strip_wrappers({"module._orig_mod.w": 1}, False) == ({"w": 1}, "module._orig_mod.")
    # two models side by side: both are kept, under their own keys
    state, at = torch_layout.find_state_dict({"gen": {"a.weight_ih_l0": 1}, "disc": {"b.weight_ih_l0": 2}},
                                             lambda v: True)
    assert at == "" and state == {"gen.a.weight_ih_l0": 1, "disc.b.weight_ih_l0": 2}


def test_recurrent_key_rules():
    assert torch_layout.is_recurrent_key("enc.rnn.weight_hh_l12_reverse")
    assert torch_layout.is_recurrent_key("weight_ih")  # a cell at the root
    assert not torch_layout.is_recurrent_key("rnn.weight_hr")  # projections exist only on stacked modules
    assert not torch_layout.is_recurrent_key("rnn.module.weight_hh_l0_raw")  # weight-drop's raw copy rides along


def test_names_and_opaque_grouping():
    state = {"weight_ih_l0": _arr(8, 3), "weight_hh_l0": _arr(8, 2), "scale": _arr(1),
             "cell.weight_ih": _arr(6, 3), "cell.weight_hh": _arr(6, 2), "cell.extra.w": _arr(2)}
    items = torch_layout.read_state_dict(state, Path("x.safetensors"))
    assert [(type(i).__name__, i.name) for i in items] == [
        ("RecurrentLayer", "l0"), ("OpaqueLayer", "(root)"), ("RecurrentLayer", "cell"), ("OpaqueLayer", "cell.extra")]
    assert items[0].cell == "lstm" and items[0].provenance["module"] == ""
    assert items[2].cell == "gru" and items[2].provenance["class_name"] == "nn.GRUCell"
    assert items[1].options == {"format": "torch", "module": ""}
    assert items[3].weights[0][0] == "w"


def test_constructor_calls():
    assert torch_layout.constructor("nn.LSTM", 10, 20, num_layers=3, bidirectional=True) == \
        "nn.LSTM(10, 20, num_layers=3, bidirectional=True)"
    assert torch_layout.constructor("nn.RNN", 3, 4, nonlinearity="relu", bias=False, batch_first=True) == \
        "nn.RNN(3, 4, nonlinearity='relu', bias=False, batch_first=True)"


@pytest.mark.parametrize("kwargs, words", [
    ({"cell": "gru", "reset_after": False}, "reset-before GRU"),
    ({"cell": "lstm", "activations": (HARD_SIGMOID_KERAS2, TANH, TANH)}, "gate activation HardSigmoid(alpha=0.2"),
    ({"cell": "lstm", "activations": (SIGMOID, RELU, TANH)}, "activations Sigmoid, Relu, Tanh"),
    ({"cell": "gru", "clip": 3.0}, "cell clipping (clip=3)"),
    ({"cell": "lstm", "input_forget": True}, "input_forget"),
    ({"cell": "rnn", "activations": (SIGMOID,)}, "activation Sigmoid"),
])
def test_refusals_name_layer_and_suggest_onnx(kwargs, words):
    layer = _layer("enc_1", **kwargs)
    reason = torch_layout.refusal(layer)
    assert words in reason and "'enc_1'" in reason and "ONNX" in reason
    with pytest.raises(UnsupportedError, match="convert it to ONNX"):
        torch_layout.to_state_dict(Bundle([layer]))


def test_peepholes_refused_and_relu_rnn_accepted():
    layer = _layer("p")
    layer.directions[0].P = _arr(6)
    assert "peephole" in torch_layout.refusal(layer)
    relu = _layer("r", cell="rnn", activations=(RELU,))
    assert torch_layout.refusal(relu) is None
    _, notes = torch_layout.to_state_dict(Bundle([relu]))
    assert notes == ["r = nn.RNN(3, 2, nonlinearity='relu', batch_first=True)  # from 'r'"]


def test_identifiers():
    assert torch_layout.identifier("bidirectional/forward lstm") == "bidirectional_forward_lstm"
    assert torch_layout.identifier("1st") == "_1st"
    assert torch_layout.identifier("class") == "_class"


def test_colliding_prefixes_are_refused():
    a, b = _layer("enc.lstm"), _layer("enc_lstm")
    with pytest.raises(UnsupportedError, match="would both be written as 'enc_lstm.weight_ih_l0'"):
        torch_layout.to_state_dict(Bundle([a, b]))


def test_keras_opaque_layers():
    kernel, bias, table = _arr(4, 2), _arr(2), _arr(7, 3)
    items = [OpaqueLayer("dense", "Dense", [("vars/0", kernel), ("vars/1", bias)]),
             OpaqueLayer("emb", None, [("emb/embeddings:0", table)]),
             OpaqueLayer("dropout", "Dropout", []),
             OpaqueLayer("norm", "BatchNormalization", [("gamma", bias)])]
    state, notes = torch_layout.to_state_dict(Bundle(items))
    assert list(state) == ["dense.weight", "dense.bias", "emb.weight"]
    assert np.array_equal(state["dense.weight"], kernel.T) and np.array_equal(state["emb.weight"], table)
    assert notes == ["dense = nn.Linear(4, 2)  # from 'dense'", "emb = nn.Embedding(7, 3)  # from 'emb'",
                     "skipped 'norm' (BatchNormalization): only Dense and Embedding layers have a one-to-one "
                     "PyTorch module."]


def test_names_stay_unique():
    state = {"rnn.weight_ih_l0": _arr(8, 3), "rnn.weight_hh_l0": _arr(8, 2),
             "rnn.l0.weight_ih": _arr(8, 3), "rnn.l0.weight_hh": _arr(8, 2)}
    items = torch_layout.read_state_dict(state, Path("x.safetensors"))
    assert [i.name for i in items] == ["rnn.l0", "rnn.l0_2"]
    assert [i.provenance["module"] for i in items] == ["rnn", "rnn.l0"]
    written, _ = torch_layout.to_state_dict(Bundle(items))
    assert list(written) == list(state)


def _stack_member(name, inputs, seed):
    rng = np.random.default_rng(seed)
    return RecurrentLayer(name, "gru", [Direction(*(rng.standard_normal(s).astype(np.float32)
                                                    for s in ((6, inputs), (6, 2), (6,), (6,))))])


def test_layers_named_as_stacked_torch_layers_go_back_to_that_module():
    """A PyTorch file converted to Keras/ONNX and back keeps its module names (no `lstm_l0.l0` drift)."""
    stack = [_stack_member("l0", 3, 1), _stack_member("l1", 2, 2), _stack_member("enc.rnn.l0", 3, 3)]
    state, notes = torch_layout.to_state_dict(Bundle(stack))
    assert sorted(state) == sorted([f"{p}{w}_l{k}" for p, k in (("", 0), ("", 1), ("enc.rnn.", 0))
                                    for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")])
    assert notes[0] == "the root module = nn.GRU(3, 2, num_layers=2, batch_first=True)  # from 'l0', 'l1'"
    back = torch_layout.read_state_dict(state, Path("x.safetensors"))
    assert [l.name for l in back] == ["l0", "l1", "enc.rnn.l0"]
    assert all(np.array_equal(a.directions[0].W, b.directions[0].W) for a, b in zip(stack, back))


def test_names_that_do_not_form_a_whole_stack_keep_their_own_modules():
    gap = [_stack_member("rnn.l0", 3, 1), _stack_member("rnn.l2", 2, 2)]   # no l1
    unchained = [_stack_member("l0", 3, 1), _stack_member("l1", 3, 2)]     # l1 takes 3 inputs, l0 gives 2
    for layers, prefixes in ((gap, ["rnn_l0", "rnn_l2"]), (unchained, ["l0", "l1"])):
        state, _ = torch_layout.to_state_dict(Bundle(layers))
        assert [k.rpartition("weight_ih")[0].rstrip(".") for k in state if "weight_ih" in k] == prefixes
