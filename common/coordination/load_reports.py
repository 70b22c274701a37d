"""An agent's load reports to ZooKeeper, throttled (stage 2 on).

Every load report is a ZooKeeper write of the agent's node and a read by the leader's watch.
Reported at every change, a busy agent writes twice per task, and ZooKeeper's own CPU per task
was as large as an agent's (docs/performance.md, "Stage 2, profiled"). The leader does not
need every change: it adds the inbox lengths it reads anyway (Candidate.busy), which count
what it dispatched since the last report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# At most one load report per agent per this many seconds.
LOAD_REPORT_INTERVAL = 0.1


class ThrottledLoad:
    """Report an agent's load at most once per `interval`, the latest value always last: the
    first change reports at once, later ones within the interval become one report at its end.
    Called under the agent's load lock, so it never blocks (the report only wakes the
    registry's own thread)."""

    def __init__(
        self, report: Callable[[int], None], interval: float = LOAD_REPORT_INTERVAL
    ) -> None:
        self.report = report
        self.interval = interval
        self._lock = threading.Lock()
        self._latest = 0
        self._last = float("-inf")
        self._timer: threading.Timer | None = None

    def __call__(self, load: int) -> None:
        with self._lock:
            self._latest = load
            if self._timer is not None:
                return  # the report at the interval's end carries it
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0:
                self._last = time.monotonic()
                self.report(load)
                return
            self._timer = threading.Timer(wait, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            self._last = time.monotonic()
            self.report(self._latest)
