"""ONNX external data and the streamed writer: --external-data, the automatic switch above protobuf's limit
(lowered here), reading such models back, verify, onnxruntime loading them from their folder, and the inline
output staying byte for byte what onnx.save writes for the same model held in memory."""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from onnx_helpers import random_layer  # noqa: E402

import rnnx  # noqa: E402
from rnnx.canonical import Bundle  # noqa: E402
from rnnx.formats.onnx_format import external  # noqa: E402
from rnnx.formats.onnx_format.model import build_layers_model  # noqa: E402
from rnnx.graph.to_onnx.builder import build_model  # noqa: E402

FULL = "keras2/cudnn_stack_full.h5"  # whole-model exporter; every tensor is under 1 KiB
LAYERS = "models/k2_layers.h5"  # whole model with one tensor of 1 KiB


@pytest.fixture
def weights_file(tmp_path) -> Path:
    """A Keras 2 weights file (no architecture: the per-layer writer) whose tensors are over 1 KiB."""
    path = tmp_path / "source" / "weights.h5"
    path.parent.mkdir()
    rnnx.save(Bundle([random_layer("lstm", directions=2, units=24, inputs=16, name="enc", seed=4),
                      random_layer("gru", units=20, inputs=48, name="dec", seed=5)]), path)
    return path


