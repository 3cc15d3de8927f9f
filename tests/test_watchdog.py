"""The watchdog: --timeout / timeout= end work stuck in native code (the GIL held) with exit 2, one
sentence naming the file, and no partial output.

Native blocking is made two ways: a reader or writer step slowed by libc's sleep() called through
ctypes.PyDLL (which, unlike CDLL, keeps the GIL for the call, as h5py does around libhdf5), and the
real files fuzzing found on which libhdf5 loops forever or segfaults (tests/fuzz_regressions/keras2).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rnnx
from rnnx.cli import INSPECT_TIMEOUT_S, build_parser
from rnnx.formats.keras2 import h5 as keras2_h5

REGRESSIONS = Path(__file__).parent / "fuzz_regressions" / "keras2"
HANG = REGRESSIONS / "libhdf5_hang_global_heap.h5"
SEGFAULT = REGRESSIONS / "libhdf5_segv_vlen_attribute.h5"
NATIVE_SLEEP_S = 60  # far past every deadline below: a test that waited for it would take a minute

# Run the CLI with one step of the Keras 2 reader or writer blocked in C. A Python thread started just
# before the sleep would touch THREAD_RAN after 0.2 s: it never can while the GIL is held, which is why
# a signal handler or watchdog thread in the same process cannot end such a read.
BLOCKED_CLI = """
import ctypes, sys, threading, time
from contextlib import contextmanager
from pathlib import Path
import rnnx.formats.keras2.h5 as keras2_h5
from rnnx.cli import main

def block(marker):
    threading.Thread(target=lambda: (time.sleep(0.2), Path(marker).touch()), daemon=True).start()
    ctypes.PyDLL(None).sleep({sleep})

step, marker, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if step == "read":
    original_read = keras2_h5.read
    def read(*a, **k):
        block(marker)
        return original_read(*a, **k)
    keras2_h5.read = read
else:
    original_output = keras2_h5.atomic_output
    @contextmanager
    def atomic_output(dst):
        with original_output(dst) as tmp:
            yield tmp
            print("temporary", tmp, flush=True)  # the whole file is written; the rename has not happened
            block(marker)
    keras2_h5.atomic_output = atomic_output
