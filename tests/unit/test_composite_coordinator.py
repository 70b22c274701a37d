"""The composite coordinator and pinned placement, over the in-memory stores.

One world per test: an InMemoryTaskStore shared by the dispatcher and the composite store, a
live-agents view the test sets, and the scheduler that places released children. The agents'
part (start a dispatched child, report its outcome) is played by hand, one step at a time, so
each test says exactly which state the coordinator saw when it decided.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import pytest

from common.adapters.memory_composite import InMemoryCompositeStore
from common.coordination.agent_info import AgentInfo
from common.coordination.election import Term
from common.domain.composite import ACTIVE_STATES, CompositeSpec, validate_composite
from common.domain.dispatch import DispatchEntry
from common.domain.task import Task, TaskSpec, TaskType
from common.domain.transitions import TaskStatus
from common.scheduling.composite import CompositeCoordinator
from common.scheduling.scheduler import Deposed, Scheduler
from common.scheduling.strategies import make_strategy
from common.testing.fakes import InMemoryDispatcher, InMemoryLiveAgents
from common.testing.wait import eventually

S = TaskStatus
EPOCH = 10
SHELL = {"taskType": "SHELL", "payload": "echo hi"}


def agent(agent_id: str, types=("SHELL", "PYTHON_SCRIPT"), **kw) -> AgentInfo:
    return AgentInfo(agent_id=agent_id, capacity=4, task_types=list(types), **kw)


@dataclass
class World:
    dispatcher: InMemoryDispatcher
    composites: InMemoryCompositeStore
    view: InMemoryLiveAgents
    coordinator: CompositeCoordinator
    scheduler: Scheduler
    term: Term

    @property
    def tasks(self):
        return self.dispatcher.store

    def submit(self, doc: dict) -> str:
        parent, _ = self.composites.submit_composite(validate_composite(doc))
        return parent.task_id

    def tick(self) -> None:
        self.coordinator.tick(EPOCH)

    def place_all(self) -> None:
        """The leader places every task on queue:pending (bounded by what is there)."""
        for _ in range(len(self.dispatcher.pending)):
            _, candidates = self.scheduler._candidates()
            raw = self.dispatcher.take(0)
            if raw is None:
                return
            self.scheduler._place(raw, self.term, candidates)

    def finish(self, task_id: str, outcome: TaskStatus = S.SUCCESS, result: str = "ok") -> None:
        """An agent runs a dispatched child and reports, as its dispatch entry allows."""
        task = self.tasks.get(task_id)
        assert task.status == S.DISPATCHED, task.status
        inbox = self.dispatcher.inboxes[task.agent_id]
        inbox[:] = [e for e in inbox if DispatchEntry.parse(e).task_id != task_id]
        at = {"attempt": task.attempt, "epoch": task.epoch, "actor": f"agent:{task.agent_id}"}
        assert self.tasks.transition(task_id, S.RUNNING, **at).accepted
        fields = {"result": result} if outcome == S.SUCCESS else {"error": "boom"}
        assert self.tasks.transition(task_id, outcome, fields=fields, **at).accepted

    def children(self, parent_id: str) -> list[Task]:
        return self.composites.tree(parent_id).children

    def parent(self, parent_id: str) -> Task:
        return self.tasks.get(parent_id)

    def states(self, parent_id: str) -> str:
        letters = {S.WAITING: "W", S.PENDING: "P", S.SCHEDULED: "s", S.DISPATCHED: "D"}
        letters |= {S.RUNNING: "R", S.SUCCESS: "S", S.FAILED: "F", S.CANCELLED: "C"}
        letters |= {S.SKIPPED: "K"}
        return "".join(letters[c.status] for c in self.children(parent_id))


def make_world(*agents: AgentInfo, composites: InMemoryCompositeStore | None = None) -> World:
    dispatcher = InMemoryDispatcher(composites.store if composites else None)
    composites = composites or InMemoryCompositeStore(dispatcher.store)
    view = InMemoryLiveAgents(*(agents or (agent("a1"), agent("a2"))))
    coordinator = CompositeCoordinator(composites, view, "scheduler:s1")
    scheduler = Scheduler(
        "s1",
        dispatcher,
        view,
        election=None,
        strategy=make_strategy("least-load"),
        agent_backlog=100,
        coordinator=coordinator,
    )
    view.on_departure(scheduler._on_departure)  # as run_forever() does
    term = Term(epoch=EPOCH, node="n")
    assert dispatcher.raise_fence(EPOCH) == (True, EPOCH)
    return World(dispatcher, composites, view, coordinator, scheduler, term)


@pytest.fixture
def world() -> World:
    return make_world()


def released_once(world: World, parent_id: str) -> None:
    """No child left WAITING more than once, and none is on the queue twice."""
    for child in world.children(parent_id):
        steps = [h for h in world.tasks.history(child.task_id) if h.get("from") == "WAITING"]
        assert len(steps) <= 1, (child.task_id, steps)
    assert len(world.dispatcher.pending) == len(set(world.dispatcher.pending))


# -- shards under a cap --------------------------------------------------------------------------


def test_shards_under_a_cap_of_three_run_at_most_three_at_a_time_until_all_succeed(world):
    pid = world.submit({"kind": "SHARDS", "completions": 7, "parallelism": 3, "template": SHELL})
    world.tick()
    assert world.parent(pid).status == S.RUNNING
    assert world.states(pid) == "PPPWWWW"
    world.place_all()
    assert world.states(pid) == "DDDWWWW"
    seen_max = 0
    for _ in range(7):  # finish one child at a time, in index order
        running = [c for c in world.children(pid) if c.status == S.DISPATCHED]
        world.finish(running[0].task_id, result=f"shard {running[0].shard_index}")
        world.tick()
        world.place_all()
        active = sum(1 for c in world.children(pid) if c.status in ACTIVE_STATES)
        seen_max = max(seen_max, active)
        assert active <= 3
    assert seen_max == 3
    assert world.states(pid) == "SSSSSSS"
    parent = world.parent(pid)
    assert (parent.status, parent.result) == (S.SUCCESS, "7 of 7 children succeeded")
    assert world.composites.active_parents() == []
    # Each shard knew its place: the index and the total travel on the child.
    assert [(c.shard_index, c.shard_total) for c in world.children(pid)] == [
        (i, 7) for i in range(7)
    ]
    released_once(world, pid)


def test_a_failed_shard_under_fail_fast_cancels_the_running_ones_and_skips_the_rest(world):
    pid = world.submit({"kind": "SHARDS", "completions": 5, "parallelism": 2, "template": SHELL})
    world.tick()
    world.place_all()
    first = world.children(pid)[0]
    world.finish(first.task_id, S.FAILED)
    world.tick()
    assert world.states(pid) == "FCKKK"
    parent = world.parent(pid)
    assert parent.status == S.FAILED
    assert parent.error == "1 of 5 children failed (first: echo hi [0/5]: boom)"
    cancelled = world.tasks.get(world.children(pid)[1].task_id)
    assert cancelled.error.startswith("the composite failed fast")
    assert world.composites.active_parents() == []


# -- a DAG -----------------------------------------------------------------------------------


def test_a_diamond_with_a_failing_node_skips_and_runs_downstream_by_rule_and_nothing_is_stuck(
    world,
):
    pid = world.submit(
        {
            "kind": "DAG",
            "nodes": [
                {"name": "a", "task": SHELL},
                {"name": "b", "task": SHELL, "dependsOn": ["a"]},
                {"name": "c", "task": SHELL, "dependsOn": ["a"]},
                {"name": "d", "task": SHELL, "dependsOn": ["b", "c"]},
                {"name": "alert", "task": SHELL, "dependsOn": ["b", "c"], "trigger": "ONE_FAILED"},
                {"name": "report", "task": SHELL, "dependsOn": ["d"], "trigger": "ALL_DONE"},
            ],
        }
    )
    nodes = {c.node: c.task_id for c in world.children(pid)}
    world.tick()
    world.place_all()
    assert world.states(pid) == "DWWWWW"
    world.finish(nodes["a"])
    world.tick()
    world.place_all()
    assert world.states(pid) == "SDDWWW"
    world.finish(nodes["b"], S.FAILED)
    world.tick()
    world.place_all()
    # d cannot hold any more (b FAILED); alert runs at once, while c still runs; report runs
    # because d is done, however.
    assert world.states(pid) == "SFDKDD"
    skipped = world.tasks.get(nodes["d"])
    assert skipped.error == "upstream node 'b' FAILED"
    for name in ("c", "alert", "report"):
        world.finish(nodes[name])
    world.tick()
    assert world.states(pid) == "SFSKSS"
    parent = world.parent(pid)
    assert (parent.status, parent.error) == (S.FAILED, "1 of 6 children failed (first: b: boom)")
    assert world.composites.active_parents() == []


# -- map and reduce ----------------------------------------------------------------------------


def test_a_map_reduce_expands_the_map_output_and_gives_the_reduce_its_items_results(world):
    pid = world.submit(
        {
            "kind": "MAP_REDUCE",
            "parallelism": 2,
            "map": {"taskType": "PYTHON_SCRIPT", "payload": "print(...)", "taskName": "split"},
            "template": {"taskType": "PYTHON_SCRIPT", "payload": "count()", "taskName": "count"},
            "reduce": {"taskType": "PYTHON_SCRIPT", "payload": "total()", "taskName": "total"},
        }
    )
    world.tick()
    world.place_all()
    assert world.states(pid) == "DW"
    map_id = world.children(pid)[0].task_id
    world.finish(map_id, result='splitting\n["the cat", "a dog", "the end"]')
    world.tick()
    kids = world.children(pid)
    assert [c.role for c in kids] == ["map", "item", "item", "item", "reduce"]
    assert [c.input for c in kids[1:4]] == ['"the cat"', '"a dog"', '"the end"']
    assert world.states(pid) == "SPPWW"  # the cap of 2 holds for the items
    for _ in range(3):
        world.place_all()
        item = next(c for c in world.children(pid) if c.status == S.DISPATCHED)
        world.finish(item.task_id, result=str(len(json.loads(item.input).split())))
        world.tick()
    assert world.states(pid) == "SSSSP"
    reduce = world.children(pid)[4]
    rows = json.loads(reduce.input)
    assert [(r["index"], r["result"]) for r in rows] == [(0, "2"), (1, "2"), (2, "2")]
    world.place_all()
    world.finish(reduce.task_id, result="6 words")
    world.tick()
    parent = world.parent(pid)
    assert (parent.status, parent.result) == (S.SUCCESS, "6 words")
    released_once(world, pid)


# -- broadcast and pinned placement -----------------------------------------------------------


def test_a_broadcast_runs_once_on_each_live_agent_that_runs_its_type_and_is_not_draining():
    world = make_world(
        agent("a1"),
        agent("a2"),
        agent("a3", draining=True),
        agent("a4", types=("PYTHON_SCRIPT",)),
    )
    pid = world.submit({"kind": "BROADCAST", "template": SHELL, "reduce": SHELL})
    world.tick()
    kids = world.children(pid)
    assert [(c.role, c.pinned_agent, c.shard_index, c.shard_total) for c in kids] == [
        ("broadcast", "a1", 0, 2),
        ("broadcast", "a2", 1, 2),
        ("reduce", None, 0, 1),
    ]
    world.view.live["a5"] = agent("a5")  # joins late: not part of this broadcast
    world.place_all()
    assert [world.tasks.get(c.task_id).agent_id for c in kids[:2]] == ["a1", "a2"]
    world.tick()
    assert len(world.children(pid)) == 3
    for c in kids[:2]:
        world.finish(c.task_id, result=c.pinned_agent)
    world.tick()
    world.place_all()
    assert world.tasks.get(kids[2].task_id).status == S.DISPATCHED


def test_a_broadcast_with_no_live_agent_for_its_type_fails_at_its_first_tick():
    world = make_world(agent("a1", types=("PYTHON_SCRIPT",)))
    pid = world.submit({"kind": "BROADCAST", "template": SHELL})
    world.tick()
    parent = world.parent(pid)
    assert parent.status == S.FAILED and parent.error.startswith("no live agent runs SHELL")


def pinned(world: World, agent_id: str) -> str:
    spec = TaskSpec(task_type=TaskType.SHELL, payload="echo pinned")
    task = Task.new(spec).model_copy(update={"pinned_agent": agent_id})
    world.tasks.tasks[task.task_id] = task.to_hash()
    world.tasks.histories[task.task_id] = []
    world.dispatcher.pending.insert(0, task.to_message())
    return task.task_id


def test_a_pinned_task_goes_to_its_agent_even_when_another_is_less_loaded(world):
    world.view.live["a1"] = agent("a1", load=3)
    task_id = pinned(world, "a1")
    world.place_all()
    task = world.tasks.get(task_id)
    assert (task.status, task.agent_id) == (S.DISPATCHED, "a1")


def test_a_pinned_task_whose_agent_is_gone_fails_and_leaves_no_copy_in_flight(world):
    task_id = pinned(world, "a9")
    world.place_all()
    task = world.tasks.get(task_id)
    assert (task.status, task.error) == (S.FAILED, "its agent a9 is gone")
    assert world.dispatcher.scheduling == [] and world.dispatcher.pending == []


def test_a_pinned_task_whose_agent_has_a_full_inbox_waits_on_the_queue(world):
    world.scheduler.agent_backlog = 1
    world.dispatcher.inboxes["a1"] = ["busy"]
    task_id = pinned(world, "a1")
    world.place_all()
    assert world.tasks.get(task_id).status == S.PENDING
    assert len(world.dispatcher.pending) == 1 and world.dispatcher.inboxes.get("a2") is None


def test_a_pinned_task_whose_agent_is_draining_fails(world):
    world.view.live["a1"] = agent("a1", draining=True)
    task_id = pinned(world, "a1")
    world.place_all()
    assert world.tasks.get(task_id).error == "its agent a1 is shutting down"


def test_a_broadcast_child_given_back_by_a_failover_fails_and_so_does_its_parent(world):
    pid = world.submit({"kind": "BROADCAST", "template": SHELL})
    world.tick()
    world.place_all()
    a2_child = next(c for c in world.children(pid) if c.pinned_agent == "a2")
    world.view.depart("a2")
    world.scheduler._fail_over_departed(world.term)
    assert world.tasks.get(a2_child.task_id).status == S.PENDING
    world.place_all()
    assert world.tasks.get(a2_child.task_id).error == "its agent a2 is gone"
    world.tick()  # FAIL_FAST: the other agent's child is cancelled
    assert world.states(pid) == "CF"
    assert world.parent(pid).status == S.FAILED


# -- fencing, crashes, bad parents ----------------------------------------------------------------


def test_a_coordinator_of_a_deposed_leader_raises_deposed_and_changes_nothing(world):
    pid = world.submit({"kind": "SHARDS", "completions": 2, "template": SHELL})
    world.dispatcher.raise_fence(EPOCH + 1)
    with pytest.raises(Deposed):
        world.tick()
    assert world.parent(pid).status == S.PENDING and world.states(pid) == "WW"
    assert world.dispatcher.pending == []


class Crash(Exception):
    pass


class CrashingStore(InMemoryCompositeStore):
    """Performs the write named in `crash_after`, then dies before the next one."""

    crash_after = ""

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name != object.__getattribute__(self, "crash_after"):
            return attr

        def write(*args, **kwargs):
            attr(*args, **kwargs)
            raise Crash(f"died after {name}")

        return write


def test_a_coordinator_that_died_after_expanding_is_finished_by_a_new_one_releasing_once():
    composites = CrashingStore()
    world = make_world(composites=composites)
    pid = world.submit({"kind": "MAP_REDUCE", "map": SHELL, "template": SHELL, "reduce": SHELL})
    world.tick()
    world.place_all()
    world.finish(world.children(pid)[0].task_id, result="[1, 2]")
    composites.crash_after = "expand"
    with pytest.raises(Crash):
        world.coordinator.coordinate(pid, EPOCH)
    assert world.states(pid) == "SWWW"  # expanded, nothing released yet
    composites.crash_after = ""
    fresh = CompositeCoordinator(composites, world.view, "scheduler:s2")  # an empty cache
    fresh.tick(EPOCH)
    assert world.states(pid) == "SPPW"
    fresh.tick(EPOCH)
    assert world.states(pid) == "SPPW" and composites.writes["expand"] == 1
    world.place_all()
    for c in world.children(pid)[1:3]:
        world.finish(c.task_id)
    fresh.tick(EPOCH)
    world.place_all()
    world.finish(world.children(pid)[3].task_id, result="3")
    fresh.tick(EPOCH)
    assert world.parent(pid).status == S.SUCCESS
    released_once(world, pid)


def test_a_coordinator_that_died_between_cancelling_and_finishing_is_finished_by_a_new_one():
    composites = CrashingStore()
    world = make_world(composites=composites)
    pid = world.submit({"kind": "SHARDS", "completions": 3, "parallelism": 2, "template": SHELL})
    world.tick()
    world.place_all()
    world.finish(world.children(pid)[0].task_id, S.FAILED)
    composites.crash_after = "cancel_children"
    with pytest.raises(Crash):
        world.coordinator.coordinate(pid, EPOCH)
    assert world.states(pid) == "FCK" and world.parent(pid).status == S.RUNNING
    composites.crash_after = ""
    CompositeCoordinator(composites, world.view, "scheduler:s2").tick(EPOCH)
    parent = world.parent(pid)
    assert parent.status == S.FAILED and parent.error.startswith("2 of 3 children failed")
    assert parent.error.endswith("(first: echo hi [0/3]: boom)")  # the real failure is named
    assert world.composites.active_parents() == []


def test_one_broken_parent_is_logged_with_its_id_and_the_others_go_on(world, caplog):
    bad = world.submit({"kind": "SHARDS", "completions": 1, "template": SHELL})
    world.tasks.tasks[bad]["payload"] = "not a document"
    good = world.submit({"kind": "SHARDS", "completions": 1, "template": SHELL})
    with caplog.at_level(logging.ERROR, logger="tasklab.composite"):
        world.tick()
        world.tick()
    assert world.states(good) == "P"
    errors = [r.getMessage() for r in caplog.records if bad in r.getMessage()]
    assert len(errors) == 1  # once, not once a tick
    assert bad in world.composites.active_parents()


def test_a_tick_reads_only_the_children_not_yet_seen_final(world):
    pid = world.submit({"kind": "SHARDS", "completions": 4, "template": SHELL})
    world.tick()
    world.place_all()
    for c in world.children(pid)[:3]:
        world.finish(c.task_id)
    world.tick()
    asked: list[list[str]] = []
    tasks = world.composites.tasks
    world.composites.tasks = lambda ids: asked.append(list(ids)) or tasks(ids)
    world.tick()
    assert asked == [[pid, world.children(pid)[3].task_id]]


def test_a_tick_takes_a_bounded_number_of_parents_in_turns(world):
    world.coordinator.max_parents_per_tick = 2
    ids = [world.submit({"kind": "SHARDS", "completions": 1, "template": SHELL}) for _ in range(3)]
    world.tick()
    assert sum(world.parent(p).status == S.RUNNING for p in ids) == 2
    world.tick()
    assert all(world.parent(p).status == S.RUNNING for p in ids)


# -- in the leader's term ---------------------------------------------------------------------


def run_term(world: World) -> threading.Thread:
    world.scheduler.sweep_interval = 3600  # one sweep, at the start of the term
    world.scheduler.poll_timeout = 0.01
    thread = threading.Thread(target=world.scheduler._lead, args=(world.term,), daemon=True)
    thread.start()
    return thread


def test_the_leader_coordinates_composites_during_its_term_and_stops_with_it(world):
    world.coordinator.interval = 0.01
    thread = run_term(world)
    try:
        pid = world.submit({"kind": "SHARDS", "completions": 2, "template": SHELL})
        eventually(lambda: world.states(pid) == "DD", timeout=5, message="children dispatched")
    finally:
        world.scheduler.stopping.set()  # stop() without an election
        thread.join(5)
    assert not thread.is_alive()
    assert not any(t.name.startswith("composites-") and t.is_alive() for t in threading.enumerate())


def test_a_stale_coordinator_write_ends_the_leaders_term(world):
    world.coordinator.interval = 0.01
    thread = run_term(world)
    eventually(lambda: world.coordinator.ticks > 0, timeout=5, message="coordinator ticking")
    world.dispatcher.raise_fence(EPOCH + 1)  # a newer leader
    pid = world.submit({"kind": "SHARDS", "completions": 1, "template": SHELL})
    thread.join(5)
    assert not thread.is_alive() and world.scheduler.stats.rejected_stale == 1
    assert world.parent(pid).status == S.PENDING
    world.scheduler.stopping.set()  # stop() without an election


def test_the_document_stored_on_the_parent_is_the_one_the_coordinator_reads(world):
    doc = {"kind": "SHARDS", "completions": 2, "template": SHELL, "parallelism": 1}
    pid = world.submit(doc)
    assert CompositeSpec.from_payload(world.parent(pid).payload) == validate_composite(doc)


def test_a_parent_cancelled_by_a_plain_task_cancel_has_its_children_stopped_and_leaves(world):
    pid = world.submit({"kind": "SHARDS", "completions": 3, "parallelism": 2, "template": SHELL})
    world.tick()
    world.place_all()
    # A plain cancel of the parent's task (not cancel_composite) touches the parent only.
    assert world.tasks.cancel(pid, "old-client").accepted
    world.tick()
    assert world.states(pid) == "CCK"
    skipped = world.tasks.get(world.children(pid)[2].task_id)
    assert skipped.error == "the composite was cancelled"
    assert world.composites.active_parents() == []
    assert world.parent(pid).status == S.CANCELLED


class HalfReadView(InMemoryLiveAgents):
    """A view that knows an agent is live before it has read the agent's data."""

    def __init__(self, *agents: AgentInfo, unread: set[str]) -> None:
        super().__init__(*agents)
        self.unread = unread

    def ids(self) -> set[str]:
        return set(self.live) | self.unread


