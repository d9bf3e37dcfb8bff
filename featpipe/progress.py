"""Progress for long loops: a live line on a terminal, periodic log lines in batch jobs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts items and shows rate and ETA; `interval` is the seconds between log lines off a terminal."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, interval: float = 30.0):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.done = 0
        self.start = self._last = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._show(now)

    def close(self, note: str = "") -> None:
        """The final line, with `note` (e.g. how the items were done) appended."""
        self._show(time.perf_counter(), final=True, note=note)

    def _show(self, now: float, final: bool = False, note: str = "") -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        line = f"{self.label}: {self.done}/{self.total} images, {rate:.1f} img/s, " + (
            f"{elapsed:.1f}s" if final else f"ETA {_clock(eta)}"
        ) + (f", {note}" if note else "")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
