"""The CLI contract that holds for every format: help, exit codes, one-sentence errors, no partial files."""

import numpy as np
import pytest

import rnnx
from rnnx.canonical import Bundle, Direction, RecurrentLayer


def _rnnx_file(path):
    rng = np.random.default_rng(0)
    d = Direction(W=rng.standard_normal((8, 3)).astype(np.float32), R=rng.standard_normal((8, 2)).astype(np.float32),
                  b_w=rng.standard_normal(8).astype(np.float32))
    rnnx.save(Bundle([RecurrentLayer("lstm", "lstm", [d])]), path)
    return path


def _one_plain_error(proc):
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert 1 <= len(lines) <= 2, proc.stderr
    return proc.stderr


def test_help_explains_every_command(cli):
    proc = cli("--help")
    assert proc.returncode == 0
    for word in ("inspect", "convert", "verify", "demo", "exit status"):
        assert word in proc.stdout
    assert "--verify" in cli("convert", "--help").stdout


def test_no_command_is_a_usage_error(cli):
    assert cli().returncode == 2


def test_missing_source(cli, tmp_path):
    proc = cli("inspect", tmp_path / "nope.h5")
    assert proc.returncode == 2
    assert "no such file" in _one_plain_error(proc)


def test_folder_as_source(cli, tmp_path):
    proc = cli("inspect", tmp_path)
    assert proc.returncode == 2
    assert "folder" in _one_plain_error(proc)


