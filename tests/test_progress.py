"""Progress: the API callback sees the bytes read and written; the terminal bar draws after its delay and
clears its line; the CLI prints nothing on a stderr that is not a terminal."""

import io

import numpy as np
import pytest

import rnnx
from rnnx.progress import Event, TerminalBar


@pytest.mark.parametrize("suffix", [".h5", ".onnx", ".safetensors", ".rnnx", ".pt"])
def test_callback_sees_every_tensor_read_and_written(fixtures, tmp_path, suffix):
    src = fixtures / "keras2" / "cudnn_bidir_weights.h5"
    events: list[Event] = []
    rnnx.convert(src, tmp_path / f"out{suffix}", progress=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "read" in kinds and "write" in kinds
    bundle = rnnx.load(src)
    stored = sum(np.asarray(t).nbytes for layer in bundle.layers for d in layer.directions
                 for t in d.tensors().values()) + sum(np.asarray(w).nbytes for o in bundle.others for _, w in o.weights)
    assert events[0].total == stored
    recurrent = stored - sum(np.asarray(w).nbytes for o in bundle.others for _, w in o.weights)
    assert sum(e.nbytes for e in events if e.kind == "read") >= recurrent  # per-layer targets drop the rest
    assert sum(e.nbytes for e in events if e.kind == "write") >= recurrent * 0.9  # Keras sums the CuDNN biases


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_terminal_bar_waits_for_its_delay_then_draws_one_line_and_clears_it():
    stream, clock = io.StringIO(), _Clock()
    bar = TerminalBar(stream, delay=1.0, clock=clock)
    bar(Event("start", total=4_000_000))
    bar(Event("read", 1_000_000, "model.h5:lstm/kernel:0"))
    assert stream.getvalue() == ""  # a quick conversion shows nothing
    clock.now = 1.5
    bar(Event("read", 1_000_000, "model.h5:lstm/recurrent_kernel:0"))
    assert "read 2/4 MB" in stream.getvalue() and "recurrent_kernel" in stream.getvalue()
    assert stream.getvalue().startswith("\r[" + "#" * 12 + "." * 12 + "]")
    bar(Event("done"))
    assert stream.getvalue().endswith("\r\x1b[K")


def test_cli_prints_no_progress_when_stderr_is_not_a_terminal(fixtures, tmp_path, cli):
    done = cli("convert", fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / "out.onnx")
    assert done.returncode == 0 and done.stderr == ""
    quiet = cli("convert", fixtures / "keras2" / "cudnn_stack_weights.h5", tmp_path / "q.onnx", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
