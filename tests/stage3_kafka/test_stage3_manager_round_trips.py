"""The manager's rounds share round trips: a round's counts and fixes go to Redis with the next
round's reads, ahead of them, and a failure there sends both rounds back to be tried again.

The manager here is built in the test process on the real Redis, with a client that counts its
pipelines' round trips (and fails one when told to, as a Redis that went away mid-batch would),
and is given the events directly, as the consumer gives a batch: only the round trips are
under test, not the bus.
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from common import keys
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_store import RedisTaskStore
from common.domain.transitions import TaskStatus
from common.messaging.heartbeat_monitor import HeartbeatMonitor
from common.messaging.manager import TaskEventManager
from common.messaging.schemas import StatusEvent
from common.messaging.topics import STATUS
from common.testing.messages import ConsumedMessage


class CountingRedis(Redis):
    """A real client whose pipelines count the round trips they make; `fail_at` = the number of
    the round trip that finds Redis gone (raised before anything is sent)."""

    round_trips = 0
    fail_at: int | None = None

    def pipeline(self, transaction=True, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        send = pipe.execute

        def execute(raise_on_error: bool = True):
            self.round_trips += 1
            if self.round_trips == self.fail_at:
                pipe.reset()
                raise RedisConnectionError("Redis went away (injected)")
            return send(raise_on_error=raise_on_error)

        pipe.execute = execute
        return pipe


def manager_on(redis_url: str) -> tuple[TaskEventManager, CountingRedis]:
    client = CountingRedis.from_url(redis_url)
    store = RedisTaskStore(client)
    manager = TaskEventManager(
        "manager-test",
        client,
        store,
        RedisOutcomeWriter(client, store),
        RedisDispatcher(client, store),
        HeartbeatMonitor(5.0),
    )
    return manager, client


def running_then_success(probe, n: int) -> tuple[list[str], list[ConsumedMessage]]:
    """n tasks DISPATCHED to agent-x, and their RUNNING events, then their SUCCESS events."""
    placed = [probe.running_task("agent-x", status=TaskStatus.DISPATCHED) for _ in range(n)]
    values = [
        StatusEvent(
            task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status=status
        ).encode()
        for status in ("RUNNING", "SUCCESS")
        for task_id, epoch in placed
    ]
    # As the consumer hands a batch over: one partition, in order.
    messages = [ConsumedMessage(STATUS, 0, i, v) for i, v in enumerate(values)]
    return [task_id for task_id, _ in placed], messages


def test_a_rounds_counts_go_with_the_next_rounds_reads(redis_url, probe):
    # Given three tasks DISPATCHED to agent-x, and their RUNNING then SUCCESS events read at once
    ids, msgs = running_then_success(probe, 3)
    manager, client = manager_on(redis_url)

    # When the manager applies the batch
    outcomes = manager.on_status_batch(msgs)

    # Then every event is applied, once, in two rounds
    assert outcomes == [None] * 6
    for task_id in ids:
        assert probe.tasks.get(task_id).status == TaskStatus.SUCCESS
        assert [h["state"] for h in probe.history(task_id)][-2:] == ["RUNNING", "SUCCESS"]
    stats = probe.event_stats()
    assert (stats["status_applied"], stats["status_rounds"], stats["status_duplicate"]) == (
        6,
        2,
        0,
    )
    assert probe.redis.llen(keys.processing("agent-x")) == 0
    # in five round trips, not six: read, write, the first round's counts with the second's
    # reads, write, the second round's counts
    assert client.round_trips == 5


def test_reads_that_fail_with_the_previous_rounds_counts_send_both_rounds_back(redis_url, probe):
    # Given three tasks DISPATCHED to agent-x, and their RUNNING then SUCCESS events read at once
    ids, msgs = running_then_success(probe, 3)
    manager, client = manager_on(redis_url)

    # When Redis goes away just as the second round reads, carrying the first round's counts
    client.fail_at = 3
    outcomes = manager.on_status_batch(msgs)

    # Then all six are given back as transient failures, the RUNNINGs (applied, uncounted) too
    assert [type(o) for o in outcomes] == [RedisConnectionError] * 6
    assert all(probe.tasks.get(t).status == TaskStatus.RUNNING for t in ids)
    assert probe.event_stats()["status_applied"] == 0

    # When the consumer hands the batch over again, Redis back
    assert manager.on_status_batch(msgs) == [None] * 6

    # Then each task went RUNNING then SUCCESS exactly once, and each event is counted once:
    # the RUNNINGs applied the first time are duplicates now, nothing was lost
    for task_id in ids:
        states = [h["state"] for h in probe.history(task_id)]
        assert (states.count("RUNNING"), states.count("SUCCESS")) == (1, 1), states
        assert probe.tasks.get(task_id).status == TaskStatus.SUCCESS
    stats = probe.event_stats()
    assert (stats["status_applied"], stats["status_duplicate"]) == (3, 3)
    assert probe.redis.llen(keys.processing("agent-x")) == 0