def test_a_broadcast_waits_for_the_view_to_read_every_live_agent_then_includes_it(world):
    world.coordinator.view = view = HalfReadView(agent("a1"), unread={"a2"})
    pid = world.submit({"kind": "BROADCAST", "template": SHELL})
    world.tick()
    assert world.parent(pid).status == S.PENDING and world.children(pid) == []
    view.live["a2"], view.unread = agent("a2"), set()  # its data arrives
    world.tick()
    assert [c.pinned_agent for c in world.children(pid)] == ["a1", "a2"]


def test_a_broadcast_goes_without_an_agent_whose_data_never_comes(world):
    world.coordinator.view = HalfReadView(agent("a1"), unread={"bad"})
    world.coordinator.view_settle = 0.0
    pid = world.submit({"kind": "BROADCAST", "template": SHELL})
    world.tick()
    assert [c.pinned_agent for c in world.children(pid)] == ["a1"]


def test_a_tick_under_a_cap_reads_the_running_children_not_the_waiting_ones(world):
    world.coordinator.waiting_refresh = 3600
    pid = world.submit({"kind": "SHARDS", "completions": 10, "parallelism": 2, "template": SHELL})
    world.tick()
    world.place_all()
    asked: list[list[str]] = []
    tasks = world.composites.tasks
    world.composites.tasks = lambda ids: asked.append(list(ids)) or tasks(ids)
    world.tick()
    kids = [c.task_id for c in world.children(pid)]
    assert asked == [[pid, kids[0], kids[1]]]


