"""Every fixed fuzz finding (tests/fuzz_regressions/<target>/, its README says what each was): rnnx now
refuses the input with an RnnxError naming the file, in time and under the fuzzer's memory cap.
libhdf5's own hangs and crashes (libhdf5_*) are not fixed but contained: tests/test_watchdog.py."""

import subprocess
import sys
from pathlib import Path

import pytest

import rnnx

REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
FUZZ = Path(__file__).resolve().parent.parent / "scripts" / "fuzz.py"
FIXED = {  # file -> (the error rnnx raises now, words of its message)
    "keras3-archive/member_header_before_file_start.keras": (rnnx.FormatError, "a member cannot be read"),
}


def test_every_saved_finding_is_listed_here():
    saved = {p.relative_to(REGRESSIONS).as_posix() for p in REGRESSIONS.glob("*/*")
             if p.is_file() and not p.name.startswith("libhdf5_")}
    assert saved == set(FIXED)


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_finding_is_refused_with_the_file_named(name):
    path = REGRESSIONS / name
    error, words = FIXED[name]
    with pytest.raises(error, match=words) as caught:
        rnnx.inspect(path, timeout=60)  # in a child: a regression to a hang or crash fails, not blocks
    assert str(path) in str(caught.value)


def test_fixed_findings_pass_the_fuzzer_replay():
    """The same check the fuzzer makes (an RnnxError or a clean return), under its memory cap."""
    for target in sorted({name.split("/")[0] for name in FIXED}):
        files = [str(REGRESSIONS / name) for name in FIXED if name.startswith(target + "/")]
        proc = subprocess.run([sys.executable, str(FUZZ), "--target", target, "--replay", *files],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
