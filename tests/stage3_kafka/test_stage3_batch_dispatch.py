"""Stage 3's leader places a batch in one fenced script (stage 2's place_batch.lua) and then
publishes one dispatch per task it dispatched: these tests pin down that each of those messages
is the one the one-task path (`schedule`, `dispatch`) publishes for the same task, a
composite's child included, and that a deposed leader's batch neither writes nor publishes.

The one-task path runs on a copy of the same Redis state in a second database, publishing to
a second topic namespace, so both paths see the same tasks under the same ids.
"""

from __future__ import annotations

import json

import pytest
import redis

from common import keys
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.domain.composite import Release, validate_composite
from common.domain.transitions import TaskStatus
from common.messaging.clients import Bus, EventPublisher
from common.messaging.dispatch import AGENT_HEADER, KafkaDispatcher
from common.messaging.schemas import DispatchMessage, decode
from common.messaging.topics import DISPATCH, ensure_topics
from common.ports.dispatcher import NotScheduled, Scheduled
from common.ports.task_store import TransitionResult

pytestmark = pytest.mark.integration

ACTOR = "scheduler:test"
EPOCH = 7
# The partitions the agents announced (as their ZooKeeper nodes would say).
PARTITIONS = {"agent-1": 3, "agent-2": 7}


@pytest.fixture
def publisher(bus):
    publisher = EventPublisher(bus, "test-leader")
    yield publisher
    publisher.close()


@pytest.fixture
def dispatcher(redis_client, publisher) -> KafkaDispatcher:
    return KafkaDispatcher(
        redis_client, RedisTaskStore(redis_client), publisher, partition_of=PARTITIONS.get
    )


@pytest.fixture
def twin_redis(redis_client):
    """Another database of the test's Redis server, empty before and after the test."""
    kw = redis_client.connection_pool.connection_kwargs
    twin = redis.Redis(host=kw["host"], port=kw["port"], db=(kw.get("db") or 0) + 1)
    twin.flushdb()
    yield twin
    twin.flushdb()
    twin.close()


def submit(tasks: TaskClient, specs: list[dict]) -> list[str]:
    return [tasks.submit(spec)[0].task_id for spec in specs]


def queue_composite_children(redis_client) -> tuple[str, list[str], str]:
    """A GROUP of two children and a reduce, all three released onto queue:pending (the
    reduce with its input), as the coordinator of the leader of EPOCH would; returns
    (parentId, the children's ids, the reduce's input)."""
    composites = RedisCompositeStore(redis_client)
    spec = validate_composite(
        {
            "kind": "GROUP",
            "children": [
                {"taskType": "SHELL", "payload": "echo one"},
                {"taskType": "SHELL", "payload": "echo two"},
            ],
            "reduce": {"taskType": "SHELL", "payload": "echo $TASKLAB_INPUT"},
        }
    )
    parent, _ = composites.submit_composite(spec)
    children = composites.children(parent.task_id)
    assert composites.start(parent.task_id, EPOCH, "coordinator").accepted
    reduce_input = '[{"index":0,"result":"héllo"},{"index":1,"result":"wörld"}]'
    releases = [Release(c) for c in children[:-1]] + [
        Release(children[-1], {"input": reduce_input})
    ]
    assert composites.release(parent.task_id, releases, EPOCH, "coordinator").count == 3
    return parent.task_id, children, reduce_input


def copy_database(source, twin) -> None:
    for key in source.scan_iter():
        assert source.copy(key, key, destination_db=twin.connection_pool.connection_kwargs["db"])


def scripts_run(client) -> int:
    """How many Lua scripts the server has run (EVALSHA, or EVAL). A script's first EVALSHA
    fails with NOSCRIPT and is sent again once loaded: the failed call ran nothing."""
    stats = client.info("commandstats")
    ran = 0
    for command in ("evalsha", "eval"):
        stat = stats.get(f"cmdstat_{command}", {})
        ran += stat.get("calls", 0) - stat.get("failed_calls", 0)
    return ran


def by_task(messages) -> dict[str, object]:
    out = {}
    for msg in messages:
        task_id = msg.key().decode()
        assert task_id not in out, f"two dispatch messages for {task_id}"
        out[task_id] = msg
    return out


