"""Bad bytes, by name, for every place a message enters the platform.

Integration tests push each of these to a real entry point (a Redis list, a Kafka topic) and
check the same three facts: it is dead-lettered with its reason, every role is still running,
and the next valid task runs. Each case is built from a valid message with one thing wrong, so
a refusal is about that one thing.

`raw(existing)` builds the bytes; `existing` is the id of a task that exists in Redis, for the
ids crafted to name another task's keys.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from redis import Redis

from common import keys
from common.client import TaskClient
from common.domain.transitions import TaskStatus
from common.testing.processes import RoleProcess, stop_all
from common.testing.wait import eventually

UUID = "123e4567-e89b-42d3-a456-426614174000"
DEEP = 100_000  # far past Python's recursion limit (1000) and cjson's nesting limit (1000)


# -- generated: any JSON value, with the characters that have broken parsers --------------------
# NUL, lone surrogates (both halves), a byte-order mark, a Unicode line separator, JSON's own
# metacharacters, an escape sequence opener.
AWKWARD = ["\x00", "\ud800", "\udfff", "\udc80", "\ufeff", "\u2028", '"', "\\", "\n", "\x1b"]

text = st.lists(
    st.one_of(st.characters(exclude_categories=()), st.sampled_from(AWKWARD)), max_size=30
).map("".join)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and +-inf included: json.dumps writes them as NaN / Infinity tokens
    text,
)

json_ish = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(text, children, max_size=5),
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class BadMessage:
    name: str
    raw: Callable[[str], bytes]


def with_fields(base: dict, **fields: object) -> Callable[[str], bytes]:
    body = json.dumps({**base, **fields}).encode()
    return lambda _existing: body


def _bytes(body: bytes) -> Callable[[str], bytes]:
    return lambda _existing: body


def _replace(base: dict, field: str, wire: bytes) -> Callable[[str], bytes]:
    """`base` with `field`'s value spelled as raw JSON bytes (a token json.dumps never writes)."""
    marker = "\x01MARK\x01"
    body = json.dumps({**base, field: marker}).encode()
    return lambda _existing: body.replace(json.dumps(marker).encode(), wire)


def _duplicate(base: dict, field: str, second: object) -> Callable[[str], bytes]:
    body = json.dumps(base)[:-1] + f", {json.dumps(field)}: {json.dumps(second)}}}"
    return lambda _existing: body.encode()


def _deep(base: dict, field: str) -> Callable[[str], bytes]:
    return _replace(base, field, b"[" * DEEP + b"]" * DEEP)


# -- task messages (queue:pending, agent:{id}:tasks) -------------------------------------------
TASK = {"taskType": "SHELL", "payload": "echo bad"}


