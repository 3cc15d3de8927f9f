"""`.weights.h5` (Keras 3 save_weights / load_weights): reader, writer, layer paths, refusals, bad input."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keras3_helpers import KERAS2, KERAS3, h5_datasets, max_abs, same_arrays, tf_keras_cpu_twin  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle, Direction, RecurrentLayer  # noqa: E402
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, SIGMOID, TANH  # noqa: E402
from rnnx.formats.keras3 import weights as keras3_weights  # noqa: E402

MODELS = ("stack", "bidir", "mixed")


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_gives_byte_equal_arrays(name, tmp_path):
    src = KERAS3 / f"{name}.weights.h5"
    out = tmp_path / "out.weights.h5"
    assert rnnx.save(rnnx.load(src), out) == []
    assert same_arrays(h5_datasets(src), h5_datasets(out))


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_through_the_rnnx_file(name, tmp_path):
    src = KERAS3 / f"{name}.weights.h5"
    rnnx.save(rnnx.load(src), tmp_path / "mid.rnnx")
    rnnx.save(rnnx.load(tmp_path / "mid.rnnx"), tmp_path / "out.weights.h5")
    assert same_arrays(h5_datasets(src), h5_datasets(tmp_path / "out.weights.h5"))


def test_reader_finds_layers_in_model_order_with_their_names():
    bundle = rnnx.load(KERAS3 / "stack.weights.h5")
    assert bundle.source["format"] == "keras3-weights" and bundle.source["has_architecture"] is False
    assert [(l.name, l.cell, l.units, l.input_size) for l in bundle.layers] == [
        ("lstm", "lstm", 4, 3), ("gru", "gru", 3, 4), ("simple_rnn", "rnn", 2, 3), ("lstm_1", "lstm", 3, 2)]
    assert [o.name for o in bundle.others] == ["dense"]
    assert [l.provenance["keras3_path"] for l in bundle.layers] == [
        "layers/lstm", "layers/gru", "layers/simple_rnn", "layers/lstm_1"]
    bidir = rnnx.load(KERAS3 / "bidir.weights.h5")
    assert [(l.name, l.num_directions, l.provenance["wrapper"], l.reset_after) for l in bidir.layers] == [
        ("bi_lstm", 2, "Bidirectional", True), ("bi_gru", 2, "Bidirectional", False)]


def test_windows_file_reads_like_the_original():
    windows, original = rnnx.load(KERAS3 / "windows.weights.h5"), rnnx.load(KERAS3 / "stack.weights.h5")
    with h5py.File(KERAS3 / "windows.weights.h5") as f:
        assert any("\\" in key for key in f)  # the fixture really has backslash names
    assert [i.name for i in windows.items] == [i.name for i in original.items]
    for a, b in zip(windows.layers, original.layers):
        for da, db in zip(a.directions, b.directions):
            for key, arr in da.tensors().items():
                assert np.array_equal(arr, db.tensors()[key])


@pytest.fixture(scope="module")
def keras3_models():
    import keras

    L = keras.layers

    def stack():
        inp = keras.Input((None, 4))
        h = L.LSTM(5, return_sequences=True)(inp)
        h = L.GRU(4, return_sequences=True)(h)
        h = L.LSTM(3)(h)
        return keras.Model(inp, L.Dense(2)(h))

    def bidir():
        inp = keras.Input((None, 5))
        h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="concat")(inp)
        h = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode="sum")(h)
        h = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode="mul")(h)
        return keras.Model(inp, L.TimeDistributed(L.Dense(2))(h))

    def nested():
        inner = keras.Sequential([keras.Input((None, 4)), L.LSTM(4, return_sequences=True), L.Dense(3)])
        inp = keras.Input((None, 4))
        h = L.GRU(3)(inner(inp))
        return keras.Model(inp, L.Dense(2)(h))

    return {"cudnn_stack": stack, "cudnn_bidir": bidir, "cudnn_nested": nested}


@pytest.mark.parametrize("name, kind", [("cudnn_stack", "weights"), ("cudnn_stack", "full"),
                                        ("cudnn_bidir", "full"), ("cudnn_nested", "full")])
def test_keras3_loads_weights_written_from_cudnn_files(name, kind, keras3_models, tmp_path):
    """Keras 3 load_weights of rnnx's file, in a model built in code, computes what tf_keras computes."""
    out = tmp_path / "model.weights.h5"
    rnnx.convert(KERAS2 / f"{name}_{kind}.h5", out)
    model = keras3_models[name]()
    model.load_weights(out)
    x = np.random.default_rng(3).standard_normal((3, 9, model.inputs[0].shape[-1])).astype("float32")
    want = tf_keras_cpu_twin(name).predict(x, verbose=0)
    assert max_abs(model.predict(x, verbose=0), want) <= 1e-5


