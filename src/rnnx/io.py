"""Writing files so that a failed run leaves nothing behind."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import UsageError


@contextmanager
def atomic_output(dst: Path):
    """Yield a temporary path beside `dst`; rename it onto `dst` only if the block succeeds."""
    with atomic_outputs(dst) as (tmp,):
        yield tmp


@contextmanager
def atomic_outputs(*dsts: Path):
    """Yield temporary paths beside each of `dsts`; if the block succeeds, rename them into place in the
    order given (so the file that refers to the others, given last, appears last); else remove them all.
    A temporary the block removed stands for a file it chose not to write."""
    temps: list[Path] = []
    try:
        for dst in map(Path, dsts):
            temps.append(_temporary_beside(dst))
        yield tuple(temps)
        mode = 0o666 & ~_umask()  # mkstemp makes 0600; give each file a normal new file's mode
        for tmp, dst in zip(temps, dsts):
            if not tmp.exists():
                continue
            os.chmod(tmp, mode)
            os.replace(tmp, dst)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise


def _temporary_beside(dst: Path) -> Path:
    parent = dst.parent if str(dst.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"Cannot write {dst}: the folder {parent} does not exist.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part" + "".join(dst.suffixes[-1:]), dir=parent)
    except OSError as exc:
        raise UsageError(f"Cannot write {dst}: {exc.strerror}.") from None
    os.close(fd)
    return Path(tmp)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def same_file(a: Path, b: Path) -> bool:
    a, b = Path(a), Path(b)
    if b.exists():
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False
    return a.resolve() == b.resolve()


def safe_member_name(name: str) -> str | None:
    """A zip member name with backslashes made forward slashes and `.` parts dropped, or None when it
    would leave the archive's folder (absolute, a drive letter, `..`, a NUL byte)."""
    normal = name.replace("\\", "/")
    parts = PurePosixPath(normal).parts
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal) or ".." in parts or "\x00" in normal:
        return None
    return "/".join(p for p in parts if p != ".")
