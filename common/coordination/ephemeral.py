"""Keep one ephemeral znode of ours in place for as long as we run: the mechanism under the
agent registry (`/live-agents/{agentId}`, stage 2) and the provider registry
(`/services/TaskService/{host:port}`, stage 4).

An ephemeral node lives exactly as long as the ZooKeeper session that made it. After a session
loss (LOST) it is gone, and it must be made again once a new session exists. kazoo calls state
listeners on its event thread, which must never block (it delivers every other event), so the
listener only wakes this object's own thread, which does the ZooKeeper writes. What the node
holds, and what to do when someone else's node is in the way, is the subclass's `_publish`.

Pattern: Template Method (as the executors): start, maintain and stop are written once; a
registry fills in `_publish` and, if it needs them, the two hooks.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

from kazoo.client import KazooState
from kazoo.exceptions import KazooException, NoNodeError

from common.coordination.zk import RetryingClient
from common.observability import get_logger

log = get_logger("tasklab.registry")


class EphemeralRegistration(ABC):
    # Errors a publish may raise that mean "try again shortly", beside ZooKeeper's own.
    retry_on: tuple[type[Exception], ...] = ()

    def __init__(
        self, zk: RetryingClient, path: str, thread_name: str, logger: logging.Logger = log
    ) -> None:
        self.log = logger
        self.zk = zk
        self.path = path
        self._thread_name = thread_name
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register now, then keep the node current and re-register after a session loss."""
        self._publish()
        self._published()
        self.zk.add_listener(self._on_state)
        self._thread = threading.Thread(target=self._maintain, name=self._thread_name, daemon=True)
        self._thread.start()
        self.log.info("registered %s", self.path)

    def stop(self) -> None:
        """Leave the registry first, so no one chooses us while we stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self.zk.remove_listener(self._on_state)
        try:
            self.zk.delete(self.path)
        except NoNodeError:
            pass
        except KazooException as exc:
            # The session close that follows deletes the node anyway.
            self.log.warning("could not delete %s: %s", self.path, exc)
        self.log.info("deregistered %s", self.path)

    def wake(self) -> None:
        """Write again soon (coalesced: a burst of wake-ups is one write of the latest data)."""
        self._wake.set()

    @abstractmethod
    def _publish(self) -> None:
        """Make sure our node exists, is ours and holds the current data."""

    def _state_changed(self, state: str) -> None:
        """Called on kazoo's event thread for every state change: flip flags only."""
        if state == KazooState.LOST:
            self.log.warning("ZooKeeper session LOST: %s is gone; will re-register", self.path)

    def _published(self) -> None:
        """Called after every successful publish."""
        return None

    def _on_state(self, state: str) -> None:
        self._state_changed(state)
        self._wake.set()

    def _maintain(self) -> None:
        while not self._stopping.is_set():
            # The timeout is a safety net for a missed wake-up, not the pace of the loop.
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stopping.is_set() or self.zk.state != KazooState.CONNECTED:
                continue
            try:
                self._publish()
                self._published()
            except (KazooException, *self.retry_on) as exc:
                self.log.warning(
                    "registry update failed (%s: %s); retrying", type(exc).__name__, exc
                )
                self._wake.set()
                self._stopping.wait(0.2)
