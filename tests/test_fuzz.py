"""The short fixed-seed fuzz run CI makes (scripts/fuzz.py, atheris), and its replay of saved inputs.

Every reader family gets a fixed number of inputs from a fixed seed (the same inputs on every run of
the same code); keras2 also gets the 30-second run the README names. A finding fails the test unless
it is one of libhdf5's own hangs or crashes that the watchdog contains (`rnnx inspect --timeout`
exits 2 on it in time), which fuzz.py checks for each such finding.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FUZZ = ROOT / "scripts" / "fuzz.py"
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
RUNS = 300  # per target; at 30-300 inputs/s on a shared 2-core machine this is 5-20 s each
FIXED_SEED_TARGETS = ("keras2-config", "keras3-weights", "keras3-archive", "keras3-config", "onnx", "torch", "safetensors",
                      "rnnx", "tensorflow")


def fuzz(*args, timeout=300):
    proc = subprocess.run([sys.executable, str(FUZZ), "--json", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, results


def assert_no_open_findings(result):
    for finding in result["findings"]:
        assert finding["library"] and finding.get("contained"), (
            f"{result['target']}: {finding['kind']} {finding['what']} at {finding['where']}, input saved as "
            f"{finding.get('file')}")


@pytest.mark.parametrize("target", FIXED_SEED_TARGETS)
def test_fixed_seed_fuzz_run(target, tmp_path):
    proc, results = fuzz("--target", target, "--runs", RUNS, "--seconds", 120, "--seed", 1, "--input-timeout", 5,
                         "--findings", tmp_path)
    assert len(results) == 1, proc.stdout + proc.stderr
    result = results[0]
    assert result["target"] == target
    assert result["inputs"] >= RUNS or result["seconds"] >= 119, result  # ran its inputs (or its time cap)
    assert result["coverage"] > 0 and result["corpus"] > 0, result
    assert_no_open_findings(result)
    assert proc.returncode == (1 if result["findings"] else 0)


def test_keras2_thirty_seconds(tmp_path):
    proc, results = fuzz("--seconds", 30, "--target", "keras2", "--seed", 1, "--input-timeout", 5,
                         "--findings", tmp_path)
    assert len(results) == 1, proc.stdout + proc.stderr
    result = results[0]
    assert result["target"] == "keras2" and result["inputs"] > 0 and result["coverage"] > 0, result
    assert 25 <= result["seconds"] <= 120, result
    for finding in result["findings"]:
        assert Path(finding["file"]).is_file()  # every finding is saved as a reproducer
    # libhdf5 on a damaged global heap can allocate 2-4 GB before failing (tests/fuzz_regressions/keras2/
    # libhdf5_oom_*): the fuzzer calls the reader in its own process, without the memory cap the CLI's inspect
    # child has (tests/test_watchdog.py proves that cap contains them), and libFuzzer's memory check prints no
    # Python stack to tell where, so out-of-memory findings are reported here, not failed; everything else
    # must be contained.
    assert_no_open_findings({**result, "findings": [f for f in result["findings"] if f["kind"] != "oom"]})


def test_targets_cover_every_reader_family():
    proc = subprocess.run([sys.executable, str(FUZZ), "--list"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert set(FIXED_SEED_TARGETS) | {"keras2"} == set(listed)
    sys.path.insert(0, str(FUZZ.parent))
    try:
        import fuzz as fuzz_script
    finally:
        sys.path.pop(0)
    from rnnx import formats

    import importlib

    readers = {f.module for f in formats.FORMATS if hasattr(importlib.import_module(f.module), "read")}
    instrumented = {m for t in fuzz_script.TARGETS.values() for m in t.modules}
    assert readers <= instrumented, readers - instrumented
    for name, line in listed.items():
        if "not in this tree" not in line and "made by" not in line:
            assert int(line.split(", ")[1].split()[0]) > 0, f"{name} has no seeds: {line}"


def test_replay_reports_native_hangs_and_crashes():
    """--replay runs each input in a child process, so libhdf5's own defects show up as failures there."""
    proc = subprocess.run([sys.executable, str(FUZZ), "--target", "keras2", "--input-timeout", "3", "--json",
                           "--replay", str(REGRESSIONS / "keras2" / "libhdf5_hang_global_heap.h5"),
                           str(REGRESSIONS / "keras2" / "libhdf5_segv_vlen_attribute.h5")],
                          capture_output=True, text=True, timeout=180)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and [r["ok"] for r in results] == [False, False], proc.stdout + proc.stderr
