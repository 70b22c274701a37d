"""Trace propagation, hop by hop, with the OpenTelemetry SDK's in-memory exporter.

Each test turns tracing on for itself (`tracing.install` with a SimpleSpanProcessor over an
InMemorySpanExporter), drives one hop with the in-memory adapters or a fake publisher, and reads
the finished spans: who is whose parent, which trace, what was stored on the task or put in a
message's headers. tests/stage5_observability/test_traces.py proves the same across real
processes, over a real OTLP/gRPC connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from redis import Redis

from common.agent import Agent
from common.client import TaskClient
from common.coordination.agent_info import AgentInfo
from common.coordination.election import Term
from common.domain.task import Task, TaskSpec, TaskType
from common.domain.transitions import TaskStatus
from common.messaging.agent_adapters import KafkaEventSink
from common.messaging.dispatch import AGENT_HEADER, KafkaDispatcher
from common.messaging.schemas import DispatchMessage
from common.observability import tracing
from common.ports.agent import Assignment
from common.scheduling.scheduler import Scheduler
from common.scheduling.strategies import make_strategy
from common.testing.fakes import (
    FakeExecutors,
    InMemoryControl,
    InMemoryDispatcher,
    InMemoryIntake,
    InMemoryLiveAgents,
    InMemorySink,
    succeed,
)
from common.testing.wait import eventually

SHELL = {"taskType": "SHELL", "payload": "echo hi"}


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.install([SimpleSpanProcessor(exporter)], "test", "test-1")
    yield exporter
    tracing.shutdown()


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = named(exporter, name)
    return span


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (
        child.parent is not None
        and child.parent.span_id == parent.get_span_context().span_id
        and child.get_span_context().trace_id == parent.get_span_context().trace_id
    )


class RecordingPublisher:
    """Stands in for EventPublisher: keeps what would have gone to Kafka, headers included."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any, dict[str, str] | None]] = []

    def publish(self, topic, key, message, headers=None, on_delivery=None, partition=None) -> None:
        self.sent.append((topic, key, message, headers))


# -- off -------------------------------------------------------------------------------------
def test_with_tracing_off_a_span_is_one_shared_no_op_and_nothing_is_stored_or_sent():
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b")  # one object: no allocation per span
    with tracing.span("submit") as span:
        assert span is None
        assert tracing.current_traceparent() is None
        assert tracing.headers() is None and tracing.headers({"k": "v"}) == {"k": "v"}
        assert tracing.task_fields(2) == {}
    task, _ = TaskClient(_memory_store()).submit(SHELL)
    assert (task.trace_id, task.traceparent) == (None, None)


def _memory_store():
    from common.adapters.memory_store import InMemoryTaskStore

    return InMemoryTaskStore()


# -- submit ----------------------------------------------------------------------------------
def test_a_submit_stores_the_traceparent_of_its_span_under_the_callers_span(spans):
    store = _memory_store()
    with tracing.span("POST /api/v1/tasks", kind="server"):
        task, created = TaskClient(store).submit(SHELL)
    api, submit = one(spans, "POST /api/v1/tasks"), one(spans, "submit")
    assert created and is_child(submit, api)
    stored = store.get(task.task_id)
    assert stored.traceparent == traceparent_of(submit)
    assert stored.trace_id == f"{api.get_span_context().trace_id:032x}"
    assert stored.to_hash()["traceId"] == stored.trace_id  # camelCase in the hash, as all
    assert submit.attributes["tasklab.task_id"] == task.task_id


def test_a_submit_continues_a_traceparent_from_another_process(spans):
    remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("TaskService/Submit", parent=remote, kind="server"):
        task, _ = TaskClient(_memory_store()).submit(SHELL)
    rpc = one(spans, "TaskService/Submit")
    assert rpc.parent.span_id == 0xB7AD6B7169203331 and rpc.parent.is_remote
    assert task.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_a_retry_by_hand_is_a_new_task_with_a_new_trace_linked_to_the_original(spans):
    client = TaskClient(_memory_store())
    first, _ = client.submit(SHELL)
    client.store.transition(first.task_id, TaskStatus.CANCELLED, attempt=1, actor="t")
    again, _ = client.retry(first.task_id)
    retry_span = named(spans, "submit")[-1]
    assert again.trace_id != first.trace_id
    assert [traceparent_of_link(link) for link in retry_span.links] == [first.traceparent]
    assert retry_span.attributes["tasklab.retry_of"] == first.task_id


