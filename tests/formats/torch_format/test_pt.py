"""PyTorch .pt reader and writer against real torch modules (torch is the oracle)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import rnnx
from rnnx.canonical import reference

RNG = np.random.default_rng(0)
BATCH, SEQ = 3, 6
PLAIN_STATE_DICTS = ["lstm_stack.pt", "lstm_stack_batch_first.pt", "lstm_proj.pth", "gru_stack.pt",
                     "rnn_nobias.pt", "cells.pt", "gru_fp16.pt"]


def modules_of(bundle):
    """{module prefix: [canonical layers in stack order]} as the reader grouped them."""
    out = {}
    for layer in bundle.layers:
        out.setdefault(layer.provenance["module"], []).append(layer)
    return out


def rebuild(layers, state, batch_first=False):
    """The module `inspect` names (provenance['rebuild'], evaluated), loaded from `state` (strict)."""
    prefix = layers[0].provenance["module"]
    module = eval(layers[0].provenance["rebuild"], {"nn": torch.nn})
    if batch_first:
        module.batch_first = True
    keys = {k[len(prefix) + 1:] if prefix else k: v for k, v in state.items()
            if (k.startswith(prefix + ".") if prefix else "." not in k)}
    if next(iter(state.values())).dtype == torch.float16:
        module = module.half()
    module.load_state_dict(keys, strict=True)
    return module


def torch_outputs(module, x, batch_first=True):
    """Y of the module's last layer [batch, seq, D*hidden] and h_n [L*D, batch, hidden], float32 compute."""
    module = module.float()
    inputs = torch.from_numpy(x)
    with torch.no_grad():
        if isinstance(module, (torch.nn.LSTMCell, torch.nn.GRUCell, torch.nn.RNNCell)):
            h, steps = None, []
            for t in range(x.shape[1]):
                h = module(inputs[:, t], h)
                steps.append(h[0] if isinstance(h, tuple) else h)
            return torch.stack(steps, 1).numpy(), steps[-1].numpy()[None]
        out, state = module(inputs if batch_first else inputs.transpose(0, 1))
        out = out if batch_first else out.transpose(0, 1)
        h_n = state[0] if isinstance(state, tuple) else state
        return out.numpy(), h_n.numpy()


def reference_outputs(layers, x):
    """The canonical layers chained through the numpy reference: last Y [batch, seq, D*hidden], h_n."""
    h_n = []
    for layer in layers:
        Y, Y_h, _ = reference.run_batch_first(layer, x)
        x = Y.reshape(Y.shape[0], Y.shape[1], -1)
        h_n.append(Y_h)
    return x, np.concatenate(h_n)


def assert_module_matches(layers, module, batch_first=True):
    dtype = np.float16 if layers[0].dtype == np.float16 else np.float32
    x = RNG.standard_normal((BATCH, SEQ, layers[0].input_size)).astype(dtype).astype(np.float32)
    want_y, want_h = reference_outputs(layers, x)
    got_y, got_h = torch_outputs(module, x, batch_first)
    assert np.abs(got_y - want_y).max() <= 1e-5
    assert np.abs(got_h - want_h).max() <= 1e-5


@pytest.mark.parametrize("name", PLAIN_STATE_DICTS)
def test_reader_matches_torch_modules(fixtures, name):
    path = fixtures / "torch" / name
    state = torch.load(path, weights_only=True)
    bundle = rnnx.load(path)
    assert bundle.source["format"] == "torch"
    groups = modules_of(bundle)
    assert groups
    for prefix, layers in groups.items():
        batch_first = name == "lstm_stack_batch_first.pt"
        module = rebuild(layers, state, batch_first=batch_first)
        assert_module_matches(layers, module, batch_first=batch_first)
        for k, layer in enumerate(layers):
            assert layer.provenance["format"] == "torch"
            if "stack_index" in layer.provenance:
                assert layer.provenance["stack_index"] == k
                assert layer.provenance["num_layers"] == len(layers)
                assert layer.name == (f"{prefix}.l{k}" if prefix else f"l{k}")


def test_time_major_module_matches_too(fixtures):
    """lstm_stack.pt came from a batch_first=False module: run it time-major."""
    path = fixtures / "torch" / "lstm_stack.pt"
    layers = rnnx.load(path).layers
    module = rebuild(layers, torch.load(path, weights_only=True))
    assert module.batch_first is False
    assert_module_matches(layers, module, batch_first=False)


def test_batch_first_is_not_stored(fixtures):
    a = rnnx.load(fixtures / "torch" / "lstm_stack.pt")
    b = rnnx.load(fixtures / "torch" / "lstm_stack_batch_first.pt")
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert la.provenance["rebuild"] == lb.provenance["rebuild"] == "nn.LSTM(5, 6, num_layers=3, bidirectional=True)"
        for da, db in zip(la.directions, lb.directions, strict=True):
            for key, arr in da.tensors().items():
                assert np.array_equal(arr, db.tensors()[key])


