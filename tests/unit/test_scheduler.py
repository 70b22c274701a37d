"""The scheduler's decisions, against the in-memory dispatcher and live-agents view.

No ZooKeeper, no Redis: what is tested is what the leader decides (where a task goes, what a
departed agent's work becomes, when a deposed leader must stop), with the same fencing rule
the Redis scripts apply.
"""

from __future__ import annotations

import json

import pytest

from common.coordination.agent_info import AgentInfo
from common.coordination.election import Term
from common.domain.dispatch import DispatchEntry
from common.domain.task import TaskSpec, TaskType
from common.domain.transitions import TaskStatus
from common.scheduling.scheduler import Deposed, Scheduler
from common.scheduling.strategies import make_strategy
from common.testing.fakes import InMemoryDispatcher, InMemoryLiveAgents

SHELL = TaskSpec(task_type=TaskType.SHELL, payload="echo hi")


def agent(agent_id: str, load: int = 0, types=("SHELL", "PYTHON_SCRIPT"), **kw) -> AgentInfo:
    return AgentInfo(agent_id=agent_id, capacity=2, task_types=list(types), load=load, **kw)


@pytest.fixture
def world():
    dispatcher = InMemoryDispatcher()
    view = InMemoryLiveAgents(agent("a1", load=1), agent("a2", load=0))
    scheduler = Scheduler(
        "s1", dispatcher, view, election=None, strategy=make_strategy("least-load")
    )
    view.on_departure(scheduler._on_departure)  # as run_forever() does
    term = Term(epoch=10, node="n")
    assert dispatcher.raise_fence(10) == (True, 10)
    return scheduler, dispatcher, view, term


def place_next(scheduler, dispatcher, term) -> None:
    _, candidates = scheduler._candidates()
    raw = dispatcher.take(0)
    assert raw is not None
    scheduler._place(raw, term, candidates)


def test_a_task_goes_to_the_least_loaded_live_agent_with_its_attempt_and_epoch(world):
    scheduler, dispatcher, _, term = world
    task, _ = dispatcher.store.submit(SHELL)
    place_next(scheduler, dispatcher, term)
    stored = dispatcher.store.get(task.task_id)
    assert (stored.status, stored.agent_id, stored.epoch) == (TaskStatus.DISPATCHED, "a2", 10)
    entry = DispatchEntry.parse(dispatcher.inboxes["a2"][0])
    assert (entry.task_id, entry.attempt, entry.epoch) == (task.task_id, 1, 10)
    assert dispatcher.scheduling == []


def test_a_hand_pushed_message_becomes_a_task_when_it_is_placed(world):
    scheduler, dispatcher, _, term = world
    dispatcher.pending.insert(0, json.dumps({"taskType": "SHELL", "payload": "echo by hand"}))
    place_next(scheduler, dispatcher, term)
    [task] = dispatcher.store.list_tasks()
    assert task.status == TaskStatus.DISPATCHED and task.payload == "echo by hand"


def test_a_task_no_live_agent_can_run_goes_back_to_pending(world):
    scheduler, dispatcher, view, term = world
    view.live = {"a1": agent("a1", types=("PYTHON_SCRIPT",))}
    task, _ = dispatcher.store.submit(SHELL)
    place_next(scheduler, dispatcher, term)
    stored = dispatcher.store.get(task.task_id)
    assert (stored.status, stored.attempt) == (TaskStatus.PENDING, 2)
    assert dispatcher.inboxes == {} and len(dispatcher.pending) == 1


def test_agents_with_a_full_inbox_or_draining_are_not_candidates(world):
    scheduler, dispatcher, view, _ = world
    view.live["a3"] = agent("a3", draining=True)
    dispatcher.inboxes["a1"] = ["x", "y"]  # the default backlog is 2
    live, candidates = scheduler._candidates()
    assert live == 2 and [c.agent_id for c in candidates] == ["a2"]


def test_a_deposed_leader_places_nothing_and_steps_down(world):
    scheduler, dispatcher, _, term = world
    task, _ = dispatcher.store.submit(SHELL)
    dispatcher.raise_fence(11)  # a newer leader was elected
    with pytest.raises(Deposed):
        place_next(scheduler, dispatcher, term)
    assert dispatcher.store.get(task.task_id).status == TaskStatus.PENDING
    assert dispatcher.inboxes == {}


