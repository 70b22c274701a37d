"""The task contract: what a client submits, what the platform stores, and how it is checked.

JSON on the wire uses camelCase (`taskId`, `executionTimeout`); Python uses snake_case. One
validator serves every entry point (CLI, hand-pushed Redis message, Kafka, REST, gRPC), and it
reports *every* problem at once, so a user fixes a bad task in one round trip.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from common.domain.transitions import TaskStatus

MAX_PAYLOAD_BYTES = 64 * 1024


class TaskType(StrEnum):
    SHELL = "SHELL"
    PYTHON_SCRIPT = "PYTHON_SCRIPT"


class TaskValidationError(ValueError):
    """A task that cannot be accepted; `problems` lists every field that is wrong."""

    def __init__(self, problems: list[str], too_large: bool = False) -> None:
        self.problems = problems
        # Callers map this to 413 rather than 422.
        self.too_large = too_large
        super().__init__("invalid task: " + "; ".join(problems))


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# --8<-- [start:spec]
class TaskSpec(_Wire):
    """What a client asks for. Everything else about a task is the platform's to decide."""

    task_name: str = Field(default="", max_length=200)
    task_type: TaskType
    payload: str = Field(min_length=1)
    execution_timeout: int = Field(default=60, ge=1, le=86400)
    retry_count: int = Field(default=0, ge=0, le=10)
    request_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("task_type", mode="before")
    @classmethod
    def _upper_type(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("payload")
    @classmethod
    def _payload_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    def with_default_name(self) -> TaskSpec:
        if self.task_name:
            return self
        first_line = self.payload.strip().splitlines()[0] if self.payload.strip() else "task"
        return self.model_copy(update={"task_name": first_line[:60]})


# --8<-- [end:spec]


class Task(_Wire):
    """A task as the platform stores it (`task:{taskId}` in Redis)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    task_id: str
    task_name: str
    task_type: TaskType
    payload: str
    execution_timeout: int = 60
    retry_count: int = 0
    request_id: str | None = None
    status: TaskStatus = TaskStatus.PENDING
    attempt: int = 1
    epoch: int = 0
    agent_id: str | None = None
    result: str | None = None
    error: str | None = None
    exit_code: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    @classmethod
    def new(cls, spec: TaskSpec, task_id: str | None = None) -> Task:
        spec = spec.with_default_name()
        now = time.time()
        return cls(
            task_id=task_id or str(uuid.uuid4()),
            **spec.model_dump(),
            created_at=now,
            updated_at=now,
        )

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            task_name=self.task_name,
            task_type=self.task_type,
            payload=self.payload,
            execution_timeout=self.execution_timeout,
            retry_count=self.retry_count,
            request_id=self.request_id,
        )

    def to_message(self) -> str:
        """The queue message: the spec plus the id, camelCase JSON."""
        data = self.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        data["taskId"] = self.task_id
        return json.dumps(data, separators=(",", ":"))

    def to_hash(self) -> dict[str, str]:
        """Flat string fields for a Redis hash; None becomes absent."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(by_alias=True, mode="json").items():
            if value is None:
                continue
            out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Task:
        return cls.model_validate(data)

    @property
    def is_terminal(self) -> bool:
        from common.domain.transitions import TERMINAL_STATES

        return self.status in TERMINAL_STATES


def _problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "task"
        msg = e["msg"]
        if e["type"] == "enum":
            msg = "must be one of " + ", ".join(t.value for t in TaskType)
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "is required"
        problems.append(f"{field}: {msg}")
    return problems


_WIRE_NAMES = {f.alias or n for n, f in TaskSpec.model_fields.items()}


def validate_spec(data: Any, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> TaskSpec:
    """Check a submission; raise TaskValidationError naming every problem."""
    if not isinstance(data, dict):
        raise TaskValidationError([f"task: must be a JSON object, got {type(data).__name__}"])
    problems: list[str] = []
    spec: TaskSpec | None = None
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as err:
        problems.extend(_problems(err))
    payload = data.get("payload")
    too_large = False
    if isinstance(payload, str):
        size = len(payload.encode())
        if size > max_payload_bytes:
            too_large = True
            problems.append(f"payload: {size} bytes is over the {max_payload_bytes}-byte limit")
    if problems:
        raise TaskValidationError(problems, too_large=too_large)
    assert spec is not None
    return spec


def parse_task_message(
    raw: str | bytes, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> tuple[str | None, TaskSpec]:
    """Parse a queue message into (taskId or None, spec).

    A message pushed by hand (`redis-cli LPUSH queue:pending '{"taskType":"SHELL",...}'`) may
    carry nothing but a type and a payload; the platform fills in the rest.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TaskValidationError([f"message: not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise TaskValidationError([f"message: must be a JSON object, got {type(data).__name__}"])
    task_id = data.pop("taskId", None)
    if task_id is not None:
        try:
            task_id = str(uuid.UUID(str(task_id)))
        except ValueError:
            raise TaskValidationError(["taskId: must be a UUID"]) from None
    # Fields the platform owns may appear in a message (a re-queued task); they are not part of
    # what a client can set, so they are dropped rather than rejected.
    spec_data = {k: v for k, v in data.items() if k in _WIRE_NAMES or k not in _PLATFORM_FIELDS}
    return task_id, validate_spec(spec_data, max_payload_bytes).with_default_name()


_PLATFORM_FIELDS = {"status", "attempt", "epoch", "agentId", "createdAt", "updatedAt"}
