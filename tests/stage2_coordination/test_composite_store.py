"""The composite store on a real Redis: one script per write, idempotent, fenced, and every
key a script touches declared in its KEYS (checked with MONITOR)."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from common import keys
from common.adapters.redis_composite import LIBS, SCRIPTS, RedisCompositeStore
from common.adapters.redis_dispatch import RedisDispatcher
from common.adapters.redis_queue import Claim, RedisWorkQueue
from common.adapters.redis_retention import RedisRetention
from common.adapters.redis_scripts import script_source
from common.adapters.redis_store import RedisTaskStore
from common.domain.composite import (
    MAX_CHILDREN,
    CompositeSpec,
    broadcast_children,
    item_children,
    validate_composite,
)
from common.domain.idempotency import IdempotencyConflict
from common.domain.task import TaskType
from common.domain.transitions import TaskStatus
from common.ports.composite import Release
from common.testing import eventually

pytestmark = pytest.mark.integration

EPOCH = 3
DAY = 86400.0
WEEK = 7 * DAY


def shards(n: int, request_id: str | None = None, reduce: bool = False, **more) -> CompositeSpec:
    doc: dict = {
        "kind": "SHARDS",
        "completions": n,
        "template": {"taskType": "SHELL", "payload": "echo $TASKLAB_SHARD_INDEX"},
        **more,
    }
    if request_id:
        doc["requestId"] = request_id
    if reduce:
        doc["reduce"] = {"taskType": "SHELL", "payload": "echo reduced"}
    return validate_composite(doc)


def map_reduce() -> CompositeSpec:
    return validate_composite(
        {
            "kind": "MAP_REDUCE",
            "map": {"taskType": "PYTHON_SCRIPT", "payload": "print([1, 2, 3])"},
            "template": {"taskType": "SHELL", "payload": "echo $TASKLAB_INPUT"},
            "reduce": {"taskType": "SHELL", "payload": "echo $TASKLAB_INPUT"},
        }
    )


@pytest.fixture
def store(redis_client) -> RedisCompositeStore:
    redis_client.set(keys.SCHEDULER_FENCE, EPOCH)
    return RedisCompositeStore(redis_client)


@pytest.fixture
def tasks(redis_client) -> RedisTaskStore:
    return RedisTaskStore(redis_client)


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key's serialized value, the counters left out: what a refused write must not
    change."""
    return {
        k: client.dump(k)
        for k in sorted(client.keys("*"))
        if k not in (keys.TRANSITION_STATS.encode(),)
    }


def history_states(client: redis.Redis, task_id: str) -> list[str]:
    return [json.loads(e)["state"] for e in client.lrange(keys.history(task_id), 0, -1)]


def run_child(tasks: RedisTaskStore, task_id: str, to: TaskStatus) -> None:
    """Move a released child on as a scheduler and an agent would (PENDING -> ... -> `to`)."""
    path = {
        TaskStatus.SCHEDULED: [TaskStatus.SCHEDULED],
        TaskStatus.RUNNING: [TaskStatus.RUNNING],
        TaskStatus.SUCCESS: [TaskStatus.RUNNING, TaskStatus.SUCCESS],
        TaskStatus.FAILED: [TaskStatus.RUNNING, TaskStatus.FAILED],
    }[to]
    for step in path:
        task = tasks.get(task_id)
        assert task is not None
        result = tasks.transition(task_id, step, attempt=task.attempt, epoch=EPOCH, actor="t")
        assert result.accepted, result


# -- submit ------------------------------------------------------------------------------------


