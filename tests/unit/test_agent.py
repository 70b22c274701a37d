"""The one agent's behaviour, against in-memory adapters of its ports (no services).

Every stage runs this agent; what differs is the adapters its bootstrap plugs in. So what is
proven here (reports survive outages, an executor error is a FAILED attempt, a superseded
attempt is killed, a stop hands back what it cannot finish) holds in every stage.
"""

from __future__ import annotations

import threading
import time

import pytest

from common.agent import Agent, Periodic
from common.domain.task import Task, TaskSpec, TaskType
from common.executors.base import ExecutionResult
from common.ports.agent import Assignment
from common.testing.fakes import (
    FakeExecutors,
    InMemoryControl,
    InMemoryIntake,
    InMemorySink,
    run_until_cancelled,
    succeed,
)
from common.testing.wait import eventually


def assignment(payload: str = "echo hi", attempt: int = 1) -> Assignment:
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload=payload))
    return Assignment(task=task, attempt=attempt, entry=task.to_message())


@pytest.fixture
def parts():
    intake, sink, control = InMemoryIntake(), InMemorySink(), InMemoryControl()
    made: list[Agent] = []

    def make(behaviour, **options) -> Agent:
        options.setdefault("capacity", 1)
        options.setdefault("heartbeat_interval", 0.05)
        options.setdefault("poll_timeout", 0.05)
        options.setdefault("retry_wait", 0.01)
        agent = Agent("agent-1", intake, sink, control, FakeExecutors(behaviour), **options)
        made.append(agent)
        agent.start()
        return agent

    yield make, intake, sink, control
    for agent in made:
        if not agent.stopping.is_set():
            agent.stop(grace=1.0)


def test_an_attempt_runs_and_its_success_is_reported(parts):
    make, intake, sink, _ = parts
    agent = make(succeed("hello"))
    a = assignment()
    intake.put(a)
    eventually(lambda: sink.reports, message="reported")
    reported, report = sink.reports[0]
    assert reported == a and report.success and report.result == "hello"
    assert sink.started_ids == [(a.task_id, 1)]
    assert agent.completed == 1


def test_a_stopping_agent_leaves_only_once_its_last_report_is_applied(parts):
    # Given an agent whose last report is sent but not yet applied (stage 3: on the bus)
    make, intake, sink, control = parts
    agent = make(succeed())
    a = assignment()
    control.unsettled.add(a.task_id)
    intake.put(a)
    eventually(lambda: sink.reports, message="reported")

    # When it stops, and the report is applied a moment later
    def applied_later():
        time.sleep(0.3)
        control.unsettled.discard(a.task_id)

    threading.Thread(target=applied_later, daemon=True).start()
    started = time.monotonic()
    agent.stop(grace=1.0)

    # Then it waited for that (a leader seeing it gone would re-run a task still RUNNING)
    assert time.monotonic() - started >= 0.25
    assert sink.closed


def test_a_stopping_agent_waits_for_an_unapplied_report_only_so_long(parts, monkeypatch):
    make, intake, sink, control = parts
    monkeypatch.setattr("common.agent.agent.SETTLE_TIMEOUT", 0.3)
    agent = make(succeed())
    a = assignment()
    control.unsettled.add(a.task_id)  # never applied: the manager is down
    intake.put(a)
    eventually(lambda: sink.reports, message="reported")
    started = time.monotonic()
    agent.stop(grace=1.0)
    assert 0.25 <= time.monotonic() - started < 3.0


def test_the_agent_recovers_leftovers_and_warms_its_executors_before_taking_work(parts):
    make, intake, _, _ = parts
    intake.leftovers = 2
    agent = make(succeed())
    assert intake.recovered == 2
    assert agent.executors.warmed == agent.capacity


# --8<-- [start:outage]
def test_a_report_that_meets_an_outage_is_retried_until_it_goes_through(parts):
    make, intake, sink, _ = parts
    sink.outage.remaining = 5
    make(succeed())
    intake.put(assignment())
    eventually(lambda: sink.reports, message="reported after the outage")
    assert sink.outage.failed == 5 and len(sink.reports) == 1


# --8<-- [end:outage]


def test_an_intake_outage_does_not_end_the_worker(parts):
    make, intake, sink, _ = parts
    intake.outage.remaining = 3
    make(succeed())
    intake.put(assignment())
    eventually(lambda: sink.reports, message="the next task still ran")
    assert intake.outage.failed == 3


def test_an_executor_that_raises_ends_the_attempt_failed_with_its_error(parts):
    make, intake, sink, _ = parts

    def broken(task, on_line, should_cancel) -> ExecutionResult:
        raise OSError("argument list too long")

    make(broken)
    intake.put(assignment())
    eventually(lambda: sink.reports, message="reported")
    report = sink.reports[0][1]
    assert not report.success and "argument list too long" in (report.error or "")


# --8<-- [start:superseded]
def test_a_superseded_attempt_is_killed_and_reported_as_superseded(parts):
    make, intake, sink, control = parts
    make(run_until_cancelled())
    a = assignment()
    intake.put(a)
    eventually(lambda: sink.started_ids, message="started")
    started = time.monotonic()
    control.stop_reasons[a.task_id] = "superseded by attempt 2"
    eventually(lambda: sink.reports, message="reported")
    assert time.monotonic() - started < 1.0
    report = sink.reports[0][1]
    assert report.superseded and not report.cancelled
    assert "superseded by attempt 2" in (report.error or "")


