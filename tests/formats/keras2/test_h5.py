"""Keras 2 HDF5 reader and writer against real tf_keras and Keras 3 (the frameworks are the oracle).

CuDNN fixtures cannot run on CPU; the oracle is tf_keras's own `load_weights` of the CuDNN
file into the CPU twin (tests/fixtures/keras2/NAME_cpu.json), which converts the layout.
"""

import h5py
import numpy as np
import pytest

import rnnx
from rnnx.canonical import Bundle, Direction, RecurrentLayer, reference
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, SIGMOID, TANH
from rnnx.errors import UnsupportedError
from rnnx.formats.keras2 import h5 as keras_h5

CUDNN_MODELS = ("cudnn_stack", "cudnn_bidir", "cudnn_nested")
TOL = 1e-5
MAX_ERRORS: dict[str, float] = {}


def record(label, got, want):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    MAX_ERRORS[label] = err
    assert err <= TOL, f"{label}: max abs error {err:g}"
    return err


@pytest.fixture(scope="module", autouse=True)
def print_max_errors():
    """Prints the largest errors measured in this module (run with -s to see them)."""
    yield
    if MAX_ERRORS:
        worst = max(MAX_ERRORS, key=MAX_ERRORS.get)
        print(f"\nkeras-h5: max abs error {MAX_ERRORS[worst]:.3g} ({worst}) over {len(MAX_ERRORS)} checks")


@pytest.fixture(scope="module")
def tfk():
    import tf_keras

    return tf_keras


@pytest.fixture(scope="module")
def k3():
    import keras

    return keras


@pytest.fixture(scope="module")
def kdir(fixtures):
    return fixtures / "keras2"


def x_for(shape_in, seed=0, batch=3, seq=7):
    return np.random.default_rng(seed).standard_normal((batch, seq, shape_in)).astype(np.float32)


def oracle_model(tfk, kdir, name):
    """The CPU twin with the CuDNN weights loaded by tf_keras itself (it converts the layout)."""
    model = tfk.models.model_from_json((kdir / f"{name}_cpu.json").read_text())
    model.load_weights(str(kdir / f"{name}_weights.h5"))
    return model


def keras3_twin(k3, name):
    """The same CPU architecture built with Keras 3."""
    L = k3.layers
    inp = k3.Input((None, 5 if name == "cudnn_bidir" else 4))
    if name == "cudnn_stack":
        h = L.LSTM(5, return_sequences=True)(inp)
        h = L.GRU(4, return_sequences=True)(h)
        h = L.LSTM(3)(h)
        out = L.Dense(2)(h)
    elif name == "cudnn_bidir":
        h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="concat")(inp)
        h = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")(h)
        h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="mul")(h)
        out = L.TimeDistributed(L.Dense(2))(h)
    else:
        inner = k3.Sequential([k3.Input((None, 4)), L.LSTM(4, return_sequences=True), L.Dense(3)])
        h = L.GRU(3)(inner(inp))
        out = L.Dense(2)(h)
    return k3.Model(inp, out)


def keras_layer(model, name):
    """The tf_keras layer for an rnnx layer name ("outer/inner" for nested models)."""
    layer = model
    for part in name.split("/"):
        layer = layer.get_layer(part)
    return layer


def as_keras_output(Y, keras_layer_obj):
    """Reference Y [batch, seq, D, h] -> what the Keras layer returns (its return_sequences, merge_mode)."""
    seqs = keras_layer_obj.return_sequences
    if Y.shape[2] == 1:
        return Y[:, :, 0] if seqs else Y[:, -1, 0]
    fwd, bwd = (Y[:, :, 0], Y[:, :, 1]) if seqs else (Y[:, -1, 0], Y[:, 0, 1])
    mode = keras_layer_obj.merge_mode
    return {"concat": lambda: np.concatenate([fwd, bwd], -1), "sum": lambda: fwd + bwd,
            "ave": lambda: (fwd + bwd) / 2, "mul": lambda: fwd * bwd}[mode]()


def check_layers_against(model, bundle, label):
    for rec in bundle.layers:
        x = x_for(rec.input_size, seed=len(rec.name))
        layer = keras_layer(model, rec.name)
        want = np.asarray(layer(x))
        Y, _, _ = reference.run_batch_first(rec, x)
        record(f"{label}:{rec.name}", as_keras_output(Y, layer), want)


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        root.visititems(visit)
    return out


# ----------------------------------------------------------------------------- reader

