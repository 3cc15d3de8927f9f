#!/usr/bin/env python3
"""Download the real-world test corpus from its public origins and check it against the manifest.

    python scripts/fetch_corpus.py ../shared/corpus         # where the tests look by default
    python scripts/fetch_corpus.py DEST && export RNNX_CORPUS=DEST
    python scripts/fetch_corpus.py DEST --source URL_OR_FOLDER   # a mirror laid out like the corpus
    python scripts/fetch_corpus.py --check DEST             # only check files already there
    python scripts/fetch_corpus.py --write-manifest CORPUS  # maintainers: hash a corpus folder

The files are other people's (scripts/corpus_manifest.json names each one's repository, commit and
path), so they stay outside this repository. Every file is checked against the manifest's SHA-256
and size before it is kept: a download that differs is refused and nothing of it is left, a file
already in DEST that differs is never overwritten. Exit status: 0 all files present and matching,
1 a file missing or not matching, 2 a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "corpus_manifest.json"
CHUNK = 1 << 20
RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
LFS = "https://media.githubusercontent.com/media/{repo}/{commit}/{path}"  # files a repository keeps in Git LFS

# Where each corpus entry comes from (the corpus README's table): corpus path or folder ->
# (repository, commit, path in the repository). A folder maps every file below it.
ORIGINS = {
    "keras2/stockprice_cudnnlstm4_full.h5": ("nghiemphan93/machineLearning", "36d214b2",
                                             "2018-11-05_RNN-revisit/stockprice.h5"),
    "keras2/head_pose_cudnnlstm_functional_full.h5": (
        "aascode/depression_level_regression_from_individual_modalities", "29a4916c",
        "visual/head_pose/feature_extraction/best.h5"),
    "keras2/textgenrnn_cudnnlstm2_weights.hdf5": ("minimaxir/textgenrnn", "ee8b9e80",
                                                  "textgenrnn/textgenrnn_weights.hdf5"),
    "keras2/medaka_bigru_full.hdf5": ("nanoporetech/medaka", "bd5bdead", "medaka/data/medaka_model.hdf5"),
    "keras2/medaka_lstm_theano_full.h5": ("nanoporetech/medaka", "dc5b213b",
                                          "medaka/data/ecoli_entire_LSTM_frequency_assm_reads.h5"),
    "keras2/lstm_chem_weights.hdf5": ("topazape/LSTM_Chem", "1fa8a049",
                                      "experiments/2019-12-23/LSTM_Chem/checkpoints/LSTM_Chem-22-0.47.hdf5"),
    "keras2/lstm_chem_model_arch.json": ("topazape/LSTM_Chem", "1fa8a049",
                                         "experiments/2019-12-23/LSTM_Chem/model_arch.json"),
    "keras3/dino_lstm.keras": ("H4znow/dino_name_generator", "436e7e55", "models/lstm_model.keras"),
    "torch/gtcrn_checkpoint.tar": ("Xiaobin-Rong/gtcrn", "3862c448", "checkpoints/model_trained_on_dns3.tar"),
    "onnx/dtln_lstm_stateful.onnx": ("breizhn/DTLN", "1de1f15a", "pretrained_model/model_1.onnx"),
    "onnx/gtcrn_gru.onnx": ("Xiaobin-Rong/gtcrn", "3862c448", "stream/onnx_models/gtcrn.onnx"),
    "onnx-node-tests": ("onnx/onnx", "6be0677f", "onnx/backend/test/data/node"),
    "tensorflow/iteam1_lstm_savedmodel_tf26": ("iteam1/predict-series-data-with-RNN", "fc8eb478", "lstm_model"),
    "tensorflow/osmarluiz_lstm2_savedmodel_tf21_sharded": ("osmarluiz/LSTM", "3aff1a94", "lstm"),
    "tensorflow/dinornn_gru_ckpt_sharded": ("MikeGongolidis/DinoRNN", "7d0c8d6f", "training_checkpoints/1"),
    "tensorflow/writes_python_basiclstm_tf17": ("Vishu26/Neural-Network-That-Writes-Python-Code", "2f68f570", "save"),
    "tensorflow/rnn_ctc_cudnnlstm_bidir_tf18": ("Sunsapience/RNN_CTC", "27b24fc2", "save"),
}


class Refused(Exception):
    """A file that cannot be kept: the message says which and why."""


def origin_of(rel: str) -> tuple[str, str, str] | None:
    for key, (repo, commit, path) in ORIGINS.items():
        if rel == key:
            return repo, commit, path
        if rel.startswith(key + "/"):
            return repo, commit, f"{path}/{rel[len(key) + 1:]}"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(corpus: Path, manifest: Path) -> int:
    entries = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        rel = path.relative_to(corpus).as_posix()
        if rel == "README.md":
            continue
        origin = origin_of(rel)
        if origin is None:
            print(f"{rel}: no origin in ORIGINS; add it there first.", file=sys.stderr)
            return 2
        repo, commit, source = origin
        entries.append({"path": rel, "sha256": sha256_of(path), "size": path.stat().st_size,
                        "repo": repo, "commit": commit, "source": source})
    manifest.write_text(json.dumps({
        "about": "The rnnx test corpus: files from public repositories, used in place by the tests "
                 "(RNNX_CORPUS, else ../shared/corpus). scripts/fetch_corpus.py downloads and checks them.",
        "files": entries}, indent=1) + "\n")
    print(f"wrote {manifest}: {len(entries)} files, {sum(e['size'] for e in entries)} bytes")
    return 0


def load_manifest(manifest: Path) -> list[dict]:
    try:
        entries = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"{manifest} is not a corpus manifest ({exc}).") from None
    for e in entries:
        if not isinstance(e, dict) or not {"path", "sha256", "size"} <= set(e):
            raise Refused(f"{manifest}: an entry lacks path, sha256 or size: {e!r}.")
        if not safe_relative(e["path"]):
            raise Refused(f"{manifest}: the path {e['path']!r} would leave the destination folder; refusing it.")
    return entries


def safe_relative(rel) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return False
    parts = PurePosixPath(rel).parts
    return not rel.startswith("/") and ".." not in parts and "." not in parts and ":" not in parts[0]


def check_file(path: Path, entry: dict) -> str | None:
    """None when `path` is the manifest's file, else what is wrong."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"{size} bytes, the manifest says {entry['size']}"
    if sha256_of(path) != entry["sha256"]:
        return "SHA-256 differs from the manifest's"
    return None


