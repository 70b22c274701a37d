"""InMemoryCompositeStore keeps the store port's contract: the one the Redis adapter keeps.

Fenced writes refused below the fence, children released only while WAITING and their parent
RUNNING, an expansion done once, a composite submitted once per requestId, cancel and retry as
a client sees them.
"""

from __future__ import annotations

import pytest

from common.adapters.memory_composite import InMemoryCompositeStore
from common.domain.composite import Release, child_id, item_children, validate_composite
from common.domain.idempotency import IdempotencyConflict
from common.domain.task import TaskType
from common.domain.transitions import TaskStatus

S = TaskStatus
SHELL = {"taskType": "SHELL", "payload": "echo hi"}
EPOCH = 7


@pytest.fixture
def store() -> InMemoryCompositeStore:
    s = InMemoryCompositeStore()
    s.store.fence = EPOCH
    return s


def shards(n: int = 3, **more):
    return validate_composite({"kind": "SHARDS", "completions": n, "template": SHELL, **more})


def status(store, task_id) -> TaskStatus:
    return store.store.get(task_id).status


def started(store, spec):
    parent, _ = store.submit_composite(spec)
    assert store.start(parent.task_id, EPOCH, "coord").accepted
    return parent.task_id, store.children(parent.task_id)


def test_a_submitted_composite_is_a_pending_parent_with_waiting_children_on_no_queue(store):
    spec = shards(3, reduce=SHELL)
    parent, created = store.submit_composite(spec)
    assert created and parent.task_type == TaskType.COMPOSITE and parent.status == S.PENDING
    tree = store.tree(parent.task_id)
    assert [c.role for c in tree.children] == ["shard", "shard", "shard", "reduce"]
    assert {c.status for c in tree.children} == {S.WAITING}
    assert store.store.queue == [] and store.active_parents() == [parent.task_id]
    assert tree.progress.counts == {"WAITING": 4}
    assert store.store.history(tree.children[0].task_id)[0]["state"] == "WAITING"


def test_the_same_request_id_gives_the_same_parent_and_another_document_under_it_conflicts(store):
    spec = shards(2, requestId="r-1")
    first, created = store.submit_composite(spec)
    again, created_again = store.submit_composite(spec)
    assert created and not created_again and again.task_id == first.task_id
    assert len(store.store.tasks) == 3
    with pytest.raises(IdempotencyConflict):
        store.submit_composite(shards(5, requestId="r-1"))


def test_children_are_released_once_onto_the_queue_with_their_fields_and_first_attempt(store):
    pid, kids = started(store, shards(3))
    w = store.release(pid, [Release(kids[0], {"input": "[1]"}), Release(kids[1])], EPOCH, "c")
    assert w == (True, "ok", 2)
    released = store.store.get(kids[0])
    assert (released.status, released.attempt, released.input) == (S.PENDING, 1, "[1]")
    assert len(store.store.queue) == 2
    # A second release of the same children moves nothing: they are no longer WAITING.
    assert store.release(pid, [Release(kids[0]), Release(kids[1])], EPOCH, "c").count == 0
    assert len(store.store.queue) == 2


def test_nothing_is_released_for_a_parent_not_running(store):
    parent, _ = store.submit_composite(shards(2))
    kids = store.children(parent.task_id)
    assert (
        store.release(parent.task_id, [Release(kids[0])], EPOCH, "c").reason == "parent_not_running"
    )
    store.cancel_composite(parent.task_id)
    assert store.release(parent.task_id, [Release(kids[0])], EPOCH, "c").reason == "parent_final"
    assert store.store.queue == []


def test_a_child_of_another_parent_is_never_released(store):
    pid, _ = started(store, shards(1))
    other, kids = started(store, shards(1))
    assert store.release(pid, [Release(kids[0])], EPOCH, "c").count == 0
    assert status(store, kids[0]) == S.WAITING


def test_every_coordinator_write_below_the_fence_is_refused_as_stale(store):
    parent, _ = store.submit_composite(shards(2))
    pid, kids = parent.task_id, store.children(parent.task_id)
    old = EPOCH - 1
    writes = [
        store.start(pid, old, "c"),
        store.release(pid, [Release(kids[0])], old, "c"),
        store.expand(pid, [], old, "c"),
        store.skip(pid, kids, "why", old, "c"),
        store.cancel_children(pid, kids, "why", old, "c"),
        store.finish(pid, "SUCCESS", old, "c"),
    ]
    assert all(w.stale and not w.accepted for w in writes)
    assert status(store, pid) == S.PENDING and {status(store, k) for k in kids} == {S.WAITING}
    assert store.active_parents() == [pid]


def test_a_map_reduce_is_expanded_once_with_its_items_before_the_reduce_step(store):
    spec = validate_composite(
        {"kind": "MAP_REDUCE", "map": SHELL, "template": SHELL, "reduce": SHELL}
    )
    pid, (map_id, reduce_id) = started(store, spec)
    parent = store.store.get(pid)
    items = item_children(parent, spec, ["1", "2"])
    assert store.expand(pid, items, EPOCH, "c") == (True, "ok", 2)
    assert store.children(pid) == [map_id, items[0].task_id, items[1].task_id, reduce_id]
    assert status(store, items[0].task_id) == S.WAITING
    assert store.expand(pid, items, EPOCH, "c") == (False, "already_expanded", 0)
    assert len(store.children(pid)) == 4