def test_reader_cpu_layers_match_tf_keras(tfk, kdir):
    model = tfk.models.load_model(str(kdir / "cpu_mix_full.h5"))
    bundle = rnnx.load(kdir / "cpu_mix_full.h5")
    kinds = {r.name: (r.kind, r.num_directions, r.provenance["class_name"]) for r in bundle.layers}
    assert kinds == {
        "lstm_hard": ("lstm", 1, "LSTM"), "gru_before": ("gru-reset-before", 1, "GRU"),
        "gru_after": ("gru", 1, "GRU"), "simple": ("rnn", 1, "SimpleRNN"), "bi_lstm": ("lstm", 2, "LSTM"),
        "simple_relu": ("rnn", 1, "SimpleRNN"), "lstm_nobias": ("lstm", 1, "LSTM")}
    assert bundle.layer("lstm_hard").activations[0] == HARD_SIGMOID_KERAS2
    assert bundle.layer("bi_lstm").options["merge_mode"] == "ave"
    assert not bundle.layer("lstm_nobias").has_bias
    check_layers_against(model, bundle, "reader cpu_mix")


@pytest.mark.parametrize("name", CUDNN_MODELS)
@pytest.mark.parametrize("kind", ["weights", "full"])
def test_reader_cudnn_layers_match_oracle(tfk, kdir, name, kind):
    bundle = rnnx.load(kdir / f"{name}_{kind}.h5")
    assert bundle.source["has_architecture"] is (kind == "full")
    assert all(r.provenance["class_name"] in ("CuDNNLSTM", "CuDNNGRU") for r in bundle.layers)
    assert all(r.bias_layout == "input+recurrent" for r in bundle.layers)
    check_layers_against(oracle_model(tfk, kdir, name), bundle, f"reader {name}_{kind}")


def test_reader_names_and_wrappers(kdir):
    nested = rnnx.load(kdir / "cudnn_nested_full.h5")
    assert [it.name for it in nested.items] == ["x", "encoder/inner_lstm", "encoder", "outer_gru", "head"]
    assert nested.layer("encoder/inner_lstm").provenance["group"] == "encoder"
    bidir = rnnx.load(kdir / "cudnn_bidir_weights.h5")
    assert [(r.name, r.num_directions) for r in bidir.layers] == [("bi_concat", 2), ("bi_sum", 2), ("bi_mul", 2)]
    td = next(o for o in bidir.others if o.name == "per_step")
    assert [n for n, _ in td.weights] and td.options["group"] == "per_step"


def test_layer_names_split_over_attributes(tfk, kdir, tmp_path):
    """Big models spill layer_names into layer_names0, layer_names1, ...; tf_keras reads them too."""
    path = tmp_path / "split.h5"
    path.write_bytes((kdir / "cudnn_stack_weights.h5").read_bytes())
    with h5py.File(path, "a") as f:
        names = f.attrs["layer_names"]
        del f.attrs["layer_names"]
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:2], names[2:]
    bundle = rnnx.load(path)
    assert bundle.source["layer_names"] == [n.decode() if isinstance(n, bytes) else n for n in names]
    rnnx.convert(path, tmp_path / "out.h5")
    model = tfk.models.model_from_json((kdir / "cudnn_stack_cpu.json").read_text())
    model.load_weights(str(tmp_path / "out.h5"))
    x = x_for(4)
    want = oracle_model(tfk, kdir, "cudnn_stack").predict(x, verbose=0)
    record("split layer_names", model.predict(x, verbose=0), want)