def test_a_departed_agents_work_goes_back_with_a_new_attempt(world):
    scheduler, dispatcher, view, term = world
    task, _ = dispatcher.store.submit(SHELL)
    place_next(scheduler, dispatcher, term)
    view.depart("a2")
    scheduler._fail_over_departed(term)
    stored = dispatcher.store.get(task.task_id)
    assert (stored.status, stored.attempt, stored.agent_id) == (TaskStatus.PENDING, 2, None)
    assert scheduler.stats.failed_over == 1 and dispatcher.inboxes["a2"] == []


def test_an_agent_back_under_its_id_before_the_failover_keeps_its_work(world):
    scheduler, dispatcher, view, term = world
    task, _ = dispatcher.store.submit(SHELL)
    place_next(scheduler, dispatcher, term)
    view.depart("a2")
    view.live["a2"] = agent("a2")  # a session blip: registered again
    scheduler._fail_over_departed(term)
    assert dispatcher.store.get(task.task_id).status == TaskStatus.DISPATCHED


def test_a_leader_deposed_before_its_failover_changes_nothing(world):
    scheduler, dispatcher, view, term = world
    task, _ = dispatcher.store.submit(SHELL)
    place_next(scheduler, dispatcher, term)
    view.depart("a2")
    dispatcher.raise_fence(11)
    with pytest.raises(Deposed):
        scheduler._fail_over_departed(term)
    assert dispatcher.store.get(task.task_id).status == TaskStatus.DISPATCHED


def test_the_sweep_requeues_what_a_previous_leader_left_in_flight(world):
    scheduler, dispatcher, _, term = world
    dispatcher.store.submit(SHELL)
    dispatcher.take(0)  # a leader took it and died before placing it
    scheduler._sweep(term)
    assert dispatcher.scheduling == [] and len(dispatcher.pending) == 1
    assert scheduler.stats.recovered == 1


def place_batch(scheduler, dispatcher, term, limit: int = 16) -> None:
    _, candidates = scheduler._candidates()
    raws = dispatcher.take_batch(0, limit)
    assert raws
    scheduler._place_batch(raws, term, candidates)


def test_a_batch_is_spread_as_the_strategy_sees_the_load_the_batch_itself_added(world):
    # Given a1 running one task and a2 idle (capacity 2 each, inboxes bounded at 2), and four
    # tasks queued
    scheduler, dispatcher, _, term = world
    ids = [dispatcher.store.submit(SHELL)[0].task_id for _ in range(4)]
    # When the leader places all four in one batch
    place_batch(scheduler, dispatcher, term)
    # Then each is DISPATCHED, and no inbox got more than its bound (not all four on the agent
    # that looked idle when the batch began)
    assert all(dispatcher.store.get(i).status == TaskStatus.DISPATCHED for i in ids)
    assert {a: len(inbox) for a, inbox in dispatcher.inboxes.items()} == {"a1": 2, "a2": 2}
    assert dispatcher.scheduling == [] and scheduler.stats.dispatched == 4


def test_a_deposed_leaders_batch_places_nothing_and_steps_down(world):
    scheduler, dispatcher, _, term = world
    ids = [dispatcher.store.submit(SHELL)[0].task_id for _ in range(3)]
    dispatcher.raise_fence(11)  # a newer leader was elected
    with pytest.raises(Deposed):
        place_batch(scheduler, dispatcher, term)
    assert all(dispatcher.store.get(i).status == TaskStatus.PENDING for i in ids)
    # the messages wait on the scheduling list, for the new leader's sweep
    assert dispatcher.inboxes == {} and len(dispatcher.scheduling) == 3


def test_in_a_batch_a_task_no_agent_runs_goes_back_to_pending_and_a_pinned_one_to_its_agent(
    world,
):
    scheduler, dispatcher, view, term = world
    view.live = {"a1": agent("a1", types=("SHELL",)), "a2": agent("a2", types=("SHELL",))}
    python = dispatcher.store.submit(TaskSpec(task_type=TaskType.PYTHON_SCRIPT, payload="pass"))
    pinned = dispatcher.store.submit(SHELL.model_copy(update={"pinned_agent": "a1"}))
    shell = dispatcher.store.submit(SHELL)
    place_batch(scheduler, dispatcher, term)
    stored = {t.task_id: t for t in dispatcher.store.list_tasks()}
    assert (stored[python[0].task_id].status, stored[python[0].task_id].attempt) == (
        TaskStatus.PENDING,
        2,
    )
    assert (stored[pinned[0].task_id].status, stored[pinned[0].task_id].agent_id) == (
        TaskStatus.DISPATCHED,
        "a1",
    )
    assert stored[shell[0].task_id].status == TaskStatus.DISPATCHED
