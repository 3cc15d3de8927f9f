"""Progress of a conversion: bytes of tensor data read and written, and the tensor at hand.

Readers and writers report what they move with `read(n, name)` and `wrote(n, name)`; these go to
the callback `reporting(callback)` installed around a conversion (`rnnx.convert(...,
progress=callback)`), and cost nothing when none is. The callback gets `Event`s. `TerminalBar`
is the one the CLI installs when stderr is a terminal (not with --quiet): one line, redrawn at
most ten times a second, shown only once a conversion has run for a second. A few lines serve
better here than a progress-bar library: nothing to install, nothing imported at start.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, TextIO


@dataclass(frozen=True)
class Event:
    kind: str  # "start" (total = bytes the conversion will read), "read", "write", "done"
    nbytes: int = 0
    name: str = ""  # the tensor (file:group/weight for reads, the written name for writes)
    total: int = 0


_callback: ContextVar[Callable[[Event], None] | None] = ContextVar("rnnx_progress", default=None)


@contextmanager
def reporting(callback: Callable[[Event], None] | None):
    """Send the progress events of the block to `callback` (None: nowhere)."""
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)


def _emit(event: Event) -> None:
    callback = _callback.get()
    if callback is not None:
        callback(event)


def start(total: int) -> None:
    _emit(Event("start", total=total))


def read(nbytes: int, name: str = "") -> None:
    _emit(Event("read", nbytes, name))


def wrote(nbytes: int, name: str = "") -> None:
    _emit(Event("write", nbytes, name))


def done() -> None:
    _emit(Event("done"))


class TerminalBar:
    """A one-line progress bar on `stream` (a terminal), after `delay` seconds."""

    WIDTH = 24

    def __init__(self, stream: TextIO, delay: float = 1.0, interval: float = 0.1, clock=time.monotonic):
        self.stream, self.delay, self.interval, self.clock = stream, delay, interval, clock
        self.began = clock()
        self.total = self.done_read = self.done_written = 0
        self.last_draw = None
        self.name = ""

    def __call__(self, event: Event) -> None:
        if event.kind == "start":
            self.total = event.total
        elif event.kind == "read":
            self.done_read += event.nbytes
        elif event.kind == "write":
            self.done_written += event.nbytes
        if event.name:
            self.name = event.name
        if event.kind == "done":
            self.close()
            return
        now = self.clock()
        if now - self.began >= self.delay and (self.last_draw is None or now - self.last_draw >= self.interval):
            self.last_draw = now
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def line(self) -> str:
        mb = 1e6
        share = min(1.0, self.done_read / self.total) if self.total else 0.0
        filled = int(share * self.WIDTH)
        return (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] read {self.done_read / mb:.0f}/"
                f"{self.total / mb:.0f} MB, wrote {self.done_written / mb:.0f} MB  {self.name[-40:]}")

    def close(self) -> None:
        if self.last_draw is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.last_draw = None