def test_recurrent_sublayer_of_custom_layer(tfk, tmp_path):
    class Scaled(tfk.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.inner = tfk.layers.LSTM(3, return_sequences=True, name="inner")

        def build(self, shape):
            self.scale = self.add_weight(name="scale", shape=(3,), initializer="ones")

        def call(self, x):
            return self.inner(x) * self.scale

    inp = tfk.Input((None, 4))
    layer = Scaled(name="scaled")
    model = tfk.Model(inp, layer(inp))
    rng = np.random.default_rng(1)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save_weights(str(tmp_path / "custom.h5"))
    bundle = rnnx.load(tmp_path / "custom.h5")
    (rec,) = bundle.layers
    rest = [o for o in bundle.others if o.weights]
    assert rec.provenance["group"] == "scaled" and len(rest) == 1 and rest[0].weights[0][1].shape == (3,)
    x = x_for(4)
    Y, _, _ = reference.run_batch_first(rec, x)
    record("custom layer sublayer", Y[:, :, 0], np.asarray(layer.inner(x)))
    rnnx.convert(tmp_path / "custom.h5", tmp_path / "out.h5")
    assert all(np.array_equal(a, b) for a, b in zip(datasets(tmp_path / "custom.h5").values(),
                                                    datasets(tmp_path / "out.h5").values()))


# ----------------------------------------------------------------------------- writer

@pytest.mark.parametrize("name", CUDNN_MODELS)
@pytest.mark.parametrize("kind", ["weights", "full"])
def test_converted_file_loads_in_tf_keras_and_keras3(tfk, k3, kdir, tmp_path, name, kind):
    out = tmp_path / "cpu.h5"
    result = rnnx.convert(kdir / f"{name}_{kind}.h5", out)
    assert any("CuDNN" in note for note in result.notes)
    x = x_for(5 if name == "cudnn_bidir" else 4, seed=3)
    want = oracle_model(tfk, kdir, name).predict(x, verbose=0)
    twin = tfk.models.model_from_json((kdir / f"{name}_cpu.json").read_text())
    twin.load_weights(str(out))
    record(f"tf_keras load_weights {name}_{kind}", twin.predict(x, verbose=0), want)
    model3 = keras3_twin(k3, name)
    model3.load_weights(str(out))
    record(f"keras3 load_weights {name}_{kind}", model3.predict(x, verbose=0), want)
    if kind == "full":
        loaded = tfk.models.load_model(str(out))
        record(f"tf_keras load_model {name}", loaded.predict(x, verbose=0), want)
        classes = {l.__class__.__name__ for l in _flat_layers(loaded)}
        assert not classes & {"CuDNNLSTM", "CuDNNGRU"}
        if name != "cudnn_nested":  # Keras 3 cannot rebuild tf_keras's nested-model node indices
            loaded3 = k3.models.load_model(str(out), compile=False)
            record(f"keras3 load_model {name}", loaded3.predict(x, verbose=0), want)


def _flat_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _flat_layers(layer)
        if hasattr(layer, "forward_layer"):
            yield layer.forward_layer


def test_cpu_full_model_round_trips_through_tf_keras(tfk, kdir, tmp_path):
    out = tmp_path / "out.h5"
    rnnx.convert(kdir / "cpu_mix_full.h5", out)
    x = x_for(4, seed=5)
    want = tfk.models.load_model(str(kdir / "cpu_mix_full.h5")).predict(x, verbose=0)
    record("cpu_mix load_model", tfk.models.load_model(str(out)).predict(x, verbose=0), want)


@pytest.mark.parametrize("name", ["cpu_mix_full", "cpu_mix_weights"])
def test_cpu_source_round_trip_through_rnnx_is_exact(kdir, tmp_path, name):
    rnnx.convert(kdir / f"{name}.h5", tmp_path / "b.rnnx")
    rnnx.convert(tmp_path / "b.rnnx", tmp_path / "back.h5")
    a, b = datasets(kdir / f"{name}.h5"), datasets(tmp_path / "back.h5")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("name", CUDNN_MODELS)
def test_cudnn_source_round_trip_with_cudnn_target_is_exact(tfk, kdir, tmp_path, name):
    rnnx.convert(kdir / f"{name}_full.h5", tmp_path / "b.rnnx")
    rnnx.convert(tmp_path / "b.rnnx", tmp_path / "back.h5", cudnn=True)
    a, b = datasets(kdir / f"{name}_full.h5"), datasets(tmp_path / "back.h5")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    # tf_keras builds the CuDNN classes from the written config
    loaded = tfk.models.load_model(str(tmp_path / "back.h5"), compile=False)
    assert {l.__class__.__name__ for l in _flat_layers(loaded)} & {"CuDNNLSTM", "CuDNNGRU"}


@pytest.mark.parametrize("name", CUDNN_MODELS)
def test_cpu_to_cudnn_layout_is_what_tf_keras_converts_back(tfk, kdir, tmp_path, name):
    """CuDNN -> CPU h5 -> --cudnn h5: tf_keras's own CuDNN loader into the CPU twin gives the oracle."""
    rnnx.convert(kdir / f"{name}_weights.h5", tmp_path / "cpu.h5")
    notes = rnnx.convert(tmp_path / "cpu.h5", tmp_path / "gpu.h5", cudnn=True).notes
    assert any("CuDNN" in n for n in notes)
    twin = tfk.models.model_from_json((kdir / f"{name}_cpu.json").read_text())
    twin.load_weights(str(tmp_path / "gpu.h5"))
    x = x_for(5 if name == "cudnn_bidir" else 4, seed=9)
    record(f"cpu->cudnn {name}", twin.predict(x, verbose=0), oracle_model(tfk, kdir, name).predict(x, verbose=0))


def test_cudnn_target_refuses_what_cudnn_cannot_compute(kdir, tmp_path):
    bundle = rnnx.load(kdir / "cpu_mix_full.h5")
    with pytest.raises(UnsupportedError, match="lstm_hard.*sigmoid"):
        rnnx.save(bundle, tmp_path / "gpu.h5", cudnn=True)
    assert keras_h5.refusal(bundle.layer("gru_before"), cudnn=True).startswith("a reset-before GRU")
    assert "SimpleRNN" in keras_h5.refusal(bundle.layer("simple"), cudnn=True)
    assert all(keras_h5.refusal(r) is None for r in bundle.layers)
    assert list(tmp_path.iterdir()) == []


def _direction(rng, gates, units, inp, b_r=True, peep=False):
    f = lambda *s: rng.uniform(-0.7, 0.7, s).astype(np.float32)  # noqa: E731
    return Direction(W=f(gates * units, inp), R=f(gates * units, units), b_w=f(gates * units),
                     b_r=f(gates * units) if b_r else None, P=f(3 * units) if peep else None)


def test_refusals_name_the_feature():
    rng = np.random.default_rng(4)
    peep = RecurrentLayer("p", "lstm", [_direction(rng, 4, 3, 2, peep=True)])
    clip = RecurrentLayer("c", "lstm", [_direction(rng, 4, 3, 2)], clip=2.0)
    assert "peephole" in keras_h5.refusal(peep)
    assert "clip" in keras_h5.refusal(clip)
    with pytest.raises(UnsupportedError, match="'p'.*peephole"):
        keras_h5.write(Bundle([peep]), "never.h5")


def test_non_keras_bundle_becomes_loadable_keras_layers(tfk, k3, tmp_path):
    """A bundle as a PyTorch/ONNX reader makes it: two biases, reset-after GRU without recurrent bias."""
    rng = np.random.default_rng(6)
    lstm = RecurrentLayer("encoder.rnn", "lstm", [_direction(rng, 4, 5, 4), _direction(rng, 4, 5, 4)],
                          provenance={"format": "torch", "class_name": "LSTM"})
    gru = RecurrentLayer("decoder/gru", "gru", [_direction(rng, 3, 3, 10, b_r=False)], reset_after=True)
    rnn = RecurrentLayer("rnn", "rnn", [_direction(rng, 1, 2, 3)])
    hard = RecurrentLayer("hard", "gru", [_direction(rng, 3, 2, 2)], reset_after=False,
                          activations=(HARD_SIGMOID_KERAS2, TANH))
    out = tmp_path / "fresh.h5"
    notes = rnnx.save(Bundle([lstm, gru, rnn, hard], {"format": "torch"}), out)
    assert any("bias row 1 is zeros" in n for n in notes)
    with h5py.File(out) as f:
        assert sorted(f.keys()) == ["decoder_gru", "encoder.rnn", "hard", "rnn"]
    for k, name in ((tfk, "tf_keras"), (k3, "keras3")):
        L = k.layers
        inp = k.Input((None, 4))
        h1 = L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode=None)(inp)
        h = L.GRU(3, return_sequences=True, reset_after=True)(L.Concatenate()(h1))
        h = L.SimpleRNN(2, return_sequences=True)(h)
        extra = {"recurrent_activation": "hard_sigmoid"} if k is tfk else {}
        h4 = L.GRU(2, return_sequences=True, reset_after=False, **extra)(h)
        model = k.Model(inp, [h1[0], h1[1], h, h4])
        model.load_weights(str(out))
        x = x_for(4, seed=11)
        got = model.predict(x, verbose=0)
        Y, _, _ = reference.run_batch_first(lstm, x)
        record(f"fresh lstm fwd {name}", got[0], Y[:, :, 0])
        record(f"fresh lstm bwd {name}", got[1], Y[:, :, 1])
        Yg, _, _ = reference.run_batch_first(gru, np.concatenate([Y[:, :, 0], Y[:, :, 1]], -1))
        Yr, _, _ = reference.run_batch_first(rnn, Yg[:, :, 0])
        record(f"fresh gru+rnn {name}", got[2], Yr[:, :, 0])
        if k is tfk:  # Keras 3 hard_sigmoid is another function
            Yh, _, _ = reference.run_batch_first(hard, Yr[:, :, 0])
            record("fresh reset-before gru hard_sigmoid tf_keras", got[3], Yh[:, :, 0])
    back = rnnx.load(out)
    assert back.layer("hard").activations == (HARD_SIGMOID_KERAS2, TANH)  # from the rnnx_layer attribute
    assert back.layer("rnn").activations == (TANH,) and back.layer("decoder_gru").activations == (SIGMOID, TANH)