def test_a_composite_is_stored_as_a_pending_parent_with_waiting_children_in_order(
    store, redis_client
):
    parent, created = store.submit_composite(shards(3, reduce=True))
    assert created
    tree = store.tree(parent.task_id)
    assert tree is not None
    assert tree.parent.status == TaskStatus.PENDING
    assert tree.parent.task_type == TaskType.COMPOSITE
    assert CompositeSpec.from_payload(tree.parent.payload) == shards(3, reduce=True)
    assert [(c.role, c.shard_index, c.shard_total) for c in tree.children] == [
        ("shard", 0, 3),
        ("shard", 1, 3),
        ("shard", 2, 3),
        ("reduce", 0, 1),
    ]
    assert {c.status for c in tree.children} == {TaskStatus.WAITING}
    assert {c.parent_id for c in tree.children} == {parent.task_id}
    # The first history entry says WAITING, as the hash does; the parent's says PENDING.
    assert history_states(redis_client, tree.children[0].task_id) == ["WAITING"]
    assert history_states(redis_client, parent.task_id) == ["PENDING"]
    assert store.active_parents() == [parent.task_id]
    assert store.children(parent.task_id) == [c.task_id for c in tree.children]
    # Nothing is queued: a parent never is, and children wait to be released.
    assert redis_client.llen(keys.PENDING_QUEUE) == 0
    indexed = {m.decode() for m in redis_client.zrange(keys.TASK_INDEX, 0, -1)}
    assert indexed == {parent.task_id, *(c.task_id for c in tree.children)}


def test_a_composite_submitted_twice_with_one_request_id_is_one_parent_with_its_children_once(
    store, redis_client
):
    first, created = store.submit_composite(shards(4, request_id="nightly-1"))
    again, created_again = store.submit_composite(shards(4, request_id="nightly-1"))
    assert created and not created_again
    assert again.task_id == first.task_id
    assert store.children(first.task_id) == store.children(again.task_id)
    assert len(store.children(first.task_id)) == 4
    assert redis_client.zcard(keys.TASK_INDEX) == 5
    assert store.active_parents() == [first.task_id]


def test_the_same_request_id_with_another_document_is_an_idempotency_conflict(store, redis_client):
    first, _ = store.submit_composite(shards(4, request_id="nightly-2"))
    with pytest.raises(IdempotencyConflict) as err:
        store.submit_composite(shards(5, request_id="nightly-2"))
    assert err.value.task_id == first.task_id
    assert redis_client.zcard(keys.TASK_INDEX) == 5


def test_fifty_concurrent_submits_with_one_request_id_create_one_composite(store, redis_url):
    start = threading.Barrier(50)

    def submit(_: int) -> tuple[str, bool]:
        client = redis.Redis.from_url(redis_url)
        try:
            start.wait(timeout=10)
            parent, created = RedisCompositeStore(client).submit_composite(
                shards(20, request_id="fan-out")
            )
            return parent.task_id, created
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(submit, range(50)))
    assert len({parent_id for parent_id, _ in answers}) == 1
    assert sum(created for _, created in answers) == 1
    store.client.ping()
    assert store.client.zcard(keys.TASK_INDEX) == 21
    assert len(store.active_parents()) == 1


def test_a_composite_of_the_most_children_allowed_is_created_cancelled_and_retried_whole(store):
    parent, _ = store.submit_composite(shards(MAX_CHILDREN))
    assert len(store.children(parent.task_id)) == MAX_CHILDREN
    assert store.cancel_composite(parent.task_id).accepted
    tree = store.tree(parent.task_id)
    assert tree is not None
    assert tree.progress.counts == {"CANCELLED": MAX_CHILDREN}
    retry, _ = store.retry_composite(parent.task_id)
    assert len(store.children(retry.task_id)) == MAX_CHILDREN


# -- the coordinator's fenced writes -----------------------------------------------------------