def test_shapes_and_classes(fixtures):
    proj = rnnx.load(fixtures / "torch" / "lstm_proj.pth").layers
    assert [l.proj_size for l in proj] == [3, 3]
    assert [l.input_size for l in proj] == [4, 6]
    assert proj[0].provenance["rebuild"] == "nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)"
    cells = {l.name: l for l in rnnx.load(fixtures / "torch" / "cells.pt").layers}
    assert {n: l.provenance["class_name"] for n, l in cells.items()} == {
        "lstm_cell": "nn.LSTMCell", "gru_cell": "nn.GRUCell", "rnn_cell": "nn.RNNCell"}
    assert cells["rnn_cell"].bias_layout == "none"
    assert cells["rnn_cell"].provenance["rebuild"] == "nn.RNNCell(3, 2, bias=False)"
    assert "tanh is assumed" in cells["rnn_cell"].provenance["assumption"]
    nobias = rnnx.load(fixtures / "torch" / "rnn_nobias.pt").layers
    assert all(l.directions[0].b_w is None and l.directions[0].b_r is None for l in nobias)
    fp16 = rnnx.load(fixtures / "torch" / "gru_fp16.pt").layers[0]
    assert fp16.dtype == np.float16


def test_nested_checkpoint(fixtures):
    path = fixtures / "torch" / "checkpoint.ckpt"
    loaded = torch.load(path, weights_only=True)
    bundle = rnnx.load(path)
    assert bundle.source["checkpoint_key"] == "model"
    assert bundle.source["stripped_prefix"] == "module."
    assert [l.name for l in bundle.layers] == ["encoder.rnn.l0", "encoder.rnn.l1"]
    assert [o.name for o in bundle.others] == ["encoder.norm", "head"]  # the optimizer state is not carried
    state = {k[len("module."):]: v for k, v in loaded["model"].items()}
    module = rebuild(bundle.layers, state)
    assert_module_matches(bundle.layers, module, batch_first=False)


# --- writer ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PLAIN_STATE_DICTS + ["checkpoint.ckpt", "model.safetensors"])
def test_round_trip_reproduces_every_tensor(fixtures, tmp_path, name):
    src = fixtures / "torch" / name
    bundle = rnnx.load(src)
    for suffix in (".pt", ".safetensors"):
        out = tmp_path / f"out{suffix}"
        notes = rnnx.save(bundle, out)
        assert any("nn." in n for n in notes)
        written = (torch.load(out, weights_only=True) if suffix == ".pt"
                   else {k: torch.from_numpy(v) for k, v in _safetensors(out).items()})
        if name == "checkpoint.ckpt":
            original = {k[len("module."):]: v for k, v in torch.load(src, weights_only=True)["model"].items()}
        elif name.endswith(".safetensors"):
            original = {k: torch.from_numpy(v) for k, v in _safetensors(src).items()}
        else:
            original = torch.load(src, weights_only=True)
        assert set(written) == set(original)
        for key, tensor in original.items():
            assert written[key].dtype == tensor.dtype, key
            assert torch.equal(written[key], tensor), key
        if suffix == ".pt" and name in PLAIN_STATE_DICTS:
            assert list(written) == list(original)  # the order of keys too


@pytest.mark.parametrize("name", ["lstm_proj.pth", "cells.pt", "rnn_nobias.pt", "gru_fp16.pt", "checkpoint.ckpt"])
def test_written_file_loads_into_the_inspected_module(fixtures, tmp_path, name):
    bundle = rnnx.load(fixtures / "torch" / name)
    out = tmp_path / "out.pt"
    rnnx.save(bundle, out)
    written = torch.load(out, weights_only=True)
    report = rnnx.inspect(out)
    by_module = modules_of(rnnx.load(out))
    for prefix, layers in by_module.items():
        described = [l for l in report["layers"] if l["provenance"]["module"] == prefix]
        assert described and all(d["provenance"]["rebuild"] == layers[0].provenance["rebuild"] for d in described)
        module = rebuild(layers, written)
        source_layers = [bundle.layer(l.name) for l in layers]
        assert_module_matches(source_layers, module, batch_first=False)