def test_verify_runs_written_files_in_tf_keras(kdir, tmp_path):
    src = kdir / "cudnn_bidir_full.h5"
    rnnx.convert(src, tmp_path / "cpu.h5")
    report = rnnx.verify(src, tmp_path / "cpu.h5")
    assert report["ok"] and len(report["layers"]) == 3
    MAX_ERRORS["verify cudnn_bidir"] = max(r["max_abs_error"] for r in report["layers"])
    # the CuDNN original itself, run through tf_keras's CuDNN -> CPU loader conversion
    assert rnnx.verify(src, src)["ok"]


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3)])
def test_verify_runs_float64_bidirectional_layers_in_float64(cell, gates, tmp_path):
    rng = np.random.default_rng(11)
    n = gates * 3
    layer = RecurrentLayer(cell, cell, [Direction(*(rng.standard_normal(s) for s in ((n, 2), (n, 3), (n,), (n,))))
                                        for _ in range(2)])
    rnnx.save(Bundle([layer]), tmp_path / "f64.rnnx")
    rnnx.convert(tmp_path / "f64.rnnx", tmp_path / "f64.h5")
    report = rnnx.verify(tmp_path / "f64.rnnx", tmp_path / "f64.h5")
    assert report["layers"][0]["tolerance"] == 1e-9 and report["ok"], report