def test_a_stale_epoch_is_refused_by_every_fenced_write_and_changes_nothing(store, redis_client):
    parent, _ = store.submit_composite(map_reduce())
    other, _ = store.submit_composite(shards(2))
    assert store.start(other.task_id, EPOCH, "coordinator").accepted
    spec = map_reduce()
    items = item_children(parent, spec, ["1", "2"])
    ids = store.children(other.task_id)
    before = snapshot(redis_client)
    stale = EPOCH - 1
    writes = {
        "start": store.start(parent.task_id, stale, "old"),
        "release": store.release(other.task_id, [Release(i) for i in ids], stale, "old"),
        "expand": store.expand(parent.task_id, items, stale, "old"),
        "skip": store.skip(other.task_id, ids, "no", stale, "old"),
        "finish": store.finish(other.task_id, "SUCCESS", stale, "old", result="x"),
    }
    assert {name: (w.accepted, w.reason, w.stale) for name, w in writes.items()} == {
        name: (False, "stale_epoch", True) for name in writes
    }
    assert snapshot(redis_client) == before
    assert int(redis_client.hget(keys.TRANSITION_STATS, "rejected_stale_epoch")) == 5


def test_start_moves_the_parent_to_running_once(store, redis_client):
    parent, _ = store.submit_composite(shards(1))
    assert store.start(parent.task_id, EPOCH, "c") == (True, "ok", 1)
    assert store.start(parent.task_id, EPOCH, "c") == (True, "ok", 0)
    assert history_states(redis_client, parent.task_id) == ["PENDING", "RUNNING"]


def test_a_child_is_released_only_while_waiting_and_only_once(store, tasks, redis_client):
    parent, _ = store.submit_composite(shards(3, reduce=True))
    ids = store.children(parent.task_id)
    # Not before the parent runs.
    refused = store.release(parent.task_id, [Release(ids[0])], EPOCH, "c")
    assert (refused.accepted, refused.reason) == (False, "parent_not_running")
    store.start(parent.task_id, EPOCH, "c")
    first = store.release(
        parent.task_id, [Release(ids[0]), Release(ids[3], {"input": '[{"index":0}]'})], EPOCH, "c"
    )
    assert (first.accepted, first.count) == (True, 2)
    again = store.release(parent.task_id, [Release(ids[0]), Release(ids[3])], EPOCH, "c")
    assert (again.accepted, again.count) == (True, 0)
    released = store.tasks(ids)
    assert released[ids[0]].status == TaskStatus.PENDING
    # Its first attempt, not a second: WAITING -> PENDING is no retry.
    assert released[ids[0]].attempt == 1
    assert released[ids[3]].input == '[{"index":0}]'
    assert released[ids[1]].status == TaskStatus.WAITING
    # One message each on the queue, the task's own message, and nothing twice.
    queued = [m.decode() for m in redis_client.lrange(keys.PENDING_QUEUE, 0, -1)]
    assert sorted(queued) == sorted(released[i].to_message() for i in (ids[0], ids[3]))
    # A child of another parent is not released through this one.
    other, _ = store.submit_composite(shards(1))
    stranger = store.children(other.task_id)[0]
    assert store.release(parent.task_id, [Release(stranger)], EPOCH, "c").count == 0
    assert tasks.get(stranger).status == TaskStatus.WAITING


def test_a_released_child_is_placed_by_the_scheduler_and_claimed_with_its_composite_fields(
    store, tasks, redis_client
):
    parent, _ = store.submit_composite(shards(2))
    ids = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(i) for i in ids], EPOCH, "c")
    dispatcher = RedisDispatcher(redis_client, tasks)
    raw = dispatcher.take(timeout=1)
    assert raw is not None
    scheduled = dispatcher.schedule(raw, EPOCH, "leader")
    assert scheduled.task.task_id == ids[0]
    assert (scheduled.task.parent_id, scheduled.task.shard_index) == (parent.task_id, 0)
    assert scheduled.task.shard_total == 2
    # The agent's claim of the dispatch gets the whole hash back, the composite's fields too.
    assert dispatcher.dispatch(scheduled, "agent-a", EPOCH, "leader").accepted
    queue = RedisWorkQueue(
        redis_client, tasks, source=keys.agent_tasks("agent-a"), requeue_to=keys.PENDING_QUEUE
    )
    taken = queue.take_reliably("agent-a", 1)
    assert taken is not None
    claim = queue.claim("agent-a", taken)
    assert isinstance(claim, Claim)
    assert claim.task.task_id == ids[0]
    assert (claim.task.parent_id, claim.task.role, claim.task.shard_index) == (
        parent.task_id,
        "shard",
        0,
    )
    assert claim.attempt == 1