def test_writer_for_foreign_layers(tmp_path):
    """Layers not from torch: one nn.X(num_layers=1) per layer under its name; b_r None -> zero bias_hh."""
    rng = np.random.default_rng(3)
    W, R, b = (rng.standard_normal(s).astype(np.float32) for s in ((16, 3), (16, 4), (16,)))
    lstm = rnnx.RecurrentLayer("enc/lstm 1", "lstm", [rnnx.Direction(W, R, b_w=b)],
                               provenance={"format": "keras-h5", "class_name": "LSTM"})
    kernel = rng.standard_normal((4, 2)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    dense = rnnx.OpaqueLayer("dense_1", None, [("dense_1/kernel:0", kernel), ("dense_1/bias:0", bias)])
    custom = rnnx.OpaqueLayer("attention", None, [("attention/W:0", kernel)])
    out = tmp_path / "x.pt"
    notes = rnnx.save(rnnx.Bundle([lstm, dense, custom]), out)
    assert "enc_lstm_1 = nn.LSTM(3, 4, batch_first=True)  # from 'enc/lstm 1'" in notes
    assert any("dense_1 = nn.Linear(4, 2)" in n for n in notes)
    assert any("skipped 'attention'" in n for n in notes)
    written = torch.load(out, weights_only=True)
    assert sorted(written) == sorted(["enc_lstm_1.weight_ih_l0", "enc_lstm_1.weight_hh_l0", "enc_lstm_1.bias_ih_l0",
                                      "enc_lstm_1.bias_hh_l0", "dense_1.weight", "dense_1.bias"])
    assert not written["enc_lstm_1.bias_hh_l0"].any()
    module = torch.nn.LSTM(3, 4, batch_first=True)
    module.load_state_dict({k.split(".", 1)[1]: v for k, v in written.items() if k.startswith("enc_lstm_1.")})
    assert_module_matches([lstm], module)
    linear = torch.nn.Linear(4, 2)
    linear.load_state_dict({"weight": written["dense_1.weight"], "bias": written["dense_1.bias"]})
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        assert np.abs(linear(torch.from_numpy(x)).numpy() - (x @ kernel + bias)).max() <= 1e-5


def test_partial_stack_is_written_as_its_own_module(fixtures, tmp_path):
    bundle = rnnx.load(fixtures / "torch" / "gru_stack.pt").only("gru.l1")
    out = tmp_path / "l1.pt"
    notes = rnnx.save(bundle, out)
    assert notes == ["gru_l1 = nn.GRU(5, 5)  # from 'gru.l1'"]
    written = torch.load(out, weights_only=True)
    assert sorted(written) == ["gru_l1.bias_hh_l0", "gru_l1.bias_ih_l0", "gru_l1.weight_hh_l0",
                               "gru_l1.weight_ih_l0"]
    report = rnnx.verify(fixtures / "torch" / "gru_stack.pt", out, layer="gru.l1")
    assert report["ok"] and report["layers"][0]["max_abs_error"] <= 1e-5


@pytest.mark.parametrize("name", ["lstm_stack.pt", "cells.pt", "gru_fp16.pt", "lstm_proj.pth"])
def test_verify_runs_the_written_file_in_torch(fixtures, tmp_path, name):
    out = tmp_path / "out.pt"
    result = rnnx.convert(fixtures / "torch" / name, out, verify=True)
    assert result.verification["ok"]
    for layer in result.verification["layers"]:
        assert layer["max_abs_error"] <= 1e-5


def test_cli_inspect_prints_the_constructor(cli, fixtures):
    done = cli("inspect", fixtures / "torch" / "lstm_stack.pt")
    assert done.returncode == 0, done.stderr
    assert "rebuild: nn.LSTM(5, 6, num_layers=3, bidirectional=True)" in done.stdout
    done = cli("inspect", fixtures / "torch" / "rnn_nobias.pt")
    assert "nn.RNN(3, 4, num_layers=2, bias=False, bidirectional=True)" in done.stdout
    assert "tanh is assumed" in done.stdout


# --- the real checkpoint ----------------------------------------------------------------------

def test_gtcrn_checkpoint_finds_every_gru(corpus):
    import onnx

    path = corpus / "torch" / "gtcrn_checkpoint.tar"
    bundle = rnnx.load(path)
    onnx_grus = [n for n in onnx.load(str(corpus / "onnx" / "gtcrn_gru.onnx")).graph.node if n.op_type == "GRU"]
    assert len(bundle.layers) == len(onnx_grus) == 14
    assert all(l.cell == "gru" and l.provenance["class_name"] == "nn.GRU" for l in bundle.layers)
    assert sum(l.num_directions == 2 for l in bundle.layers) == 4
    state = torch.load(path, weights_only=True, map_location="cpu")["model"]
    for layers in modules_of(bundle).values():
        assert_module_matches(layers, rebuild(layers, state), batch_first=False)


# --- refusals and bad input ---------------------------------------------------------------------

def test_pickle_code_is_refused_and_never_runs(cli, fixtures, tmp_path):
    src = fixtures / "torch" / "pickled_code.pt"
    done = cli("inspect", src, cwd=tmp_path)
    assert done.returncode == 2
    assert "arbitrary pickle code" in done.stderr and "Traceback" not in done.stderr
    done = cli("convert", src, tmp_path / "out.safetensors", cwd=tmp_path)
    assert done.returncode == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no marker, no output, no temp file
    # the control: an unrestricted torch.load really runs the fixture's code
    control = tmp_path / "control"
    control.mkdir()
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(src)!r}, weights_only=False)"],
                   cwd=control, check=True, capture_output=True)
    assert (control / "rnnx_pickle_marker").exists()


