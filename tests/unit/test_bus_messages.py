"""The bus's message schemas: what parses, what is dead-lettered, and why."""

import json
import uuid

import pytest

from common.domain.task import Task, TaskSpec, TaskType
from common.messaging.schemas import (
    DispatchMessage,
    Heartbeat,
    LogLine,
    MalformedMessage,
    StatusEvent,
    decode,
)
from common.messaging.topics import TOPICS, topic_name


def a_task() -> Task:
    return Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi", retry_count=2))


def test_a_dispatch_round_trips_through_its_wire_form_with_the_task_inside():
    task = a_task()
    message = DispatchMessage.for_task(task, attempt=2, epoch=7, agent_id="agent-1")
    wire = json.loads(message.encode())
    assert wire["v"] == 1 and wire["taskId"] == task.task_id and wire["agentId"] == "agent-1"
    back = decode(DispatchMessage, message.encode()).task()
    assert (back.task_id, back.payload, back.retry_count, back.attempt, back.epoch) == (
        task.task_id,
        "echo hi",
        2,
        2,
        7,
    )


def test_fields_a_reader_does_not_know_are_ignored_so_producers_can_add_optional_ones():
    raw = {"taskId": str(uuid.uuid4()), "attempt": 1, "seq": 3, "line": "x", "colour": "red"}
    assert decode(LogLine, json.dumps(raw).encode()).seq == 3


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty message"),
        (b'{"v": 2, "taskId": "' + str(uuid.uuid4()).encode() + b'", "attempt": 1}', "v:"),
        (b'{"taskId": "nope", "attempt": 1, "seq": 1, "line": "x"}', "taskId"),
        (b'{"taskId": "' + str(uuid.uuid4()).encode() + b'", "attempt": 0}', "attempt"),
    ],
)
def test_a_message_that_does_not_fit_its_schema_is_malformed_with_the_reason(raw, says):
    with pytest.raises(MalformedMessage, match=says):
        decode(LogLine, raw)


def test_a_status_event_knows_whether_it_is_final():
    tid = str(uuid.uuid4())
    running = StatusEvent(task_id=tid, attempt=1, epoch=0, agent_id="a", status="RUNNING")
    done = StatusEvent(task_id=tid, attempt=1, epoch=0, agent_id="a", status="SUCCESS")
    assert not running.is_final and done.is_final


def test_a_status_outside_the_four_an_agent_reports_is_malformed():
    raw = {"taskId": str(uuid.uuid4()), "attempt": 1, "epoch": 0, "agentId": "a"}
    with pytest.raises(MalformedMessage, match="status"):
        decode(StatusEvent, json.dumps({**raw, "status": "PENDING"}).encode())


def test_stderr_lines_are_stored_marked_as_the_stage_1_agent_stores_them():
    tid = str(uuid.uuid4())
    assert LogLine(task_id=tid, attempt=1, seq=1, line="boom", stream="stderr").text() == (
        "[stderr] boom"
    )
    assert LogLine(task_id=tid, attempt=1, seq=1, line="ok").text() == "ok"


def test_a_heartbeat_carries_load_and_the_dispatch_counters():
    beat = Heartbeat(agent_id="a", load=1, capacity=2, seq=5, dispatch_read=9, dispatch_mine=3)
    wire = json.loads(beat.encode())
    assert (wire["dispatchRead"], wire["dispatchMine"], wire["stopping"]) == (9, 3, False)


def test_the_brief_topic_names_are_kept_and_a_namespace_prefixes_them():
    names = {t.name for t in TOPICS}
    assert {
        "task-dispatch-topic",
        "task-status-update-topic",
        "agent-heartbeat-topic",
        "task-logs-topic",
        "tasklab-dead-letter-topic",
    } == names
    assert topic_name("task-logs-topic") == "task-logs-topic"
    assert topic_name("task-logs-topic", "t1") == "t1.task-logs-topic"