def test_expand_adds_children_once_before_the_reduce_step(store, redis_client):
    spec = map_reduce()
    parent, _ = store.submit_composite(spec)
    map_id, reduce_id = store.children(parent.task_id)
    items = item_children(parent, spec, ['"a"', '"b"', '"c"'])
    first = store.expand(parent.task_id, items, EPOCH, "c")
    assert (first.accepted, first.count) == (True, 3)
    assert store.children(parent.task_id) == [map_id, *(c.task_id for c in items), reduce_id]
    again = store.expand(parent.task_id, item_children(parent, spec, ['"z"']), EPOCH, "c")
    assert (again.accepted, again.reason) == (False, "already_expanded")
    assert len(store.children(parent.task_id)) == 5
    stored = store.tasks([c.task_id for c in items])
    assert [stored[c.task_id].input for c in items] == ['"a"', '"b"', '"c"']
    assert {s.status for s in stored.values()} == {TaskStatus.WAITING}
    assert redis_client.hget(keys.task(parent.task_id), "expanded") == b"1"


def test_a_broadcast_expands_with_its_children_pinned_and_no_reduce_step(store):
    spec = validate_composite(
        {"kind": "BROADCAST", "template": {"taskType": "SHELL", "payload": "hostname"}}
    )
    parent, _ = store.submit_composite(spec)
    assert store.children(parent.task_id) == []
    children = broadcast_children(parent, spec, ["agent-b", "agent-a"])
    assert store.expand(parent.task_id, children, EPOCH, "c").count == 2
    stored = store.tree(parent.task_id)
    assert stored is not None
    assert [(c.pinned_agent, c.shard_index) for c in stored.children] == [
        ("agent-a", 0),
        ("agent-b", 1),
    ]


def test_skip_moves_only_waiting_children_and_records_why(store, tasks, redis_client):
    parent, _ = store.submit_composite(shards(3))
    ids = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(ids[0])], EPOCH, "c")
    write = store.skip(parent.task_id, ids, "upstream node 'b' FAILED", EPOCH, "c")
    assert write.count == 2
    now = store.tasks(ids)
    assert [now[i].status for i in ids] == [
        TaskStatus.PENDING,
        TaskStatus.SKIPPED,
        TaskStatus.SKIPPED,
    ]
    assert now[ids[1]].error == "upstream node 'b' FAILED"
    assert json.loads(redis_client.lindex(keys.history(ids[1]), -1))["reason"] == (
        "upstream node 'b' FAILED"
    )
    assert store.skip(parent.task_id, ids, "again", EPOCH, "c").count == 0


def test_finish_ends_the_parent_once_and_takes_it_off_the_active_set(store, redis_client):
    parent, _ = store.submit_composite(shards(1))
    # From PENDING too: through RUNNING, as the table wants.
    done = store.finish(parent.task_id, "FAILED", EPOCH, "c", error="no live agent")
    assert (done.accepted, done.count) == (True, 1)
    stored = store.tree(parent.task_id)
    assert stored is not None
    assert (stored.parent.status, stored.parent.error) == (TaskStatus.FAILED, "no live agent")
    assert history_states(redis_client, parent.task_id) == ["PENDING", "RUNNING", "FAILED"]
    assert store.active_parents() == []
    again = store.finish(parent.task_id, "SUCCESS", EPOCH, "c")
    assert (again.accepted, again.reason) == (False, "parent_final")
    # A parent a client cancelled is only taken off the set.
    cancelled, _ = store.submit_composite(shards(1))
    redis_client.hset(keys.task(cancelled.task_id), "status", "CANCELLED")
    assert store.finish(cancelled.task_id, "SUCCESS", EPOCH, "c").reason == "parent_final"
    assert store.active_parents() == []
    assert redis_client.hget(keys.task(cancelled.task_id), "status") == b"CANCELLED"


