"""Fuzzing the two parsers every message enters through: `parse_task_message` (Redis lists)
and `decode` (Kafka topics).

Property, for any input at all: the parser returns a valid object, or raises its one
validation error (TaskValidationError / MalformedMessage) whose text can be stored and logged.
Never another exception: a RecursionError, an OverflowError or a UnicodeEncodeError three calls
later is what kills a consumer loop or leaves a message half-handled. A valid result
round-trips through its wire form (`to_message()` / `encode()`) unchanged.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskSpec,
    TaskType,
    TaskValidationError,
    parse_task_message,
    validate_spec,
)
from common.messaging.schemas import (
    BusMessage,
    DispatchMessage,
    Heartbeat,
    LogLine,
    MalformedMessage,
    StatusEvent,
    decode,
)
from common.testing.bad_messages import json_ish, text

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A small limit, so that generated payloads cross it and the size checks are fuzzed too.
SMALL_LIMIT = 64

# Values a task field plausibly holds, mixed in so that generated objects are often valid.
PLAUSIBLE = ["SHELL", "python_script", "echo hi", 60, 0, 3, "123e4567-e89b-42d3-a456-426614174000"]
field_values = st.one_of(st.sampled_from(PLAUSIBLE), json_ish)

TASK_FIELDS = [
    "taskId",
    "taskName",
    "taskType",
    "payload",
    "executionTimeout",
    "retryCount",
    "requestId",
    "attempt",
    "epoch",
    "status",
    "agentId",
]


def wire_forms(value: object) -> list[str | bytes]:
    """The ways a value reaches a parser: escaped ASCII JSON, raw text JSON (a Python str that
    may hold lone surrogates), and raw UTF-8 bytes with surrogates as Redis would store them."""
    escaped = json.dumps(value)
    raw = json.dumps(value, ensure_ascii=False)
    return [escaped, escaped.encode(), raw, raw.encode("utf-8", "surrogatepass")]


# -- the properties ---------------------------------------------------------------------------
def check_task_message(raw: str | bytes, limit: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
    try:
        task_id, spec = parse_task_message(raw, limit)
    except TaskValidationError as exc:
        assert exc.problems
        str(exc).encode("utf-8")  # a reason that can go to the dead-letter list and the log
        return
    task = Task.new(spec, task_id=task_id)
    message = task.to_message()
    message.encode("utf-8")
    for value in task.to_hash().values():
        value.encode("utf-8")
    assert parse_task_message(message, limit) == (task.task_id, spec)
    assert parse_task_message(message.encode(), limit) == (task.task_id, spec)


BUS_MODELS: list[type[BusMessage]] = [DispatchMessage, StatusEvent, LogLine, Heartbeat]


def check_bus_message(model: type[BusMessage], raw: bytes | None, limit: int | None) -> None:
    try:
        message = decode(model, raw, max_payload_bytes=limit)
    except MalformedMessage as exc:
        str(exc).encode("utf-8")
        return
    assert isinstance(message, model)
    wire = message.encode()
    assert decode(model, wire, max_payload_bytes=limit) == message


# -- parse_task_message -----------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b'{"taskType":"SHELL","payload":"echo \xed\xa0\x80"}')
@example(b'{"taskType":"SHELL","payload":"echo \x00"}')
def test_any_bytes_parse_to_a_task_or_a_task_validation_error(raw):
    check_task_message(raw)
    check_task_message(raw, SMALL_LIMIT)


@FUZZ
@given(json_ish)
def test_any_json_value_parses_to_a_task_or_a_task_validation_error(value):
    for raw in wire_forms(value):
        check_task_message(raw)


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(TASK_FIELDS), text), field_values, max_size=8))
def test_any_object_of_task_fields_parses_to_a_task_or_a_task_validation_error(obj):
    for raw in wire_forms(obj):
        check_task_message(raw)
        check_task_message(raw, SMALL_LIMIT)


def a_valid_message() -> dict:
    spec = TaskSpec(task_type=TaskType.SHELL, payload="echo hi", retry_count=1, request_id="r1")
    return json.loads(Task.new(spec).to_message())


@FUZZ
@given(
    st.sampled_from(TASK_FIELDS),
    json_ish,
    st.booleans(),
)
def test_a_valid_message_with_any_one_field_changed_or_dropped_parses_or_is_refused(
    field, value, drop
):
    message = a_valid_message()
    if drop:
        message.pop(field, None)
    else:
        message[field] = value
    for raw in wire_forms(message):
        check_task_message(raw)


@FUZZ
@given(st.data())
def test_a_valid_message_with_its_bytes_mutated_parses_or_is_refused(data):
    raw = bytearray(json.dumps(a_valid_message()).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["insert", "replace", "delete", "duplicate"]))
        blob = data.draw(st.binary(min_size=1, max_size=8))
        if action == "insert":
            raw[at:at] = blob
        elif action == "replace":
            raw[at : at + len(blob)] = blob
        elif action == "delete":
            del raw[at : at + len(blob)]
        else:
            raw[at:at] = raw[max(0, at - 20) : at]
    check_task_message(bytes(raw))


@FUZZ
@given(st.integers(1, 50_000), st.sampled_from(["[", '{"a":', '[{"b":']))
def test_json_nested_deeper_than_the_stack_is_refused_not_a_recursion_error(depth, opener):
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    nested = opener * depth + "1" + closer * depth
    check_task_message(nested)
    check_task_message('{"taskType":"SHELL","payload":' + nested + "}")
    for model in BUS_MODELS:
        check_bus_message(model, nested.encode(), None)


# -- decode -----------------------------------------------------------------------------------
@FUZZ
@given(st.sampled_from(BUS_MODELS), st.one_of(st.none(), st.binary(max_size=300)))
def test_any_bytes_decode_to_a_bus_message_or_malformed(model, raw):
    check_bus_message(model, raw, None)


def valid_bus_messages() -> dict[type[BusMessage], dict]:
    task = Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi"))
    tid = task.task_id
    messages: list[BusMessage] = [
        DispatchMessage.for_task(task, attempt=1, epoch=3, agent_id="agent-1"),
        StatusEvent(
            task_id=tid,
            attempt=1,
            epoch=3,
            agent_id="agent-1",
            status="SUCCESS",
            exit_code=0,
            result="hi\n",
            duration=0.1,
            log_lines=1,
        ),
        LogLine(task_id=tid, attempt=1, seq=1, line="hi", agent_id="agent-1"),
        Heartbeat(agent_id="agent-1", load=1, capacity=2, seq=7),
    ]
    return {type(m): json.loads(m.encode()) for m in messages}


@FUZZ
@given(st.sampled_from(BUS_MODELS), json_ish)
def test_any_json_value_decodes_to_a_bus_message_or_malformed(model, value):
    for raw in wire_forms(value):
        check_bus_message(
            model, raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"), None
        )


@FUZZ
@given(st.sampled_from(BUS_MODELS), st.data(), json_ish, st.booleans())
def test_a_valid_bus_message_with_any_one_field_changed_decodes_or_is_malformed(
    model, data, value, drop
):
    message = valid_bus_messages()[model]
    field = data.draw(st.sampled_from(sorted(message)))
    if drop:
        del message[field]
    else:
        message[field] = value
    for raw in wire_forms(message):
        check_bus_message(
            model, raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"), None
        )
        check_bus_message(
            model,
            raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"),
            SMALL_LIMIT,
        )


# -- the named cases, each with the problem it must name ---------------------------------------
UUID = "123e4567-e89b-42d3-a456-426614174000"


def task_json(**fields: object) -> str:
    return json.dumps({"taskType": "SHELL", "payload": "echo hi", **fields})


NAMED_TASK_CASES = [
    ("invalid UTF-8", b'{"taskType":"SHELL","payload":"echo \xff"}', "invalid UTF-8"),
    ("lone surrogate escape", task_json(payload="echo \ud800"), "lone surrogate"),
    ("lone surrogate bytes", b'{"taskType":"SHELL","payload":"\xed\xa0\x80"}', "invalid UTF-8"),
    ("lone surrogate text", '{"taskType":"SHELL","payload":"\ud800"}', "lone surrogate"),
    ("raw NUL byte", b'{"taskType":"SHELL","payload":"echo \x00"}', "Invalid control"),
    ("escaped NUL", task_json(payload="echo \x00 hi"), "NUL"),
    ("an array", "[1, 2]", "must be a JSON object"),
    ("a number", "42", "must be a JSON object"),
    ("number for a string", task_json(taskName=5), "taskName"),
    ("nested object for a string", task_json(payload={"cmd": "echo"}), "payload"),
    ("array for a string", task_json(taskType=["SHELL"]), "taskType"),
    ("boolean for an int", task_json(executionTimeout=True), "not a boolean"),
    ("float 1e308 for an int", task_json(retryCount=1e308), "retryCount"),
    ("NaN token", '{"taskType":"SHELL","payload":"x","executionTimeout":NaN}', "NaN"),
    ("Infinity token", '{"taskType":"SHELL","payload":"x","retryCount":-Infinity}', "Infinity"),
    ("overflowing number", '{"taskType":"SHELL","payload":"x","retryCount":1e999}', "range"),
    ("10 MB payload", task_json(payload="x" * 10_000_000), "a task message can take"),
    ("100 KB taskName", task_json(taskName="n" * 100_000), "taskName"),
    ("taskId ../x", task_json(taskId="../x"), "taskId"),
    ("taskId x:history", task_json(taskId="x:history"), "taskId"),
    ("UUID with trailing junk", task_json(taskId=UUID + "}junk"), "taskId"),
    ("UUID in braces", task_json(taskId="{" + UUID + "}"), "taskId"),
    ("10 KB taskId", task_json(taskId="a" * 10_000), "taskId"),
    ("number taskId", task_json(taskId=12345678123442349234123456789012), "taskId"),
    (
        "deep nesting",
        '{"taskType":"SHELL","payload":' + "[" * 100_000 + "]" * 100_000 + "}",
        "deep",
    ),
    ("duplicate keys", '{"taskType":"SHELL","payload":"echo a","payload":"rm -rf /"}', "duplicate"),
    ("attempt as a boolean", task_json(taskId=UUID, attempt=True, epoch=1), "attempt"),
    ("epoch as a float", task_json(taskId=UUID, attempt=1, epoch=1e308), "epoch"),
    ("NUL in a field name", task_json(**{"pay\x00load": "x"}), "field name"),
]


@pytest.mark.parametrize(
    ("raw", "says"),
    [(raw, says) for _, raw, says in NAMED_TASK_CASES],
    ids=[n for n, *_ in NAMED_TASK_CASES],
)
def test_each_named_bad_task_message_is_refused_with_its_reason(raw, says):
    with pytest.raises(TaskValidationError, match=says):
        parse_task_message(raw)


def bus_json(model: type[BusMessage], **fields: object) -> bytes:
    return json.dumps({**valid_bus_messages()[model], **fields}).encode()


NAMED_BUS_CASES = [
    ("invalid UTF-8", DispatchMessage, b'{"taskId": "\xff"}', "UTF-8"),
    ("lone surrogate escape", StatusEvent, bus_json(StatusEvent, result="\ud800"), "surrogate"),
    ("lone surrogate bytes", LogLine, b'{"line":"\xed\xa0\x80"}', "UTF-8"),
    ("NUL in a payload", DispatchMessage, bus_json(DispatchMessage, payload="echo \x00"), "NUL"),
    ("NUL in an agent id", Heartbeat, bus_json(Heartbeat, agentId="a\x00"), "agentId"),
    ("an array", Heartbeat, b"[1, 2]", "not a JSON object"),
    ("a number", StatusEvent, b"42", "not a JSON object"),
    ("number for a string", LogLine, bus_json(LogLine, line=5), "line"),
    ("object for a string", StatusEvent, bus_json(StatusEvent, agentId={"a": 1}), "agentId"),
    ("boolean for an int", Heartbeat, bus_json(Heartbeat, load=True), "load"),
    ("float for an int", DispatchMessage, bus_json(DispatchMessage, epoch=1e308), "epoch"),
    ("int for a boolean", StatusEvent, bus_json(StatusEvent, timedOut=1), "timedOut"),
    ("boolean for the version", Heartbeat, bus_json(Heartbeat, v=True), "v: must be an integer"),
    ("NaN token", Heartbeat, b'{"agentId":"a","load":0,"capacity":1,"seq":1,"at":NaN}', "NaN"),
    (
        "overflow to inf",
        Heartbeat,
        b'{"agentId":"a","load":0,"capacity":1,"seq":1,"at":1e999}',
        "range",
    ),
    (
        "payload over the limit",
        DispatchMessage,
        bus_json(DispatchMessage, payload="x" * 100_000),
        "limit",
    ),
    (
        "100 KB taskName",
        DispatchMessage,
        bus_json(DispatchMessage, taskName="n" * 100_000),
        "taskName",
    ),
    ("taskId ../x", StatusEvent, bus_json(StatusEvent, taskId="../x"), "taskId"),
    ("UUID with trailing junk", LogLine, bus_json(LogLine, taskId=UUID + "junk"), "taskId"),
    ("UUID without dashes", LogLine, bus_json(LogLine, taskId=UUID.replace("-", "")), "taskId"),
    ("10 KB agent id", Heartbeat, bus_json(Heartbeat, agentId="a" * 10_000), "agentId"),
    ("deep nesting", StatusEvent, b'{"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep"),
    ("duplicate keys", DispatchMessage, b'{"agentId":"a","agentId":"b"}', "duplicate"),
]


@pytest.mark.parametrize(
    ("model", "raw", "says"),
    [(m, raw, says) for _, m, raw, says in NAMED_BUS_CASES],
    ids=[n for n, *_ in NAMED_BUS_CASES],
)
def test_each_named_bad_bus_message_is_malformed_with_its_reason(model, raw, says):
    with pytest.raises(MalformedMessage, match=says):
        decode(model, raw)


# -- one limit ----------------------------------------------------------------------------------
def test_a_dispatch_carries_any_payload_within_the_configured_limit_not_a_constant_of_its_own():
    task = Task.new(validate_spec({"taskType": "SHELL", "payload": "x" * 150_000}, 200_000))
    message = DispatchMessage.for_task(task, 1, 1, "agent-1", max_payload_bytes=200_000)
    assert decode(DispatchMessage, message.encode(), max_payload_bytes=200_000).payload == (
        task.payload
    )
    with pytest.raises(MalformedMessage, match="150000 bytes is over the 100000-byte limit"):
        decode(DispatchMessage, message.encode(), max_payload_bytes=100_000)


def test_without_a_limit_passed_a_dispatch_is_checked_against_the_configured_one(monkeypatch):
    from common.config.settings import get_settings

    monkeypatch.setenv("TASKLAB_MAX_PAYLOAD_BYTES", "200000")
    get_settings.cache_clear()
    try:
        task = Task.new(validate_spec({"taskType": "SHELL", "payload": "x" * 150_000}, 200_000))
        message = DispatchMessage.for_task(task, 1, 1, "agent-1")
        assert decode(DispatchMessage, message.encode()).payload == task.payload
        monkeypatch.setenv("TASKLAB_MAX_PAYLOAD_BYTES", "100000")
        get_settings.cache_clear()
        with pytest.raises(MalformedMessage, match="over the 100000-byte limit"):
            decode(DispatchMessage, message.encode())
    finally:
        get_settings.cache_clear()


def test_a_payload_that_escapes_to_more_than_twice_the_limit_is_refused_as_too_large():
    with pytest.raises(TaskValidationError, match="escaped for JSON") as err:
        validate_spec({"taskType": "SHELL", "payload": "\x01" * 40_000}, 65_536)
    assert err.value.too_large


def test_ids_on_the_bus_are_canonical_uuids_so_one_task_has_one_key():
    tid = str(uuid.uuid4())
    line = decode(
        LogLine, json.dumps({"taskId": tid.upper(), "attempt": 1, "seq": 1, "line": "x"}).encode()
    )
    assert line.task_id == tid