def traceparent_of_link(link) -> str:
    ctx = link.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_a_traceparent_that_is_not_w3c_starts_a_new_trace_rather_than_failing(spans):
    for bad in ("", "garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01"):
        assert tracing.parse(bad) is None
        with tracing.span("api", parent=bad or None, root=True) as span:
            assert span.get_span_context().is_valid
    assert all(s.parent is None for s in spans.get_finished_spans())


# -- scheduler -------------------------------------------------------------------------------
@pytest.fixture
def world():
    dispatcher = InMemoryDispatcher()
    view = InMemoryLiveAgents(
        AgentInfo(agent_id="a1", capacity=2, task_types=["SHELL"], load=0),
    )
    scheduler = Scheduler("s1", dispatcher, view, election=None, strategy=make_strategy("random"))
    view.on_departure(scheduler._on_departure)
    term = Term(epoch=7, node="n")
    dispatcher.raise_fence(7)
    return scheduler, dispatcher, view, term


def place_next(scheduler, dispatcher, term) -> None:
    _, candidates = scheduler._candidates()
    raw = dispatcher.take(0)
    assert raw is not None
    scheduler._place(raw, term, candidates)


def test_the_schedule_span_continues_the_stored_trace_with_the_epoch(spans, world):
    scheduler, dispatcher, _, term = world
    task, _ = TaskClient(dispatcher.store).submit(SHELL)
    place_next(scheduler, dispatcher, term)
    submit, schedule = one(spans, "submit"), one(spans, "schedule")
    assert is_child(schedule, submit)
    assert schedule.attributes["tasklab.epoch"] == 7
    assert schedule.attributes["tasklab.agent_id"] == "a1"
    stored = dispatcher.store.get(task.task_id)
    # The first attempt keeps the submit's trace: nothing new is stored.
    assert (stored.status, stored.traceparent) == (TaskStatus.DISPATCHED, task.traceparent)


def test_a_new_attempt_gets_a_new_trace_linked_to_the_previous_and_stored_on_the_task(spans, world):
    scheduler, dispatcher, view, term = world
    task, _ = TaskClient(dispatcher.store).submit(SHELL)
    place_next(scheduler, dispatcher, term)
    # The agent leaves: its task goes back with attempt 2, and is placed on the next agent.
    view.depart("a1")
    scheduler._fail_over_departed(term)
    view.live["a2"] = AgentInfo(agent_id="a2", capacity=2, task_types=["SHELL"], load=0)
    place_next(scheduler, dispatcher, term)
    first, second = named(spans, "schedule")
    assert second.parent is None  # a trace of its own
    assert second.get_span_context().trace_id != first.get_span_context().trace_id
    assert [traceparent_of_link(link) for link in second.links] == [task.traceparent]
    stored = dispatcher.store.get(task.task_id)
    assert (stored.attempt, stored.trace_attempt) == (2, 2)
    assert stored.traceparent == traceparent_of(second)
    assert stored.trace_id == f"{second.get_span_context().trace_id:032x}"
    # The history says which trace each attempt belongs to, where it started.
    traced = [e for e in dispatcher.store.history(task.task_id) if "traceId" in e]
    assert [(e["state"], e["attempt"], e["traceId"]) for e in traced] == [
        ("PENDING", 1, task.trace_id),
        ("DISPATCHED", 2, stored.trace_id),
    ]


def test_a_task_pushed_by_hand_gets_its_trace_where_it_is_placed(spans, world):
    scheduler, dispatcher, _, term = world
    dispatcher.pending.insert(0, '{"taskType":"SHELL","payload":"echo by hand"}')
    place_next(scheduler, dispatcher, term)
    [task] = dispatcher.store.list_tasks()
    schedule = one(spans, "schedule")
    assert schedule.parent is None and task.traceparent == traceparent_of(schedule)


