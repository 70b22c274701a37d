"""What an agent shows on its operator port: its slots, whether it takes work, its heartbeat.

Read when scraped, from the agent itself (nothing is copied, so nothing drifts); the events
(attempts started, how long each ran) are counted by the agent as they happen. Its readiness:
heartbeats go through (else the platform is about to presume it dead) and it takes work (not
paused by a ZooKeeper SUSPENDED, not stopping).
"""

from __future__ import annotations

import time

from common.observability import metrics
from common.observability.health import CHECKS


class AgentCollector:
    def __init__(self, agent) -> None:
        # The Agent, duck-typed: common.agent.agent imports this module, not the reverse.
        self.agent = agent

    def describe(self):
        # Nothing up front, so registering never calls collect() (see register_collector).
        return []

    def collect(self):
        agent = self.agent
        for spec, value in (
            (metrics.F_AGENT_SLOTS, agent.capacity),
            (metrics.F_AGENT_SLOTS_USED, agent.load),
            (metrics.F_AGENT_PAUSED, 1 if agent.paused.is_set() else 0),
        ):
            family = spec.gauge_family()
            family.add_metric([], value)
            yield family
        if agent.last_heartbeat is not None:
            family = metrics.F_AGENT_HEARTBEAT_AGE.gauge_family()
            family.add_metric([], round(time.monotonic() - agent.last_heartbeat, 3))
            yield family


def heartbeat_limit(agent) -> float:
    """How stale the last heartbeat may be while the agent is ready: a few missed beats."""
    return max(3 * agent.heartbeat_interval, 2.0)


def observe_agent(agent) -> None:
    """Serve this agent's state and checks. Idempotent (the same names are replaced): the
    agent calls it as it starts, and a bootstrap may call it earlier, before the checks of the
    services it needs, so the process is never ready before the agent's own checks exist."""
    metrics.register_collector("agent", AgentCollector(agent))

    def heartbeat() -> tuple[bool, str]:
        if agent.last_heartbeat is None:
            return False, "no heartbeat has gone through yet"
        age = time.monotonic() - agent.last_heartbeat
        limit = heartbeat_limit(agent)
        return age <= limit, f"last heartbeat {age:.1f}s ago (limit {limit:.1f}s)"

    def taking_work() -> tuple[bool, str]:
        if agent.stopping.is_set():
            return False, "stopping"
        if agent.paused.is_set():
            return False, "paused (not registered, or ZooKeeper SUSPENDED)"
        return True, f"{agent.load}/{agent.capacity} slots used"

    CHECKS.add("heartbeat", heartbeat)
    CHECKS.add("taking_work", taking_work)
