"""The task contract: what a client submits, what the platform stores, and how it is checked.

JSON on the wire uses camelCase (`taskId`, `executionTimeout`); Python uses snake_case. One
validator serves every entry point (CLI, hand-pushed Redis message, Kafka, REST, gRPC), and it
reports *every* problem at once, so a user fixes a bad task in one round trip.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from common.domain.transitions import TaskStatus

# The default of `max_payload_bytes` in the settings; every check reads the configured value.
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024

# Room a queue message needs around its payload: the id, the name (200 characters, each up to a
# six-byte JSON escape), the request id, the numbers and the dispatch stamp, with headroom.
MESSAGE_ENVELOPE_BYTES = 16 * 1024

# JSON escaping grows text: a quote, a backslash or a newline to two bytes, any other control
# character to six. A payload may take at most twice its limit once escaped, so a transport
# sized for `2 * max_payload_bytes + MESSAGE_ENVELOPE_BYTES` carries every task that passed.
ESCAPED_PAYLOAD_FACTOR = 2

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class TaskType(StrEnum):
    SHELL = "SHELL"
    PYTHON_SCRIPT = "PYTHON_SCRIPT"
    # A call of a Python function registered with the agent (`agent_handlers`); the payload is
    # `{"handler": "module:function", "args": {...}}` (see handler_call).
    HANDLER = "HANDLER"
    # The parent of a composite task (common/domain/composite.py): it runs on no agent; its
    # payload is the composite document, its state follows its children's.
    COMPOSITE = "COMPOSITE"


# The types an agent runs, and so the ones a plain submit may name.
RUNNABLE_TYPES: tuple[TaskType, ...] = tuple(t for t in TaskType if t != TaskType.COMPOSITE)


class TaskValidationError(ValueError):
    """A task that cannot be accepted; `problems` lists every field that is wrong."""

    def __init__(self, problems: list[str], too_large: bool = False) -> None:
        self.problems = problems
        # Callers map this to 413 rather than 422.
        self.too_large = too_large
        super().__init__("invalid task: " + "; ".join(problems))


# -- reading bytes from outside ---------------------------------------------------------------
# A message enters from Redis lists and Kafka topics that anyone can write to. Python's json
# module accepts more than the platform can carry on: NaN and Infinity, numbers that overflow
# to inf, duplicate keys (the last silently wins), lone surrogates (text that no Redis client
# can encode again), and nesting deep enough to exhaust the stack. These helpers refuse all of
# it with a ValueError, so each parser maps every bad input to its own one validation error.


class NotStrictJSON(ValueError):
    """Bytes that are not one strict JSON document of valid Unicode text."""


def shown(value: object, limit: int = 40) -> str:
    """`value` fit for an error message: ASCII, quoted, cut short (never a NUL or surrogate)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_label(key: object) -> str:
    """A field name as an error message names it: unquoted if it is text, always ASCII."""
    return shown(key)[1:-1] if isinstance(key, str) and len(ascii(key)) <= 40 else shown(key)


def error_text(error: Any) -> str:
    """A pydantic error's message, without the "Value error, " our own validators get."""
    if error["type"] == "value_error" and "error" in error.get("ctx", {}):
        return str(error["ctx"]["error"])
    return error["msg"]


def text_problem(value: str, nul_ok: bool = False) -> str | None:
    """Why `value` cannot be stored and passed on as text, or None if it can."""
    if not nul_ok and "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate at character {exc.start} (not valid Unicode)"
    return None


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        # json.loads would turn 1e999 into inf without a word.
        raise ValueError(f"number {shown(number)} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {shown(key)}")
            seen.add(key)
    return out


# What json.loads(text, **hooks) builds on every call, built once: every message of every role
# is parsed here, and the decoder's construction was half the cost of a small message.
_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates,
    parse_constant=_no_constant,
    parse_float=_finite,
)