# -- the Kafka hops ----------------------------------------------------------------------------
def test_the_dispatch_message_carries_the_schedule_span_in_its_traceparent_header(spans):
    publisher = RecordingPublisher()
    # Redis() connects on its first command; building the dispatcher sends none.
    dispatcher = KafkaDispatcher(Redis(port=1), store=None, publisher=publisher)
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"))
    with tracing.span("schedule", root=True):
        dispatcher._publish(DispatchMessage.for_task(task, 1, 7, "a1"))
    [(_, key, _, headers)] = publisher.sent
    assert key == task.task_id and headers[AGENT_HEADER] == "a1"
    assert headers[tracing.TRACEPARENT] == traceparent_of(one(spans, "schedule"))


def test_a_republished_dispatch_carries_the_stored_traceparent(spans):
    publisher = RecordingPublisher()
    dispatcher = KafkaDispatcher(Redis(port=1), store=None, publisher=publisher)
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"))
    stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    dispatcher._publish(DispatchMessage.for_task(task, 1, 7, "a1"), stored)
    assert publisher.sent[0][3][tracing.TRACEPARENT] == stored


def test_the_agents_status_events_carry_its_run_span(spans):
    publisher = RecordingPublisher()
    sink = KafkaEventSink("a1", publisher, intake=None)
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"))
    with tracing.span("run", root=True):
        sink.started(Assignment(task=task, attempt=1))
    assert publisher.sent[0][3] == {tracing.TRACEPARENT: traceparent_of(one(spans, "run"))}


# -- agent -----------------------------------------------------------------------------------
def run_one(assignment: Assignment) -> InMemorySink:
    intake, sink = InMemoryIntake(), InMemorySink()
    agent = Agent(
        "agent-1",
        intake,
        sink,
        InMemoryControl(),
        FakeExecutors(succeed("ok")),
        capacity=1,
        heartbeat_interval=0.05,
        poll_timeout=0.05,
    )
    agent.start()
    try:
        intake.put(assignment)
        eventually(lambda: sink.reports, message="reported")
    finally:
        agent.stop(grace=1.0)
    return sink


def test_the_agents_run_span_hangs_under_the_dispatch_header(spans):
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"))
    run_one(Assignment(task=task, attempt=1, traceparent=header))
    run = one(spans, "run")
    assert run.parent.span_id == 0xB7AD6B7169203331
    assert f"{run.get_span_context().trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert run.attributes["tasklab.agent_id"] == "agent-1"
    assert run.attributes["tasklab.attempt"] == 1
    assert run.attributes["tasklab.outcome"] == "SUCCESS"


def test_without_kafka_the_run_span_hangs_under_the_stored_traceparent(spans):
    # Stages 1 and 2: the agent claims the task hash, with the submit's traceparent on it.
    with tracing.span("submit", root=True):
        task = Task.new(
            TaskSpec(task_type=TaskType.SHELL, payload="echo hi"),
            traceparent=tracing.current_traceparent(),
        )
    run_one(Assignment(task=task, attempt=1))
    assert is_child(one(spans, "run"), one(spans, "submit"))


def test_a_later_attempt_without_a_trace_of_its_own_runs_in_a_new_linked_trace(spans):
    # Stage 1 has no scheduler to start attempt 2's trace: the agent starts it.
    stored = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"), traceparent=stored)
    run_one(Assignment(task=task, attempt=2))
    run = one(spans, "run")
    assert run.parent is None
    assert [traceparent_of_link(link) for link in run.links] == [stored]


def test_an_error_marks_its_span_and_a_deferral_only_notes_why(spans):
    class Later(Exception):
        pass

    with pytest.raises(ValueError), tracing.span("apply FAILED", root=True):
        raise ValueError("bad report")
    with pytest.raises(Later), tracing.span("apply SUCCESS", root=True, deferrals=(Later,)):
        raise Later("waiting for log lines")
    failed, deferred = one(spans, "apply FAILED"), one(spans, "apply SUCCESS")
    assert failed.status.status_code == StatusCode.ERROR and failed.events[0].name == "exception"
    assert deferred.status.status_code == StatusCode.UNSET and not deferred.events
    assert deferred.attributes["tasklab.deferred"] == "waiting for log lines"