def task_messages() -> list[BadMessage]:
    t = TASK
    return [
        BadMessage("invalid-utf8", _bytes(b'{"taskType":"SHELL","payload":"echo \xff\xfe"}')),
        BadMessage("surrogate-escape", _replace(t, "payload", b'"echo \\ud800"')),
        BadMessage("surrogate-bytes", _bytes(b'{"taskType":"SHELL","payload":"\xed\xa0\x80"}')),
        BadMessage("nul-byte", _bytes(b'{"taskType":"SHELL","payload":"echo \x00 bad"}')),
        BadMessage("nul-escape", _replace(t, "payload", b'"echo \\u0000 bad"')),
        BadMessage("array", _bytes(b'[{"taskType":"SHELL","payload":"echo bad"}]')),
        BadMessage("number", _bytes(b"42")),
        BadMessage("number-for-string", with_fields(t, taskName=5)),
        BadMessage("object-for-string", with_fields(t, payload={"cmd": "echo bad"})),
        BadMessage("array-for-string", with_fields(t, taskType=["SHELL"])),
        BadMessage("boolean-for-int", with_fields(t, executionTimeout=True)),
        BadMessage("float-1e308", with_fields(t, retryCount=1e308)),
        BadMessage("nan", _replace(t, "executionTimeout", b"NaN")),
        BadMessage("infinity", _replace(t, "retryCount", b"-Infinity")),
        BadMessage("overflow-1e999", _replace(t, "executionTimeout", b"1e999")),
        BadMessage("payload-10mb", with_fields(t, payload="echo " + "x" * 10_000_000)),
        BadMessage("task-name-100kb", with_fields(t, taskName="n" * 100_000)),
        BadMessage("task-id-dotdot", with_fields(t, taskId="../x")),
        BadMessage("task-id-history", with_fields(t, taskId="x:history")),
        BadMessage("task-id-uuid-junk", with_fields(t, taskId=UUID + "}junk")),
        BadMessage("task-id-10kb", with_fields(t, taskId="a" * 10_000)),
        # A taskId that, put after `task:`, names an existing task's history list.
        BadMessage(
            "task-id-names-a-key",
            lambda existing: json.dumps({**TASK, "taskId": f"{existing}:history"}).encode(),
        ),
        BadMessage("deep-nesting", _deep(t, "payload")),
        BadMessage("duplicate-keys", _duplicate(t, "payload", "echo second")),
        BadMessage("attempt-boolean", with_fields(t, taskId=UUID, attempt=True, epoch=1)),
        BadMessage("epoch-1e308", with_fields(t, taskId=UUID, attempt=1, epoch=1e308)),
    ]


# -- bus messages (one valid base per topic) ------------------------------------------------------
def task_message_params(paths: list[str]) -> list:
    """pytest params: every bad task message on every path a message can reach the parser by."""
    return [
        pytest.param(case, path, id=f"{case.name}-{path}")
        for case in task_messages()
        for path in paths
    ]


def dispatch_base(agent_id: str) -> dict:
    return {
        "v": 1,
        "taskId": str(uuid.uuid4()),
        "attempt": 1,
        "epoch": 1,
        "agentId": agent_id,
        "taskName": "bad",
        "taskType": "SHELL",
        "payload": "echo bad",
        "executionTimeout": 60,
        "retryCount": 0,
    }


def status_base(agent_id: str) -> dict:
    return {
        "v": 1,
        "taskId": str(uuid.uuid4()),
        "attempt": 1,
        "epoch": 1,
        "agentId": agent_id,
        "status": "SUCCESS",
        "exitCode": 0,
        "result": "bad",
    }


def log_base(agent_id: str) -> dict:
    return {
        "v": 1,
        "taskId": str(uuid.uuid4()),
        "attempt": 1,
        "seq": 1,
        "line": "bad",
        "agentId": agent_id,
    }


def heartbeat_base(agent_id: str) -> dict:
    return {"v": 1, "agentId": agent_id, "load": 0, "capacity": 1, "seq": 1}


def bus_messages(base: dict, text_field: str, int_field: str) -> list[BadMessage]:
    """The named cases for one topic: `text_field` is a string field of its schema, `int_field`
    an integer one; ids are crafted where the schema has a taskId."""
    b = base
    cases = [
        BadMessage("invalid-utf8", _replace(b, text_field, b'"\xff\xfe"')),
        BadMessage("surrogate-escape", _replace(b, text_field, b'"\\ud800"')),
        BadMessage("surrogate-bytes", _replace(b, text_field, b'"\xed\xa0\x80"')),
        BadMessage("nul-byte", _replace(b, text_field, b'"a\x00b"')),
        BadMessage("array", _bytes(json.dumps([b]).encode())),
        BadMessage("number", _bytes(b"42")),
        BadMessage("null-json", _bytes(b"null")),
        BadMessage("number-for-string", with_fields(b, **{text_field: 5})),
        BadMessage("object-for-string", with_fields(b, **{text_field: {"a": "b"}})),
        BadMessage("boolean-for-int", with_fields(b, **{int_field: True})),
        BadMessage("float-1e308", with_fields(b, **{int_field: 1e308})),
        BadMessage("nan", _replace(b, int_field, b"NaN")),
        BadMessage("infinity", _replace(b, int_field, b"Infinity")),
        BadMessage("overflow-1e999", _replace(b, int_field, b"1e999")),
        BadMessage("field-100kb", with_fields(b, **{text_field: "n" * 100_000})),
        BadMessage("agent-id-10kb", with_fields(b, agentId="a" * 10_000)),
        BadMessage("deep-nesting", _deep(b, text_field)),
        BadMessage("duplicate-keys", _duplicate(b, int_field, 2)),
    ]
    if "taskId" in b:
        cases += [
            BadMessage("task-id-dotdot", with_fields(b, taskId="../x")),
            BadMessage("task-id-history", with_fields(b, taskId="x:history")),
            BadMessage("task-id-uuid-junk", with_fields(b, taskId=UUID + "junk")),
            BadMessage("task-id-10kb", with_fields(b, taskId="a" * 10_000)),
        ]
    return cases


