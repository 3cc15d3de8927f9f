import json

import jsonschema
import numpy as np
import pytest

import rnnx
from rnnx.canonical import Bundle, Direction, OpaqueLayer, RecurrentLayer
from rnnx.canonical.activations import HARD_SIGMOID_KERAS2, TANH
from rnnx.formats import rnnx_file
from tests.conftest import ROOT


def _bundle():
    rng = np.random.default_rng(3)

    def d(g, u=4, inp=3, **kw):
        return Direction(W=rng.standard_normal((g * u, inp)).astype(np.float32),
                         R=rng.standard_normal((g * u, u)).astype(np.float32),
                         b_w=rng.standard_normal(g * u).astype(np.float32), **kw)

    lstm = RecurrentLayer("lstm_1", "lstm", [d(4), d(4)], activations=(HARD_SIGMOID_KERAS2, TANH, TANH),
                          provenance={"class_name": "CuDNNLSTM"}, options={"return_sequences": True})
    gru = RecurrentLayer("gru", "gru", [d(3, b_r=rng.standard_normal(12).astype(np.float32))])
    dense = OpaqueLayer("dense", "Dense", [("dense/kernel:0", rng.standard_normal((4, 2))),
                                           ("dense/bias:0", np.zeros(2, np.float16))])
    return Bundle([lstm, dense, gru], {"keras_version": "2.2.4", "model_config": {"class_name": "Sequential"}})


def test_round_trip_is_exact(tmp_path):
    bundle = _bundle()
    rnnx.save(bundle, tmp_path / "b.rnnx")
    back = rnnx.load(tmp_path / "b.rnnx")
    assert [it.name for it in back.items] == ["lstm_1", "dense", "gru"]
    for a, b in zip(bundle.layers, back.layers):
        assert (a.cell, a.activations, a.reset_after, a.provenance, a.options) == \
               (b.cell, b.activations, b.reset_after, b.provenance, b.options)
        for da, db in zip(a.directions, b.directions):
            assert da.tensors().keys() == db.tensors().keys()
            for key in da.tensors():
                assert getattr(da, key).dtype == getattr(db, key).dtype
                assert np.array_equal(getattr(da, key), getattr(db, key))
    for (na, wa), (nb, wb) in zip(bundle.others[0].weights, back.others[0].weights):
        assert na == nb and wa.dtype == wb.dtype and np.array_equal(wa, wb)


def test_manifest_validates_against_schema(tmp_path):
    from safetensors import safe_open

    rnnx.save(_bundle(), tmp_path / "b.rnnx")
    with safe_open(str(tmp_path / "b.rnnx"), framework="numpy") as f:
        manifest = json.loads(f.metadata()[rnnx_file.MANIFEST_KEY])
    schema = json.loads((ROOT / "schemas" / "rnnx-manifest.schema.json").read_text())
    jsonschema.validate(manifest, schema)


def test_safetensors_without_manifest_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "plain.rnnx"))
    with pytest.raises(rnnx.FormatError, match="without an rnnx manifest"):
        rnnx.load(tmp_path / "plain.rnnx")


def test_garbage_is_a_format_error(tmp_path):
    (tmp_path / "junk.rnnx").write_bytes(b"\xff" * 64)
    with pytest.raises(rnnx.FormatError):
        rnnx.load(tmp_path / "junk.rnnx")


def _tampered(tmp_path, change):
    """b.rnnx written by rnnx, then its manifest edited by `change(manifest, tensors)`."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rnnx.save(_bundle(), tmp_path / "b.rnnx")
    with safe_open(str(tmp_path / "b.rnnx"), framework="numpy") as f:
        manifest = json.loads(f.metadata()[rnnx_file.MANIFEST_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    replaced = change(manifest, tensors)
    manifest = manifest if replaced is None else replaced
    path = tmp_path / "tampered.rnnx"
    save_file(tensors, str(path), metadata={rnnx_file.MANIFEST_KEY: json.dumps(manifest)})
    return path


def _drop_tensor(name):
    def change(_manifest, tensors):
        del tensors[name]
    return change


def _set(item, key, value):
    def change(manifest, _tensors):
        manifest["items"][item][key] = value
    return change


TAMPERING = {
    "units that the tensors do not have": (_set(0, "units", 99),
                                           "says units 99 for item 0 .'lstm_1'. but its tensors hold 4"),
    "input size that the tensors do not have": (_set(2, "input_size", 7), "says input_size 7"),
    "a dtype that the tensors do not have": (_set(0, "dtype", "float16"), "says dtype 'float16'"),
    "a missing tensor": (_drop_tensor("items.0.1.R"), "names tensor items.0.1.R for item 0"),
    "a missing opaque weight": (_drop_tensor("items.1.weights.1"), "names tensor items.1.weights.1"),
    "three directions": (_set(0, "directions", 3), "3 directions"),
    "directions as text": (_set(0, "directions", "2"), "gives 'directions' of item 0 .'lstm_1'. as str"),
    "an unknown tensor key": (_set(0, "tensors", ["W", "R", "b_w", "Q"]), "lists tensors"),
    "clip as text": (_set(0, "clip", "x"), "gives 'clip'"),
    "provenance as a list": (_set(0, "provenance", [1]), "gives 'provenance'"),
    "source as a list": (lambda m, t: {**m, "source": [1]}, "gives 'source'"),
    "a name that is a number": (_set(2, "name", 5), "gives 'name' of item 2 as int"),
    "a list as manifest": (lambda m, t: [], "is a JSON list"),
    "no items": (lambda m, t: {k: v for k, v in m.items() if k != "items"}, "has no 'items'"),
    "an unknown item type": (_set(1, "type", "dense"), "the type 'dense'"),
    "activations as text": (_set(0, "activations", ["x", "y", "z"]), "activations of item 0"),
    "a cell its tensors do not form": (_set(2, "cell", "lstm"), "does not fit its tensors"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_a_manifest_that_lies_is_refused_with_one_sentence(tmp_path, case):
    change, words = TAMPERING[case]
    path = _tampered(tmp_path, change)
    with pytest.raises(rnnx.FormatError, match=words) as info:
        rnnx.load(path)
    assert str(info.value).startswith(f"{path}: the rnnx manifest")
    assert str(info.value).endswith("write it again with rnnx convert.")


def test_a_lying_manifest_leaves_no_output(tmp_path, cli):
    path = _tampered(tmp_path, _set(0, "provenance", [1]))
    proc = cli("convert", path, tmp_path / "out.onnx")
    assert proc.returncode == 2 and "unexpected" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.rnnx", "tampered.rnnx"]


def test_a_weight_safetensors_cannot_store_is_refused_by_name(tmp_path):
    rng = np.random.default_rng(5)
    lstm = _bundle().layers[0]
    odd = OpaqueLayer("vocab", "Custom", [("vocab/words:0", np.array([b"one", b"two"])),
                                          ("vocab/scale:0", rng.standard_normal(2))])
    with pytest.raises(rnnx.UnsupportedError, match="'vocab/words:0' of layer 'vocab' holds \\|S3"):
        rnnx.save(Bundle([lstm, odd]), tmp_path / "out.rnnx")
    assert list(tmp_path.iterdir()) == []