# -- cancel and retry ----------------------------------------------------------------------------


def test_cancel_composite_cancels_every_unfinished_child_and_leaves_finished_ones(
    store, tasks, redis_client
):
    parent, _ = store.submit_composite(shards(5))
    ids = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(i) for i in ids[1:]], EPOCH, "c")
    run_child(tasks, ids[2], TaskStatus.RUNNING)
    run_child(tasks, ids[3], TaskStatus.SUCCESS)
    run_child(tasks, ids[4], TaskStatus.FAILED)
    result = store.cancel_composite(parent.task_id)
    assert (result.accepted, result.reason, result.cancelled_from) == (True, "ok", "RUNNING")
    now = store.tasks([parent.task_id, *ids])
    assert [now[i].status for i in [parent.task_id, *ids]] == [
        TaskStatus.CANCELLED,
        TaskStatus.CANCELLED,  # was WAITING
        TaskStatus.CANCELLED,  # was PENDING
        TaskStatus.CANCELLED,  # was RUNNING: its agent kills it on seeing this
        TaskStatus.SUCCESS,
        TaskStatus.FAILED,
    ]
    assert store.active_parents() == []
    history = json.loads(redis_client.lindex(keys.history(ids[2]), -1))
    assert (history["from"], history["reason"]) == ("RUNNING", "its parent was cancelled")
    before = snapshot(redis_client)
    again = store.cancel_composite(parent.task_id)
    assert (again.accepted, again.reason) == (True, "already_cancelled")
    assert snapshot(redis_client) == before


def test_a_finished_composite_is_not_cancelled(store):
    parent, _ = store.submit_composite(shards(1))
    store.finish(parent.task_id, "SUCCESS", EPOCH, "c", result="1 of 1 children succeeded")
    result = store.cancel_composite(parent.task_id)
    assert (result.accepted, result.reason, result.status) == (False, "already_final", "SUCCESS")
    assert store.tasks(store.children(parent.task_id)).popitem()[1].status == TaskStatus.WAITING


def test_cancel_of_a_plain_task_id_is_missing(store, tasks):
    from common.domain.task import TaskSpec

    plain, _ = tasks.submit(TaskSpec(task_type=TaskType.SHELL, payload="true"))
    assert store.cancel_composite(plain.task_id).reason == "missing"
    assert store.tree(plain.task_id) is None
    assert tasks.get(plain.task_id).status == TaskStatus.PENDING


def test_retry_composite_keeps_succeeded_children_and_recreates_the_rest(
    store, tasks, redis_client
):
    spec = map_reduce()
    parent, _ = store.submit_composite(spec)
    map_id, reduce_id = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(map_id)], EPOCH, "c")
    run_child(tasks, map_id, TaskStatus.SUCCESS)
    items = item_children(parent, spec, ["1", "2", "3"])
    store.expand(parent.task_id, items, EPOCH, "c")
    store.release(parent.task_id, [Release(c.task_id) for c in items], EPOCH, "c")
    run_child(tasks, items[0].task_id, TaskStatus.SUCCESS)
    run_child(tasks, items[1].task_id, TaskStatus.FAILED)
    run_child(tasks, items[2].task_id, TaskStatus.SUCCESS)
    store.skip(parent.task_id, [reduce_id], "a child failed", EPOCH, "c")
    store.finish(parent.task_id, "FAILED", EPOCH, "c", error="1 of 4 children failed")

    retry, created = store.retry_composite(parent.task_id, actor="alice")
    assert created and retry.retry_of == parent.task_id
    tree = store.tree(retry.task_id)
    assert tree is not None
    assert tree.parent.status == TaskStatus.PENDING
    listed = [c.task_id for c in tree.children]
    # The succeeded ones are the same tasks, listed again in their places.
    assert listed[0] == map_id and listed[1] == items[0].task_id and listed[3] == items[2].task_id
    new_item, new_reduce = tree.children[2], tree.children[4]
    assert new_item.task_id not in (items[1].task_id, reduce_id)
    assert (new_item.status, new_item.retry_of, new_item.parent_id) == (
        TaskStatus.WAITING,
        items[1].task_id,
        retry.task_id,
    )
    assert (new_item.input, new_item.shard_index, new_item.shard_total) == ("2", 1, 3)
    assert (new_reduce.role, new_reduce.retry_of, new_reduce.input) == ("reduce", reduce_id, None)
    # Its items are known: the coordinator does not expand it again.
    assert redis_client.hget(keys.task(retry.task_id), "expanded") == b"1"
    assert store.active_parents() == [retry.task_id]
    # The old composite is left as it was.
    old = store.tree(parent.task_id)
    assert old is not None and old.parent.status == TaskStatus.FAILED
    assert len(old.children) == 5