def test_whole_pickled_module_is_refused(tmp_path, cli):
    path = tmp_path / "model.pt"
    torch.save(torch.nn.LSTM(2, 3), path)
    done = cli("inspect", path)
    assert done.returncode == 2 and "arbitrary pickle code" in done.stderr


@pytest.mark.parametrize("content, words", [
    (b"", "not a readable PyTorch file"),
    (b"PK\x03\x04 truncated zip", "cannot be opened"),
])
def test_broken_files(tmp_path, cli, content, words):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    done = cli("inspect", path)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr


def test_truncated_checkpoint(tmp_path, cli, fixtures):
    path = tmp_path / "cut.pt"
    path.write_bytes((fixtures / "torch" / "gru_stack.pt").read_bytes()[:2000])
    done = cli("inspect", path)
    assert done.returncode == 2 and str(path) in done.stderr and "Traceback" not in done.stderr


def test_mixed_dtypes_refused(tmp_path, cli):
    state = torch.nn.GRU(2, 3).state_dict()
    state["bias_hh_l0"] = state["bias_hh_l0"].double()
    torch.save(state, tmp_path / "mixed.pt")
    done = cli("convert", tmp_path / "mixed.pt", tmp_path / "out.safetensors")
    assert done.returncode == 2 and "mixes dtypes" in done.stderr
    assert not (tmp_path / "out.safetensors").exists()


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_inspect_json_follows_the_schema(fixtures, cli):
    import json

    import jsonschema

    schema = json.loads((fixtures.parent.parent / "schemas" / "inspect.schema.json").read_text())
    done = cli("inspect", "--json", fixtures / "torch" / "checkpoint.ckpt")
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), schema)
    for name in PLAIN_STATE_DICTS + ["model.safetensors"]:
        report = rnnx.inspect(fixtures / "torch" / name)
        jsonschema.validate(report, schema)
        assert all(layer["targets"]["torch"] == "ok" for layer in report["layers"])


def test_round_trip_through_rnnx_file(fixtures, tmp_path):
    """torch -> .rnnx -> .pt: the provenance kept in the manifest puts every stacked layer back."""
    src = fixtures / "torch" / "lstm_proj.pth"
    rnnx.convert(src, tmp_path / "model.rnnx")
    rnnx.convert(tmp_path / "model.rnnx", tmp_path / "back.pt")
    original = torch.load(src, weights_only=True)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert list(back) == list(original)
    assert all(torch.equal(back[k], v) for k, v in original.items())


def test_bfloat16(tmp_path, cli):
    state = {**torch.nn.GRU(2, 3).state_dict(), "head.weight": torch.ones(2, 3, dtype=torch.bfloat16)}
    torch.save(state, tmp_path / "mixed.pt")
    bundle = rnnx.load(tmp_path / "mixed.pt")
    assert bundle.others[0].weights[0][1].dtype == np.float32
    assert "head.weight: bfloat16 read as float32" in bundle.source["notes"]
    torch.save(torch.nn.GRU(2, 3).bfloat16().state_dict(), tmp_path / "bf16.pt")
    done = cli("inspect", tmp_path / "bf16.pt")
    assert done.returncode == 2 and "is bfloat16" in done.stderr and "model.float()" in done.stderr


def _zip_pickle(path, pickled: bytes):
    """A torch-style zip archive around hand-made pickle bytes (what torch.save could never write)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


@pytest.mark.parametrize("name, pickled, words", [
    # 100 000 dicts, each inside the one before: {'a': {'a': {...}}}
    ("deep.pt", b"\x80\x02" + (b"}X\x01\x00\x00\x00a") * 100_000 + b"}" + b"s" * 100_000 + b".",
     "nested more than 64 deep"),
    # d = {}; d['me'] = d, through the pickle memo
    ("cycle.pt", b"\x80\x02}q\x00X\x02\x00\x00\x00meh\x00s.", "contains itself"),
])
def test_hostile_nesting_is_refused_in_a_sentence(cli, tmp_path, name, pickled, words):
    src = _zip_pickle(tmp_path / name, pickled)
    done = cli("inspect", src)
    assert done.returncode == 2 and words in done.stderr and str(src) in done.stderr, done.stderr
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