def test_a_waiting_child_cancelled_by_its_id_is_seen_at_the_next_full_read(world):
    world.coordinator.waiting_refresh = 3600
    pid = world.submit({"kind": "SHARDS", "completions": 3, "parallelism": 1, "template": SHELL})
    world.tick()
    last = world.children(pid)[2].task_id
    assert world.tasks.cancel(last, "alice").accepted
    world.tick()
    assert world.parent(pid).status == S.RUNNING  # not read yet: cached WAITING
    world.coordinator.waiting_refresh = 0
    world.tick()
    parent = world.parent(pid)
    assert parent.status == S.FAILED and "first: echo hi [2/3]: cancelled" in parent.error


def test_a_leader_back_for_a_new_term_reads_afresh_what_another_leader_changed(world):
    pid = world.submit({"kind": "SHARDS", "completions": 3, "parallelism": 1, "template": SHELL})
    world.coordinator.waiting_refresh = 3600
    world.tick()  # epoch 10: releases shard 0, remembers 1 and 2 as WAITING
    world.place_all()
    world.finish(world.children(pid)[0].task_id)
    world.dispatcher.raise_fence(11)
    other = CompositeCoordinator(world.composites, world.view, "scheduler:s2")
    other.tick(11)  # another leader's term: releases shard 1
    assert world.states(pid) == "SPW"
    world.dispatcher.raise_fence(12)
    asked: list[list[str]] = []
    tasks = world.composites.tasks
    world.composites.tasks = lambda ids: asked.append(list(ids)) or tasks(ids)
    world.coordinator.tick(12)  # our next term: shard 1 is PENDING now, the cap is full
    assert world.states(pid) == "SPW"
    # Nothing remembered from term 10 but what it saw final (nothing): the shards it saw
    # WAITING are read again.
    assert asked == [[pid, *(c.task_id for c in world.children(pid))]]