def test_a_composite_retry_with_a_request_id_makes_one_new_parent_however_often_it_is_sent(
    store, redis_client
):
    # Given a cancelled composite
    parent, _ = store.submit_composite(shards(2))
    assert store.cancel_composite(parent.task_id).accepted

    # When its retry is sent three times with one requestId (a client that lost the answers)
    first, created = store.retry_composite(parent.task_id, request_id="retry-7")
    again = [store.retry_composite(parent.task_id, request_id="retry-7") for _ in range(2)]

    # Then one new parent exists, and every answer after the first names it
    assert created
    assert [(p.task_id, c) for p, c in again] == [(first.task_id, False)] * 2
    assert store.active_parents() == [first.task_id]
    # and the same id for anything else is a conflict, naming the parent it made
    other, _ = store.submit_composite(shards(1))
    assert store.cancel_composite(other.task_id).accepted
    with pytest.raises(IdempotencyConflict) as conflict:
        store.retry_composite(other.task_id, request_id="retry-7")
    assert conflict.value.task_id == first.task_id
    assert store.active_parents() == sorted([first.task_id])


def test_retry_composite_refuses_a_composite_that_is_not_finished_unsuccessfully(store):
    parent, _ = store.submit_composite(shards(2))
    with pytest.raises(ValueError, match="PENDING"):
        store.retry_composite(parent.task_id)
    store.finish(parent.task_id, "SUCCESS", EPOCH, "c")
    with pytest.raises(ValueError, match="SUCCESS"):
        store.retry_composite(parent.task_id)
    with pytest.raises(ValueError, match="not a composite"):
        store.retry_composite("00000000-0000-4000-8000-000000000000")


def test_a_dag_tree_gives_its_edges_by_child_id(store):
    spec = validate_composite(
        {
            "kind": "DAG",
            "nodes": [
                {"name": "a", "task": {"taskType": "SHELL", "payload": "true"}},
                {"name": "b", "task": {"taskType": "SHELL", "payload": "true"}, "dependsOn": ["a"]},
                {"name": "c", "task": {"taskType": "SHELL", "payload": "true"}, "dependsOn": ["a"]},
                {
                    "name": "d",
                    "task": {"taskType": "SHELL", "payload": "true"},
                    "dependsOn": ["b", "c"],
                    "trigger": "all_done",
                },
            ],
        }
    )
    parent, _ = store.submit_composite(spec)
    tree = store.tree(parent.task_id)
    assert tree is not None
    by_node = {c.node: c.task_id for c in tree.children}
    assert tree.edges == [
        (by_node["a"], by_node["b"]),
        (by_node["a"], by_node["c"]),
        (by_node["b"], by_node["d"]),
        (by_node["c"], by_node["d"]),
    ]


# -- every key declared ------------------------------------------------------------------------

