"""Deadlines that hold while native code holds the GIL.

A damaged HDF5 file can leave libhdf5 looping inside one C call: no Python signal handler or
thread runs until it returns, so a deadline must be kept from outside the process doing the work.
`call` runs the work in a child process and waits for it at most `timeout` seconds (wall clock, from
the start); past that it kills the child, removes the temporary files the child's
`rnnx.io.atomic_output` left beside the outputs, and raises DeadlineError. The same child also
keeps a native crash (libhdf5 dereferencing a damaged pointer) from taking the caller with it.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import sys
import traceback
from pathlib import Path

from .errors import DeadlineError, RnnxError, UsageError

# fork: the child starts at once and inherits the caller's state (the CLI forks before importing any
# framework). Elsewhere fork is unsafe (macOS) or missing (Windows): spawn, which imports rnnx afresh.
START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"
GRACE_AFTER_RESULT_S = 10  # a child that has sent its result but not exited (atexit work) is then killed


# What reading for `inspect` may use: a floor for the interpreter, numpy, h5py, onnx and the readers'
# own structures, plus a few times the input's size for the one format whose tensors inspect still reads
# (legacy torch pickles, loaded whole by torch.load). A damaged file that makes
# libhdf5 allocate gigabytes for a tiny heap object then fails to allocate instead.
INSPECT_MEMORY_FLOOR = 2 << 30
INSPECT_MEMORY_PER_INPUT_BYTE = 3


def inspect_memory_cap(path) -> int:
    path = Path(path)
    try:
        files = [path] if not path.is_dir() else [p for p in path.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
    except OSError:
        size = 0  # the reader says what is wrong with the path
    return INSPECT_MEMORY_FLOOR + INSPECT_MEMORY_PER_INPUT_BYTE * size


def checked_timeout(timeout) -> float | None:
    """`timeout` as seconds, None (or 0) meaning no deadline; a UsageError for anything else."""
    if timeout is None:
        return None
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        raise UsageError(f"timeout must be a number of seconds, not {timeout!r}.") from None
    if seconds != seconds or seconds < 0:
        raise UsageError(f"timeout must be a number of seconds of 0 or more (0: none), not {timeout!r}.")
    return seconds or None


def call(func, *args, timeout: float, subject: str, outputs=(), memory_cap: int | None = None, **kwargs):
    """func(*args, **kwargs) run in a child process; its result, or its exception raised here.

    `subject` names the work in the error ("reading model.h5"); `outputs` are the files the work
    writes, whose temporary files are removed when the deadline passes. `memory_cap` (bytes) bounds
    the child's data memory, where the platform can (RLIMIT_DATA): an allocation past it fails, in
    libhdf5 as in numpy, instead of taking the machine's memory."""
    context = multiprocessing.get_context(START_METHOD)
    receiver, sender = context.Pipe(duplex=False)
    outputs = [Path(p) for p in outputs]
    before = {p: _state(p) for p in outputs}
    temporaries = {p: set(_temporaries(p)) for p in outputs}
    child = context.Process(target=_child, args=(sender, func, args, kwargs, memory_cap, subject), daemon=True)
    child.start()
    sender.close()  # the child holds the only writing end: its death is an end of file here
    try:
        if receiver.poll(timeout):
            try:
                message = receiver.recv()
            except EOFError:
                message = None  # the child died without a word: a native crash
            except Exception as exc:  # a result that does not unpickle here
                message = ("error", RnnxError(f"{subject}: the result could not be passed back ({exc})."), "")
            child.join(GRACE_AFTER_RESULT_S)
        else:
            _stop(child, outputs, temporaries)
            raise DeadlineError(f"{subject} did not finish within {timeout:g} s, so rnnx stopped it"
                                f"{_written(outputs, before)}.")
    except BaseException:
        _stop(child, outputs, temporaries)  # Ctrl-C or an error while waiting: leave nothing running
        raise
    finally:
        receiver.close()
    if message is None:
        _stop(child, outputs, temporaries)
        raise RnnxError(f"{subject} crashed in native code ({_death(child.exitcode)}); the file is probably "
                        f"damaged{_written(outputs, before)}.")
    if child.is_alive():
        _stop(child, (), {})
    if message[0] == "ok":
        return message[1]
    raise message[1]


def _child(sender, func, args, kwargs, memory_cap=None, subject="the work") -> None:
    if memory_cap is not None and hasattr(resource, "RLIMIT_DATA"):
        resource.setrlimit(resource.RLIMIT_DATA, (memory_cap, memory_cap))
    try:
        message = ("ok", func(*args, **kwargs))
    except MemoryError:
        message = ("error", RnnxError(
            f"{subject} needed more than the {memory_cap / 2**30:.1f} GiB of memory rnnx allows it for a file "
            f"of this size, so rnnx stopped it; the file claims more data than it holds or is damaged."), "")
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        message = ("error", exc, traceback.format_exc())
    try:
        sender.send(message)
    except Exception as exc:  # an exception or result that does not pickle
        sender.send(("error", RnnxError(f"{type(exc).__name__} passing the result back: {exc}"), ""))
    sender.close()


def _stop(child, outputs, temporaries) -> None:
    if child.is_alive():
        child.kill()  # SIGKILL: a child stuck in C code runs no handler, and needs none
    child.join()
    for dst in outputs:
        for tmp in set(_temporaries(dst)) - temporaries.get(dst, set()):
            tmp.unlink(missing_ok=True)


def _temporaries(dst: Path) -> list[Path]:
    """The temporary files rnnx.io.atomic_output makes for `dst` (`.NAME.XXXX.part...` beside it)."""
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        return [p for p in parent.iterdir() if p.name.startswith(f".{dst.name}.") and ".part" in p.name]
    except OSError:
        return []


def _state(path: Path):
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns, st.st_size
    except OSError:
        return None


def _written(outputs, before) -> str:
    changed = [str(p) for p in outputs if _state(p) != before[p]]
    if changed:
        return f" after {', '.join(changed)} had been written"
    return "; nothing was written" if outputs else ""


def _death(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"

