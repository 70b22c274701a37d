"""An in-memory view of `/live-agents`, kept current by ZooKeeper watches.

Pattern: Observer (introduced in stage 2). ZooKeeper is the subject: a ChildrenWatch on
`/live-agents` tells us when agents come and go, and one DataWatch per agent tells us when its
reported load changes. The view is what placement strategies read, so choosing an agent costs
no round trip to ZooKeeper; departure listeners are how the scheduler learns to fail an agent's
work over.

A watch fires once per change it saw, not once per change that happened: an agent that vanishes
and re-registers between two reads can look unchanged. That is fine here because the view is a
cache, not the truth. The scheduler's periodic reconcile sweep, and an agent's own start-up
recovery, cover what a watch can miss.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kazoo.exceptions import KazooException
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, agent_node
from common.coordination.zk import RetryingClient
from common.observability import get_logger

log = get_logger("tasklab.live-agents")

DepartureListener = Callable[[set[str]], None]


class LiveAgentsView:
    def __init__(self, zk: RetryingClient) -> None:
        self.zk = zk
        self._lock = threading.Lock()
        self._agents: dict[str, AgentInfo] = {}
        self._watched: set[str] = set()
        self._listeners: list[DepartureListener] = []
        # Set on every change; the scheduler waits on it instead of polling when no agent fits.
        self.changed = threading.Event()
        self._started = False
        self._stopped = False

    # --8<-- [start:observer]
    def start(self) -> None:
        self.zk.ensure_path(LIVE_AGENTS)
        ChildrenWatch(self.zk.raw, LIVE_AGENTS, self._on_children)
        self._started = True

    def stop(self) -> None:
        """Stop following /live-agents: a stopped scheduler neither logs nor fails over the
        agents that leave after it (they often stop together, as in a runbook's clean-up)."""
        self._stopped = True

    @property
    def following(self) -> bool:
        """Started and not stopped: what agents() says is ZooKeeper's /live-agents, not an
        empty list that only means no one has looked (a standby's, before its first term)."""
        return self._started and not self._stopped

    def on_departure(self, listener: DepartureListener) -> None:
        """`listener(agent_ids)` runs on kazoo's event thread: it must not block."""
        self._listeners.append(listener)

    def agents(self) -> list[AgentInfo]:
        """The live agents as last seen, ordered by id (so RoundRobin has a stable ring)."""
        with self._lock:
            return sorted(self._agents.values(), key=lambda a: a.agent_id)

    def info(self, agent_id: str) -> AgentInfo | None:
        """What agent `agent_id` last said about itself, if it is live as last seen."""
        with self._lock:
            return self._agents.get(agent_id)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._watched)

    def is_registered(self, agent_id: str) -> bool:
        """Asked of ZooKeeper now, not of the view: a failover decides on it."""
        return self.zk.exists(agent_node(agent_id)) is not None

    # -- watch callbacks (kazoo's event thread) ---------------------------------------------
    def _on_children(self, children: list[str]) -> bool | None:
        if self._stopped:
            return False  # ends the ChildrenWatch
        current = set(children)
        with self._lock:
            joined = current - self._watched
            left = self._watched - current
            self._watched = current
            for agent_id in left:
                self._agents.pop(agent_id, None)
        for agent_id in sorted(joined):
            self._watch_data(agent_id)
        if joined:
            log.info("agents joined: %s", ", ".join(sorted(joined)))
        if left:
            log.warning("agents left: %s", ", ".join(sorted(left)))
            for listener in self._listeners:
                listener(set(left))
        self.changed.set()

    # --8<-- [end:observer]

    def _watch_data(self, agent_id: str) -> None:
        def on_data(data: bytes | None, _stat) -> bool | None:
            with self._lock:
                if agent_id not in self._watched:
                    # The agent left the children list: returning False ends this DataWatch.
                    self._agents.pop(agent_id, None)
                    return False
                if data is None:
                    # Deleted, possibly about to be re-created by the same agent id: keep the
                    # watch (it follows the path, not the node) but stop offering the agent.
                    self._agents.pop(agent_id, None)
                else:
                    try:
                        self._agents[agent_id] = AgentInfo.from_json(data)
                    except (ValueError, KeyError, TypeError):
                        log.warning("ignoring %s: its data is not agent JSON", agent_node(agent_id))
            self.changed.set()
            return None

        try:
            DataWatch(self.zk.raw, agent_node(agent_id), on_data)
        except KazooException as exc:
            log.warning("cannot watch %s: %s", agent_node(agent_id), exc)
