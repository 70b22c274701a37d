"""Which agents fell silent on agent-heartbeat-topic, judged only where this manager can hear.

Pattern: Heartbeat failure detector (introduced in stage 3), the manager's second failover
signal beside ZooKeeper's session expiry. Pure logic on the times it is given, so every rule
below is unit-tested without a broker (tests/unit/test_heartbeat_monitor.py).

Silence is evidence only where heartbeats would be heard. Two things hide heartbeats from a
manager while the agent is alive, and each would otherwise turn into a false failover (the
agent's live work re-queued with attempt + 1 and run twice):

- The whole bus goes quiet (a broker restart, the manager's own network). An agent is judged
  only when others were heard since its last beat, and after a stretch of silence everyone
  first gets `RECOVERY_GRACE` timeouts to be heard again: clients come back one by one.
- Partitions move. Heartbeats are keyed by agentId, so each agent's beats land in one
  partition, and several managers share the partitions. After a rebalance, an agent whose
  partition went to another manager is simply no longer read here. So each agent is judged
  only on the partition its beats arrive on, only while this manager owns that partition,
  only if it was heard since the partition was assigned (an agent never heard here is left to
  ZooKeeper), and only once the partition has been owned `RECOVERY_GRACE` timeouts (the new
  owner starts from the last committed offset and must catch up first).

The price: with a single agent (or a single agent on this manager's partitions), its death is
left to ZooKeeper alone, and right after a rebalance failover by heartbeat waits a grace.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from common.observability import get_logger

log = get_logger("tasklab.manager")


class _TopicPartition(Protocol):
    """What the monitor reads of confluent-kafka's TopicPartition."""

    topic: str
    partition: int


@dataclass
class _Heard:
    partition: int
    last: float  # when its newest heartbeat was read (monotonic)


# --8<-- [start:heartbeat-monitor]
class HeartbeatMonitor:
    """Silence on agent-heartbeat-topic, per agent, on the partitions this manager owns."""

    RECOVERY_GRACE = 2.0  # timeouts of grace after a silent bus, and after an assignment

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._agents: dict[str, _Heard] = {}
        self._owned_since: dict[int, float] = {}  # partition -> when it was assigned here
        self._failed_over: dict[str, float] = {}
        self._heard_since = float("-inf")  # start of the current stretch of a live bus

    # -- the consumer's rebalance callbacks ----------------------------------------------
    def assigned(self, partitions: Iterable[int], now: float) -> None:
        """These heartbeat partitions are read here from now on (after a catch-up)."""
        for partition in partitions:
            self._owned_since[partition] = now
            # Whatever was known of its agents is older than this ownership: hear them anew.
            self._forget_partition(partition)

    def revoked(self, partitions: Iterable[int]) -> None:
        """These partitions are read elsewhere now (or by nobody): their silence means nothing."""
        for partition in partitions:
            self._owned_since.pop(partition, None)
            self._forget_partition(partition)

    # -- what the heartbeat topic says ---------------------------------------------------
    def beat(self, agent_id: str, partition: int, now: float) -> None:
        newest = max((a.last for a in self._agents.values()), default=float("-inf"))
        if now - newest > self.timeout:
            self._heard_since = now
        self._agents[agent_id] = _Heard(partition, now)
        self._failed_over.pop(agent_id, None)

    def forget(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)
        self._failed_over.pop(agent_id, None)

    def silent(self, now: float) -> list[str]:
        """Agents to fail over now. While one stays silent it is returned again every
        `timeout`, so work the scheduler keeps placing on it does not wait there."""
        grace = self.RECOVERY_GRACE * self.timeout
        if not self._agents or now - self._heard_since <= grace:
            return []
        newest = max(a.last for a in self._agents.values())
        due = []
        for agent_id, heard in sorted(self._agents.items()):
            owned_since = self._owned_since.get(heard.partition)
            if owned_since is None or now - owned_since <= grace or heard.last < owned_since:
                continue  # not read here, read here too briefly, or not heard since
            if newest - heard.last <= self.timeout or now - heard.last <= self.timeout:
                continue
            if now - self._failed_over.get(agent_id, float("-inf")) >= self.timeout:
                self._failed_over[agent_id] = now
                due.append(agent_id)
        # An agent silent this long has been failed over many times: stop watching it.
        for agent_id, heard in list(self._agents.items()):
            if now - heard.last > 20 * self.timeout:
                self.forget(agent_id)
        return due

    # --8<-- [end:heartbeat-monitor]
    def watched(self) -> dict[str, int]:
        """agentId -> the partition its heartbeats are read from, for the agents judged here."""
        return {agent_id: heard.partition for agent_id, heard in self._agents.items()}

    def _forget_partition(self, partition: int) -> None:
        for agent_id in [a for a, h in self._agents.items() if h.partition == partition]:
            self.forget(agent_id)


class RebalanceFeed:
    """The consumer's rebalance callbacks, told to the monitor for the heartbeat topic only.

    `AtLeastOnceConsumer(on_assign=feed.assigned, on_revoke=feed.revoked)`; partitions of the
    other topics the manager reads are none of the monitor's business.
    """

    def __init__(self, monitor: HeartbeatMonitor, topic: str, clock=time.monotonic) -> None:
        self.monitor = monitor
        self.topic = topic
        self.clock = clock

    def assigned(self, partitions: Iterable[_TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        if mine:
            self.monitor.assigned(mine, self.clock())
            log.info("judging heartbeats on partition(s) %s after a grace", mine)

    def revoked(self, partitions: Iterable[_TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        if mine:
            self.monitor.revoked(mine)
            log.info("no longer judging heartbeats on partition(s) %s", mine)