def test_unknown_content(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = cli("inspect", tmp_path / "notes.txt")
    assert proc.returncode == 2
    assert "notes.txt" in _one_plain_error(proc)


def test_destination_equal_to_source_is_refused(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    before = src.read_bytes()
    proc = cli("convert", src, tmp_path / "." / "a.rnnx")
    assert proc.returncode == 2
    assert "source" in _one_plain_error(proc)
    assert src.read_bytes() == before


def test_unknown_target_suffix(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "out.xyz")
    assert proc.returncode == 2
    assert "--to" in _one_plain_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rnnx"]


def test_missing_destination_folder(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "no" / "such" / "out.rnnx")
    assert proc.returncode == 2
    assert "does not exist" in _one_plain_error(proc)


def test_unknown_layer_names_the_layers(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "b.rnnx", "--layer", "nope")
    assert proc.returncode == 2
    assert "lstm" in _one_plain_error(proc)
    assert not (tmp_path / "b.rnnx").exists()


def test_convert_and_inspect_rnnx(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "b.rnnx")
    assert proc.returncode == 0, proc.stderr
    proc = cli("inspect", tmp_path / "b.rnnx")
    assert proc.returncode == 0, proc.stderr
    assert "lstm: LSTM (lstm), units 2" in proc.stdout


def test_debug_shows_the_traceback(cli, tmp_path):
    proc = cli("--debug", "inspect", tmp_path / "nope.h5")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr


def test_output_cut_short_by_a_pipe_is_no_error(tmp_path):
    import os
    import subprocess
    import sys

    src = _rnnx_file(tmp_path / "a.rnnx")
    # a reader that leaves at once, as `| head -0` does: the CLI must not print an error
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-m", "rnnx", "inspect", "--json", str(src)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err == b"", err
    assert proc.returncode == 0


@pytest.mark.parametrize("dst, flags", [
    ("out.onnx", ["--cudnn"]),
    ("out.h5", ["--time-major"]),
    ("out.pt", ["--opset", "14"]),
    ("out.h5", ["--engine", "tf2onnx"]),
    ("out.h5", ["--accept-activation-change"]),
])
def test_an_option_the_target_ignores_is_a_usage_error(cli, tmp_path, dst, flags):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / dst, *flags)
    assert proc.returncode == 2
    assert flags[0] in _one_plain_error(proc) and "Leave" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rnnx"]


def test_options_for_their_own_target_still_work(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "out.onnx", "--opset", "17", "--time-major", "--engine", "native")
    assert proc.returncode == 0, proc.stderr


def test_opset_zero_is_refused_not_ignored(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "out.onnx", "--opset", "0")
    assert proc.returncode == 2 and "opset 0" in _one_plain_error(proc)


def test_tf2onnx_engine_without_an_architecture_is_refused(cli, tmp_path):
    src = _rnnx_file(tmp_path / "a.rnnx")
    proc = cli("convert", src, tmp_path / "out.onnx", "--engine", "tf2onnx")
    assert proc.returncode == 2 and "no model architecture" in _one_plain_error(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rnnx"]


def test_a_zip_whose_member_names_are_not_utf8_is_a_format_error(cli, tmp_path):
    import zipfile

    src = tmp_path / "names.pt"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("archive/d\u00e1ta.pkl", b"\x80\x02}q\x00.")  # non-ASCII: zipfile marks the name UTF-8
    src.write_bytes(src.read_bytes().replace("\u00e1".encode(), b"\xff\xff"))
    proc = cli("inspect", src)
    assert proc.returncode == 2 and "unexpected" not in proc.stderr
    assert str(src) in _one_plain_error(proc) and "cannot be opened" in proc.stderr


@pytest.mark.parametrize("name, members, words", [
    ("model.keras", {"readme.txt": "hi"}, "has no config.json member"),
    ("model.keras", {"config.json": "{}"}, "has no model.weights.h5 member"),
    ("model.onnx", {"readme.txt": "hi"}, "neither a Keras 3 model"),
    ("model.h5", {"word/document.xml": "<x/>"}, "neither a Keras 3 model"),
])
def test_a_zip_archive_of_another_kind_is_named_for_what_it_lacks(cli, tmp_path, name, members, words):
    import zipfile

    src = tmp_path / name
    with zipfile.ZipFile(src, "w") as zf:
        for member, text in members.items():
            zf.writestr(member, text)
    proc = cli("inspect", src)
    assert proc.returncode == 2 and words in _one_plain_error(proc) and str(src) in proc.stderr
    assert "torch.save" not in proc.stderr or "neither" in proc.stderr


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_config_for_a_file_that_takes_none_is_a_usage_error(cli, tmp_path, command):
    src = _rnnx_file(tmp_path / "a.rnnx")
    arch = tmp_path / "model.json"
    arch.write_text('{"class_name": "Sequential", "config": {"layers": []}}')
    args = [src, tmp_path / "out.keras"] if command == "convert" else [src]
    proc = cli(command, *args, "--config", arch)
    assert proc.returncode == 2 and "leave --config out" in _one_plain_error(proc) and str(src) in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.rnnx", "model.json"]


def test_names_from_a_file_cannot_drive_the_terminal(cli, tmp_path):
    rng = np.random.default_rng(0)
    d = Direction(W=rng.standard_normal((3, 2)).astype(np.float32), R=rng.standard_normal((3, 3)).astype(np.float32))
    src = tmp_path / "a.rnnx"
    rnnx.save(Bundle([RecurrentLayer("evil\x1b]0;owned\x07\x1b[2J\rname", "rnn", [d])]), src)
    shown = cli("inspect", src)
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and "\r" not in shown.stdout
    assert "evil\\x1b]0;owned\\x07\\x1b[2J\\rname" in shown.stdout
    refused = cli("convert", src, tmp_path / "out.onnx", "--layer", "nope")
    assert refused.returncode == 2 and "\x1b" not in refused.stderr and "evil\\x1b" in refused.stderr


# --- a file converted with --layer, and --layer with a PyTorch module name -----------------------------

def _result_rows(stdout):
    """The per-layer rows of the verify table (name, errors, noise floor, result)."""
    return [line for line in stdout.splitlines() if "(tolerance" in line]


@pytest.mark.parametrize("suffix", ["onnx", "pt", "weights.h5"])
def test_a_file_holding_one_converted_layer_is_verified_with_that_layer(cli, fixtures, tmp_path, suffix):
    """cudnn_stack_weights.h5 holds lstm_a, gru_b, lstm_c; `convert --layer gru_b` writes gru_b only.
    `verify SRC DST` says to add `--layer gru_b` (exit 2); with it, verify reports exactly the rows that
    `convert --layer gru_b --verify` reported."""
    src, dst = fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / f"gru_b.{suffix}"
    converted = cli("convert", src, dst, "--layer", "gru_b", "--verify")
    assert converted.returncode == 0, converted.stderr
    verified = cli("verify", src, dst, "--layer", "gru_b")
    assert verified.returncode == 0, verified.stderr
    rows = _result_rows(converted.stdout)
    assert len(rows) == 1 and rows[0].startswith("gru_b") and rows == _result_rows(verified.stdout)
    whole = cli("verify", src, dst)
    assert whole.returncode == 2
    message = _one_plain_error(whole)
    assert "holds 1 of the 3 recurrent layers" in message and "--layer gru_b`" in message


def test_verify_layer_still_fails_for_a_layer_the_file_does_not_hold(cli, fixtures, tmp_path):
    src, dst = fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / "gru_b.onnx"
    assert cli("convert", src, dst, "--layer", "gru_b").returncode == 0
    wrong = cli("verify", src, dst, "--layer", "lstm_a")
    assert wrong.returncode == 1
    assert "verify with --layer NAME" in _one_plain_error(wrong)


def test_two_of_three_layers_name_every_choice(cli, tmp_path):
    layers = [RecurrentLayer(name, "lstm", [_direction(seed)]) for seed, name in enumerate(("a", "b", "c"))]
    rnnx.save(Bundle(layers), tmp_path / "all.rnnx")
    rnnx.save(Bundle(layers[1:]), tmp_path / "two.rnnx")
    proc = cli("verify", tmp_path / "all.rnnx", tmp_path / "two.rnnx")
    assert proc.returncode == 2
    assert "holds 2 of the 3 recurrent layers" in _one_plain_error(proc) and "NAME one of: b, c." in proc.stderr


def _direction(seed):
    rng = np.random.default_rng(seed)
    return Direction(W=rng.standard_normal((8, 3)).astype(np.float32), R=rng.standard_normal((8, 2)).astype(np.float32),
                     b_w=rng.standard_normal(8).astype(np.float32))


def test_layer_with_a_pytorch_module_name_converts_its_stack_as_one_unit(cli, fixtures, tmp_path):
    """gru_stack.pt: `gru = nn.GRU(4, 5, num_layers=2, batch_first=True)` read as gru.l0, gru.l1.
    `--layer gru` writes the one chained ONNX unit with the per-layer names (X, initial_h -> Y, Y_h),
    which onnxruntime runs as torch runs the module; verify --layer gru agrees with convert --verify."""
    import onnx
    import onnxruntime as ort
    import torch

    src, dst = fixtures / "torch" / "gru_stack.pt", tmp_path / "gru.onnx"
    converted = cli("convert", src, dst, "--layer", "gru", "--verify")
    assert converted.returncode == 0, converted.stderr
    assert "2 recurrent layers" in converted.stdout
    rows = _result_rows(converted.stdout)
    assert [r.split()[0] for r in rows] == ["gru.l0", "gru.l1"]
    verified = cli("verify", src, dst, "--layer", "gru")
    assert verified.returncode == 0 and _result_rows(verified.stdout) == rows, verified.stderr
    model = onnx.load(dst)
    assert [i.name for i in model.graph.input] == ["X", "initial_h"]
    assert [o.name for o in model.graph.output] == ["Y", "Y_h"]
    assert [n.name for n in model.graph.node if n.op_type == "GRU"] == ["gru.l0", "gru.l1"]

    module = torch.nn.GRU(4, 5, num_layers=2, batch_first=True)
    state = torch.load(src, weights_only=True)
    module.load_state_dict({k[len("gru."):]: v for k, v in state.items() if k.startswith("gru.")})
    x = np.random.default_rng(5).standard_normal((3, 7, 4)).astype(np.float32)
    h0 = np.random.default_rng(6).standard_normal((2, 3, 5)).astype(np.float32)
    with torch.no_grad():
        want_y, want_h = (t.numpy() for t in module(torch.from_numpy(x), torch.from_numpy(h0)))
    got_y, got_h = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(
        ["Y", "Y_h"], {"X": x, "initial_h": h0})
    assert float(np.abs(got_y - want_y).max()) <= 1e-5 and float(np.abs(got_h - want_h).max()) <= 1e-5


def test_an_unknown_layer_lists_the_stacked_modules_too(cli, fixtures, tmp_path):
    proc = cli("convert", fixtures / "torch" / "checkpoint.ckpt", tmp_path / "x.onnx", "--layer", "encoder")
    assert proc.returncode == 2
    message = _one_plain_error(proc)
    assert "encoder.rnn.l0, encoder.rnn.l1" in message and "stacked modules, each one unit: encoder.rnn" in message
    assert not (tmp_path / "x.onnx").exists()


def test_a_file_converted_from_one_module_is_verified_with_the_module_name(cli, tmp_path):
    """enc = nn.GRU(3, 4, num_layers=2) and dec = nn.LSTM(4, 2); `--layer enc` writes enc.l0, enc.l1."""
    import torch

    net = torch.nn.Module()
    net.enc, net.dec = torch.nn.GRU(3, 4, num_layers=2), torch.nn.LSTM(4, 2)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    dst = tmp_path / "enc.onnx"
    assert cli("convert", tmp_path / "net.pt", dst, "--layer", "enc").returncode == 0
    whole = cli("verify", tmp_path / "net.pt", dst)
    assert whole.returncode == 2
    assert "holds 2 of the 3 recurrent layers" in _one_plain_error(whole) and "`--layer enc`" in whole.stderr
    verified = cli("verify", tmp_path / "net.pt", dst, "--layer", "enc")
    assert verified.returncode == 0 and [r.split()[0] for r in _result_rows(verified.stdout)] == ["enc.l0", "enc.l1"]
