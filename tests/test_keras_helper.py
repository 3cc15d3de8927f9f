"""rnnx.keras.load_weights: any file rnnx reads into a live tf_keras or Keras 3 model, checked first."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "formats" / "keras3"))
from keras3_helpers import KERAS2, max_abs, tf_keras_cpu_twin  # noqa: E402

import rnnx  # noqa: E402
import rnnx.keras  # noqa: E402

TORCH = Path(__file__).resolve().parent / "fixtures" / "torch"


def _gru_stack(framework):
    L = framework.layers
    inp = framework.Input((None, 4))
    h = L.GRU(5, return_sequences=True, reset_after=True, name="first")(inp)
    h = L.GRU(5, return_sequences=True, reset_after=True, name="second")(h)
    return framework.Model(inp, h)


@pytest.fixture(scope="module")
def torch_gru_outputs():
    """What torch computes with the gru_stack.pt fixture on a fixed input."""
    import torch

    state = torch.load(TORCH / "gru_stack.pt", weights_only=True)
    net = torch.nn.GRU(4, 5, num_layers=2, batch_first=True)
    net.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("gru.")})
    x = np.random.default_rng(31).standard_normal((3, 8, 4)).astype("float32")
    with torch.no_grad():
        return x, net(torch.from_numpy(x))[0].numpy()


@pytest.mark.parametrize("generation", ["tf_keras", "keras"])
@pytest.mark.parametrize("via", [".pt", ".onnx", ".rnnx", ".weights.h5"])
def test_torch_weights_load_into_a_keras_model(generation, via, torch_gru_outputs, tmp_path):
    import importlib

    framework = importlib.import_module(generation)
    src = TORCH / "gru_stack.pt"
    if via != ".pt":
        src = tmp_path / f"gru{via}"
        rnnx.convert(TORCH / "gru_stack.pt", src)
    model = _gru_stack(framework)
    assert rnnx.keras.load_weights(model, src) == []
    x, want = torch_gru_outputs
    assert max_abs(model.predict(x, verbose=0), want) <= 1e-5


@pytest.mark.parametrize("generation", ["tf_keras", "keras"])
def test_cudnn_weights_load_into_a_keras_model(generation):
    import importlib

    framework = importlib.import_module(generation)
    L = framework.layers
    inp = framework.Input((None, 5))
    h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="concat")(inp)
    h = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")(h)
    h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="mul")(h)
    model = framework.Model(inp, h)
    rnnx.keras.load_weights(model, KERAS2 / "cudnn_bidir_weights.h5")
    twin = tf_keras_cpu_twin("cudnn_bidir")
    import tf_keras

    oracle = tf_keras.Model(twin.inputs, twin.get_layer("bi_mul").output)
    x = np.random.default_rng(32).standard_normal((2, 7, 5)).astype("float32")
    assert max_abs(model.predict(x, verbose=0), oracle.predict(x, verbose=0)) <= 1e-5


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_by_name_loads_only_matching_layers():
    import keras

    inp = keras.Input((None, 5))
    h = keras.layers.GRU(4, return_sequences=True, name="gru_b")(inp)
    h = keras.layers.LSTM(2, name="unrelated")(h)
    model = keras.Model(inp, h)
    before = {l.name: _weights(l) for l in model.layers}
    notes = rnnx.keras.load_weights(model, KERAS2 / "cudnn_stack_weights.h5", by_name=True)
    assert notes and "unrelated" in notes[0]
    assert all(np.array_equal(a, b) for a, b in zip(before["unrelated"], _weights(model.get_layer("unrelated"))))
    source = rnnx.load(KERAS2 / "cudnn_stack_weights.h5").layer("gru_b")
    kernel = model.get_layer("gru_b").cell.kernel
    assert np.array_equal(np.asarray(kernel), rnnx.formats.keras3.layout.direction_to_vars(
        source, source.directions[0])[0])


@pytest.mark.parametrize("change, message", [
    (dict(units=6), "shape"),
    (dict(reset_after=False), "reset_after"),
    (dict(recurrent_activation="hard_sigmoid"), "compute differently"),
    (dict(count=1), "recurrent layers"),
])
def test_mismatch_is_refused_before_any_weight_changes(change, message):
    import keras

    inp = keras.Input((None, 4))
    units = change.get("units", 5)
    h = keras.layers.GRU(units, return_sequences=True, reset_after=change.get("reset_after", True),
                         recurrent_activation=change.get("recurrent_activation", "sigmoid"))(inp)
    if change.get("count", 2) == 2:
        h = keras.layers.GRU(5, return_sequences=True)(h)
    model = keras.Model(inp, h)
    before = _weights(model)
    with pytest.raises(rnnx.UsageError, match=message):
        rnnx.keras.load_weights(model, TORCH / "gru_stack.pt")
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(model)))


def test_a_model_without_recurrent_layers_is_refused():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(rnnx.UsageError, match="no LSTM"):
        rnnx.keras.load_weights(model, TORCH / "gru_stack.pt")


@pytest.mark.parametrize("generation", ["keras2", "keras3"])
def test_simple_rnn_weights_load_into_a_keras_model(generation, tmp_path):
    """A SimpleRNN has one activation (loading one crashed with IndexError); torch is the oracle."""
    import torch

    rng = np.random.default_rng(5)
    module = torch.nn.RNN(3, 4, batch_first=True)
    torch.save(module.state_dict(), tmp_path / "rnn.pt")
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    if generation == "keras2":
        import tf_keras as keras
    else:
        import keras
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.SimpleRNN(4, return_sequences=True)])
    rnnx.keras.load_weights(model, tmp_path / "rnn.pt")
    assert max_abs(model.predict(x, verbose=0), want) < 1e-5


@pytest.mark.parametrize("via", [".pt", ".h5"])
def test_by_name_finds_layers_renamed_by_a_pytorch_step(via, tmp_path):
    """Keras -> .pt (-> .h5) names a layer `lstm_a.l0`; by_name still loads it into Keras layer `lstm_a`."""
    import tf_keras

    source = KERAS2 / "cudnn_stack_weights.h5"
    chained = tmp_path / "step.pt"
    rnnx.convert(source, chained)
    if via == ".h5":
        rnnx.convert(chained, tmp_path / "back.h5")
        chained = tmp_path / "back.h5"
    config = (KERAS2 / "cudnn_stack_cpu.json").read_text()
    oracle = tf_keras.models.model_from_json(config)
    oracle.load_weights(source)  # tf_keras converts the CuDNN weights itself
    model = tf_keras.models.model_from_json(config)
    assert rnnx.keras.load_weights(model, chained, by_name=True) == []
    x = np.random.default_rng(4).standard_normal((2, 6, 4)).astype(np.float32)
    for layer in model.layers:  # the head is not recurrent: rnnx leaves it alone, copy it for the comparison
        if layer.weights and layer.name not in ("lstm_a", "gru_b", "lstm_c"):
            layer.set_weights(oracle.get_layer(layer.name).get_weights())
    assert max_abs(model.predict(x, verbose=0), oracle.predict(x, verbose=0)) <= 1e-5
