"""The suite from a clone with no corpus beside it: corpus tests skip naming the fetch command, except
under CI=true, where the missing corpus fails the run. Each case runs pytest in a subprocess on a copy
of tests/ in a temporary folder (so there is no ../shared/corpus beside it), with one corpus test
module and one that needs no corpus."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS_MODULE = "tests/formats/onnx_format/test_conformance.py"  # 25 corpus tests, 1 without (about 1 s)
PLAIN_MODULE = "tests/canonical/test_gates.py"


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """tests/, schemas/ and pyproject.toml as a fresh clone has them, in a folder with no shared/ beside it."""
    clone = tmp_path_factory.mktemp("fresh") / "rnnx"
    shutil.copytree(ROOT / "tests", clone / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("pyproject.toml", "scripts", "schemas"):
        source = ROOT / extra
        (shutil.copytree if source.is_dir() else shutil.copy)(source, clone / extra)
    assert not (clone.parent / "shared").exists()
    return clone


def pytest_in(clone: Path, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RNNX_CORPUS")}
    env.update({"PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore", **env_changes})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", CORPUS_MODULE, PLAIN_MODULE],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)


def test_without_corpus_and_ci_the_corpus_tests_skip_with_the_fetch_command(clone):
    proc = pytest_in(clone)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert f"no corpus at {clone.parent / 'shared' / 'corpus'}" in out
    assert "python scripts/fetch_corpus.py" in out and "RNNX_CORPUS" in out
    assert "tests skipped: no corpus" in out  # the section listing them, one test id a line
    listed = [line for line in out.splitlines() if line.startswith(CORPUS_MODULE + "::")]
    assert len(listed) == 25
    assert " passed, 25 skipped" in out and " failed" not in out


def test_under_ci_a_missing_corpus_fails_naming_it(clone):
    proc = pytest_in(clone, CI="true")
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"no corpus at {clone.parent / 'shared' / 'corpus'} (CI is set, so a missing corpus fails the run)" in out
    assert "25 errors" in out and "skipped" not in out


def test_rnnx_corpus_names_the_corpus(clone, corpus, tmp_path):
    proc = pytest_in(clone, RNNX_CORPUS=str(corpus), CI="true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped" not in proc.stdout and "error" not in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = pytest_in(clone, RNNX_CORPUS=str(empty))
    assert proc.returncode == 0 and f"the corpus folder {empty} holds no files" in proc.stdout, proc.stdout
