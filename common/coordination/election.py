"""Leader election on `/scheduler-leader`, with a fencing epoch per term.

kazoo's Lock recipe (what its Election recipe is built on) gives each contender a sequential
ephemeral node; the lowest sequence holds the lock, and each other contender watches only the
node just ahead of it, so a leader's death wakes exactly one standby (no herd).

Winning is not the end of it. ZooKeeper tells a paused or partitioned client that its session
expired only once it reconnects, so a deposed leader can wake up believing it still leads and
write once more. Every term therefore carries an **epoch**: the czxid of the winner's lock node.
czxids only grow (a ZooKeeper restart included), and each winner's node was created after every
earlier winner's (it queued behind them), so epochs grow with terms. The new leader raises
Redis's `fence:scheduler` to its epoch before doing anything; fenced writes with a lower epoch
are then rejected by the Lua scripts, whatever the old leader believes.

While SUSPENDED the leader cannot know whether it still leads, so the term pauses; CONNECTED on
the same session resumes it, LOST ends it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kazoo.client import KazooState
from kazoo.exceptions import CancelledError, KazooException

from common.coordination.paths import SCHEDULER_LEADER
from common.coordination.zk import RetryingClient
from common.observability import get_logger

log = get_logger("tasklab.election")


@dataclass
class Term:
    """One leadership term: its epoch and whether it is still good."""

    epoch: int
    node: str
    started_at: float = field(default_factory=time.monotonic)
    lost: threading.Event = field(default_factory=threading.Event)
    suspended: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return not self.lost.is_set() and not self.suspended.is_set()


class LeaderElection:
    def __init__(self, zk: RetryingClient, identifier: str, path: str = SCHEDULER_LEADER) -> None:
        self.zk = zk
        self.identifier = identifier
        self.path = path
        self._lock = None
        self._term: Term | None = None
        self._stopping = threading.Event()

    def run(self, lead: Callable[[Term], None], stopping: threading.Event) -> None:
        """Contend, lead when elected (`lead(term)` returns when the term ends), contend again,
        until `stopping` is set."""
        self._stopping = stopping
        self.zk.add_listener(self._on_state)
        try:
            while not stopping.is_set():
                self._one_term(lead, stopping)
        finally:
            self.zk.remove_listener(self._on_state)

    def cancel(self) -> None:
        """Stop waiting to be elected (used on shutdown)."""
        self._stopping.set()
        if self._lock is not None:
            self._lock.cancel()

    def contenders(self) -> list[str]:
        return self.zk.raw.Lock(self.path).contenders()

    # --8<-- [start:term]
    def _one_term(self, lead: Callable[[Term], None], stopping: threading.Event) -> None:
        lock = self.zk.raw.Lock(self.path, self.identifier)
        self._lock = lock
        try:
            if not lock.acquire():
                return
        except CancelledError:
            return
        except KazooException as exc:
            log.warning("election interrupted (%s); contending again", type(exc).__name__)
            stopping.wait(0.5)
            return
        try:
            stat = self.zk.exists(f"{self.path}/{lock.node}")
            if stat is None:
                # The session expired between winning and looking: this term never was.
                return
            term = Term(epoch=stat.czxid, node=lock.node)
            self._term = term
            if self.zk.state != KazooState.CONNECTED:
                term.suspended.set()
            lead(term)
        except KazooException as exc:
            log.warning("leadership ended by %s", type(exc).__name__)
        finally:
            self._term = None
            try:
                lock.release()
            except KazooException:
                # Our node goes with our session anyway; the next contender is not blocked.
                pass

    # --8<-- [end:term]

    def _on_state(self, state: str) -> None:
        # kazoo's event thread: only flip flags.
        term = self._term
        if term is None:
            return
        if state == KazooState.SUSPENDED:
            term.suspended.set()
            log.warning(
                "ZooKeeper SUSPENDED: pausing as leader (epoch %d) until reconnected", term.epoch
            )
        elif state == KazooState.LOST:
            term.lost.set()
            log.warning("ZooKeeper session LOST: no longer leader (epoch %d)", term.epoch)
        elif not term.lost.is_set():
            term.suspended.clear()
            log.info("ZooKeeper CONNECTED again: still leader (epoch %d)", term.epoch)
