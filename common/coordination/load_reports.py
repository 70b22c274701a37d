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
# How long the reporting thread sleeps with nothing deferred before it looks again: a bound on
# the wait, not a poll (a deferred report or stop() wakes it at once).
IDLE_WAIT = 1.0


class ThrottledLoad:
    """Report an agent's load at most once per `interval`, the latest value always last: the
    first change reports at once, later ones within the interval become one report at its end.
    Called under the agent's load lock, so it never blocks (the report only wakes the
    registry's own thread).

    The deferred report is made by one thread per throttle, started at the first deferral and
    ended by stop(): a thread per deferred report (a Timer) would start hundreds of threads a
    second on a busy agent, each costing more than the report it carries."""

    def __init__(
        self,
        report: Callable[[int], None],
        interval: float = LOAD_REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.interval = interval
        self._clock = clock
        self._changed = threading.Condition()
        self._latest = 0
        self._deferred = False
        self._last = float("-inf")
        self._stopped = False
        self._thread: threading.Thread | None = None

    def __call__(self, load: int) -> None:
        with self._changed:
            if self._stopped:
                return  # the agent is gone: its node is deleted next, not updated
            self._latest = load
            if self._deferred:
                return  # the report at the interval's end carries it
            now = self._clock()
            if now - self._last >= self.interval:
                self._last = now
                self.report(load)
                return
            self._deferred = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="load-reports", daemon=True)
                self._thread.start()
            self._changed.notify()

    def stop(self, timeout: float = 2.0) -> None:
        """End the reporting thread. A report still deferred is dropped: stop() comes after
        the agent has stopped and before its registration is deleted, so the value would
        describe an agent that is leaving."""
        with self._changed:
            self._stopped = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        # The report is made under the lock, as the immediate one is: reports never overlap,
        # so the latest value is also the last one the registry sees.
        with self._changed:
            while not self._stopped:
                if not self._deferred:
                    self._changed.wait(IDLE_WAIT)
                    continue
                due = self._last + self.interval - self._clock()
                if due > 0:
                    self._changed.wait(due)
                    continue
                self._deferred = False
                self._last = self._clock()
                self.report(self._latest)
