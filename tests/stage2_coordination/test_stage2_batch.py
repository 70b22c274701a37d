"""The leader's batch (place_batch.lua) and the agent's inbox claim, against real Redis.

A batch is several placements in one fenced script: these tests pin down that it writes what
the one-task path writes (the same states, the same dispatch entry byte for byte), that a
deposed leader's batch changes nothing at all, and that a stage 2 agent claims a dispatch
entry, peeked or not, only against the attempt and epoch it carries.
"""

from __future__ import annotations

import pytest

from common import keys
from common.adapters.redis_dispatch import NotScheduled, RedisDispatcher, Scheduled
from common.adapters.redis_outcome import RedisOutcomeWriter
from common.adapters.redis_queue import Claim, RedisWorkQueue, Rejected
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.backoff import ExponentialBackoff
from common.domain.dispatch import DispatchEntry
from common.domain.outcome import AttemptReport
from common.domain.transitions import TaskStatus
from common.ports.agent import Assignment
from common.ports.task_store import TransitionResult

ACTOR = "scheduler:test"


@pytest.fixture
def store(redis_client) -> RedisTaskStore:
    return RedisTaskStore(redis_client)


@pytest.fixture
def dispatcher(redis_client, store) -> RedisDispatcher:
    return RedisDispatcher(redis_client, store)


@pytest.fixture
def client(store) -> TaskClient:
    return TaskClient(store)


def submit(client: TaskClient, n: int) -> list[str]:
    return [client.submit({"taskType": "SHELL", "payload": "true"})[0].task_id for _ in range(n)]


def test_a_batch_dispatches_each_task_as_the_one_task_path_would_in_one_script(
    dispatcher, redis_client, store, client
):
    # Given three submitted tasks and a leader with epoch 7
    ids = submit(client, 3)
    assert dispatcher.raise_fence(7) == (True, 7)

    # When the leader takes them in one call and places them, alternating two agents
    raws = dispatcher.take_batch(1, 10)
    choices = iter(["agent-1", "agent-2", "agent-1"])
    placed = dispatcher.place_batch(raws, 7, ACTOR, lambda task: next(choices))

    # Then all three were taken, oldest first, and each is DISPATCHED to its agent
    assert [p.task_id for p in placed] == ids
    for p, agent_id in zip(placed, ["agent-1", "agent-2", "agent-1"], strict=True):
        assert isinstance(p.outcome, TransitionResult) and p.outcome.accepted
        task = store.get(p.task_id)
        assert (task.status, task.agent_id, task.epoch) == (TaskStatus.DISPATCHED, agent_id, 7)
        states = [h["state"] for h in store.history(p.task_id)]
        assert states == ["PENDING", "SCHEDULED", "DISPATCHED"]
    # with the dispatch entry the one-task path writes, byte for byte, and nothing left behind
    inbox_1 = [e.decode() for e in redis_client.lrange(keys.agent_tasks("agent-1"), 0, -1)]
    expected = [DispatchEntry(store.get(i), 1, 7).to_json() for i in (ids[2], ids[0])]
    assert inbox_1 == expected
    assert redis_client.llen(keys.agent_tasks("agent-2")) == 1
    assert redis_client.llen(keys.SCHEDULING_QUEUE) == 0
    assert redis_client.llen(keys.PENDING_QUEUE) == 0
    assert {m.decode() for m in redis_client.smembers(keys.AGENTS_SEEN)} == {"agent-1", "agent-2"}


def test_a_deposed_leaders_batch_is_refused_whole_and_recovered_by_the_new_leader(
    dispatcher, redis_client, store, client
):
    # Given a leader with epoch 10 that took three tasks, and a newer leader with epoch 20
    ids = submit(client, 3)
    assert dispatcher.raise_fence(10) == (True, 10)
    raws = dispatcher.take_batch(1, 10)
    assert dispatcher.raise_fence(20) == (True, 20)

    # When the deposed leader places its batch
    placed = dispatcher.place_batch(raws, 10, "scheduler:old", lambda task: "agent-1")

    # Then every message is refused as stale, and nothing was written
    assert [(type(p.outcome), p.outcome.reason) for p in placed] == [
        (NotScheduled, "stale_epoch")
    ] * 3
    assert redis_client.llen(keys.agent_tasks("agent-1")) == 0
    assert all(store.get(i).status == TaskStatus.PENDING for i in ids)
    assert store.stats()["rejected_stale_epoch"] == 1
    # and the messages wait on queue:scheduling, where the new leader's sweep finds them
    assert redis_client.llen(keys.SCHEDULING_QUEUE) == 3
    assert dispatcher.recover_scheduling(20, "scheduler:new") == (3, 0)
    assert redis_client.llen(keys.PENDING_QUEUE) == 3


