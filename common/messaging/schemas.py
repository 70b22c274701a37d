"""The messages on the bus: one small pydantic model per topic, camelCase JSON on the wire.

Every message carries a version `v`. Adding an optional field is not a new version: readers
ignore fields they do not know, so an old consumer keeps working next to a newer producer.
Changing what a field means is a new version; a consumer that meets a version it cannot read
dead-letters the message instead of guessing, and says so in the dead letter's error header.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from common.domain.task import MAX_PAYLOAD_BYTES, Task, TaskType

SCHEMA_VERSION = 1


class MalformedMessage(ValueError):
    """A message that cannot be parsed into its topic's schema: it goes to the dead letters."""


class BusMessage(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    v: Literal[1] = SCHEMA_VERSION

    def encode(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


M = TypeVar("M", bound=BusMessage)


def decode(model: type[M], raw: bytes | None) -> M:
    """Parse a message value, or raise MalformedMessage with every problem on one line."""
    if raw is None:
        raise MalformedMessage("empty message (no value)")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"not a JSON object but {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}" for e in err.errors()
        )
        raise MalformedMessage(f"not a valid {model.__name__}: {problems}") from None


class _TaskRef(BusMessage):
    task_id: str
    attempt: int = Field(ge=1)

    @field_validator("task_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        return str(uuid.UUID(v))


class DispatchMessage(_TaskRef):
    """task-dispatch-topic: "agent X, run attempt N of this task". Key taskId, header agentId.

    Carries the whole task, so the agent needs nothing else to run it; the epoch of the leader
    that placed it travels on to the status events, where the store checks it.
    """

    epoch: int = Field(ge=0)
    agent_id: str = Field(min_length=1)
    task_name: str = ""
    task_type: TaskType
    payload: str = Field(min_length=1, max_length=MAX_PAYLOAD_BYTES)
    execution_timeout: int = Field(ge=1, le=86400)
    retry_count: int = Field(default=0, ge=0, le=10)
    dispatched_at: float = Field(default_factory=time.time)

    @classmethod
    def for_task(cls, task: Task, attempt: int, epoch: int, agent_id: str) -> DispatchMessage:
        return cls(
            task_id=task.task_id,
            attempt=attempt,
            epoch=epoch,
            agent_id=agent_id,
            task_name=task.task_name,
            task_type=task.task_type,
            payload=task.payload,
            execution_timeout=task.execution_timeout,
            retry_count=task.retry_count,
        )

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
        )


StatusValue = Literal["RUNNING", "SUCCESS", "FAILED", "CANCELLED"]


class StatusEvent(_TaskRef):
    """task-status-update-topic: what an agent did with an attempt. Key taskId.

    A final event (SUCCESS / FAILED / CANCELLED) says how many log lines the attempt printed,
    so the manager can apply it only once those lines are in: `logs --follow` stops at the
    final state, and must not stop before the last line.
    """

    epoch: int = Field(ge=0)
    agent_id: str = Field(min_length=1)
    status: StatusValue
    exit_code: int | None = None
    result: str | None = None
    error: str | None = None
    timed_out: bool = False
    duration: float | None = None
    log_lines: int = Field(default=0, ge=0)
    at: float = Field(default_factory=time.time)

    @property
    def is_final(self) -> bool:
        return self.status != "RUNNING"


class LogLine(_TaskRef):
    """task-logs-topic: one output line of a running attempt. Key taskId, so in order.

    `seq` counts the attempt's lines from 1; the manager appends a line only if its seq is
    past the last one it appended, which makes a redelivered line harmless.
    """

    seq: int = Field(ge=1)
    stream: Literal["stdout", "stderr"] = "stdout"
    line: str
    agent_id: str = ""

    def text(self) -> str:
        # The same form the stage 1 agent stores: stderr lines are marked, stdout ones are not.
        return self.line if self.stream == "stdout" else f"[stderr] {self.line}"


class Heartbeat(BusMessage):
    """agent-heartbeat-topic: "agent X is alive, running `load` of `capacity`". Key agentId.

    The dispatch counters are what the stage 3 docs measure: how many dispatch messages the
    agent read, and how many of them were addressed to it.
    """

    agent_id: str = Field(min_length=1)
    load: int = Field(ge=0)
    capacity: int = Field(ge=1)
    seq: int = Field(ge=1)
    at: float = Field(default_factory=time.time)
    dispatch_read: int = 0
    dispatch_mine: int = 0
    stopping: bool = False
