"""The chained report's peek on real Redis: a busy agent reports a task and claims the next one
in one round trip when the next message is one it saw at the tail the previous time, and falls
back to claim.lua, with the same guarantees, whenever the queue changed in between.

The agent's side is built as the stage 1 bootstrap builds it, on a client that counts the
commands it sends: one command per task is the point of the peek, so the tests count them.
"""

from __future__ import annotations

import json
import threading
import uuid

import redis

from common import keys
from common.adapters.redis_agent import (
    RedisChainedReport,
    RedisEventSink,
    RedisListIntake,
    ReliableClaim,
)
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import RedisWorkQueue
from common.adapters.redis_store import RedisTaskStore
from common.domain.backoff import ExponentialBackoff
from common.domain.dispatch import entry_ref
from common.domain.outcome import AttemptReport
from common.domain.transitions import TaskStatus
from common.ports.agent import Assignment
from common.testing import eventually

OK = AttemptReport(success=True, exit_code=0, result="ok")


class CountingRedis(redis.Redis):
    """Counts the commands this client sends (a script call is one)."""

    sent = 0

    def execute_command(self, *args, **options):
        self.sent += 1
        return super().execute_command(*args, **options)


class Side:
    """One agent's intake and chained report, as stage1_mvp/bootstrap.py wires them."""

    def __init__(self, redis_url: str, agent_id: str) -> None:
        self.agent_id = agent_id
        self.client = CountingRedis.from_url(redis_url)
        store = RedisTaskStore(self.client)
        queue = RedisWorkQueue(self.client, store)
        self.intake = RedisListIntake(queue, agent_id, ReliableClaim())
        writer = RedisOutcomeWriter(self.client, store, ExponentialBackoff(1.0, 2.0))
        self.chain = RedisChainedReport(self.intake, RedisEventSink(queue, writer, agent_id, 10))

    def take(self) -> Assignment:
        got = self.intake.take(1.0)
        assert got is not None, "nothing to take"
        return got

    def report(self, done: Assignment) -> tuple[Assignment | None, int]:
        """Report `done` as succeeded; (the next attempt, commands this report sent)."""
        before = self.client.sent
        taken = self.chain.finish_and_take(done, OK, [])
        return taken, self.client.sent - before

    def close(self) -> None:
        self.client.close()


def submit(client, n: int) -> list[str]:
    return [
        client.submit({"taskType": "SHELL", "payload": f"echo {i}"})[0].task_id for i in range(n)
    ]


def where(redis_client, task_id: str, lists: list[str]) -> list[str]:
    """The lists holding a message of `task_id`, once per copy."""
    return [
        name
        for name in lists
        for raw in redis_client.lrange(name, 0, -1)
        if entry_ref(raw)[0] == task_id
    ]


def status(client, task_id: str) -> TaskStatus:
    return client.get(task_id).status


def test_a_busy_agent_reports_and_claims_the_peeked_tail_in_one_round_trip(
    redis_url, redis_client, client
):
    ids = submit(client, 5)
    a = Side(redis_url, "agent-a")
    try:
        running = a.take()
        # The first report has no peek yet: it moves the next message and claim.lua claims it.
        running, first = a.report(running)
        seen = [running.task_id]
        costs = []
        for _ in range(3):
            running, sent = a.report(running)
            seen.append(running.task_id)
            costs.append(sent)
        last, at_empty = a.report(running)
    finally:
        a.close()
    assert first >= 2
    assert costs == [1, 1, 1], "a report that claims the peeked tail is one command"
    assert last is None and at_empty == 1
    assert seen == ids[1:], "the queue is still taken in submission order"
    assert all(status(client, t) == TaskStatus.SUCCESS for t in ids)
    assert redis_client.llen(keys.processing("agent-a")) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 0


def test_when_another_agent_takes_the_peeked_tail_the_message_behind_it_is_claimed_in_the_script(
    redis_url, redis_client, client
):
    ids = submit(client, 4)
    a, b = Side(redis_url, "agent-a"), Side(redis_url, "agent-b")
    lists = [keys.PENDING_QUEUE, keys.processing("agent-a"), keys.processing("agent-b")]
    try:
        running = a.take()
        running, _ = a.report(running)  # claims ids[1]; peeks ids[2] (the tail) and ids[3]
        raced = b.take()  # the race: agent-b takes the peeked tail first
        nxt, sent = a.report(running)
    finally:
        a.close()
        b.close()
    assert raced.task_id == ids[2]
    assert nxt is not None and nxt.task_id == ids[3] and sent == 1
    assert client.get(ids[2]).agent_id == "agent-b" and client.get(ids[3]).agent_id == "agent-a"
    assert status(client, ids[2]) == status(client, ids[3]) == TaskStatus.RUNNING
    # Each unfinished task's message sits on exactly one list: its own agent's.
    assert where(redis_client, ids[2], lists) == [keys.processing("agent-b")]
    assert where(redis_client, ids[3], lists) == [keys.processing("agent-a")]
    assert all(where(redis_client, t, lists) == [] for t in ids[:2])


def test_when_every_peeked_message_is_gone_a_new_tail_is_claimed_by_claim_lua(
    redis_url, redis_client, client
):
    ids = submit(client, 3)
    a, b = Side(redis_url, "agent-a"), Side(redis_url, "agent-b")
    lists = [keys.PENDING_QUEUE, keys.processing("agent-a"), keys.processing("agent-b")]
    try:
        running = a.take()
        running, _ = a.report(running)  # claims ids[1]; peeks ids[2], the only one left
        raced = b.take()
        (arrived,) = submit(client, 1)  # a message the peek never saw is now the tail
        nxt, sent = a.report(running)
    finally:
        a.close()
        b.close()
    assert raced.task_id == ids[2]
    assert nxt is not None and nxt.task_id == arrived
    assert sent == 2, "not peeked: moved by the report, claimed by claim.lua"
    assert client.get(arrived).agent_id == "agent-a"
    assert status(client, arrived) == TaskStatus.RUNNING
    assert where(redis_client, arrived, lists) == [keys.processing("agent-a")]
    assert where(redis_client, ids[2], lists) == [keys.processing("agent-b")]