def test_skip_moves_only_waiting_children_and_says_why(store):
    pid, kids = started(store, shards(2))
    store.release(pid, [Release(kids[0])], EPOCH, "c")
    assert store.skip(pid, kids, "upstream node 'a' FAILED", EPOCH, "c").count == 1
    skipped = store.store.get(kids[1])
    assert skipped.status == S.SKIPPED and skipped.error == "upstream node 'a' FAILED"
    assert store.store.history(kids[1])[-1]["reason"] == "upstream node 'a' FAILED"
    assert status(store, kids[0]) == S.PENDING


def test_cancel_children_stops_the_released_ones_not_the_finished(store):
    pid, kids = started(store, shards(3))
    store.release(pid, [Release(k) for k in kids], EPOCH, "c")
    first = store.store.get(kids[0])
    store.store.transition(kids[0], S.RUNNING, attempt=first.attempt, epoch=EPOCH, actor="a")
    store.store.transition(kids[0], S.FAILED, attempt=first.attempt, epoch=EPOCH, actor="a")
    w = store.cancel_children(pid, kids, "the composite failed fast", EPOCH, "c")
    assert w.count == 2
    assert [status(store, k) for k in kids] == [S.FAILED, S.CANCELLED, S.CANCELLED]


def test_finish_ends_the_parent_once_and_takes_it_off_the_active_set(store):
    pid, _ = started(store, shards(1))
    w = store.finish(pid, "SUCCESS", EPOCH, "c", result="1 of 1 children succeeded")
    assert w == (True, "ok", 1)
    parent = store.store.get(pid)
    assert (parent.status, parent.result) == (S.SUCCESS, "1 of 1 children succeeded")
    assert store.active_parents() == []
    assert store.finish(pid, "FAILED", EPOCH, "c", error="late") == (False, "parent_final", 0)
    assert store.store.get(pid).status == S.SUCCESS


def test_start_is_idempotent_and_refused_once_the_parent_ended(store):
    pid, _ = started(store, shards(1))
    assert store.start(pid, EPOCH, "c") == (True, "ok", 0)
    store.cancel_composite(pid)
    assert store.start(pid, EPOCH, "c").reason == "parent_final"
    assert store.start("nope", EPOCH, "c").reason == "missing"


def test_cancel_composite_cancels_the_parent_and_every_unfinished_child_once(store):
    pid, kids = started(store, shards(3))
    store.release(pid, [Release(kids[0])], EPOCH, "c")
    result = store.cancel_composite(pid, "alice")
    assert (result.accepted, result.reason, result.cancelled_from) == (True, "ok", "RUNNING")
    assert status(store, pid) == S.CANCELLED
    assert {status(store, k) for k in kids} == {S.CANCELLED}
    assert store.active_parents() == []  # nothing left for the coordinator
    assert store.cancel_composite(pid).reason == "already_cancelled"
    assert store.cancel_composite("nope").reason == "missing"


def test_a_finished_composite_is_not_cancelled(store):
    pid, _ = started(store, shards(1))
    store.finish(pid, "SUCCESS", EPOCH, "c")
    assert store.cancel_composite(pid)[:3] == (False, "already_final", "SUCCESS")


def test_a_retry_keeps_the_succeeded_children_and_makes_the_others_new(store):
    spec = shards(3, reduce=SHELL)
    pid, kids = started(store, spec)
    store.release(pid, [Release(k) for k in kids[:3]], EPOCH, "c")
    for k, outcome in zip(kids[:3], [S.SUCCESS, S.FAILED, S.SUCCESS], strict=True):
        t = store.store.get(k)
        store.store.transition(k, S.RUNNING, attempt=t.attempt, epoch=EPOCH, actor="a")
        store.store.transition(k, outcome, attempt=t.attempt, epoch=EPOCH, actor="a")
    store.skip(pid, [kids[3]], "1 of 3 children failed", EPOCH, "c")
    store.finish(pid, "FAILED", EPOCH, "c", error="1 of 3 children failed")
    again, created = store.retry_composite(pid, "bob")
    assert created and again.retry_of == pid and again.status == S.PENDING and again.payload
    new = store.children(again.task_id)
    assert new[0] == kids[0] and new[2] == kids[2]  # the same tasks, listed again
    assert new[1] == child_id(again.task_id, "shard/1") and new[3] == child_id(
        again.task_id, "reduce"
    )
    retried = store.store.get(new[1])
    assert (retried.status, retried.retry_of, retried.parent_id) == (
        S.WAITING,
        kids[1],
        again.task_id,
    )
    assert store.store.get(new[3]).status == S.WAITING
    assert again.task_id in store.active_parents()


def test_a_retry_with_a_request_id_is_made_once(store):
    pid, _ = started(store, shards(1))
    store.finish(pid, "FAILED", EPOCH, "c", error="x")
    first, created = store.retry_composite(pid, request_id="r-1")
    second, again = store.retry_composite(pid, request_id="r-1")
    assert (created, again, second.task_id) == (True, False, first.task_id)


def test_only_a_failed_or_cancelled_composite_is_retried(store):
    pid, _ = started(store, shards(1))
    with pytest.raises(ValueError, match="only a FAILED or CANCELLED composite"):
        store.retry_composite(pid)
    with pytest.raises(ValueError, match="not a composite"):
        store.retry_composite("nope")


def test_a_dags_tree_gives_its_edges_by_child_id(store):
    spec = validate_composite(
        {
            "kind": "DAG",
            "nodes": [
                {"name": "a", "task": SHELL},
                {"name": "b", "task": SHELL, "dependsOn": ["a"]},
            ],
        }
    )
    parent, _ = store.submit_composite(spec)
    tree = store.tree(parent.task_id)
    a, b = tree.children
    assert tree.edges == [(a.task_id, b.task_id)]
    assert store.tree(a.task_id) is None  # a child is no parent