def test_a_batch_creates_hand_pushed_tasks_drops_cancelled_ones_and_leaves_unchosen_ones_scheduled(
    dispatcher, redis_client, store, client
):
    # Given a hand-pushed message, a cancelled task's message and a submitted task, queued
    redis_client.lpush(keys.PENDING_QUEUE, '{"taskType":"SHELL","payload":"echo hi"}')
    cancelled, kept = submit(client, 2)
    assert client.cancel(cancelled).accepted  # its message stays queued
    assert dispatcher.raise_fence(3) == (True, 3)

    # When the leader places them, choosing an agent for the hand-pushed one only
    raws = dispatcher.take_batch(1, 10)
    assert len(raws) == 3
    placed = dispatcher.place_batch(
        raws, 3, ACTOR, lambda task: "agent-1" if task.task_id not in (cancelled, kept) else None
    )

    # Then the hand-pushed task was created and dispatched, with a normalised entry
    by_id = {p.task_id: p for p in placed}
    created = next(p for p in placed if p.task_id not in (cancelled, kept))
    assert store.get(created.task_id).status == TaskStatus.DISPATCHED
    entry = DispatchEntry.parse(redis_client.lindex(keys.agent_tasks("agent-1"), 0))
    assert (entry.task_id, entry.attempt, entry.epoch) == (created.task_id, 1, 3)
    # the cancelled one was dropped, its task untouched
    assert isinstance(by_id[cancelled].outcome, NotScheduled)
    assert store.get(cancelled).status == TaskStatus.CANCELLED
    # and the one no agent was chosen for is SCHEDULED, its message still on queue:scheduling
    scheduled = by_id[kept].outcome
    assert isinstance(scheduled, Scheduled) and scheduled.task.task_id == kept
    assert store.get(kept).status == TaskStatus.SCHEDULED
    assert [m.decode() for m in redis_client.lrange(keys.SCHEDULING_QUEUE, 0, -1)] == [
        scheduled.message
    ]


def inbox_queue(redis_client, store, agent_id: str) -> RedisWorkQueue:
    return RedisWorkQueue(
        redis_client, store, source=keys.agent_tasks(agent_id), requeue_to=keys.PENDING_QUEUE
    )


def test_a_stage2_agent_claims_a_peeked_dispatch_entry_in_its_report_and_only_its_own_attempt(
    dispatcher, redis_client, store, client
):
    # Given four tasks dispatched to agent-1 by the leader of epoch 5, the first one claimed
    ids = submit(client, 4)
    assert dispatcher.raise_fence(5) == (True, 5)
    dispatcher.place_batch(dispatcher.take_batch(1, 10), 5, ACTOR, lambda task: "agent-1")
    queue = inbox_queue(redis_client, store, "agent-1")
    first = queue.claim("agent-1", queue.take_reliably("agent-1", 1))
    assert isinstance(first, Claim) and first.task.task_id == ids[0]
    # and the fourth re-placed behind agent-1's back (a failover made it attempt 2)
    stale = store.transition(ids[3], TaskStatus.PENDING, attempt=1, epoch=5, actor="test")
    assert stale.accepted

    # When agent-1 reports each task and takes the next in one call (the chained report),
    # counting the claims that needed a round trip of their own (claim.lua)
    own_claims = []
    claim_script = store.scripts.claim
    store.scripts.claim = lambda **kw: own_claims.append(kw) or claim_script(**kw)
    taken, peeked, claims = first, [], []
    for _ in range(3):
        report_keys, arg = chained_report(store, taken)
        _, taken, peeked = queue.finish_and_take("agent-1", report_keys, arg, taken.message, peeked)
        claims.append(taken)
        if not isinstance(taken, Claim):
            break

    # Then the second and third are claimed with the attempt and epoch they were dispatched with
    assert [c.task.task_id for c in claims[:2]] == ids[1:3]
    assert all(isinstance(c, Claim) and (c.attempt, c.epoch) == (1, 5) for c in claims[:2])
    # and only the first report, which had peeked nothing yet, needed a claim of its own
    assert len(own_claims) == 1
    # and the fourth's stale entry is refused, not run, and off the processing list
    assert isinstance(claims[2], Rejected) and "stale_attempt" in claims[2].reason
    assert store.get(ids[3]).status == TaskStatus.PENDING
    assert redis_client.llen(keys.processing("agent-1")) == 0


def chained_report(store: RedisTaskStore, claim: Claim) -> tuple[list[str], str]:
    """KEYS and ARGV[1] of a SUCCESS report of `claim`, as the agent's writer makes them."""
    assignment = Assignment(claim.task, claim.attempt, claim.epoch, claim.message, 0)
    writer = RedisOutcomeWriter(store.client, store, ExponentialBackoff(1, 1))
    decision = writer.decide(claim.task, AttemptReport(success=True, exit_code=0), 0)
    return writer.request(assignment, decision, "agent-1", [])


def test_a_task_pinned_in_its_hash_is_left_scheduled_whatever_agent_the_batch_chose(
    dispatcher, redis_client, store, client
):
    # Given a broadcast's child, pinned to agent-2 in its hash (its message does not say so)
    [task_id] = submit(client, 1)
    redis_client.hset(keys.task(task_id), "pinnedAgent", "agent-2")
    assert dispatcher.raise_fence(4) == (True, 4)
    # When the batch's chooser, seeing only the message, picks agent-1
    [placed] = dispatcher.place_batch(dispatcher.take_batch(1, 10), 4, ACTOR, lambda t: "agent-1")
    # Then the task is SCHEDULED, handed back whole for the one-task pinned path, and not on
    # agent-1's inbox
    assert isinstance(placed.outcome, Scheduled)
    assert placed.outcome.task.pinned_agent == "agent-2"
    assert store.get(task_id).status == TaskStatus.SCHEDULED
    assert redis_client.llen(keys.agent_tasks("agent-1")) == 0