sys.exit(main(argv))
""".format(sleep=NATIVE_SLEEP_S)


def run(args, timeout=120):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    return proc, time.monotonic() - started


# TensorFlow's C++ start-up log (absl lines such as "I0000 00:00:... port.cc:153] oneDNN custom operations
# are on"), printed by the child of `--engine tf2onnx` when its import gets that far before the deadline.
TF_STARTUP_LOG = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWE]\d{4} )")


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not TF_STARTUP_LOG.match(line)]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rnnx: ") and lines[0].endswith("."), lines
    return lines[0]


def test_inspect_stops_a_reader_blocked_in_native_code(fixtures, tmp_path):
    src = fixtures / "keras2" / "cudnn_stack_full.h5"
    marker = tmp_path / "thread_ran"
    proc, elapsed = run(["-c", BLOCKED_CLI, "read", marker, "inspect", src, "--timeout", "2"])
    assert proc.returncode == 2, proc.stderr
    assert elapsed < NATIVE_SLEEP_S / 2
    message = one_sentence(proc.stderr)
    assert str(src) in message and "did not finish within 2 s" in message
    assert proc.stdout == ""
    assert not marker.exists()  # the GIL was held the whole time: no Python-level watchdog could have run


def test_convert_stopped_while_writing_leaves_no_partial_file(fixtures, tmp_path):
    src, dst = fixtures / "keras2" / "cudnn_stack_full.h5", tmp_path / "out" / "cpu.h5"
    dst.parent.mkdir()
    proc, elapsed = run(["-c", BLOCKED_CLI, "write", tmp_path / "marker", "convert", src, dst, "--timeout", "3"])
    assert proc.returncode == 2, proc.stderr
    assert elapsed < NATIVE_SLEEP_S / 2
    temporary = Path(proc.stdout.split("temporary ", 1)[1].split()[0])
    assert temporary.parent == dst.parent  # it existed, fully written, when the deadline passed
    assert list(dst.parent.iterdir()) == []  # neither DST nor the temporary file is left
    message = one_sentence(proc.stderr)
    assert str(src) in message and str(dst) in message and "nothing was written" in message


def test_timeout_1_on_a_conversion_that_is_only_slow(fixtures, tmp_path):
    # --engine tf2onnx imports TensorFlow and runs tf_keras: seconds of legitimate work
    dst = tmp_path / "model.onnx"
    proc, elapsed = run(["-m", "rnnx", "convert", fixtures / "models" / "k2_seed_cudnn.h5", dst,
                         "--engine", "tf2onnx", "--timeout", "1"])
    assert proc.returncode == 2, proc.stderr
    assert elapsed < 30
    # TensorFlow may log a few lines of its own while it starts; rnnx's part is its one sentence, last
    rnnx_lines = [line for line in proc.stderr.splitlines() if line.startswith("rnnx")]
    assert rnnx_lines == proc.stderr.strip().splitlines()[-1:]
    assert "did not finish within 1 s" in one_sentence(rnnx_lines[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.parent.glob("*/libhdf5_*") if "_oom_" not in p.name),
                         ids=lambda p: p.name)
def test_fuzzed_files_that_hang_or_crash_libhdf5_end_with_exit_2(path):
    proc, elapsed = run(["-m", "rnnx", "inspect", path, "--timeout", "3"])
    assert proc.returncode == 2 and elapsed < 30, proc.stderr
    message = one_sentence(proc.stderr)
    if "_hang_" in path.name:
        assert f"reading {path} did not finish within 3 s" in message
    else:
        assert f"reading {path} crashed in native code (signal SIGSEGV)" in message


def test_inspect_puts_the_read_in_a_child_by_default():
    proc, _ = run(["-m", "rnnx", "inspect", SEGFAULT])  # no --timeout: inspect's default deadline
    assert proc.returncode == 2, proc.stderr
    assert "crashed in native code (signal SIGSEGV)" in one_sentence(proc.stderr)


def test_deadline_defaults_and_refusals(cli, fixtures):
    parser = build_parser()
    assert parser.parse_args(["inspect", "x"]).timeout == INSPECT_TIMEOUT_S
    assert parser.parse_args(["convert", "a", "b"]).timeout is None
    assert parser.parse_args(["verify", "a", "b"]).timeout is None
    proc = cli("inspect", fixtures / "keras2" / "cudnn_stack_full.h5", "--timeout", "-1")
    assert proc.returncode == 2 and "timeout must be a number of seconds" in one_sentence(proc.stderr)
    with pytest.raises(rnnx.UsageError):
        rnnx.load(fixtures / "keras2" / "cudnn_stack_full.h5", timeout="soon")


def test_api_timeout_returns_the_same_results_and_errors(fixtures, tmp_path):
    src = fixtures / "keras2" / "cudnn_stack_full.h5"
    assert rnnx.inspect(src, timeout=60) == rnnx.inspect(src)
    bundle = rnnx.load(src, timeout=60)
    assert [layer.name for layer in bundle.layers] == [layer.name for layer in rnnx.load(src).layers]
    result = rnnx.convert(src, tmp_path / "cpu.h5", timeout=60)
    assert result.target_format == "keras-h5" and (tmp_path / "cpu.h5").is_file()
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(rnnx.FormatError, match="not a format rnnx reads"):  # the child's error, class kept
        rnnx.load(text, timeout=60)
    started = time.monotonic()
    with pytest.raises(rnnx.DeadlineError, match=f"reading {HANG} did not finish within 2 s"):
        rnnx.load(HANG, timeout=2)
    assert time.monotonic() - started < 30


def test_api_convert_past_its_deadline_leaves_nothing(fixtures, tmp_path, monkeypatch):
    import ctypes
    from contextlib import contextmanager

    original_output = keras2_h5.atomic_output

    @contextmanager
    def slow_output(dst):
        with original_output(dst) as tmp:
            yield tmp
            ctypes.PyDLL(None).sleep(NATIVE_SLEEP_S)

    monkeypatch.setattr(keras2_h5, "atomic_output", slow_output)  # the forked child inherits it
    dst = tmp_path / "cpu.h5"
    with pytest.raises(rnnx.DeadlineError, match="nothing was written"):
        rnnx.convert(fixtures / "keras2" / "cudnn_stack_full.h5", dst, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_the_inspect_child_imports_no_framework(corpus):
    """inspect now reads in a child process, so a probe of the parent's sys.modules would prove nothing:
    -X importtime logs the imports of both processes (the forked child keeps the flag)."""
    src = corpus / "keras2" / "stockprice_cudnnlstm4_full.h5"
    proc, _ = run(["-X", "importtime", "-m", "rnnx", "inspect", src])
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert {"h5py", "rnnx"} <= imported  # the log does hold the reader's imports
    assert not imported & {"torch", "tensorflow", "tf_keras", "keras", "jax"}


MAX_RSS_OF_DESCENDANTS = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "rnnx", "inspect", sys.argv[1]], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB, the largest descendant
"""


@pytest.mark.parametrize("path", sorted(REGRESSIONS.parent.glob("*/libhdf5_oom_*")), ids=lambda p: p.name)
def test_fuzzed_files_that_make_libhdf5_allocate_gigabytes_end_within_the_memory_cap(path):
    """Without a cap, libhdf5 allocated 2-4 GB for a global-heap object of these tiny files before failing; the
    inspect child's data limit (watchdog.inspect_memory_cap) makes that allocation fail instead."""
    from rnnx.watchdog import inspect_memory_cap

    proc, _ = run(["-c", MAX_RSS_OF_DESCENDANTS, path])
    code, max_rss_kib = map(int, proc.stdout.split())
    assert code == 2, proc.stderr
    assert "memory allocation failed" in one_sentence(proc.stderr)
    assert max_rss_kib * 1024 <= inspect_memory_cap(path)