def test_a_batch_publishes_one_dispatch_per_task_each_the_one_the_one_task_path_publishes(
    dispatcher, publisher, redis_client, twin_redis, bus, probe, probe_on, tasks
):
    # Given plain tasks of different shapes and a composite's three children, all queued
    assert dispatcher.raise_fence(EPOCH) == (True, EPOCH)
    plain = submit(
        tasks,
        [
            {"taskType": "SHELL", "payload": "true"},
            {"taskName": "named", "taskType": "PYTHON_SCRIPT", "payload": "print(1)"},
            {"taskType": "SHELL", "payload": "sleep 1", "executionTimeout": 5, "retryCount": 3},
        ],
    )
    _, children, _ = queue_composite_children(redis_client)
    ids = plain + children
    agent_for = {task_id: ("agent-1", "agent-2")[i % 2] for i, task_id in enumerate(ids)}
    # and the very same state in a second database, for the one-task path
    copy_database(redis_client, twin_redis)

    # When the leader takes them all and places them in one batch
    raws = dispatcher.take_batch(1, 16)
    assert len(raws) == len(ids)
    scripts_before = scripts_run(redis_client)
    placed = dispatcher.place_batch(raws, EPOCH, ACTOR, lambda task: agent_for[task.task_id])
    scripts_during = scripts_run(redis_client) - scripts_before
    assert publisher.flush(15) == 0
    # and, on the copy, a leader of the same epoch places each the one-task way
    one_bus = Bus(bus.bootstrap, bus.namespace + "-one")
    ensure_topics(one_bus.bootstrap, one_bus.namespace)
    one_publisher = EventPublisher(one_bus, "test-leader-one")
    try:
        one = KafkaDispatcher(
            twin_redis, RedisTaskStore(twin_redis), one_publisher, partition_of=PARTITIONS.get
        )
        assert one.raise_fence(EPOCH) == (True, EPOCH)
        for _ in ids:
            scheduled = one.schedule(one.take(1.0), EPOCH, ACTOR)
            assert isinstance(scheduled, Scheduled)
            agent_id = agent_for[scheduled.task.task_id]
            assert one.dispatch(scheduled, agent_id, EPOCH, ACTOR).accepted
        assert one_publisher.flush(15) == 0
    finally:
        one_publisher.close()

    # Then every task of the batch was DISPATCHED, by one script for the whole batch
    assert [p.task_id for p in placed] == ids
    assert scripts_during == 1
    assert all(isinstance(p.outcome, TransitionResult) and p.outcome.accepted for p in placed)
    # and exactly one dispatch message was published for each
    batch = by_task(probe.read(DISPATCH, lambda got: len(got) >= len(ids)))
    single = by_task(probe_on(one_bus).read(DISPATCH, lambda got: len(got) >= len(ids)))
    assert set(batch) == set(single) == set(ids)
    assert probe.dispatches() == len(ids)
    for task_id in ids:
        got, want = batch[task_id], single[task_id]
        agent_id = agent_for[task_id]
        # to the partition its agent reads, with the same headers as the one-task path's
        assert got.partition() == want.partition() == PARTITIONS[agent_id], task_id
        assert probe.headers(got) == probe.headers(want) == {AGENT_HEADER: agent_id}, task_id
        # and the same body, field by field and in the same order; only the time it was
        # published differs
        got_body, want_body = json.loads(got.value()), json.loads(want.value())
        assert got_body.pop("dispatchedAt") >= want_body.pop("dispatchedAt") - 60
        assert list(got_body.items()) == list(want_body.items()), task_id
        assert (got_body["attempt"], got_body["epoch"]) == (1, EPOCH)
    # and the relay knows each as just published, as after the one-task path
    assert set(dispatcher._published) == set(one._published) == {(i, 1) for i in ids}


def test_a_composites_children_placed_in_a_batch_carry_their_place_and_input(
    dispatcher, publisher, redis_client, probe, tasks
):
    # Given a composite's two children and its reduce, queued, and a plain task behind them
    assert dispatcher.raise_fence(EPOCH) == (True, EPOCH)
    parent_id, children, reduce_input = queue_composite_children(redis_client)
    [plain] = submit(tasks, [{"taskType": "SHELL", "payload": "true"}])

    # When the leader places all four in one batch
    placed = dispatcher.place_batch(
        dispatcher.take_batch(1, 16), EPOCH, ACTOR, lambda task: "agent-1"
    )
    assert [p.task_id for p in placed] == [*children, plain]
    assert publisher.flush(15) == 0

    # Then each child's dispatch carries its parent, role, place and (the reduce) its input
    got = by_task(probe.read(DISPATCH, lambda messages: len(messages) >= 4))
    sent = {task_id: decode(DispatchMessage, msg.value()).task() for task_id, msg in got.items()}
    first, second, reduce = (sent[c] for c in children)
    assert (first.parent_id, first.role, first.shard_index, first.shard_total) == (
        parent_id,
        "child",
        0,
        2,
    )
    assert (second.parent_id, second.role, second.shard_index) == (parent_id, "child", 1)
    assert (reduce.parent_id, reduce.role, reduce.input) == (parent_id, "reduce", reduce_input)
    assert first.input is None
    # and the plain task's carries none of a child's fields
    assert (sent[plain].parent_id, sent[plain].role, sent[plain].input) == (None, None, None)