def test_weights_only_keras2_layers_are_placed_by_their_weight_names(tmp_path):
    notes = rnnx.save(rnnx.load(KERAS2 / "cudnn_stack_weights.h5"), tmp_path / "w.weights.h5")
    assert any("Dense" in n for n in notes)
    assert {"layers/lstm/cell/vars/0", "layers/gru/cell/vars/2", "layers/lstm_1/cell/vars/1",
            "layers/dense/vars/1"} <= set(h5_datasets(tmp_path / "w.weights.h5"))


def test_torch_source_gets_keras3_sequential_paths_and_matches_torch(tmp_path):
    import keras
    import torch

    torch.manual_seed(5)
    net = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    torch.save(net.state_dict(), tmp_path / "lstm.pt")
    notes = rnnx.save(rnnx.load(tmp_path / "lstm.pt"), tmp_path / "lstm.weights.h5")
    assert isinstance(notes, list)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4, return_sequences=True),
                              keras.layers.LSTM(4, return_sequences=True)])
    model.load_weights(tmp_path / "lstm.weights.h5")
    x = np.random.default_rng(4).standard_normal((2, 6, 3)).astype("float32")
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    assert max_abs(model.predict(x, verbose=0), want) <= 1e-5


def test_verify_runs_the_written_file_in_keras3(tmp_path):
    out = tmp_path / "out.weights.h5"
    rnnx.convert(KERAS2 / "cudnn_bidir_weights.h5", out)
    report = rnnx.verify(KERAS2 / "cudnn_bidir_weights.h5", out)
    assert report["ok"] and len(report["layers"]) == 3
    assert max(r["max_abs_error"] for r in report["layers"]) <= 1e-5


@pytest.mark.parametrize("cell, directions", [("lstm", 2), ("gru", 1)])
def test_verify_runs_float64_layers_in_float64(cell, directions, tmp_path):
    rng = np.random.default_rng(7)
    n = {"lstm": 4, "gru": 3}[cell] * 3
    layer = RecurrentLayer(cell, cell, [Direction(*(rng.standard_normal(s) for s in ((n, 2), (n, 3), (n,), (n,))))
                                        for _ in range(directions)])
    rnnx.save(Bundle([layer]), tmp_path / "f64.rnnx")
    rnnx.convert(tmp_path / "f64.rnnx", tmp_path / "f64.weights.h5")
    report = rnnx.verify(tmp_path / "f64.rnnx", tmp_path / "f64.weights.h5")
    assert report["layers"][0]["tolerance"] == 1e-9 and report["ok"], report


def test_hard_sigmoid_is_refused_then_reported(tmp_path, cli):
    out = tmp_path / "mix.weights.h5"
    with pytest.raises(rnnx.UnsupportedError, match="hard_sigmoid"):
        rnnx.convert(KERAS2 / "cpu_mix_full.h5", out)
    assert not out.exists()
    result = cli("convert", KERAS2 / "cpu_mix_full.h5", out)
    assert result.returncode == 2 and "--accept-activation-change" in result.stderr and not out.exists()
    result = cli("convert", KERAS2 / "cpu_mix_full.h5", out, "--accept-activation-change")
    assert result.returncode == 0, result.stderr
    assert "lstm_hard" in result.stdout and "moves by up to" in result.stdout and out.exists()


