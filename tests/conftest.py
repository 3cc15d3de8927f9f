import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
CORPUS = Path(os.environ["RNNX_CORPUS"]) if os.environ.get("RNNX_CORPUS") else DEFAULT_CORPUS
FETCH = f"python scripts/fetch_corpus.py {DEFAULT_CORPUS} (or fetch into DIR and set RNNX_CORPUS=DIR)"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
_skipped_for_corpus: list[str] = []


def corpus_missing() -> str | None:
    """Why the corpus cannot be used, or None when it is there (a folder holding files)."""
    if not CORPUS.is_dir():
        return f"no corpus at {CORPUS}"
    if not any(p.is_file() for p in CORPUS.rglob("*")):
        return f"the corpus folder {CORPUS} holds no files"
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real-world files (RNNX_CORPUS, else ../shared/corpus). Missing: a skip naming the fetch
    command, except under CI, where nothing may be skipped silently: there it is a failure."""
    missing = corpus_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"{missing} (CI is set, so a missing corpus fails the run): fetch it with {FETCH}.",
                        pytrace=False)
        pytest.skip(f"{missing}: fetch it with {FETCH}")
    return CORPUS


def pytest_runtest_logreport(report):
    if report.skipped and report.when == "setup" and "fetch it with" in str(report.longrepr):
        _skipped_for_corpus.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _skipped_for_corpus:
        terminalreporter.section("tests skipped: no corpus")
        for nodeid in _skipped_for_corpus:
            terminalreporter.write_line(nodeid)
        terminalreporter.write_line(f"{len(_skipped_for_corpus)} tests need the corpus ({corpus_missing()}); "
                                    f"fetch it with {FETCH}")


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m rnnx ARGS` as a user would; returns the completed process."""
    return subprocess.run([sys.executable, "-m", "rnnx", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


@pytest.fixture
def cli():
    return run_cli