def urls_for(entry: dict, source: str | None) -> list[str]:
    if source is not None:
        base = source if "://" in source else Path(source).resolve().as_uri()
        return [base.rstrip("/") + "/" + urllib.request.pathname2url(entry["path"])]
    if not {"repo", "commit", "source"} <= set(entry):
        raise Refused(f"{entry['path']}: the manifest names no origin; give --source.")
    fields = {"repo": entry["repo"], "commit": entry["commit"], "path": urllib.request.pathname2url(entry["source"])}
    return [RAW.format(**fields), LFS.format(**fields)]


def download(url: str, dst: Path, entry: dict) -> None:
    """Fetch `url` into `dst` (through a temporary file beside it) if it is exactly the manifest's file."""
    dest_root = dst.parents[len(PurePosixPath(entry["path"]).parts) - 1]
    dest_root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dest_root)  # no folders for a failure
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                size += len(block)
                if size > entry["size"]:  # never keep (or hold) more than the manifest promises
                    raise Refused(f"{entry['path']}: {url} sends more than the {entry['size']} bytes of the manifest.")
                digest.update(block)
                out.write(block)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise Refused(f"{entry['path']}: {url} sent {size} bytes whose SHA-256 is not the manifest's "
                          f"(expected {entry['size']} bytes); the file was not kept.")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dst)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise Refused(f"{entry['path']}: cannot download {url} ({getattr(exc, 'reason', exc)}).") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch(dest: Path, entries: list[dict], source: str | None) -> int:
    failed = 0
    for entry in entries:
        dst = dest / entry["path"]
        problem = check_file(dst, entry)
        if problem is None:
            print(f"ok      {entry['path']}")
            continue
        if problem != "missing":
            print(f"REFUSED {entry['path']}: the file in {dest} is not the corpus's ({problem}); it is left "
                  f"untouched. Remove it, or fetch into another folder.", file=sys.stderr)
            failed += 1
            continue
        errors = []
        for url in urls_for(entry, source):
            try:
                download(url, dst, entry)
                print(f"fetched {entry['path']}")
                break
            except Refused as exc:
                errors.append(str(exc))
        else:
            print(f"FAILED  {errors[0]}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"{failed} of {len(entries)} corpus files are missing or do not match the manifest.", file=sys.stderr)
        return 1
    print(f"all {len(entries)} corpus files are in {dest} and match the manifest; "
          f"run the tests with RNNX_CORPUS={dest}")
    return 0


def check(dest: Path, entries: list[dict]) -> int:
    bad = [(e["path"], p) for e in entries if (p := check_file(dest / e["path"], e)) is not None]
    for rel, problem in bad:
        print(f"{rel}: {problem}", file=sys.stderr)
    print(f"{len(entries) - len(bad)} of {len(entries)} corpus files in {dest} match the manifest.")
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", nargs="?", metavar="DEST", help="folder to fetch into (made if missing)")
    p.add_argument("--check", metavar="DIR", help="only check the files in DIR against the manifest")
    p.add_argument("--source", metavar="URL_OR_FOLDER", help="fetch from a mirror laid out like the corpus")
    p.add_argument("--manifest", default=str(MANIFEST), help=f"the manifest (default {MANIFEST.name} beside this script)")
    p.add_argument("--write-manifest", metavar="CORPUS", help="hash the files of CORPUS into the manifest")
    args = p.parse_args(argv)
    if args.write_manifest:
        return write_manifest(Path(args.write_manifest), Path(args.manifest))
    try:
        entries = load_manifest(Path(args.manifest))
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        return check(Path(args.check), entries)
    if not args.dest:
        p.error("give DEST (or --check DIR)")
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        print(f"{dest} is not a folder.", file=sys.stderr)
        return 2
    return fetch(dest, entries, args.source)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
