"""scripts/fetch_corpus.py offline: its committed manifest against the corpus in place, and fetching
from a local mirror (a folder and a file:// URL) with every refusal: a changed file, a file larger
than the manifest says, a file already in DEST that differs, a manifest path leaving DEST."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fetch_corpus.py"
MANIFEST = ROOT / "scripts" / "corpus_manifest.json"


def fetch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_committed_manifest_is_the_corpus(corpus):
    proc = fetch("--check", corpus)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = json.loads(MANIFEST.read_text())["files"]
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()} - {"README.md"}
    assert {e["path"] for e in entries} == on_disk
    readme = (corpus / "README.md").read_text()
    for e in entries:  # every file names the origin the corpus README gives
        assert e["repo"] in readme and e["commit"] in readme, e


@pytest.fixture
def mirror(tmp_path):
    """A corpus-like folder of two small files and a manifest of their hashes."""
    folder = tmp_path / "mirror"
    files = {"keras2/a.h5": b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4, "onnx-node-tests/t/model.onnx": b"onnx" * 99}
    entries = []
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        entries.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": entries}))
    return folder, manifest, files


def test_fetch_from_a_folder_and_a_file_url(mirror, tmp_path):
    folder, manifest, files = mirror
    for source, dest in ((folder, tmp_path / "a"), (folder.as_uri(), tmp_path / "b")):
        proc = fetch(dest, "--source", source, "--manifest", manifest)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert {rel: (dest / rel).read_bytes() for rel in files} == files
        assert f"RNNX_CORPUS={dest}" in proc.stdout
        again = fetch(dest, "--source", source, "--manifest", manifest)  # already there: checked, kept
        assert again.returncode == 0 and again.stdout.count("ok ") == 2, again.stdout
        assert fetch("--check", dest, "--manifest", manifest).returncode == 0


def files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_a_changed_or_oversized_download_is_refused_and_not_kept(mirror, tmp_path):
    folder, manifest, files = mirror
    (folder / "keras2/a.h5").write_bytes(files["keras2/a.h5"][:-1] + b"X")  # same size, other bytes
    (folder / "onnx-node-tests/t/model.onnx").write_bytes(files["onnx-node-tests/t/model.onnx"] + b"more")
    dest = tmp_path / "dest"
    proc = fetch(dest, "--source", folder, "--manifest", manifest)
    assert proc.returncode == 1
    assert "keras2/a.h5" in proc.stderr and "SHA-256 is not the manifest's" in proc.stderr
    assert "onnx-node-tests/t/model.onnx" in proc.stderr and "sends more than the 396 bytes" in proc.stderr
    assert "2 of 2 corpus files are missing or do not match" in proc.stderr
    assert files_in(dest) == []  # no file and no temporary file kept


def test_a_different_file_already_in_dest_is_left_untouched(mirror, tmp_path):
    folder, manifest, _ = mirror
    dest = tmp_path / "dest"
    (dest / "keras2").mkdir(parents=True)
    (dest / "keras2/a.h5").write_bytes(b"mine")
    proc = fetch(dest, "--source", folder, "--manifest", manifest)
    assert proc.returncode == 1
    assert "REFUSED keras2/a.h5" in proc.stderr and "left untouched" in proc.stderr
    assert (dest / "keras2/a.h5").read_bytes() == b"mine"
    assert (dest / "onnx-node-tests/t/model.onnx").is_file()  # the other file is still fetched
    check = fetch("--check", dest, "--manifest", manifest)
    assert check.returncode == 1 and "keras2/a.h5: 4 bytes, the manifest says" in check.stderr


def test_a_missing_file_and_a_path_leaving_dest_are_refused(mirror, tmp_path):
    folder, manifest, _ = mirror
    (folder / "keras2/a.h5").unlink()
    proc = fetch(tmp_path / "dest", "--source", folder, "--manifest", manifest)
    assert proc.returncode == 1 and "FAILED  keras2/a.h5: cannot download" in proc.stderr
    for bad in ("../escape.h5", "/etc/escape", "a/../../escape", "C:/escape"):
        evil = tmp_path / "evil.json"
        evil.write_text(json.dumps({"files": [{"path": bad, "sha256": "0" * 64, "size": 1}]}))
        proc = fetch(tmp_path / "dest2", "--source", folder, "--manifest", evil)
        assert proc.returncode == 2 and "would leave the destination folder" in proc.stderr, (bad, proc.stderr)
    assert not (tmp_path / "escape.h5").exists() and not (tmp_path / "dest2").exists()
