"""The messages on the bus: one small pydantic model per topic, camelCase JSON on the wire.

Every message carries a version `v`. Adding an optional field is not a new version: readers
ignore fields they do not know, so an old consumer keeps working next to a newer producer.
Changing what a field means is a new version; a consumer that meets a version it cannot read
dead-letters the message instead of guessing, and says so in the dead letter's error header.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from common.domain.composite import (
    MAX_CHILDREN,
    MAX_INPUT_BYTES,
    NODE_NAME_PATTERN,
    ChildRole,
)
from common.domain.task import (
    NotStrictJSON,
    Task,
    TaskType,
    error_text,
    field_label,
    strict_json,
    text_problem,
    text_problems,
)

SCHEMA_VERSION = 1

# The Task fields a composite's child has and a plain task lacks: a dispatch carries them.
CHILD_FIELDS = ("parent_id", "role", "shard_index", "shard_total", "node", "input", "pinned_agent")


class MalformedMessage(ValueError):
    """A message that cannot be parsed into its topic's schema: it goes to the dead letters."""


class BusMessage(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    v: Literal[1] = SCHEMA_VERSION

    @field_validator("v", mode="before")
    @classmethod
    def _an_integer(cls, v: Any) -> Any:
        # A Literal takes True for 1 and 1.0 for 1; a version is an integer or it is wrong.
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"must be an integer version, got {type(v).__name__}")
        return v

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


M = TypeVar("M", bound=BusMessage)


def decode(model: type[M], raw: bytes | None, *, max_payload_bytes: int | None = None) -> M:
    """Parse a message value, or raise MalformedMessage with every problem on one line.

    Whatever the bytes, the answer is a message or MalformedMessage, never another exception:
    a consumer dead-letters what it cannot read and carries on with the next message.
    `max_payload_bytes` caps a dispatch's payload; without it, the configured limit applies.
    """
    if raw is None:
        raise MalformedMessage("empty message (no value)")
    try:
        data = strict_json(raw)
    except NotStrictJSON as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"not a JSON object but {type(data).__name__}")
    # Output is the one free text a NUL may appear in: a task can print one, and Redis stores it.
    problems = text_problems(data, nul_ok=_OUTPUT_FIELDS, raw=raw)
    if problems:
        raise MalformedMessage(f"not a valid {model.__name__}: {'; '.join(problems)}")
    context = None if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        problems = [
            f"{'.'.join(field_label(p) for p in e['loc']) or 'message'}: {error_text(e)}"
            for e in err.errors()
        ]
        raise MalformedMessage(f"not a valid {model.__name__}: {'; '.join(problems)}") from None


_OUTPUT_FIELDS = frozenset({"line", "result", "error"})

# Bounds for the numbers on the bus: wide enough for any real value, narrow enough that Redis,
# Lua (doubles) and every reader's integer parsing take them as they are.
_ATTEMPT_MAX = 2**31 - 1
_COUNT_MAX = 2**53
_EPOCH_MAX = 2**63 - 1


def _strict_int(**bounds: Any) -> Any:
    # strict: a boolean or a float is not an integer here (Python would read `true` as 1).
    return Field(strict=True, **bounds)


def _time(**kw: Any) -> Any:
    # json.loads reads 1e999 as inf; a time that is not a finite number means nothing.
    return Field(strict=True, allow_inf_nan=False, **kw)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _identifier(v: str) -> str:
    """An agent id: the name of keys and ZooKeeper nodes, so printable and bounded."""
    if not v or len(v) > 256:
        raise ValueError("must be 1 to 256 characters")
    if _CONTROL.search(v):
        raise ValueError("must not contain control characters")
    return v


def configured_max_payload_bytes() -> int:
    """The payload limit this process was configured with (`max_payload_bytes`)."""
    # Imported here: the settings are read once a message is checked, not when this is imported.
    from common.config.settings import get_settings

    return get_settings().max_payload_bytes


# The spelling every id the platform writes has (str(uuid.uuid4())): taken as it is, without
# uuid.UUID's parse and re-format, which cost more than the rest of a status event's checks.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_uuid(v: str) -> str:
    if _CANONICAL_UUID.fullmatch(v):
        return v  # what str(uuid.UUID(v)) would give back: already canonical
    # The canonical form only: uuid.UUID also takes braces, a urn: prefix or no dashes,
    # and the id names Redis keys, so one task must have exactly one spelling.
    canonical = str(uuid.UUID(v))
    if canonical != v.lower():
        raise ValueError("must be a UUID in its canonical form")
    return canonical