def _layer(**changes):
    rng = np.random.default_rng(0)
    d = Direction(W=rng.standard_normal((8, 3)).astype("float32"), R=rng.standard_normal((8, 2)).astype("float32"),
                  b_w=rng.standard_normal(8).astype("float32"))
    fields = dict(name="l", cell="lstm", directions=[d])
    fields.update(changes)
    return RecurrentLayer(**fields)


def test_refusal_names_each_feature_keras3_lacks():
    rng = np.random.default_rng(1)
    assert keras3_weights.refusal(_layer()) is None
    peep = _layer()
    peep.directions[0].P = rng.standard_normal(6).astype("float32")
    assert "peephole" in keras3_weights.refusal(peep)
    assert "clip" in keras3_weights.refusal(_layer(clip=3.0))
    assert "input and forget" in keras3_weights.refusal(_layer(input_forget=True))
    assert "hard_sigmoid" in keras3_weights.refusal(_layer(activations=(HARD_SIGMOID_KERAS2, TANH, TANH)))
    assert "output activations" in keras3_weights.refusal(_layer(activations=(SIGMOID, TANH, SIGMOID)))
    proj = Direction(W=rng.standard_normal((8, 3)).astype("float32"), R=rng.standard_normal((8, 1)).astype("float32"),
                     proj=rng.standard_normal((1, 2)).astype("float32"))
    assert "projection" in keras3_weights.refusal(_layer(directions=[proj]))
    with pytest.raises(rnnx.UnsupportedError, match="peephole"):
        keras3_weights.write(Bundle([peep]), Path("/nonexistent/never.weights.h5"))


def test_hard_sigmoid_deviation_is_the_reference_difference(tmp_path):
    from rnnx.canonical import reference
    from rnnx.canonical.activations import HARD_SIGMOID_KERAS3
    from rnnx.formats.keras3.layout import activation_deviation

    layer = _layer(activations=(HARD_SIGMOID_KERAS2, TANH, TANH))
    x = np.random.default_rng(0).standard_normal((8, 32, 3))
    changed = _layer(activations=(HARD_SIGMOID_KERAS3, TANH, TANH))
    want = np.abs(reference.run_batch_first(layer, x)[0] - reference.run_batch_first(changed, x)[0]).max()
    assert activation_deviation(layer) == pytest.approx(want, abs=0) and want > 0
    notes = rnnx.save(Bundle([layer]), tmp_path / "h.weights.h5", accept_activation_change=True)
    assert f"{want:.3g}" in notes[0]


def test_bad_files_are_refused(tmp_path, cli):
    keras2 = tmp_path / "k2.weights.h5"
    keras2.write_bytes((KERAS2 / "cudnn_stack_weights.h5").read_bytes())
    with pytest.raises(rnnx.FormatError, match="Keras 2"):
        keras3_weights.read(keras2)
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes((KERAS3 / "stack.weights.h5").read_bytes()[:3000])
    result = cli("inspect", truncated)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    gap = tmp_path / "gap.weights.h5"
    with h5py.File(gap, "w") as f:
        f.create_dataset("layers/lstm/cell/vars/0", data=np.zeros((3, 8), "float32"))
        f.create_dataset("layers/lstm/cell/vars/2", data=np.zeros(8, "float32"))
    with pytest.raises(rnnx.FormatError, match="numbered"):
        rnnx.load(gap)
    text = tmp_path / "text.weights.h5"
    text.write_text("not hdf5")
    assert cli("inspect", text).returncode == 2


@pytest.mark.parametrize("src", [KERAS3 / "bidir.keras", KERAS2 / "cudnn_bidir_full.h5"])
def test_one_layer_with_layer_option(src, tmp_path, cli):
    out = tmp_path / "one.weights.h5"
    result = cli("convert", src, out, "--layer", "bi_gru" if "bidir.keras" in str(src) else "bi_sum", "--verify")
    assert result.returncode == 0, result.stderr
    (layer,) = rnnx.load(out).layers
    assert layer.num_directions == 2 and layer.cell == "gru"