def test_pytorch_source_loads_into_keras_models(tfk, k3, tmp_path):
    """torch nn.LSTM (2 layers, bidirectional) + nn.GRU -> .pt -> .h5: tf_keras and Keras 3 models
    that load the file compute what torch computes."""
    import torch

    torch.manual_seed(0)
    enc = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True)
    dec = torch.nn.GRU(10, 3, batch_first=True)
    with torch.no_grad():
        for p in [*enc.parameters(), *dec.parameters()]:
            p.uniform_(-0.6, 0.6)
    torch.save({**{f"enc.{k}": v for k, v in enc.state_dict().items()},
                **{f"dec.{k}": v for k, v in dec.state_dict().items()}}, tmp_path / "net.pt")
    x = x_for(4, seed=12)
    with torch.no_grad():
        want = dec(enc(torch.from_numpy(x))[0])[0].numpy()
    notes = rnnx.convert(tmp_path / "net.pt", tmp_path / "net.h5").notes
    assert any("Bidirectional(LSTM)" in n for n in notes)
    for k, label in ((tfk, "tf_keras"), (k3, "keras3")):
        L = k.layers
        inp = k.Input((None, 4))
        h = L.Bidirectional(L.LSTM(5, return_sequences=True))(inp)
        h = L.Bidirectional(L.LSTM(5, return_sequences=True))(h)
        model = k.Model(inp, L.GRU(3, return_sequences=True, reset_after=True)(h))
        model.load_weights(str(tmp_path / "net.h5"))
        record(f"torch -> h5 -> {label}", model.predict(x, verbose=0), want)


def test_rnn_wrapping_keras_cells(tfk, tmp_path):
    """RNN(GRUCell(reset_after=False, hard_sigmoid)) and Bidirectional(RNN(LSTMCell)) from a full-model file."""
    L = tfk.layers
    inp = tfk.Input((None, 4))
    h = L.RNN(L.GRUCell(3, recurrent_activation="hard_sigmoid", reset_after=False), return_sequences=True,
              name="rnn_gru")(inp)
    model = tfk.Model(inp, L.Bidirectional(L.RNN(L.LSTMCell(3), return_sequences=True), name="bi_rnn")(h))
    rng = np.random.default_rng(8)
    model.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(str(tmp_path / "cells.h5"))
    bundle = rnnx.load(tmp_path / "cells.h5")
    assert [(r.name, r.kind) for r in bundle.layers] == [("rnn_gru", "gru-reset-before"), ("bi_rnn", "lstm")]
    assert bundle.layer("rnn_gru").activations[0] == HARD_SIGMOID_KERAS2
    check_layers_against(model, bundle, "RNN(cell)")
    rnnx.convert(tmp_path / "cells.h5", tmp_path / "out.h5")
    x = x_for(4, seed=13)
    record("RNN(cell) load_model", tfk.models.load_model(str(tmp_path / "out.h5")).predict(x, verbose=0),
           model.predict(x, verbose=0))
