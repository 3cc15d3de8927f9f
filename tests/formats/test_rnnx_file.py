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