# -- what a bad-bytes test checks ------------------------------------------------------------------
class RoleSet:
    """Role processes started once for a test module: checked alive after every case, and
    restarted before the next one if a case killed them (that case already failed)."""

    def __init__(self, roles: list[RoleProcess]) -> None:
        self.roles = roles
        self.restarts = 0

    def start(self) -> None:
        for role in self.roles:
            role.start()

    def stop(self) -> None:
        stop_all(self.roles)
        for role in self.roles:
            text = role.log_text()
            if text:
                print(f"\n----- {role.name} (pid {role.pid}) -----\n{text[-4000:]}")

    def assert_alive(self) -> None:
        dead = {r.name: r.proc.poll() for r in self.roles if r.proc and r.proc.poll() is not None}
        assert not dead, f"role processes exited (name: exit code): {dead}"

    def restart_dead(self) -> None:
        for role in self.roles:
            if role.proc is not None and role.proc.poll() is not None:
                role.stop()
                role.start()
                self.restarts += 1


def flushed_redis(url: str) -> Redis:
    """A client for `url`, its database emptied: a module's roles start from nothing."""
    client = Redis.from_url(url)
    client.flushdb()
    return client


def run_valid_task(tasks: TaskClient, timeout: float = 20.0) -> str:
    """Submit a valid task and wait for it to reach SUCCESS; returns its id."""
    task, _ = tasks.submit({"taskType": "SHELL", "payload": "echo valid"})
    eventually(
        lambda: tasks.get(task.task_id).status == TaskStatus.SUCCESS,
        timeout,
        interval=0.1,
        message=f"valid task {task.task_id} SUCCESS",
    )
    return task.task_id


def same_message(stored: str, raw: bytes) -> bool:
    """Is `stored` (a dead letter's copy) the message that was `raw` bytes? A copy of bytes
    that are not UTF-8 may keep them escaped (surrogateescape) or replaced (U+FFFD)."""
    return (
        stored.encode("utf-8", "surrogateescape") == raw
        or stored == raw.decode("utf-8", "replace")
        or stored.encode("utf-8", "surrogatepass") == raw
    )


def dead_letter_for(redis: Redis, raw: bytes, before: int) -> dict | None:
    """The dead-letter entry of `raw` among those added since the list held `before`."""
    added = redis.llen(keys.DEAD_LETTER) - before
    if added <= 0:
        return None
    # LPUSH: the newest entries are at the head.
    for item in redis.lrange(keys.DEAD_LETTER, 0, added - 1):
        entry = json.loads(item)
        if same_message(entry.get("message", ""), raw):
            return entry
    return None


def remove_everywhere(redis: Redis, raw: bytes) -> None:
    """Take `raw` out of every list it may still sit on (a case that failed left it there),
    so it cannot reach the roles of the cases after it."""
    for key in redis.scan_iter(match="*", count=1000):
        if redis.type(key) == b"list" and key != keys.DEAD_LETTER.encode():
            redis.lrem(key, 0, raw)
