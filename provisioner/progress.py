"""Progress of a long CLI command on stderr: a bar with counts and rate on a terminal, plain
lines (one per change) when stderr is a file or a pipe, so logs stay readable."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    """``update(done)`` as work completes, ``finish()`` once at the end.

    :param total: how many items there are.
    :param what: what the items are, plural ("devices").
    """

    def __init__(self, total: int, what: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.what = what
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._started = time.monotonic()
        self._last: tuple[int, str] | None = None

    def update(self, done: int, detail: str = "") -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        counts = f"{done}/{self.total} {self.what} ({done / elapsed:.1f}/s)"
        text = f"{counts} {detail}".rstrip()
        if self.tty:
            filled = _WIDTH * done // self.total if self.total else _WIDTH
            bar = "#" * filled + "." * (_WIDTH - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
            self.stream.flush()
        elif (done, detail) != self._last:
            print(text, file=self.stream, flush=True)
        self._last = (done, detail)

    def finish(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)