# --8<-- [end:superseded]


def test_a_cancelled_attempt_is_killed_and_reported_as_cancelled(parts):
    make, intake, sink, control = parts
    make(run_until_cancelled())
    a = assignment()
    intake.put(a)
    eventually(lambda: sink.started_ids, message="started")
    control.stop_reasons[a.task_id] = "cancelled"
    eventually(lambda: sink.reports, message="reported")
    assert sink.reports[0][1].cancelled


def test_a_stop_lets_running_work_finish_within_the_grace_period(parts):
    make, intake, sink, _ = parts

    def slow(task, on_line, should_cancel) -> ExecutionResult:
        time.sleep(0.3)
        return ExecutionResult(True, 0, "done", None, [])

    agent = make(slow)
    intake.put(assignment())
    eventually(lambda: sink.started_ids, message="started")
    agent.stop(grace=5.0)
    assert len(sink.reports) == 1 and sink.reports[0][1].success
    assert agent.handed_back == 0 and intake.recover_calls == 1
    assert sink.beats[-1][2] is True and sink.closed


# --8<-- [start:stop-past-grace]
def test_a_stop_past_its_grace_kills_and_hands_back_what_still_runs(parts):
    make, intake, sink, _ = parts
    agent = make(run_until_cancelled(limit=30))
    intake.put(assignment())
    eventually(lambda: sink.started_ids, message="started")
    intake.leftovers = 1  # the killed attempt's entry, still on the processing list
    started = time.monotonic()
    agent.stop(grace=0.2)
    assert time.monotonic() - started < 3.0
    assert sink.reports == []  # not reported as finished: it is handed back instead
    assert agent.handed_back == 1 and intake.recover_calls == 2


# --8<-- [end:stop-past-grace]


def test_a_paused_agent_takes_no_new_work(parts):
    make, intake, sink, _ = parts
    agent = make(succeed())
    agent.paused.set()
    time.sleep(0.1)
    intake.put(assignment())
    time.sleep(0.3)
    assert sink.reports == [] and len(intake.ready) == 1
    agent.paused.clear()
    eventually(lambda: sink.reports, message="taken once resumed")


def test_a_failing_housekeeping_job_does_not_stop_the_heartbeat(parts):
    make, _, sink, _ = parts
    calls = []

    def job() -> None:
        calls.append(1)
        raise RuntimeError("reaper broke")

    make(succeed(), housekeeping=[Periodic("reaper", 0.01, job)])
    eventually(lambda: len(calls) >= 3 and len(sink.beats) >= 3, message="still beating")


def test_the_load_is_reported_while_an_attempt_runs(parts):
    make, intake, sink, control = parts
    loads: list[int] = []
    agent = make(run_until_cancelled())
    agent.on_load_change = loads.append
    a = assignment()
    intake.put(a)
    eventually(lambda: loads == [1], message="load 1")
    control.stop_reasons[a.task_id] = "cancelled"
    eventually(lambda: loads == [1, 0], message="load back to 0")


def test_streamed_lines_reach_a_sink_that_streams(parts):
    make, intake, sink, _ = parts
    sink.streams_lines = True
    make(succeed("line one"))
    a = assignment()
    intake.put(a)
    eventually(lambda: sink.reports, message="reported")
    assert sink.lines == [(a.task_id, 1, "line one")]


def test_an_attempt_taken_by_a_take_that_got_no_answer_is_given_back_and_runs_once(parts):
    # Given a take that is carried out but whose answer never reaches the agent
    make, intake, sink, _ = parts
    intake.lost_answers = 1
    make(succeed())
    a = assignment()
    intake.put(a)

    # Then the agent reconciles its list against what it runs, and the attempt it never ran
    # comes back as a new attempt, which runs once
    eventually(lambda: sink.reports, message="reported")
    assert [(r.task_id, r.attempt) for r, _ in sink.reports] == [(a.task_id, 2)]
    assert intake.reconciled_with[0] == {}
    assert intake.stranded == []


def test_a_reconcile_never_gives_back_an_attempt_a_worker_is_running(parts):
    # Given a worker running an attempt, and another worker's take that gets no answer
    make, intake, sink, control = parts
    make(run_until_cancelled(), capacity=2)
    running = assignment("sleep 60")
    intake.put(running)
    eventually(lambda: sink.started_ids == [(running.task_id, 1)], message="first started")
    intake.lost_answers = 1
    stray = assignment("echo stray")
    intake.put(stray)

    # Then the reconcile counts the running attempt as held, and gives back only the stray
    eventually(lambda: len(intake.reconciled_with) >= 2, message="both looks taken")
    assert intake.reconciled_with[0] == {running.entry: 1}
    eventually(lambda: (stray.task_id, 2) in sink.started_ids, message="stray runs again")
    assert (running.task_id, 2) not in sink.started_ids
    control.stop_reasons[running.task_id] = "cancelled"
    control.stop_reasons[stray.task_id] = "cancelled"


def test_a_reconcile_that_meets_an_outage_is_tried_again(parts):
    make, intake, sink, _ = parts
    intake.lost_answers = 1
    intake.reconcile_outage.remaining = 3
    make(succeed())
    a = assignment()
    intake.put(a)
    eventually(lambda: sink.reports, message="reported")
    assert intake.reconcile_outage.failed == 3
    assert [(r.task_id, r.attempt) for r, _ in sink.reports] == [(a.task_id, 2)]