def test_weights_with_keras3_config_become_a_keras_archive(tmp_path, cli):
    import json
    import zipfile

    import keras

    config = json.loads(zipfile.ZipFile(KERAS3 / "mixed.keras").read("config.json"))
    (tmp_path / "model.json").write_text(json.dumps(config))
    bundle = rnnx.load(KERAS3 / "mixed.weights.h5", config=tmp_path / "model.json")
    assert bundle.source["has_architecture"] and [l.name for l in bundle.layers] == [
        "lstm_nobias", "gru_hard", "rnn_relu"]
    out = tmp_path / "mixed.keras"
    result = cli("convert", KERAS3 / "mixed.weights.h5", out, "--config", tmp_path / "model.json")
    assert result.returncode == 0, result.stderr
    original, written = keras.models.load_model(KERAS3 / "mixed.keras"), keras.models.load_model(out)
    x = np.random.default_rng(6).integers(0, 11, (3, 7))
    assert np.array_equal(original.predict(x, verbose=0), written.predict(x, verbose=0))
    result = cli("convert", KERAS3 / "mixed.weights.h5", tmp_path / "x.keras", "--config",
                 KERAS2 / "cudnn_stack_cpu.json")
    assert result.returncode == 2 and "Keras 3 model config" in result.stderr


def _damaged_copies(src: Path, tmp_path: Path, count: int):
    """`count` copies of `src` with a few bytes flipped (h5py then raises OSError or RuntimeError)."""
    data = src.read_bytes()
    rng = np.random.default_rng(99)
    for trial in range(count):
        damaged = bytearray(data)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 32))):
            damaged[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"fuzz_{trial}{''.join(src.suffixes)}"
        path.write_bytes(bytes(damaged))
        yield path


@pytest.mark.parametrize("name", ["mixed.weights.h5", "bidir.keras"])
def test_damaged_files_are_format_errors(name, tmp_path):
    errors = 0
    for path in _damaged_copies(KERAS3 / name, tmp_path, 60):
        try:
            rnnx.load(path)
        except rnnx.RnnxError as exc:
            assert str(path) in str(exc)
            errors += 1
    assert errors  # some flips leave a readable file; the others must be refused in a sentence


@pytest.mark.parametrize("name", ["lstm_hard_sigmoid", "gru_hard_sigmoid"])
def test_a_bare_weights_file_keeps_non_default_activations(name, fixtures, tmp_path):
    """Keras 3 hard_sigmoid written to .weights.h5 reads back as hard_sigmoid (it was read as sigmoid, so
    verify failed and the next conversion silently changed the function); Keras 3 still loads the file."""
    import keras

    source = fixtures / "models" / "k3_activations.keras"
    out = tmp_path / "hard.weights.h5"
    rnnx.convert(source, out, layer=name)
    back = rnnx.load(out).layers[0]
    assert back.activations == rnnx.load(source).layer(name).activations
    assert rnnx.verify(source, out, layer=name)["ok"]  # runs the file in Keras 3
    original = keras.models.load_model(source).get_layer(name)
    config = dict(original.get_config(), return_sequences=True)
    model = keras.Sequential([keras.Input((None, back.input_size)), type(original).from_config(config)])
    model.load_weights(out)
    x = np.random.default_rng(3).standard_normal((2, 7, back.input_size)).astype(np.float32)
    want = keras.Sequential([keras.Input((None, back.input_size)), original]).predict(x, verbose=0)
    got = model.predict(x, verbose=0)
    assert max_abs(got[:, -1] if want.ndim == 2 else got, want) <= 1e-5


def test_an_unreadable_variable_without_config_names_the_file_not_none(tmp_path, cli):
    src = tmp_path / "overflow.weights.h5"
    with h5py.File(src, "w") as h5:
        # 2**65 elements: numpy refuses to allocate them
        h5.create_group("layers/lstm/cell/vars").create_dataset("0", shape=(2**31, 2**31, 8), dtype="f4",
                                                                 chunks=(1, 1, 8))
    result = cli("inspect", src)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"rnnx: {src}") and "None" not in result.stderr, result.stderr
