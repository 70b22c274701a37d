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


def a_child() -> Task:
    return a_task().model_copy(
        update={
            "parent_id": str(uuid.uuid4()),
            "role": "item",
            "shard_index": 2,
            "shard_total": 5,
            "node": "extract",
            "input": '{"word": "héllo\\nwörld"}',
            "pinned_agent": "agent-1",
        }
    )


def test_a_dispatch_carries_a_composites_child_with_its_place_and_input():
    child = a_child()
    message = DispatchMessage.for_task(child, attempt=1, epoch=3, agent_id="agent-1")
    back = decode(DispatchMessage, message.encode()).task()
    fields = ("parent_id", "role", "shard_index", "shard_total", "node", "input", "pinned_agent")
    assert {f: getattr(back, f) for f in fields} == {f: getattr(child, f) for f in fields}
    # A plain task's dispatch has none of them on the wire.
    plain = json.loads(DispatchMessage.for_task(a_task(), 1, 3, "agent-1").encode())
    assert not {"parentId", "role", "shardIndex", "input"} & set(plain)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("parentId", "not-a-uuid", "parentId"),
        ("shardIndex", -1, "shardIndex"),
        ("shardIndex", "2", "shardIndex"),
        ("shardTotal", 0, "shardTotal"),
        ("role", "boss", "role"),
        ("node", "has space", "node"),
        ("input", "a\x00b", "input: contains a NUL"),
        ("input", "x" * (200 * 1024), "input: 204800 bytes is over"),
        ("pinnedAgent", "bad\nagent", "pinnedAgent"),
    ],
)
def test_a_dispatch_whose_child_fields_are_wrong_is_malformed_with_the_field(field, value, says):
    wire = json.loads(DispatchMessage.for_task(a_child(), 1, 3, "agent-1").encode())
    wire[field] = value
    with pytest.raises(MalformedMessage, match=says):
        decode(DispatchMessage, json.dumps(wire).encode(), max_payload_bytes=64 * 1024)
