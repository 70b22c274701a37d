"""The agent registry: each live agent is an ephemeral znode `/live-agents/{agentId}`.

Why ephemeral: the node lives exactly as long as the agent's ZooKeeper session. An agent that
crashes, hangs or is cut off stops sending session heartbeats; after the session timeout the
server deletes the node, and everyone watching `/live-agents` learns the agent is gone. No
agent has to announce its own death, which a dead agent could not do anyway.

Session states, and what the agent does in each:
- SUSPENDED: the connection dropped. The session may still be alive, or ZooKeeper may already
  have expired it and handed our tasks to someone else; we cannot tell until we reconnect. So
  the agent treats it as loss and takes no new work (running tasks carry on: their reports are
  fenced by attempt, so a report that comes too late is rejected, never applied twice).
- LOST: the session expired; our node is gone. Re-register as soon as a new session exists.
- CONNECTED: make sure the node is there and current, then take work again.

Listener callbacks run on kazoo's event thread, which must never block (it is the thread that
delivers every other event): they only flip flags and wake this registry's own thread, which
does the ZooKeeper writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from kazoo.client import KazooState
from kazoo.exceptions import NodeExistsError

from common.coordination.agent_info import AgentInfo
from common.coordination.ephemeral import EphemeralRegistration
from common.coordination.paths import agent_node
from common.coordination.zk import RetryingClient
from common.observability import get_logger

log = get_logger("tasklab.registry")


class AgentAlreadyRegistered(RuntimeError):
    """Another live session holds `/live-agents/{agentId}`: two agents share one id."""


class AgentRegistry(EphemeralRegistration):
    retry_on = (AgentAlreadyRegistered,)

    def __init__(self, zk: RetryingClient, info: AgentInfo, paused: threading.Event) -> None:
        super().__init__(zk, agent_node(info.agent_id), f"registry-{info.agent_id}")
        self._info = info
        self._info_lock = threading.Lock()
        self.paused = paused
        self._data: bytes | None = None  # what our node holds, as last written
        self.registrations = 0  # how many times a node was created (1 + re-registrations)
        # Called on this registry's thread after a re-registration (a new session): what else
        # the agent held in the old session to take again (its dispatch partition's claim).
        self.on_reregistered: Callable[[], None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def wait_until_free(self, timeout: float) -> None:
        """Wait for a node left by a previous run of this agent id to expire.

        A kill -9'd agent restarted under the same id finds its old node still there: the old
        session lives on until its timeout. Registering over it would hide the old incarnation's
        death from the scheduler; waiting (at most about one session timeout) lets the
        scheduler see the departure and fail its work over first.
        """
        deadline = time.monotonic() + timeout
        warned = False
        while True:
            stat = self.zk.exists(self.path)
            if stat is None or stat.ephemeralOwner == self.zk.session_id:
                return
            if not warned:
                warned = True
                log.warning(
                    "%s is left by a previous run of %s (session 0x%x); waiting for it to expire",
                    self.path,
                    self._info.agent_id,
                    stat.ephemeralOwner,
                )
            if time.monotonic() >= deadline:
                raise AgentAlreadyRegistered(
                    f"{self.path} is held by another live session (0x{stat.ephemeralOwner:x}) "
                    f"after {timeout:.0f}s: is a second agent running with id "
                    f"{self._info.agent_id!r}?"
                )
            time.sleep(0.1)

    # -- what the agent reports ------------------------------------------------------------
    @property
    def info(self) -> AgentInfo:
        with self._info_lock:
            return self._info

    def report_load(self, load: int) -> None:
        self._update(load=load)

    def announce_dispatch_partition(self, partition: int) -> None:
        """The partition of task-dispatch-topic this agent reads (stage 3), put in its node."""
        self._update(dispatch_partition=partition)

    def drain(self) -> None:
        self._update(draining=True)

    def _update(self, **changes: object) -> None:
        with self._info_lock:
            self._info = replace(self._info, **changes)
        # Writes are coalesced: a burst of load changes becomes one write of the latest value.
        self.wake()

    # -- internals ------------------------------------------------------------------------
    # --8<-- [start:session-states]
    def _state_changed(self, state: str) -> None:
        if state == KazooState.SUSPENDED:
            self.paused.set()
            log.warning("ZooKeeper connection SUSPENDED: taking no new work until reconnected")
        elif state == KazooState.LOST:
            self.paused.set()
            self._data = None
            log.warning("ZooKeeper session LOST: %s is gone; will re-register", self.path)
        else:
            log.info("ZooKeeper connection back (CONNECTED)")

    # --8<-- [end:session-states]

    def _published(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
            if self._thread is not None:  # not at start: registering is the start
                log.info("%s is registered; taking work again", self.path)

    # --8<-- [start:publish]
    def _publish(self) -> None:
        data = self.info.to_json()
        stat = self.zk.exists(self.path)
        if stat is None:
            try:
                self.zk.create(self.path, data, ephemeral=True, makepath=True)
                self.registrations += 1
                if self.registrations > 1:
                    log.warning("re-registered %s with a new session", self.path)
                    if self.on_reregistered is not None:
                        self.on_reregistered()
            except NodeExistsError:
                # Our own create, retried after a dropped reply (see zk.RETRIED_CALLS), or a
                # race with an old session's node: the ownership check below sorts it out.
                stat = self.zk.exists(self.path)
                if stat is None or stat.ephemeralOwner != self.zk.session_id:
                    raise
                self.zk.set(self.path, data)
        elif stat.ephemeralOwner != self.zk.session_id:
            raise AgentAlreadyRegistered(f"{self.path} belongs to another session")
        elif data != self._data:
            self.zk.set(self.path, data)
        self._data = data

    # --8<-- [end:publish]