def test_a_peeked_task_cancelled_before_the_report_is_not_claimed_and_leaves_no_copy(
    redis_url, redis_client, client
):
    ids = submit(client, 3)
    a = Side(redis_url, "agent-a")
    try:
        running = a.take()
        running, _ = a.report(running)  # claims ids[1]; peeks ids[2]
        assert client.cancel(ids[2]).accepted
        nxt, sent = a.report(running)
    finally:
        a.close()
    assert nxt is None and sent == 1 and a.intake.rejected == 1
    assert status(client, ids[2]) == TaskStatus.CANCELLED
    assert redis_client.llen(keys.processing("agent-a")) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 0


def test_hand_pushed_messages_at_the_peeked_tail_are_created_once_and_a_reused_request_is_not(
    redis_url, redis_client, client
):
    first, _ = client.submit({"taskType": "SHELL", "payload": "echo 0", "requestId": "k-1"})
    (second,) = submit(client, 1)
    fresh, again = str(uuid.uuid4()), str(uuid.uuid4())
    # Pushed by hand with platform-looking ids, so the peek passes their keys; neither has a
    # task hash yet, and the second reuses the first task's requestId.
    redis_client.lpush(
        keys.PENDING_QUEUE,
        json.dumps({"taskId": fresh, "taskType": "SHELL", "payload": "echo fresh"}),
        json.dumps({"taskId": again, "taskType": "SHELL", "payload": "echo 0", "requestId": "k-1"}),
    )
    a = Side(redis_url, "agent-a")
    try:
        running = a.take()
        running, _ = a.report(running)  # claims `second`; peeks both hand-pushed messages
        created, _ = a.report(running)
        duplicate, _ = a.report(created)
    finally:
        a.close()
    assert running.task_id == second
    assert created is not None and created.task_id == fresh
    assert status(client, fresh) == TaskStatus.SUCCESS
    assert duplicate is None and a.intake.rejected == 1
    assert redis_client.exists(keys.task(again)) == 0, "the reused requestId made no task"
    assert redis_client.zcard(keys.TASK_INDEX) == 3
    assert redis_client.get(keys.request("k-1")).decode() == first.task_id
    assert redis_client.llen(keys.processing("agent-a")) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 0


def test_agents_racing_through_one_queue_with_peeks_claim_every_task_exactly_once(
    redis_url, redis_client, client
):
    ids = set(submit(client, 150))
    sides = [Side(redis_url, f"agent-{n}") for n in range(3)]
    ran: dict[str, list[str]] = {s.agent_id: [] for s in sides}
    one_command = {s.agent_id: 0 for s in sides}

    def drain(side: Side) -> None:
        running = side.intake.take(0.2)
        for _ in range(len(ids) + 1):  # bounded: no agent can run more tasks than there are
            if running is None:
                running = side.intake.take(0.2)
                if running is None:
                    return
            ran[side.agent_id].append(running.task_id)
            running, sent = side.report(running)
            one_command[side.agent_id] += sent == 1 and running is not None

    threads = [threading.Thread(target=drain, args=(s,)) for s in sides]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in sides:
            s.close()
    assert not any(t.is_alive() for t in threads)
    every = [t for agent in ran.values() for t in agent]
    assert sorted(every) == sorted(ids), "every task ran, and none twice"
    assert all(status(client, t) == TaskStatus.SUCCESS for t in ids)
    for t in list(ids)[:20]:
        history = client.store.history(t)
        assert [h["state"] for h in history].count("RUNNING") == 1
    assert sum(one_command.values()) > 0, "the race left the peek no hit at all"
    for s in sides:
        assert redis_client.llen(keys.processing(s.agent_id)) == 0


def test_an_agent_killed_9_running_a_task_its_report_claimed_loses_nothing(
    redis_client, client, agent
):
    # Given a backlog that an agent drains on the chained path: it takes the first task with
    # BLMOVE, its first report claims the second with claim.lua and peeks the third, and its
    # second report claims the third in the report script
    quick = [client.submit({"taskType": "SHELL", "payload": f"true {i}"})[0] for i in range(2)]
    slow, _ = client.submit({"taskType": "SHELL", "payload": "echo started; sleep 30"})
    victim = agent("peek-1")
    eventually(
        lambda: client.get(slow.task_id).status == TaskStatus.RUNNING, message="third running"
    )
    assert [client.get(t.task_id).status for t in quick] == [TaskStatus.SUCCESS] * 2
    assert where(redis_client, slow.task_id, [keys.processing("peek-1")]) == [
        keys.processing("peek-1")
    ]
    # When the agent is killed -9 while it runs, and another agent is alive
    victim.kill()
    agent("peek-2")
    # Then the task is given back and runs again, once, on attempt 2; nothing is left behind
    eventually(
        lambda: (
            (t := client.get(slow.task_id)).status == TaskStatus.RUNNING
            and t.attempt == 2
            and t.agent_id == "peek-2"
        ),
        timeout=20,
        message="the killed agent's task re-run by the other",
    )
    states = [(h["state"], h["attempt"]) for h in client.store.history(slow.task_id)]
    assert states[1:] == [("RUNNING", 1), ("PENDING", 2), ("RUNNING", 2)]
    assert redis_client.llen(keys.processing("peek-1")) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 0