class _TaskRef(BusMessage):
    task_id: str = Field(max_length=36)
    attempt: int = _strict_int(ge=1, le=_ATTEMPT_MAX)

    @field_validator("task_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        return _canonical_uuid(v)


class DispatchMessage(_TaskRef):
    """task-dispatch-topic: "agent X, run attempt N of this task". Key taskId, header agentId.

    Carries the whole task, so the agent needs nothing else to run it; the epoch of the leader
    that placed it travels on to the status events, where the store checks it.
    """

    epoch: int = _strict_int(ge=0, le=_EPOCH_MAX)
    agent_id: str
    task_name: str = Field(default="", max_length=200)
    task_type: TaskType
    payload: str = Field(min_length=1)
    execution_timeout: int = _strict_int(ge=1, le=86400)
    retry_count: int = _strict_int(default=0, ge=0, le=10)
    dispatched_at: float = _time(default_factory=time.time)
    # A composite's child (common/domain/composite.py): what the agent gives the task in its
    # environment (TASKLAB_PARENT_ID, TASKLAB_SHARD_INDEX, ...). Absent on a plain task, so a
    # reader that predates them reads the rest as before.
    parent_id: str | None = Field(default=None, max_length=36)
    role: ChildRole | None = None
    shard_index: int | None = _strict_int(default=None, ge=0, le=MAX_CHILDREN)
    shard_total: int | None = _strict_int(default=None, ge=1, le=MAX_CHILDREN)
    node: str | None = Field(default=None, pattern=NODE_NAME_PATTERN)
    input: str | None = None
    pinned_agent: str | None = None

    _agent = field_validator("agent_id")(_identifier)

    @field_validator("parent_id")
    @classmethod
    def _parent_uuid(cls, v: str | None) -> str | None:
        return None if v is None else _canonical_uuid(v)

    @field_validator("pinned_agent")
    @classmethod
    def _pinned(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v)

    @field_validator("input")
    @classmethod
    def _input_fits(cls, v: str | None, info: ValidationInfo) -> str | None:
        # An environment variable's value: no NUL, valid text, and within what a child can be
        # given (a map item within the payload limit, a reduce step's input within its own).
        if v is None:
            return v
        problem = text_problem(v)
        if problem:
            raise ValueError(problem)
        payload_limit = (info.context or {}).get(
            "max_payload_bytes"
        ) or configured_max_payload_bytes()
        limit = max(MAX_INPUT_BYTES, payload_limit)
        size = len(v.encode())
        if size > limit:
            raise ValueError(f"{size} bytes is over the {limit}-byte limit")
        return v

    @field_validator("task_name", "payload")
    @classmethod
    def _runnable_text(cls, v: str) -> str:
        problem = text_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("payload")
    @classmethod
    def _within_limit(cls, v: str, info: ValidationInfo) -> str:
        # The one limit, `max_payload_bytes`: the same the task passed when it was submitted,
        # so a task that was accepted is never refused on its way to an agent.
        limit = (info.context or {}).get("max_payload_bytes") or configured_max_payload_bytes()
        size = len(v.encode())
        if size > limit:
            raise ValueError(f"{size} bytes is over the {limit}-byte limit")
        return v

    @classmethod
    def for_task(
        cls,
        task: Task,
        attempt: int,
        epoch: int,
        agent_id: str,
        max_payload_bytes: int | None = None,
    ) -> DispatchMessage:
        fields = {
            "task_id": task.task_id,
            "attempt": attempt,
            "epoch": epoch,
            "agent_id": agent_id,
            "task_name": task.task_name,
            "task_type": task.task_type,
            "payload": task.payload,
            "execution_timeout": task.execution_timeout,
            "retry_count": task.retry_count,
            **{name: getattr(task, name) for name in CHILD_FIELDS},
        }
        context = None if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
        return cls.model_validate(fields, context=context)

    def task(self) -> Task:
        return Task(
            task_id=self.task_id,
            task_name=self.task_name,
            task_type=self.task_type,
            payload=self.payload,
            execution_timeout=self.execution_timeout,
            retry_count=self.retry_count,
            attempt=self.attempt,
            epoch=self.epoch,
            agent_id=self.agent_id,
            **{name: getattr(self, name) for name in CHILD_FIELDS},
        )


StatusValue = Literal["RUNNING", "SUCCESS", "FAILED", "CANCELLED"]


class StatusEvent(_TaskRef):
    """task-status-update-topic: what an agent did with an attempt. Key taskId.

    A final event (SUCCESS / FAILED / CANCELLED) says how many log lines the attempt printed,
    so the manager can apply it only once those lines are in: `logs --follow` stops at the
    final state, and must not stop before the last line.
    """

    epoch: int = _strict_int(ge=0, le=_EPOCH_MAX)
    agent_id: str
    status: StatusValue
    exit_code: int | None = _strict_int(default=None, ge=-(2**31), le=2**31 - 1)
    result: str | None = None
    error: str | None = None
    timed_out: bool = Field(default=False, strict=True)
    duration: float | None = _time(default=None, ge=0)
    log_lines: int = _strict_int(default=0, ge=0, le=_COUNT_MAX)
    at: float = _time(default_factory=time.time)

    _agent = field_validator("agent_id")(_identifier)

    @property
    def is_final(self) -> bool:
        return self.status != "RUNNING"


class LogLine(_TaskRef):
    """task-logs-topic: one output line of a running attempt. Key taskId, so in order.

    `seq` counts the attempt's lines from 1; the manager appends a line only if its seq is
    past the last one it appended, which makes a redelivered line harmless.
    """

    seq: int = _strict_int(ge=1, le=_COUNT_MAX)
    stream: Literal["stdout", "stderr"] = "stdout"
    line: str
    agent_id: str = Field(default="", max_length=256)

    def text(self) -> str:
        # The same form the stage 1 agent stores: stderr lines are marked, stdout ones are not.
        return self.line if self.stream == "stdout" else f"[stderr] {self.line}"


class Heartbeat(BusMessage):
    """agent-heartbeat-topic: "agent X is alive, running `load` of `capacity`". Key agentId.

    The dispatch counters are what the stage 3 docs measure: how many dispatch messages the
    agent read, and how many of them were addressed to it.
    """

    agent_id: str
    load: int = _strict_int(ge=0, le=_COUNT_MAX)
    capacity: int = _strict_int(ge=1, le=_COUNT_MAX)
    seq: int = _strict_int(ge=1, le=_COUNT_MAX)
    at: float = _time(default_factory=time.time)
    dispatch_read: int = _strict_int(default=0, ge=0, le=_COUNT_MAX)
    dispatch_mine: int = _strict_int(default=0, ge=0, le=_COUNT_MAX)
    stopping: bool = Field(default=False, strict=True)

    _agent = field_validator("agent_id")(_identifier)