def test_a_deposed_leaders_batch_writes_nothing_and_publishes_nothing(
    dispatcher, publisher, redis_client, probe, tasks
):
    # Given a leader of epoch 10 that took three tasks, and a newer leader of epoch 20
    store = RedisTaskStore(redis_client)
    ids = submit(tasks, [{"taskType": "SHELL", "payload": "true"}] * 3)
    assert dispatcher.raise_fence(10) == (True, 10)
    raws = dispatcher.take_batch(1, 16)
    assert dispatcher.raise_fence(20) == (True, 20)
    before = {
        key: redis_client.dump(key)
        for key in redis_client.scan_iter()
        if key.decode() != keys.TRANSITION_STATS
    }

    # When the deposed leader places its batch
    placed = dispatcher.place_batch(raws, 10, "scheduler:old", lambda task: "agent-1")
    assert publisher.flush(15) == 0

    # Then the batch is refused whole
    assert [(type(p.outcome), p.outcome.reason) for p in placed] == [
        (NotScheduled, "stale_epoch")
    ] * 3
    # and nothing in Redis changed but the count of stale writes
    after = {
        key: redis_client.dump(key)
        for key in redis_client.scan_iter()
        if key.decode() != keys.TRANSITION_STATS
    }
    assert after == before
    assert store.stats()["rejected_stale_epoch"] == 1
    assert all(store.get(i).status == TaskStatus.PENDING for i in ids)
    # and nothing was published, nor left for the relay to publish
    assert probe.dispatches() == 0
    assert dispatcher._published == {}


def test_a_bad_message_in_a_batch_is_dead_lettered_and_the_rest_is_placed_and_published(
    dispatcher, publisher, redis_client, probe, tasks
):
    # Given a submitted task, a message that is no task, a hand-pushed task and another
    # submitted task that no agent will be chosen for, queued in that order
    store = RedisTaskStore(redis_client)
    [first] = submit(tasks, [{"taskType": "SHELL", "payload": "true"}])
    bad = '{"taskType":"NOPE","payload":"x"}'
    redis_client.lpush(keys.PENDING_QUEUE, bad)
    redis_client.lpush(keys.PENDING_QUEUE, '{"taskType":"SHELL","payload":"echo hi"}')
    [unchosen] = submit(tasks, [{"taskType": "SHELL", "payload": "true"}])
    assert dispatcher.raise_fence(EPOCH) == (True, EPOCH)

    # When the leader places the four in one batch
    raws = dispatcher.take_batch(1, 16)
    assert len(raws) == 4
    placed = dispatcher.place_batch(
        raws, EPOCH, ACTOR, lambda task: None if task.task_id == unchosen else "agent-2"
    )
    assert publisher.flush(15) == 0

    # Then the bad message was dead-lettered, with the reason
    refused = [p.outcome for p in placed if isinstance(p.outcome, NotScheduled)]
    assert len(refused) == 1 and refused[0].reason.startswith("dead-lettered: ")
    assert "taskType" in refused[0].reason
    [letter] = [json.loads(e) for e in redis_client.lrange(keys.DEAD_LETTER, 0, -1)]
    assert (letter["message"], letter["actor"]) == (bad, ACTOR)
    assert "taskType" in letter["reason"]
    # the other two were dispatched, and published once each
    dispatched = [p.task_id for p in placed if isinstance(p.outcome, TransitionResult)]
    assert dispatched[0] == first and len(dispatched) == 2
    assert all(store.get(i).status == TaskStatus.DISPATCHED for i in dispatched)
    got = by_task(probe.read(DISPATCH, lambda messages: len(messages) >= 2))
    assert set(got) == set(dispatched)
    assert all(msg.partition() == PARTITIONS["agent-2"] for msg in got.values())
    # and the one no agent was chosen for is left SCHEDULED for the scheduler's one-task path
    # (which publishes it when it dispatches it), not published by the batch
    [left] = [p.outcome for p in placed if isinstance(p.outcome, Scheduled)]
    assert left.task.task_id == unchosen
    assert store.get(unchosen).status == TaskStatus.SCHEDULED
    assert probe.dispatches() == 2
    assert redis_client.llen(keys.SCHEDULING_QUEUE) == 1
