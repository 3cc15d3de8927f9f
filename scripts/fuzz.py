#!/usr/bin/env python3
"""Coverage-guided fuzzing of rnnx's readers (atheris; `pip install 'rnnx[fuzz]'`).

    python scripts/fuzz.py --seconds 600                    # every target, 600 s each
    python scripts/fuzz.py --seconds 30 --target keras2     # one target
    python scripts/fuzz.py --runs 2000 --seed 1 --json      # a fixed, reproducible run (CI)
    python scripts/fuzz.py --replay FILE... --target onnx   # run saved inputs once each

Each target writes the fuzzer's bytes to a file with its family's suffix and calls the public
`rnnx.inspect` (rnnx.load + the report). A clean return or an `rnnx.RnnxError` is expected;
anything else is a finding: an unexpected exception, a crash, an input running past
--input-timeout, or memory above --rss-mb. libFuzzer itself catches hangs and memory from
native code (its alarm and RSS checks do not need the GIL), and it runs in a child process
that this script restarts after every finding, so a crash or a hang ends one worker, never the
run. Findings are saved under --findings (default fuzz-findings/<target>/) with their report;
a fixed one goes to tests/fuzz_regressions/<target>/ with its test.

To add a reader: add one `Target` to TARGETS (its suffix, the modules to instrument, seed globs).
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = Path(os.environ.get("RNNX_CORPUS") or ROOT.parent / "shared" / "corpus")
REPLAY_START_S = 10  # a replay child's allowance for starting Python and importing the readers
MAX_SEED_BYTES = 1 << 20  # larger seeds make each mutation slow; the small files cover the same code


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str  # the name the input is written under decides the reader, as for a user's file
    modules: tuple[str, ...]  # imported instrumented, so coverage counts their lines
    fixture_seeds: tuple[str, ...] = ()  # globs under tests/fixtures
    corpus_seeds: tuple[str, ...] = ()  # globs under the corpus
    make_seeds: str | None = None  # name of a function below writing generated seeds into a folder
    requires: str | None = None  # a module that must exist for the target to run (a reader still to land)
    wrap: str | None = None  # name of a function below turning the fuzzer's bytes into the file's bytes
    companions: str | None = None  # name of a function below writing the files the input needs beside it


TARGETS = {t.name: t for t in (
    Target("keras2", ".h5", ("rnnx.formats.keras2.h5",),
           ("keras2/*.h5", "models/k2_*.h5"), ("keras2/*.h5", "keras2/*.hdf5")),
    Target("keras3-weights", ".weights.h5", ("rnnx.formats.keras3.weights",), ("keras3/*.weights.h5",)),
    Target("keras3-archive", ".keras", ("rnnx.formats.keras3.archive",),
           ("keras3/*.keras", "models/k3_*.keras"), ("keras3/*.keras",)),
    Target("onnx", ".onnx", ("rnnx.formats.onnx_format.model",), (),
           ("onnx/*.onnx", "onnx-node-tests/*/model.onnx")),
    Target("torch", ".pt", ("rnnx.formats.torch_format.pt", "rnnx.formats.torch_format.zip_pickle"),
           ("torch/*.pt", "torch/*.pth", "torch/*.ckpt"), ("torch/*.tar",)),
    Target("safetensors", ".safetensors", ("rnnx.formats.torch_format.safetensors_file",),
           ("torch/*.safetensors",)),
    Target("rnnx", ".rnnx", ("rnnx.formats.rnnx_file",), make_seeds="rnnx_seeds"),
    # config.json inside a valid .keras archive: raw bytes of a zip rarely get past its CRC checks
    Target("keras3-config", ".keras", ("rnnx.formats.keras3.archive", "rnnx.formats.keras3.config",
                                       "rnnx.graph.config"), make_seeds="keras3_config_seeds", wrap="keras3_archive"),
    # the model_config attribute of a valid Keras 2 full-model file
    Target("keras2-config", ".h5", ("rnnx.formats.keras2.h5", "rnnx.formats.keras2.config"),
           make_seeds="keras2_config_seeds", wrap="keras2_file"),
    # A checkpoint is a prefix: the fuzzed bytes are the .index of base checkpoint data[0], whose data
    # shard (and .meta) lie beside it (the shards' own bytes are guarded by the CRC32C the index holds).
    Target("tensorflow", ".index", ("rnnx.formats.tf_format.bundle", "rnnx.formats.tf_format.checkpoint",
                                    "rnnx.formats.tf_format.protos", "rnnx.formats.tf_format.object_graph",
                                    "rnnx.formats.tf_format.keras_model", "rnnx.formats.tf_format.tf1",
                                    "rnnx.formats.tf_format.tf1_meta", "rnnx.formats.tf_format.savedmodel"),
           make_seeds="tf_checkpoint_seeds", wrap="tf_checkpoint_index", companions="tf_checkpoint_companions",
           requires="rnnx.formats.tf_format"),
)}
ALWAYS_INSTRUMENTED = ("rnnx.api", "rnnx.formats", "rnnx.report", "rnnx.canonical", "rnnx.io")


def available(target: Target) -> bool:
    if target.requires is None:
        return True
    import importlib.util

    sys.path.insert(0, str(ROOT / "src"))
    try:
        return importlib.util.find_spec(target.requires) is not None
    except ModuleNotFoundError:
        return False
    finally:
        sys.path.pop(0)


def rnnx_seeds(folder: Path) -> None:
    """.rnnx files rnnx writes from the torch fixtures (no .rnnx is committed)."""
    import rnnx

    for src in sorted((FIXTURES / "torch").glob("*.pt"))[:4]:
        try:
            rnnx.convert(src, folder / f"{src.stem}.rnnx")
        except rnnx.RnnxError:
            pass


CONFIG_BASES = ("keras3/mixed.keras", "keras3/bidir.keras", "models/k3_nested.keras", "models/k3_text.keras")


def keras3_config_seeds(folder: Path) -> None:
    """One seed per base archive: its index byte, then its own config.json."""
    import zipfile

    for i, rel in enumerate(CONFIG_BASES):
        with zipfile.ZipFile(FIXTURES / rel) as zf:
            (folder / f"config-{i}.json").write_bytes(bytes([i]) + zf.read("config.json"))


def keras3_archive(data: bytes) -> bytes:
    """A .keras archive: base archive data[0] with data[1:] as its config.json."""
    import io
    import zipfile

    base = FIXTURES / CONFIG_BASES[(data[0] if data else 0) % len(CONFIG_BASES)]
    out = io.BytesIO()
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, data[1:] if name == "config.json" else src.read(name))
    return out.getvalue()


KERAS2_CONFIG_BASES = ("keras2/cudnn_stack_full.h5", "keras2/cudnn_bidir_full.h5", "keras2/cudnn_nested_full.h5",
                       "models/k2_layers.h5")


def keras2_config_seeds(folder: Path) -> None:
    import h5py

    for i, rel in enumerate(KERAS2_CONFIG_BASES):
        with h5py.File(FIXTURES / rel, "r") as f:
            config = f.attrs["model_config"]
        config = config.encode() if isinstance(config, str) else bytes(config)
        (folder / f"model_config-{i}.json").write_bytes(bytes([i]) + config)


_keras2_bases: dict[int, bytes] = {}


def keras2_file(data: bytes) -> bytes:
    """A Keras 2 full-model file: base file data[0] with data[1:] as its model_config (stored as Keras
    stores it, a fixed-length byte string)."""
    import io

    import h5py
    import numpy as np

    index = (data[0] if data else 0) % len(KERAS2_CONFIG_BASES)
    if index not in _keras2_bases:
        _keras2_bases[index] = (FIXTURES / KERAS2_CONFIG_BASES[index]).read_bytes()
    buffer = io.BytesIO(_keras2_bases[index])
    with h5py.File(buffer, "r+") as f:
        del f.attrs["model_config"]
        f.attrs["model_config"] = np.bytes_(data[1:].replace(b"\0", b" ") or b" ")
    return buffer.getvalue()


TF_CHECKPOINT_BASES = ("tensorflow/lstm_ckpt/ckpt", "tensorflow/bidir_ckpt/ckpt", "tensorflow/gru_after_ckpt/ckpt",
                       "tf1/multi_rnn_stack/model.ckpt", "tf1/bidirectional_lstm/model.ckpt")


def tf_checkpoint_seeds(folder: Path) -> None:
    """One seed per base checkpoint: its index byte, then its own .index."""
    for i, rel in enumerate(TF_CHECKPOINT_BASES):
        (folder / f"index-{i}.bin").write_bytes(bytes([i]) + (FIXTURES / f"{rel}.index").read_bytes())


def tf_checkpoint_index(data: bytes) -> bytes:
    return data[1:]


def tf_checkpoint_companions(data: bytes, path: Path) -> None:
    """The data shard (and .meta) of base checkpoint data[0] beside `path` (prefix.index)."""
    import shutil

    base = FIXTURES / TF_CHECKPOINT_BASES[(data[0] if data else 0) % len(TF_CHECKPOINT_BASES)]
    prefix = path.with_suffix("")
    for old in path.parent.glob(f"{prefix.name}.data-*"):
        old.unlink()
    for extra in base.parent.glob(f"{base.name}.*"):
        if extra.suffix != ".index":
            shutil.copyfile(extra, path.parent / f"{prefix.name}{extra.name[len(base.name):]}")
    if not (base.parent / f"{base.name}.meta").exists():
        path.with_suffix(".meta").unlink(missing_ok=True)


def file_bytes(target: Target, data: bytes) -> bytes:
    return globals()[target.wrap](data) if target.wrap else data


def write_input(target: Target, path: Path, data: bytes) -> None:
    """The input as the reader meets it: the file, and the files a target needs beside it."""
    path.write_bytes(file_bytes(target, data))
    if target.companions:
        globals()[target.companions](data, path)


def seed_files(target: Target) -> list[Path]:
    found = [p for g in target.fixture_seeds for p in sorted(FIXTURES.glob(g))]
    if CORPUS.is_dir():
        found += [p for g in target.corpus_seeds for p in sorted(CORPUS.glob(g))]
    return [p for p in found if p.is_file() and p.stat().st_size <= MAX_SEED_BYTES]


# ---------------------------------------------------------------- the worker (a child process)

def worker() -> None:
    """Run libFuzzer on one target; configured through RNNX_FUZZ_* (argv belongs to libFuzzer)."""
    import atheris

    target = TARGETS[os.environ["RNNX_FUZZ_TARGET"]]
    scratch = Path(os.environ["RNNX_FUZZ_SCRATCH"])
    with atheris.instrument_imports(include=["rnnx"]):
        import importlib

        import rnnx
        # every reader, not only the target's: an input sniffed as another format must not spend its
        # deadline importing that reader (and onnx with it)
        for module in ALWAYS_INSTRUMENTED + tuple(m for t in TARGETS.values() if available(t) for m in t.modules):
            importlib.import_module(module)
    check = checker(target, scratch, rnnx)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


def checker(target: Target, scratch: Path, rnnx):
    path = scratch / f"input{target.suffix}"

    stack_after = max(1, int(os.environ.get("RNNX_FUZZ_INPUT_TIMEOUT", "10")) - 1)
    started = []

    def check(data: bytes) -> None:
        if not started:  # after libFuzzer's handlers: a segfault prints the Python stack, then theirs run
            faulthandler.enable()
            started.append(True)
        write_input(target, path, data)
        # a C thread prints the Python stack of an input about to time out, so a hang in native code
        # still says where rnnx called it
        faulthandler.dump_traceback_later(stack_after)
        try:
            rnnx.inspect(path)
        except rnnx.RnnxError:
            pass
        finally:
            faulthandler.cancel_dump_traceback_later()

    return check


def replay_one() -> None:
    """Child of --replay: run one saved input under the memory cap; print its outcome."""
    import rnnx

    cap = int(os.environ["RNNX_FUZZ_RSS_MB"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap * 4, cap * 4))  # address space, loosely above the RSS cap
    target = TARGETS[os.environ["RNNX_FUZZ_TARGET"]]
    scratch = Path(os.environ["RNNX_FUZZ_SCRATCH"])
    data = Path(os.environ["RNNX_FUZZ_INPUT"]).read_bytes()
    path = scratch / f"input{target.suffix}"
    if target.companions:  # a saved input holds the fuzzer's bytes, as for wrapped targets
        write_input(target, path, data)
    else:
        path.write_bytes(data)
    started = time.monotonic()
    try:
        rnnx.inspect(path)
        print("outcome: ok")
    except rnnx.RnnxError as exc:
        print(f"outcome: refused ({type(exc).__name__}: {exc})")
    took, deadline = time.monotonic() - started, float(os.environ["RNNX_FUZZ_DEADLINE"])
    if took > deadline:
        print(f"outcome: took {took:.1f} s, past the deadline of {deadline:g} s")
        sys.exit(4)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    if rss > cap:
        print(f"outcome: memory {rss >> 20} MiB above the cap of {cap >> 20} MiB")
        sys.exit(3)


# ---------------------------------------------------------------- the supervisor

STAT = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.M)
DONE = re.compile(r"^Done (\d+) runs", re.M)
ARTIFACT = re.compile(r"Test unit written to (\S+)")
FRAME = re.compile(r'File "([^"]*rnnx[^"]*)", line (\d+),? in (\S+)')
ANY_FRAME = re.compile(r'File "[^"]*?(?:site-packages|src)/([A-Za-z0-9_]+)/')
UNITS = re.compile(r"^stat::number_of_executed_units: (\d+)", re.M)


def fuzz_target(target: Target, seconds: float | None, runs: int | None, seed: int, args) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"rnnx-fuzz-{target.name}-"))
    grown, seeds, scratch = work / "corpus", work / "seeds", work / "scratch"
    for d in (grown, seeds, scratch):
        d.mkdir()
    for i, p in enumerate(seed_files(target)):
        (seeds / f"{i:03d}-{p.name}").symlink_to(p)
    if target.make_seeds:
        globals()[target.make_seeds](seeds)
    max_len = max([4096] + [p.stat().st_size for p in seeds.iterdir()])
    findings_dir = Path(args.findings) / target.name
    env = {**os.environ, "RNNX_FUZZ_TARGET": target.name, "RNNX_FUZZ_SCRATCH": str(scratch),
           "RNNX_FUZZ_INPUT_TIMEOUT": str(args.input_timeout),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "PYTHONWARNINGS": "ignore", "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    total_inputs, cov, ft, corp, restarts, slow_only_fuzzed = 0, 0, 0, 0, 0, 0
    findings: dict[str, dict] = {}
    while True:
        left = None if seconds is None else seconds - (time.monotonic() - started)
        runs_left = None if runs is None else runs - total_inputs
        if (left is not None and left < 1) or (runs_left is not None and runs_left <= 0):
            break
        flags = [f"-seed={seed + restarts}", f"-timeout={args.input_timeout}", f"-rss_limit_mb={args.rss_mb}",
                 f"-max_len={max_len}", f"-artifact_prefix={work}/", "-print_final_stats=1", "-reload=0"]
        if left is not None:
            flags.append(f"-max_total_time={int(left)}")
        if runs_left is not None:
            flags.append(f"-runs={runs_left}")
        cmd = [sys.executable, str(Path(__file__).resolve()), *flags, str(grown), str(seeds)]
        log = work / f"worker-{restarts}.log"
        with open(log, "wb") as out:
            deadline = None if left is None else left + args.input_timeout + 120
            try:
                proc = subprocess.run(cmd, env={**env, "RNNX_FUZZ_WORKER": "1"}, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=deadline)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None  # libFuzzer's own watchdog did not fire: count the worker as hung
        text = log.read_text(errors="replace")
        stats = STAT.findall(text)
        units = UNITS.findall(text) or DONE.findall(text)
        inputs = int(units[-1]) if units else (int(stats[-1][0]) if stats else 0)
        total_inputs += inputs
        if stats:
            cov, ft, corp = max(cov, int(stats[-1][1])), max(ft, int(stats[-1][2])), int(stats[-1][3])
        restarts += 1
        if code == 0:
            break
        finding = describe_finding(text, code)
        artifact = ARTIFACT.findall(text)
        if artifact and Path(artifact[-1]).is_file():
            data = Path(artifact[-1]).read_bytes()
            if not target.companions:  # a reproducer is a file a user could have (else: the fuzzer's bytes)
                data = file_bytes(target, data)
            name = f"{finding['kind']}-{hashlib.sha1(data).hexdigest()[:12]}"
            findings_dir.mkdir(parents=True, exist_ok=True)
            (findings_dir / f"{name}{target.suffix}").write_bytes(data)
            (findings_dir / f"{name}.txt").write_text(finding["report"])
            finding["file"] = str(findings_dir / f"{name}{target.suffix}")
            if finding["kind"] == "timeout" and replay(target, [finding["file"]], args, deadline=args.input_timeout)[0]["ok"]:
                # instrumented code on a busy machine runs several times slower than rnnx does: an input
                # that finishes uninstrumented within the deadline is slow only under the fuzzer
                slow_only_fuzzed += 1
                for saved in findings_dir.glob(f"{name}.*"):
                    saved.unlink()
                continue
            if finding["library"] and finding["signature"] not in findings:
                finding["contained"] = contained(target, data, args.input_timeout)
        findings.setdefault(finding["signature"], {**finding, "count": 0})["count"] += 1
        if inputs == 0 and not stats:  # the worker could not even start: do not spin
            break
    shutil.rmtree(work, ignore_errors=True)
    return {"target": target.name, "inputs": total_inputs, "coverage": cov, "features": ft, "corpus": corp,
            "seconds": round(time.monotonic() - started, 1), "workers": restarts,
            "slow_only_instrumented": slow_only_fuzzed,
            "findings": [{k: v for k, v in f.items() if k != "report"} for f in findings.values()]}


def describe_finding(text: str, code: int | None) -> dict:
    if code is None:
        kind, what = "hang", "the worker outlived its deadline"
    elif "ALARM: working on the last Unit" in text or "libFuzzer: timeout" in text:
        kind, what = "timeout", "an input ran past the per-input deadline"
    elif "libFuzzer: out-of-memory" in text or "malloc limit" in text:
        kind, what = "oom", "memory above the cap"
    elif "Uncaught Python exception" in text:
        kind = "exception"
        error = re.search(r"=== Uncaught Python exception: ===\n(.+)", text)
        what = error.group(1).strip() if error else "an exception"
    else:
        kind, what = "crash", f"the worker died (exit {code})"
    dump = max(text.rfind("Timeout ("), text.rfind("Fatal Python error"))
    if kind != "exception" and dump >= 0:  # faulthandler's stack: innermost frame first
        stack = text[dump:]
        frames = FRAME.findall(stack)[:1]
        innermost = ANY_FRAME.search(stack)
        native = innermost.group(1) if innermost else None
    else:  # a traceback: innermost frame last
        stack = text[text.find("=== Uncaught"):] if kind == "exception" else text[-6000:]
        frames = FRAME.findall(stack[stack.rfind("Traceback"):])[-1:]
        native = None
    where = f"{Path(frames[0][0]).name}:{frames[0][1]} {frames[0][2]}" if frames else ""
    # a hang or crash whose innermost Python frame is a library's (h5py's attribute read) happened in that
    # library's native code: rnnx cannot fix it there, only contain it (see `contained`)
    library = native if native and native != "rnnx" else None
    error_type = what.split(":")[0] if kind == "exception" else kind
    return {"kind": kind, "what": what, "where": where, "library": library,
            "signature": f"{error_type} {where}{' in ' + library if library else ''}".strip(), "report": stack}


def contained(target: Target, data: bytes, seconds: int) -> bool:
    """Whether `rnnx inspect --timeout` ends on this input with exit 2 in time (the watchdog's promise)."""
    with tempfile.TemporaryDirectory(prefix="rnnx-contain-") as folder:
        path = Path(folder) / f"input{target.suffix}"
        write_input(target, path, data) if target.companions else path.write_bytes(data)
        env = {**os.environ, "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        try:
            proc = subprocess.run([sys.executable, "-m", "rnnx", "inspect", str(path), "--timeout", str(seconds)],
                                  env=env, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def replay(target: Target, files: list[str], args, deadline: float | None = None) -> list[dict]:
    """Each file run once in a child process (uninstrumented), under the memory cap, with `deadline`
    seconds for the input itself (default --input-timeout) beyond starting up."""
    deadline = args.input_timeout if deadline is None else deadline
    results = []
    with tempfile.TemporaryDirectory(prefix="rnnx-replay-") as scratch:
        env = {**os.environ, "RNNX_FUZZ_TARGET": target.name, "RNNX_FUZZ_SCRATCH": scratch,
               "RNNX_FUZZ_RSS_MB": str(args.rss_mb), "RNNX_FUZZ_REPLAY": "1", "PYTHONWARNINGS": "ignore",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        for f in files:
            try:
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve())],
                                      env={**env, "RNNX_FUZZ_INPUT": str(Path(f).resolve()),
                                           "RNNX_FUZZ_DEADLINE": str(deadline)},
                                      capture_output=True, text=True, timeout=deadline + REPLAY_START_S)
                ok = proc.returncode == 0
                out = (proc.stdout + proc.stderr).strip()
                if proc.returncode < 0:
                    out += f"\noutcome: died by signal {-proc.returncode}"
            except subprocess.TimeoutExpired:
                ok, out = False, f"outcome: still running after {deadline + REPLAY_START_S} s"
            results.append({"file": f, "ok": ok, "output": out[-2000:]})
    return results


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", choices=sorted(TARGETS), help="a target (repeatable; default all)")
    p.add_argument("--seconds", type=float, help="fuzzing time per target")
    p.add_argument("--runs", type=int, help="inputs per target (with --seed: reproducible)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--input-timeout", type=int, default=10, help="seconds one input may take (default 10)")
    p.add_argument("--rss-mb", type=int, default=1536, help="memory cap of a worker in MiB (default 1536)")
    p.add_argument("--findings", default=str(ROOT / "fuzz-findings"), help="where findings are saved")
    p.add_argument("--json", action="store_true", help="print one JSON object per target")
    p.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once each (needs one --target)")
    p.add_argument("--list", action="store_true", help="list the targets and their seeds")
    args = p.parse_args(argv)
    names = args.target or sorted(TARGETS)
    if args.list:
        for name in names:
            t = TARGETS[name]
            state = "" if available(t) else f" (not in this tree: {t.requires})"
            made = f" + made by {t.make_seeds}()" if t.make_seeds else ""
            print(f"{name}: {t.suffix}, {len(seed_files(t))} seed files{made}{state}")
        return 0
    if args.replay:
        if len(names) != 1:
            p.error("--replay needs exactly one --target")
        results = replay(TARGETS[names[0]], args.replay, args)
        for r in results:
            print(json.dumps(r) if args.json else f"{'ok  ' if r['ok'] else 'FAIL'} {r['file']}: "
                  f"{r['output'].splitlines()[-1] if r['output'] else ''}")
        return 0 if all(r["ok"] for r in results) else 1
    if args.seconds is None and args.runs is None:
        p.error("give --seconds or --runs")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("fuzz.py needs atheris: pip install 'rnnx[fuzz]'", file=sys.stderr)
        return 2
    found = 0
    for name in names:
        target = TARGETS[name]
        if not available(target):
            print(json.dumps({"target": name, "skipped": f"{target.requires} is not in this tree"}) if args.json
                  else f"{name}: not run ({target.requires} is not in this tree)")
            continue
        r = fuzz_target(target, args.seconds, args.runs, args.seed, args)
        found += len(r["findings"])
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"{name}: {r['inputs']} inputs in {r['seconds']} s, coverage {r['coverage']} edges "
                  f"({r['features']} features, corpus {r['corpus']}), {len(r['findings'])} findings", flush=True)
            for f in r["findings"]:
                native = (f" in {f['library']}'s native code, contained by the watchdog: "
                          f"{'yes' if f.get('contained') else 'NO'}") if f["library"] else ""
                print(f"  {f['kind']} x{f['count']}: {f['what']} at {f['where'] or '?'}{native} -> {f.get('file', '?')}")
    return 1 if found else 0


if __name__ == "__main__":
    if os.environ.get("RNNX_FUZZ_WORKER"):
        worker()
    elif os.environ.get("RNNX_FUZZ_REPLAY"):
        replay_one()
    else:
        sys.exit(main(sys.argv[1:]))