def _outputs(model_path: Path, seed=0) -> list[np.ndarray]:
    """Run the model file in onnxruntime (loaded by path, so external data resolves beside it)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        if i.name.endswith(("initial_h", "initial_c")):
            continue
        shape = [d if isinstance(d, int) else (2 if k == 0 else 5) for k, d in enumerate(i.shape)]
        feeds[i.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return session.run(None, feeds)


def _external_tensors(model_path: Path) -> list[onnx.TensorProto]:
    model = onnx.load(model_path, load_external_data=False)
    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


@pytest.mark.parametrize("which", ["per-layer", "whole-model"])
def test_external_data_asked_for_runs_like_the_inline_model(fixtures, weights_file, tmp_path, cli, which):
    src = weights_file if which == "per-layer" else fixtures / LAYERS
    inline, split = tmp_path / "inline.onnx", tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    assert cli("convert", src, inline).returncode == 0
    done = cli("convert", src, split, "--external-data")
    assert done.returncode == 0, done.stderr
    assert "model.onnx.data" in done.stdout
    assert sorted(p.name for p in split.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    stored = _external_tensors(split)
    assert stored and all({e.key: e.value for e in t.external_data}["location"] == "model.onnx.data"
                          for t in stored)
    spans = [(int(info["offset"]), int(info["length"])) for info in
             ({e.key: e.value for e in t.external_data} for t in stored)]
    assert (split.parent / "model.onnx.data").stat().st_size == max(o + n for o, n in spans)
    assert split.stat().st_size < inline.stat().st_size - sum(n for _, n in spans) / 2  # the weights moved out
    for got, want in zip(_outputs(split), _outputs(inline), strict=True):
        assert np.array_equal(got, want)
    # rnnx reads it back (external data beside the model) to the same tensors, and verify passes
    a, b = rnnx.load(split), rnnx.load(inline)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for da, db in zip(la.directions, lb.directions):
            for key, value in db.tensors().items():
                assert np.array_equal(np.asarray(da.tensors()[key]), value)
    checked = cli("verify", src, split)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("which", ["per-layer", "whole-model"])
def test_a_model_over_the_limit_takes_the_external_data_path(fixtures, weights_file, tmp_path, monkeypatch, which):
    monkeypatch.setattr(external, "INLINE_BYTES", 64)  # the fixture's tensors are small
    src = weights_file if which == "per-layer" else fixtures / FULL
    inline = tmp_path / "inline.onnx"
    rnnx.convert(src, inline)
    size = inline.stat().st_size
    below = rnnx.convert(src, tmp_path / "below.onnx", external_data_limit=size)
    assert not (tmp_path / "below.onnx.data").exists() and not any("external" in n for n in below.notes)
    assert (tmp_path / "below.onnx").read_bytes() == inline.read_bytes()
    over = rnnx.convert(src, tmp_path / "over.onnx", external_data_limit=size - 1)
    assert (tmp_path / "over.onnx.data").exists() and _external_tensors(tmp_path / "over.onnx")
    assert any("larger than one protobuf holds" in n for n in over.notes)
    for got, want in zip(_outputs(tmp_path / "over.onnx"), _outputs(inline), strict=True):
        assert np.array_equal(got, want)


def test_streamed_per_layer_model_is_byte_for_byte_what_onnx_save_writes(tmp_path):
    bundle = Bundle([random_layer("lstm", directions=2, units=40, inputs=30, name="lstm", seed=1),
                     random_layer("gru", units=5, inputs=2, name="tiny", seed=2),  # stays inline: < 1 KiB
                     random_layer("rnn", units=33, inputs=20, name="rnn", seed=3, dtype=np.float64)],
                    {"path": "made-in-test", "format": "rnnx"})
    in_memory, _ = build_layers_model(bundle)
    onnx.save(in_memory, tmp_path / "in_memory.onnx")
    rnnx.save(bundle, tmp_path / "streamed.onnx")
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "in_memory.onnx").read_bytes()


@pytest.mark.parametrize("src", [FULL, LAYERS, "models/k2_nested.h5"])
def test_streamed_whole_model_is_byte_for_byte_what_onnx_save_writes(fixtures, tmp_path, src):
    bundle = rnnx.load(fixtures / src)
    in_memory, _ = build_model(bundle)
    onnx.save(in_memory, tmp_path / "in_memory.onnx")
    rnnx.save(bundle, tmp_path / "streamed.onnx")
    assert (tmp_path / "streamed.onnx").read_bytes() == (tmp_path / "in_memory.onnx").read_bytes()


def test_inline_refused_over_protobufs_limit_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(external, "PROTOBUF_LIMIT", 2000)
    bundle = Bundle([random_layer("lstm", units=40, inputs=30, name="lstm")], {"path": "made-in-test"})
    with pytest.raises(rnnx.errors.UnsupportedError, match="--external-data"):
        rnnx.save(bundle, tmp_path / "m.onnx", external_data=False)
    assert list(tmp_path.iterdir()) == []


def test_small_tensors_stay_in_the_model_even_when_external_data_is_asked_for(fixtures, tmp_path):
    result = rnnx.convert(fixtures / FULL, tmp_path / "m.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == [tmp_path / "m.onnx"] and not _external_tensors(tmp_path / "m.onnx")
    assert any("none was moved out of m.onnx" in n for n in result.notes)


def test_external_data_is_an_onnx_option_only(fixtures, tmp_path, cli):
    done = cli("convert", fixtures / FULL, tmp_path / "m.h5", "--external-data")
    assert done.returncode == 2 and "--external-data applies only to onnx" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("external_data", [False, True])
def test_lazy_tensors_are_computed_into_the_output_once_not_staged_in_the_scratch_file(weights_file, tmp_path,
                                                                                     monkeypatch, external_data):
    from rnnx import lazy

    bundle = rnnx.load(weights_file)
    assert all(lazy.is_lazy(d.W) for layer in bundle.layers for d in layer.directions)
    staged = []
    finish = external.WeightStore.finish

    def finishing(self, *args, **kwargs):
        staged.append(self.scratch.stat().st_size)  # what went to the scratch file while the model was built
        return finish(self, *args, **kwargs)

    monkeypatch.setattr(external.WeightStore, "finish", finishing)
    rnnx.save(bundle, tmp_path / "lazy.onnx", external_data=external_data)
    assert staged == [0]
    eager = Bundle([lazy.held(layer) for layer in bundle.layers], dict(bundle.source))
    in_memory, _ = build_layers_model(eager)
    onnx.save(in_memory, tmp_path / "in_memory.onnx")
    if external_data:
        assert _external_tensors(tmp_path / "lazy.onnx")
        for got, want in zip(_outputs(tmp_path / "lazy.onnx"), _outputs(tmp_path / "in_memory.onnx")):
            assert np.array_equal(got, want)
    else:
        assert (tmp_path / "lazy.onnx").read_bytes() == (tmp_path / "in_memory.onnx").read_bytes()
