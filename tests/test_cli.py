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
