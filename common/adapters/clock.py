"""Clocks a test controls (the Clock port, common/ports/clock.py).

`ManualClock` is set in-process (unit tests). `FileClock` reads the time from a file each time
it is asked, so a test can move the clock of role processes it started (the scheduler leader
and its standbys) by writing one number: `TASKLAB_CLOCK_FILE` names the file, a setting meant
for tests only. Every process reading the same file sees the same time, as every real
scheduler would read the same (synchronised) wall clock.
"""

from __future__ import annotations

import threading
from pathlib import Path

from common.ports.clock import Clock


class ManualClock(Clock):
    def __init__(self, now: float = 0.0) -> None:
        self._now = now
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


class FileClock(Clock):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def now(self) -> float:
        # Raises (OSError, ValueError) when the file is missing or not a number: the firer
        # logs it and looks again, rather than fire by a clock it cannot read.
        return float(self.path.read_text().strip())

    def set(self, now: float) -> None:
        """Write the time atomically (a reader never sees half a number)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(repr(now))
        tmp.replace(self.path)