_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def keys_touched(client: redis.Redis, url: str, call) -> list[tuple[set[str], set[str]]]:
    """Run `call` under MONITOR; for each script it ran, (keys declared, keys its commands
    touched), the touched ones found with COMMAND GETKEYS, so no command's key is missed."""
    marker = "composite-monitor-end"
    watcher = redis.Redis.from_url(url)
    monitor = watcher.monitor()
    lines: list[bytes] = []
    with monitor:
        call()
        client.echo(marker)
        for _ in range(100_000):
            raw = monitor.connection.read_response()
            if marker.encode() in raw and b'"ECHO"' in raw.upper():
                break
            lines.append(raw)
        else:
            raise AssertionError("MONITOR never showed the marker")
    watcher.close()
    scripts: list[tuple[set[str], set[str]]] = []
    for raw in lines:
        args = [a.decode() for a in _QUOTED.findall(raw.split(b"] ", 1)[1])]
        if args and args[0].upper() in ("EVALSHA", "EVAL"):
            n = int(args[2])
            scripts.append((set(args[3 : 3 + n]), set()))
        elif b"[0 lua]" in raw or b" lua]" in raw:
            assert scripts, f"a script command before any script: {raw[:120]!r}"
            try:
                touched = client.command_getkeys(*args)
            except redis.ResponseError:
                touched = []  # a command without keys (GET of nothing, a time read)
            scripts[-1][1].update(k if isinstance(k, str) else k.decode() for k in touched)
    return scripts


def test_every_composite_script_touches_only_the_keys_it_declares(store, tasks, redis_url):
    client = store.client
    # Loaded first: a script's first EVALSHA fails with NOSCRIPT and runs nothing.
    for name in SCRIPTS:
        client.script_load(script_source(f"composite_{name}", *LIBS))
    client.script_load(script_source("retention"))
    spec = map_reduce().model_copy(update={"request_id": "k-1"})
    parent = None

    def submit():
        nonlocal parent
        parent, _ = store.submit_composite(spec)

    scripts_seen: dict[str, list[tuple[set[str], set[str]]]] = {}
    scripts_seen["submit"] = keys_touched(client, redis_url, submit)
    assert parent is not None
    pid = parent.task_id
    map_id, reduce_id = store.children(pid)
    items = item_children(parent, spec, ["1", "2"])
    calls = {
        "submit again": lambda: store.submit_composite(spec),
        "start": lambda: store.start(pid, EPOCH, "c"),
        "release": lambda: store.release(pid, [Release(map_id, {"input": "x"})], EPOCH, "c"),
        "expand": lambda: store.expand(pid, items, EPOCH, "c"),
        "skip": lambda: store.skip(pid, [items[0].task_id], "no", EPOCH, "c"),
        "cancel": lambda: store.cancel_composite(pid),
        "retry": lambda: store.retry_composite(pid),
        "finish": lambda: store.finish(pid, "FAILED", EPOCH, "c", error="x"),
        # retention.lua reads a child's parent and deletes a parent's children list.
        "retention": lambda: RedisRetention(client).sweep(WEEK, now=time.time() + 8 * DAY),
    }
    for name, call in calls.items():
        scripts_seen[name] = keys_touched(client, redis_url, call)
    for name, runs in scripts_seen.items():
        assert runs, f"{name}: no script ran"
        for declared, touched in runs:
            assert touched, f"{name}: MONITOR showed no command of the script"
            assert touched <= declared, f"{name} touched undeclared keys {touched - declared}"


# -- retention -----------------------------------------------------------------------------------


