"""The clock port: what time it is, as the parts that act on wall-clock time read it.

Cron schedules fire at wall-clock times (common/scheduling/schedules.py); reading the time
through this port lets a test set it, so a schedule that fires at 10:05 can be made to fire
now, exactly, without waiting minutes or patching `time`. `SystemClock` is the real one;
`FileClock` and `ManualClock` (common/adapters/clock.py) are for tests only.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod


class Clock(ABC):
    @abstractmethod
    def now(self) -> float:
        """Unix time, in seconds."""


class SystemClock(Clock):
    def now(self) -> float:
        return time.time()
