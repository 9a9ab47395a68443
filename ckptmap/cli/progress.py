"""A progress line on stderr for long writes; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, *, min_seconds: float = 1.0) -> None:
        self.label, self.done, self.started = label, 0, time.monotonic()
        self.enabled = sys.stderr.isatty()
        self.min_seconds, self.shown = min_seconds, False

    def update(self, nbytes: int) -> None:
        self.done += nbytes
        elapsed = time.monotonic() - self.started
        if not self.enabled or elapsed < self.min_seconds:
            return
        rate = self.done / elapsed / 2**20
        sys.stderr.write(f"\r{self.label}: {self.done / 2**20:,.0f} MB, {rate:,.0f} MB/s ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