def test_retention_keeps_a_finished_child_while_its_parent_runs_then_takes_the_whole_composite(
    store, tasks, redis_client
):
    parent, _ = store.submit_composite(shards(2, request_id="old-run"))
    ids = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(ids[0])], EPOCH, "c")
    run_child(tasks, ids[0], TaskStatus.SUCCESS)
    store.skip(parent.task_id, ids[1:], "not needed", EPOCH, "c")
    retention = RedisRetention(redis_client)
    later = time.time() + 8 * DAY
    # The children are finished and old, but their parent still runs: its tree needs them.
    survey = retention.survey(WEEK, now=later)
    assert (survey.finished, survey.kept) == ({}, {"RUNNING": 1, "SUCCESS": 1, "SKIPPED": 1})
    report = retention.sweep(WEEK, now=later)
    assert report.removed == 0
    assert store.tasks(ids).keys() == set(ids)
    store.finish(parent.task_id, "SUCCESS", EPOCH, "c", result="1 of 2 children succeeded")
    assert retention.survey(WEEK, now=later).finished == {"SUCCESS": 2, "SKIPPED": 1}
    report = retention.sweep(WEEK, now=later)
    # A SKIPPED child is final and goes like any other; the parent takes its list with it.
    assert (report.removed, report.by_status) == (3, {"SUCCESS": 2, "SKIPPED": 1})
    assert redis_client.keys("task:*") == []
    assert redis_client.zcard(keys.TASK_INDEX) == 0
    assert not redis_client.exists(keys.request("old-run"))


def test_retention_keeps_a_child_a_retry_kept_while_the_retry_runs_though_its_own_parent_ended(
    store, tasks, redis_client
):
    # Given a composite of two shards, one succeeded and one failed, retried: the new parent
    # lists the succeeded shard as it is (its parentId still names the old, finished parent)
    parent, _ = store.submit_composite(shards(2))
    kept, failed = store.children(parent.task_id)
    store.start(parent.task_id, EPOCH, "c")
    store.release(parent.task_id, [Release(kept), Release(failed)], EPOCH, "c")
    run_child(tasks, kept, TaskStatus.SUCCESS)
    run_child(tasks, failed, TaskStatus.FAILED)
    store.finish(parent.task_id, "FAILED", EPOCH, "c", error="1 of 2 children failed")
    retry, _ = store.retry_composite(parent.task_id)
    retention = RedisRetention(redis_client)
    later = time.time() + 8 * DAY
    # When a sweep runs while the retry is still running
    retention.sweep(WEEK, now=later)
    # Then the old parent and its failed shard are gone, but the kept shard stays: the running
    # retry's tree needs it
    assert store.tasks([parent.task_id, failed]) == {}
    assert store.tasks([kept]).keys() == {kept}
    assert store.tree(retry.task_id) is not None
    assert kept in store.children(retry.task_id)
    assert retention.survey(WEEK, now=later).kept["SUCCESS"] == 1
    # And once the retry ends, the kept shard goes with the retry's tree
    store.cancel_composite(retry.task_id)
    assert store.tasks([retry.task_id])[retry.task_id].status == TaskStatus.CANCELLED
    retention.sweep(WEEK, now=later)
    assert store.tasks([kept]) == {}


# -- end to end ------------------------------------------------------------------------------------


def test_released_shards_run_on_a_stage_2_agent_told_their_index_in_their_environment(
    scheduler, agent, redis_client
):
    # Given a leading scheduler (whose coordinator releases the children) and an agent, and a
    # composite of two shards
    scheduler("sched-a")
    agent("agent-a", capacity=2)
    store = RedisCompositeStore(redis_client)
    spec = validate_composite(
        {
            "kind": "SHARDS",
            "completions": 2,
            "template": {
                "taskType": "SHELL",
                "payload": 'echo "$TASKLAB_SHARD_INDEX/$TASKLAB_SHARD_TOTAL '
                '$TASKLAB_PARENT_ID $TASKLAB_ATTEMPT $TASKLAB_TASK_ID"',
            },
        }
    )
    parent, _ = store.submit_composite(spec)
    ids = store.children(parent.task_id)

    # Then each runs once, to success, with its own index, its parent and its first attempt
    def finished():
        now = store.tasks(ids)
        return all(t.is_terminal for t in now.values()) and now

    done = eventually(finished, 30, message="both shards finished")
    assert [(done[i].status, done[i].result) for i in ids] == [
        (TaskStatus.SUCCESS, f"{n}/2 {parent.task_id} 1 {i}\n") for n, i in enumerate(ids)
    ]
