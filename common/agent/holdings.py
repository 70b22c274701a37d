"""What an agent's workers hold, and when to compare it with what its lists hold.

A call to Redis that gives up waiting (the client's socket timeout) may still be carried out:
Redis frozen for longer than the timeout carries out, when it wakes, every command that was
sent before. A take (BLMOVE to `processing:{agentId}`) or a claim carried out that way leaves
an entry on the agent's own processing list that no worker runs, and since the agent is
alive, no failover ever comes for it. So after a take or a chained report raises, the agent
reconciles: with none of its own intake calls in flight, it gives back every entry of its
lists beyond those its workers hold (`WorkIntake.reconcile`).

"None of its own calls in flight" is what makes the comparison sound: an entry moved by a
call still under way is on the list and not yet held, and would be given back from under the
worker about to run it. Takes and chained reports therefore run inside `call()` (many at
once), a reconcile inside `alone()` (none beside it): a readers-writer gate.

It looks twice. Redis may carry out a command left on the connection that gave up in the same
turn of its event loop as the reconcile's own read, or serve a blocked take from it a moment
later; a second look `SECOND_LOOK` seconds after the first finds what the first could not.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

SECOND_LOOK = 2.0


class Holdings:
    def __init__(self, second_look: float = SECOND_LOOK) -> None:
        self.second_look = second_look
        self._cond = threading.Condition()
        self._calls = 0  # takes and chained reports in flight
        self._alone = False  # a reconcile runs (or waits for the calls in flight to end)
        self._held: Counter[str] = Counter()
        self._looks_left = 0
        self._due_at = 0.0

    # -- the workers' side ---------------------------------------------------------------------
    # --8<-- [start:gate]
    @contextmanager
    def call(self) -> Iterator[None]:
        """Around a take or a chained report, and the `hold` of what it returned. Waits while
        a reconcile runs: a few round trips, each bounded by the client's socket timeout."""
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._calls += 1
        try:
            yield
        finally:
            with self._cond:
                self._calls -= 1
                self._cond.notify_all()

    def hold(self, entry: str) -> None:
        """A worker now runs the attempt whose entry this is (inside `call()`)."""
        if entry:
            with self._cond:
                self._held[entry] += 1

    def release(self, entry: str) -> None:
        """The attempt is over: reported, or handed back."""
        if entry:
            with self._cond:
                self._held[entry] -= 1
                if self._held[entry] <= 0:
                    del self._held[entry]

    def unanswered(self) -> None:
        """A take or a chained report raised: its outcome is unknown. Reconcile now, and once
        more a little later."""
        with self._cond:
            self._looks_left = 2
            self._due_at = time.monotonic()

    # -- the reconcile's side ------------------------------------------------------------------
    def due(self) -> bool:
        return self._looks_left > 0 and time.monotonic() >= self._due_at

    @contextmanager
    def alone(self, limit: float) -> Iterator[Counter[str] | None]:
        """No new call starts, and the calls in flight end (at most `limit` s): yields a copy
        of what the workers hold, or None if a call was still in flight at the limit, or if
        another worker's reconcile ran meanwhile (it did the look; the next, if due, comes
        on a later turn)."""
        deadline = time.monotonic() + limit
        with self._cond:
            # One reconcile at a time. Two workers may find one due at once; side by side,
            # the first to finish would let takes start while the other still compares, and
            # that one would give back an entry a take had just moved for its worker: the task
            # ran twice. The second waits for the first and compares nothing.
            mine = not self._alone
            held = None
            if mine:
                self._alone = True
                while self._calls and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                held = None if self._calls else Counter(self._held)
            else:
                while self._alone and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
        try:
            yield held
        finally:
            if mine:
                with self._cond:
                    self._alone = False
                    self._cond.notify_all()

    # --8<-- [end:gate]

    def reconciled(self) -> None:
        """A look went through: the next one is due after `second_look`, if one is left."""
        with self._cond:
            self._looks_left = max(0, self._looks_left - 1)
            self._due_at = time.monotonic() + self.second_look