def strict_json(raw: str | bytes | bytearray | memoryview) -> Any:
    """Parse one JSON document, refusing what JSON tolerates but the platform cannot carry."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotStrictJSON(f"invalid UTF-8 at byte {exc.start} ({exc.reason})") from None
    elif isinstance(raw, str):
        text = raw
        problem = text_problem(text, nul_ok=True)
        if problem:
            raise NotStrictJSON(f"text that {problem}")
    else:
        raise NotStrictJSON(f"{type(raw).__name__}, not bytes or text")
    try:
        return _STRICT_DECODER.decode(text)
    except RecursionError:
        raise NotStrictJSON("nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, an integer of more than 4300 digits, or one of the hooks above.
        raise NotStrictJSON(str(exc)) from None


def text_problems(
    data: dict[Any, Any], nul_ok: frozenset[str] = frozenset(), raw: object = None
) -> list[str]:
    """Every top-level key and string value of `data` that is not valid text.

    Only the top level: every field of a message is a scalar, so a nested value is refused by
    its type already, and a field's error never quotes the value back. Given the `raw` text
    `data` was parsed from (by strict_json), the common case costs one substring search: strict
    UTF-8 holds no surrogate and a JSON string no raw NUL, so only a \\u escape brings either in.
    """
    if isinstance(raw, (bytes, bytearray)) and b"\\u" not in raw:
        return []
    if isinstance(raw, str) and "\\u" not in raw:
        return []
    problems = []
    for key, value in data.items():
        if isinstance(key, str):
            problem = text_problem(key)
            if problem:
                problems.append(f"message: a field name {problem}")
                continue
        if isinstance(value, str):
            problem = text_problem(value, nul_ok=key in nul_ok)
            if problem:
                problems.append(f"{field_label(key)}: {problem}")
    return problems


# `package.module:function`, as the agent's `agent_handlers` setting names a handler.
HANDLER_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
HANDLER_PAYLOAD_SHAPE = '{"handler": "module:function", "args": {...}}'


def handler_call(payload: str) -> tuple[str, dict[str, Any]]:
    """A HANDLER payload's (handler name, keyword arguments); ValueError saying what is wrong.

    Checked at submit, so a malformed call is refused with a field error rather than failing
    on an agent; whether the handler is registered is the agent's to say (it fails the task).
    """
    try:
        data = strict_json(payload)
    except NotStrictJSON as exc:
        raise ValueError(f"must be JSON {HANDLER_PAYLOAD_SHAPE} ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object {HANDLER_PAYLOAD_SHAPE}")
    unknown = sorted(set(data) - {"handler", "args"})
    if unknown:
        raise ValueError(f"unknown key {shown(unknown[0])} (expected {HANDLER_PAYLOAD_SHAPE})")
    name = data.get("handler")
    if not isinstance(name, str) or not HANDLER_NAME.fullmatch(name):
        raise ValueError(f'"handler" must name a function as module:function, got {shown(name)}')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f'"args" must be a JSON object of keyword arguments, got {shown(args)}')
    return name, args


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

    @field_validator("task_name", "payload", "request_id")
    @classmethod
    def _storable_text(cls, v: str | None) -> str | None:
        # A NUL cannot reach a command line (execve refuses it), and a lone surrogate cannot
        # be encoded to UTF-8 again by any Redis or Kafka client further down the line.
        problem = None if v is None else text_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("execution_timeout", "retry_count", mode="before")
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        # Python counts True as 1; a task whose timeout is `true` is a mistake, not a second.
        if isinstance(v, bool):
            raise ValueError("must be an integer, not a boolean")
        return v

    def with_default_name(self) -> TaskSpec:
        if self.task_name:
            return self
        first_line = self.payload.strip().splitlines()[0] if self.payload.strip() else "task"
        if self.task_type == TaskType.HANDLER:
            try:
                first_line = handler_call(self.payload)[0]  # the function, not its JSON
            except ValueError:
                pass  # refused by validate_spec; this name is never stored
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
    # The task this one retries (a retry by hand makes a new task; terminal ones stay final).
    retry_of: str | None = None
    # -- a composite's child (common/domain/composite.py); all absent on a plain task ----------
    parent_id: str | None = None
    # What the child is to its parent: "child", "shard", "map", "item", "reduce", "node",
    # "broadcast".
    role: str | None = None
    # Its index among its parent's children of its role, and how many there are: the agent
    # gives them to the task as TASKLAB_SHARD_INDEX and TASKLAB_SHARD_TOTAL.
    shard_index: int | None = None
    shard_total: int | None = None
    # A DAG node's name, unique within its parent.
    node: str | None = None
    # JSON text the agent gives the task as TASKLAB_INPUT: a map item, or a reduce step's
    # children's results.
    input: str | None = None
    # The one agent that may run it (a broadcast's child); if that agent is gone, it fails.
    pinned_agent: str | None = None
    # -- its trace (common/observability/tracing.py); all absent while tracing is off ----------
    # The trace of the current attempt (32 hex), the W3C traceparent of the span that started
    # that attempt (the submit, for attempt 1), and which attempt that is (absent = 1).
    trace_id: str | None = None
    traceparent: str | None = None
    trace_attempt: int | None = None
    # -- a cron schedule's run (common/domain/schedule.py); absent on any other task ----------
    schedule_id: str | None = None  # the schedule's name
    scheduled_for: float | None = None  # the fire time (Unix seconds) this run belongs to

    @classmethod
    def new(
        cls,
        spec: TaskSpec,
        task_id: str | None = None,
        retry_of: str | None = None,
        traceparent: str | None = None,
    ) -> Task:
        spec = spec.with_default_name()
        now = time.time()
        # A traceparent is version-traceId-spanId-flags: the trace id is its second part.
        trace_id = traceparent.split("-")[1] if traceparent else None
        return cls(
            task_id=task_id or str(uuid.uuid4()),
            **spec.model_dump(),
            created_at=now,
            updated_at=now,
            retry_of=retry_of,
            trace_id=trace_id,
            traceparent=traceparent,
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
        field = ".".join(field_label(p) for p in e["loc"]) or "task"
        msg = e["msg"]
        if e["type"] == "enum" and e["loc"] and e["loc"][-1] == "taskType":
            msg = "must be one of " + ", ".join(t.value for t in RUNNABLE_TYPES)
        elif e["type"] == "enum":
            # Another enum (a composite's kind, failure mode, trigger rule): its own values.
            expected = str((e.get("ctx") or {}).get("expected", ""))
            msg = "must be one of " + expected.replace("'", "").replace(" or ", ", ")
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "value_error":
            msg = error_text(e)
        elif e["type"] == "string_unicode":
            # Bytes that were not UTF-8, carried as lone surrogates (a shell argument, stdin).
            msg = "not valid UTF-8 text"
        problems.append(f"{field}: {msg}")
    return problems


_WIRE_NAMES = {f.alias or n for n, f in TaskSpec.model_fields.items()}


def validate_spec(data: Any, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> TaskSpec:
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
    if isinstance(payload, str) and text_problem(payload) is None:
        size = len(payload.encode())
        # Escaping grows a string six-fold at most: only a large payload needs measuring.
        escaped = size
        if 6 * size > ESCAPED_PAYLOAD_FACTOR * max_payload_bytes:
            escaped = len(json.dumps(payload, ensure_ascii=False).encode()) - 2
        if size > max_payload_bytes:
            too_large = True
            problems.append(f"payload: {size} bytes is over the {max_payload_bytes}-byte limit")
        elif escaped > ESCAPED_PAYLOAD_FACTOR * max_payload_bytes:
            # Only a payload made mostly of control characters gets here; refused so that the
            # transports, sized at start-up for twice the limit, carry every task accepted.
            too_large = True
            problems.append(
                f"payload: {escaped} bytes once escaped for JSON (control characters take six "
                f"each), over {ESCAPED_PAYLOAD_FACTOR} x the {max_payload_bytes}-byte limit"
            )
    if spec is not None and spec.task_type == TaskType.COMPOSITE:
        problems.append(
            "taskType: must be one of "
            + ", ".join(t.value for t in RUNNABLE_TYPES)
            + " (a COMPOSITE task is submitted as a composite document)"
        )
    if spec is not None and spec.task_type == TaskType.HANDLER and not too_large:
        try:
            handler_call(spec.payload)
        except ValueError as exc:
            problems.append(f"payload: {exc}")
    if problems:
        raise TaskValidationError(problems, too_large=too_large)
    assert spec is not None
    return spec


def max_message_bytes(max_payload_bytes: int) -> int:
    """The largest queue message a task within the payload limit can be, however it is
    escaped (a hand-written message may spell every character as a six-byte \\u escape)."""
    return 6 * max_payload_bytes + MESSAGE_ENVELOPE_BYTES


# Fields the platform writes into a queue message: a dispatch names the attempt and the epoch it
# belongs to, and the claim scripts compare them as integers.
_STAMP_BOUNDS = {"attempt": (1, 2**31 - 1), "epoch": (0, 2**63 - 1)}


def _stamp_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    for name, (low, high) in _STAMP_BOUNDS.items():
        if name not in data:
            continue
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name}: must be an integer, got {type(value).__name__}")
        elif not low <= value <= high:
            problems.append(f"{name}: must be between {low} and {high}")
    return problems


def parse_task_message(
    raw: str | bytes, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> tuple[str | None, TaskSpec]:
    """Parse a queue message into (taskId or None, spec), or raise TaskValidationError.

    A message pushed by hand (`redis-cli LPUSH queue:pending '{"taskType":"SHELL",...}'`) may
    carry nothing but a type and a payload; the platform fills in the rest. Whatever the bytes,
    the answer is a spec or a TaskValidationError: never another exception, so one bad message
    is dead-lettered with its reason and cannot take down the process that read it.
    """
    try:
        size = len(raw)
    except TypeError:
        raise TaskValidationError([f"message: must be text, got {type(raw).__name__}"]) from None
    limit = max_message_bytes(max_payload_bytes)
    if size > limit:
        # Refused before parsing: no valid task is this large, so there is nothing to decode.
        unit = "characters" if isinstance(raw, str) else "bytes"
        raise TaskValidationError(
            [f"message: {size} {unit} is over the {limit} bytes a task message can take"],
            too_large=True,
        )
    try:
        data = strict_json(raw)
    except NotStrictJSON as exc:
        raise TaskValidationError([f"message: not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise TaskValidationError([f"message: must be a JSON object, got {type(data).__name__}"])
    problems = text_problems(data, raw=raw) + _stamp_problems(data)
    task_id = data.pop("taskId", None)
    if task_id is not None:
        if isinstance(task_id, str) and _UUID.fullmatch(task_id):
            task_id = task_id.lower()
        else:
            problems.append(
                f"taskId: must be a UUID such as 123e4567-e89b-42d3-a456-426614174000, "
                f"got {shown(task_id)}"
            )
    if problems:
        raise TaskValidationError(problems)
    # Fields the platform owns may appear in a message (a re-queued task); they are not part of
    # what a client can set, so they are dropped rather than rejected.
    spec_data = {k: v for k, v in data.items() if k in _WIRE_NAMES or k not in _PLATFORM_FIELDS}
    return task_id, validate_spec(spec_data, max_payload_bytes).with_default_name()


_PLATFORM_FIELDS = {"status", "attempt", "epoch", "agentId", "createdAt", "updatedAt"}
