"""What travels over REST: request and response bodies as pydantic models (DTOs).

Pattern: Data Transfer Object (stage 4). These shapes are the REST contract, camelCase as the
domain names its fields, with the examples the OpenAPI document shows. They know nothing of
gRPC: `common.api.views` turns the providers' messages into them. Request DTOs check shape and
ranges (every problem at once); the domain's own rules (a blank payload, a payload over the
size limit) are checked again by the provider, whose field violations come back as the same
422 problem.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt
from pydantic.alias_generators import to_camel

from common.domain.composite import (
    MAX_CHILDREN,
    NODE_NAME_PATTERN,
    CompositeKind,
    FailureMode,
    TriggerRule,
)
from common.domain.task import RUNNABLE_TYPES, TaskType, text_problem
from common.domain.transitions import TERMINAL_STATES, TaskStatus

# The domain's own value sets: a new task type or state is one edit, in the domain.
TERMINAL = TERMINAL_STATES

# RFC 3339 in UTC with milliseconds, e.g. "2026-11-29T21:40:00.123Z".
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
TASK_ID_EXAMPLE = "3f1c9a52-7a0e-4c55-9f0c-6d2b8e1f4a10"
CHILD_ID_EXAMPLE = "b7e2c0d4-1f3a-5e6b-8c9d-0a1b2c3d4e5f"


# What a submit may name: the types an agent runs (a COMPOSITE is submitted as a document, to
# /api/v1/composites), so a wrong type is answered with the list a client can actually use.
RunnableType = StrEnum("RunnableType", [(t.name, t.value) for t in RUNNABLE_TYPES])


class _Request(BaseModel):
    # Only the contract's camelCase names; an unknown field is a mistake worth naming.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True
    )


# --8<-- [start:submit-task]
class SubmitTask(_Request):
    """A task to run. Only taskType and payload are required."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "taskName": "hello",
                    "taskType": "SHELL",
                    "payload": "echo hello from $(hostname)",
                    "executionTimeout": 60,
                    "retryCount": 0,
                    "requestId": "order-42-hello",
                }
            ]
        }
    )

    task_name: str | None = Field(
        default=None, max_length=200, description="Defaults to the payload's first line."
    )
    task_type: RunnableType
    payload: str = Field(
        min_length=1, description="A shell command line, or Python source for PYTHON_SCRIPT."
    )
    execution_timeout: StrictInt = Field(default=60, ge=1, le=86400, description="Seconds.")
    retry_count: StrictInt = Field(default=0, ge=0, le=10, description="Automatic retries.")
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key (as the Idempotency-Key header): one key, one task.",
    )


# --8<-- [end:submit-task]


class ChildRef(_Response):
    """One child of a composite parent, as the parent's view lists it."""

    task_id: str
    task_name: str
    role: str = Field(description="child, shard, map, item, reduce, node or broadcast.")
    shard_index: int | None
    node: str | None = Field(description="A DAG node's name; null for other kinds.")
    status: TaskStatus
    agent_id: str | None


class Edge(_Response):
    """A DAG dependency by child id: `to` runs after `from`, by its trigger rule."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"from": TASK_ID_EXAMPLE, "to": CHILD_ID_EXAMPLE}]}
    )

    from_: str = Field(alias="from")
    to: str


class TaskView(_Response):
    """A task as every endpoint returns it.

    A composite's child also says where it stands in its parent (`parentId`, `role`,
    `shardIndex`, `shardTotal`, `node`, `pinnedAgent`); a composite parent (taskType
    COMPOSITE) read on its own (GET /tasks/{taskId}, the answer to POST /composites) lists its
    `children`, a DAG's `edges` and its `progress`. A cron schedule's run names its schedule
    (`scheduleId`) and the fire time it belongs to (`scheduledFor`); a traced task its
    `traceId`. They are null where they do not apply.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "taskId": TASK_ID_EXAMPLE,
                    "taskName": "hello",
                    "taskType": "SHELL",
                    "payload": "echo hello",
                    "executionTimeout": 60,
                    "retryCount": 0,
                    "requestId": None,
                    "status": "SUCCESS",
                    "attempt": 1,
                    "epoch": 12,
                    "agentId": "agent-1",
                    "result": "hello\n",
                    "error": None,
                    "exitCode": 0,
                    "createdAt": "2026-11-29T21:40:00.123Z",
                    "updatedAt": "2026-11-29T21:40:00.456Z",
                    "retryOf": None,
                    "scheduleId": "nightly-report",
                    "scheduledFor": "2026-11-29T21:40:00.000Z",
                    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                }
            ]
        }
    )

    task_id: str
    task_name: str
    task_type: TaskType
    payload: str
    execution_timeout: int
    retry_count: int
    request_id: str | None
    status: TaskStatus
    attempt: int
    epoch: int
    agent_id: str | None
    result: str | None
    error: str | None
    exit_code: int | None
    created_at: Timestamp
    updated_at: Timestamp
    retry_of: str | None
    # -- a cron schedule's run, and the trace of a traced task ------------------------------
    schedule_id: str | None = Field(
        default=None, description="The cron schedule that fired this task (its name)."
    )
    scheduled_for: Timestamp | None = Field(
        default=None, description="The fire time of the schedule this run belongs to."
    )
    trace_id: str | None = Field(
        default=None,
        description="The W3C trace id (32 hex) of the current attempt's trace, while tracing "
        "is on: look it up in the trace store.",
    )
    # -- a composite's child ----------------------------------------------------------------
    parent_id: str | None = None
    role: str | None = None
    shard_index: int | None = None
    shard_total: int | None = None
    node: str | None = None
    pinned_agent: str | None = None
    # -- a composite parent, read on its own ------------------------------------------------
    children: list[ChildRef] | None = None
    edges: list[Edge] | None = None
    progress: dict[str, int] | None = Field(
        default=None, description="How many children are in each state."
    )


# -- composite documents -----------------------------------------------------------------------


def _encodable(value: str) -> str:
    # A lone surrogate (JSON's "\ud800") cannot be encoded to UTF-8, so no protobuf string
    # can carry it to a provider: refused here, as a field error, not found out as a crash.
    # A NUL passes: the domain's validator names it, as it does for a task.
    problem = text_problem(value, nul_ok=True)
    if problem:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_encodable)]


class ChildTask(_Request):
    """A task inside a composite document: a task submit without a requestId (the composite's
    requestId covers all of it)."""

    task_name: Text | None = Field(default=None, max_length=200)
    task_type: RunnableType
    payload: Text = Field(min_length=1)
    execution_timeout: StrictInt = Field(default=60, ge=1, le=86400, description="Seconds.")
    retry_count: StrictInt = Field(
        default=0, ge=0, le=10, description="Automatic retries of this child, on its own."
    )


class FailurePolicy(_Request):
    mode: FailureMode = Field(
        default=FailureMode.FAIL_FAST,
        description="FAIL_FAST: at the first failure beyond maxFailed, cancel the rest and fail;"
        " WAIT_ALL: let every child finish, then fail if more than maxFailed failed.",
    )
    max_failed: StrictInt = Field(default=0, ge=0, le=MAX_CHILDREN)


class DagNode(_Request):
    name: str = Field(pattern=NODE_NAME_PATTERN)
    task: ChildTask
    depends_on: list[Text] = Field(default_factory=list, max_length=MAX_CHILDREN)
    trigger: TriggerRule = Field(
        default=TriggerRule.ALL_SUCCESS,
        description="ALL_SUCCESS: every upstream node succeeded; ALL_DONE: every one ended; "
        "ONE_FAILED: at least one failed or was cancelled.",
    )


# --8<-- [start:submit-composite]
class SubmitComposite(_Request):
    """A composite task: a parent whose children run on the agents, its state derived from
    theirs. Which fields a kind needs: GROUP `children`; SHARDS `completions` and `template`;
    MAP_REDUCE `map` and `template`; BROADCAST `template`; DAG `nodes`. All but DAG may add a
    `reduce` step, run once after every other child with their results as TASKLAB_INPUT."""

    kind: CompositeKind
    task_name: Text | None = Field(
        default=None, max_length=200, description="The parent's name; defaults to the kind's."
    )
    request_id: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Idempotency key (as the Idempotency-Key header): one key, one parent.",
    )
    parallelism: StrictInt | None = Field(
        default=None, ge=1, le=MAX_CHILDREN, description="Children running at once; null = all."
    )
    failure_policy: FailurePolicy | None = Field(
        default=None,
        description="Null: FAIL_FAST with no failure tolerated, except a DAG (WAIT_ALL).",
    )
    children: list[ChildTask] | None = Field(default=None, min_length=1, max_length=MAX_CHILDREN)
    completions: StrictInt | None = Field(
        default=None, ge=1, le=MAX_CHILDREN, description="SHARDS: TASKLAB_SHARD_INDEX 0..N-1."
    )
    template: ChildTask | None = Field(
        default=None, description="SHARDS, MAP_REDUCE (one per item), BROADCAST (one per agent)."
    )
    map: ChildTask | None = Field(
        default=None, description="MAP_REDUCE: prints the items, a JSON array, as its last line."
    )
    reduce: ChildTask | None = None
    nodes: list[DagNode] | None = Field(default=None, min_length=1, max_length=MAX_CHILDREN)


# --8<-- [end:submit-composite]

_SHELL = "SHELL"
COMPOSITE_EXAMPLES: dict[str, dict[str, Any]] = {
    "group": {
        "summary": "GROUP: three tasks, one failure tolerated",
        "value": {
            "kind": "GROUP",
            "taskName": "nightly checks",
            "failurePolicy": {"mode": "WAIT_ALL", "maxFailed": 1},
            "children": [
                {"taskType": _SHELL, "payload": "echo disk ok"},
                {"taskType": _SHELL, "payload": "echo backup ok"},
                {"taskType": "PYTHON_SCRIPT", "payload": "print('certs ok')"},
            ],
        },
    },
    "shards": {
        "summary": "SHARDS: one task 4 times, 2 at once (an Indexed Job)",
        "value": {
            "kind": "SHARDS",
            "taskName": "reindex",
            "completions": 4,
            "parallelism": 2,
            "template": {
                "taskType": _SHELL,
                "payload": 'echo "shard $TASKLAB_SHARD_INDEX of $TASKLAB_SHARD_TOTAL"',
                "retryCount": 2,
            },
        },
    },
    "map-reduce": {
        "summary": "MAP_REDUCE: a map step, one child per item, a reduce",
        "value": {
            "kind": "MAP_REDUCE",
            "taskName": "word count",
            "map": {"taskType": "PYTHON_SCRIPT", "payload": 'print(\'["a b", "b c"]\')'},
            "template": {
                "taskType": "PYTHON_SCRIPT",
                "payload": "import json, os\n"
                "print(len(json.loads(os.environ['TASKLAB_INPUT']).split()))",
            },
            "reduce": {
                "taskType": "PYTHON_SCRIPT",
                "payload": "import json, os\nrows = json.loads(os.environ['TASKLAB_INPUT'])\n"
                "print(sum(int(r['result']) for r in rows))",
            },
        },
    },
    "broadcast": {
        "summary": "BROADCAST: once on every live agent",
        "value": {
            "kind": "BROADCAST",
            "taskName": "clear caches",
            "template": {"taskType": _SHELL, "payload": "echo cleared on $(hostname)"},
        },
    },
    "dag": {
        "summary": "DAG: a diamond with a clean-up on failure",
        "value": {
            "kind": "DAG",
            "taskName": "release",
            "nodes": [
                {"name": "build", "task": {"taskType": _SHELL, "payload": "echo build"}},
                {
                    "name": "test",
                    "task": {"taskType": _SHELL, "payload": "echo test"},
                    "dependsOn": ["build"],
                },
                {
                    "name": "lint",
                    "task": {"taskType": _SHELL, "payload": "echo lint"},
                    "dependsOn": ["build"],
                },
                {
                    "name": "publish",
                    "task": {"taskType": _SHELL, "payload": "echo publish"},
                    "dependsOn": ["test", "lint"],
                },
                {
                    "name": "cleanup",
                    "task": {"taskType": _SHELL, "payload": "echo rollback"},
                    "dependsOn": ["publish"],
                    "trigger": "ONE_FAILED",
                },
            ],
        },
    },
}


class TimelineEntry(_Response):
    """One accepted transition of a task, as its history recorded it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "state": "RUNNING",
                    "fromState": "DISPATCHED",
                    "at": "2026-11-29T21:40:00.301Z",
                    "actor": "agent:agent-1",
                    "epoch": 12,
                    "attempt": 1,
                    "reason": "",
                }
            ]
        }
    )

    state: TaskStatus
    from_state: TaskStatus | None
    at: Timestamp
    actor: str
    epoch: int
    attempt: int
    reason: str


class TaskDetail(TaskView):
    """A task with its log lines and its timeline."""

    logs: list[str]
    timeline: list[TimelineEntry]
    archived: bool = Field(
        default=False,
        description="Read from the PostgreSQL archive: Redis no longer has the task (its "
        "retention deleted it). The timeline then holds one entry per archived attempt's end, "
        "and there are no logs.",
    )


class CancelResult(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message": "Cancel request accepted.",
                    "taskId": TASK_ID_EXAMPLE,
                    "status": "CANCELLED",
                    "cancelledFrom": "RUNNING",
                    "alreadyCancelled": False,
                }
            ]
        }
    )

    message: str
    task_id: str
    status: TaskStatus
    cancelled_from: TaskStatus | None
    already_cancelled: bool


class RetryResult(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "newTaskId": "9b2e4d1c-55aa-4f0b-8c61-0e7d3a9f2b44",
                    "status": "PENDING",
                    "retryOf": TASK_ID_EXAMPLE,
                }
            ]
        }
    )

    new_task_id: str
    status: TaskStatus
    retry_of: str


class TaskPage(_Response):
    """One page of tasks, newest first; `nextCursor` fetches the next (null: no more)."""

    items: list[TaskView]
    next_cursor: str | None


class TaskLogs(_Response):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"taskId": TASK_ID_EXAMPLE, "lines": ["hello"]}]}
    )

    task_id: str
    lines: list[str]


class Agent(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agentId": "agent-1",
                    "alive": True,
                    "load": 1,
                    "capacity": 2,
                    "lastHeartbeat": "2026-11-29T21:40:01.000Z",
                }
            ]
        }
    )

    agent_id: str
    alive: bool
    load: int = Field(description="Attempts it runs now.")
    capacity: int | None = Field(description="Tasks it runs at once; null when not known.")
    last_heartbeat: Timestamp | None


class AgentList(_Response):
    items: list[Agent]


class DeadLetterBoxName(StrEnum):
    """Where a dead letter is kept: the Redis list, or (stage 3 on) the bus's topic."""

    redis = "redis"
    bus = "bus"


class DeadLetterView(_Response):
    """One message that could not be run or applied, with why, newest first.

    `box` says where it is kept. On the Redis list (`redis`): what the queue's intake could not
    take; `entryId` names it for a requeue and `source` is the queue it was taken from. On the
    event bus's dead-letter topic (`bus`, stage 3 on): a bus message a consumer could not parse
    or apply; `entryId` is its partition@offset on the dead-letter topic, `actor` the consumer
    group that refused it, `source` and `topic`/`partition`/`offset` where it was refused, and
    `key` its key. Those four are null on the Redis list.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entryId": "4be1f0c2a9d35e17",
                    "message": '{"taskType":"RUBY","payload":"puts 1"}',
                    "reason": "unknown taskType 'RUBY'",
                    "actor": "scheduler:scheduler-1",
                    "at": "2026-11-29T21:40:00.123Z",
                    "source": "queue:pending",
                    "box": "redis",
                },
                {
                    "entryId": "0@17",
                    "message": '{"taskId":"3f1c9a52","status":"SUCCES"}',
                    "reason": "not a status event: status: unknown 'SUCCES'",
                    "actor": "tasklab-manager",
                    "at": "2026-11-29T21:41:02.000Z",
                    "source": "task-status-update-topic",
                    "box": "bus",
                    "topic": "task-status-update-topic",
                    "partition": 3,
                    "offset": 1042,
                    "key": "3f1c9a52",
                },
            ]
        }
    )

    entry_id: str = Field(
        description="Names this entry: a digest of it on the Redis list (what a requeue "
        "takes), partition@offset on the dead-letter topic."
    )
    message: str = Field(description="The original message, as it was taken.")
    reason: str
    actor: str
    at: Timestamp | None
    source: str
    box: DeadLetterBoxName = DeadLetterBoxName.redis
    topic: str | None = Field(default=None, description="bus: the topic it was refused on.")
    partition: int | None = Field(default=None, description="bus: its partition there.")
    offset: int | None = Field(default=None, description="bus: its offset there.")
    key: str | None = Field(default=None, description="bus: its message key.")


class DeadLetterList(_Response):
    items: list[DeadLetterView]
    total: int = Field(description="Entries held now (items shows the newest).")
    box: DeadLetterBoxName = DeadLetterBoxName.redis
    note: str | None = Field(
        default=None,
        description="Why there is nothing to list: e.g. no event bus is configured.",
    )


class RequeueAnswer(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"entryId": "4be1f0c2a9d35e17", "outcome": "REQUEUED", "queue": "queue:pending"}
            ]
        }
    )

    entry_id: str
    outcome: str = Field(description="REQUEUED now, or ALREADY_REQUEUED by an earlier call.")
    queue: str


class Liveness(_Response):
    status: str = Field(examples=["ok"])


class Check(_Response):
    ok: bool
    detail: str
    latency_ms: float


class Readiness(_Response):
    """Every backing service the API needs, checked now."""

    status: str = Field(examples=["ready"])
    checks: dict[str, Check]


class SystemInfo(_Response):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "tasklab",
                    "version": "0.1.0",
                    "stage": 4,
                    "apiVersion": "v1",
                    "providers": ["127.0.0.1:40123", "127.0.0.1:40125"],
                }
            ]
        }
    )

    name: str
    version: str
    stage: int
    api_version: str
    providers: list[str]


class DetailedHealth(_Response):
    status: str = Field(examples=["ok", "degraded"])
    checks: dict[str, Check]
    providers: list[str]


class ProblemDoc(_Response):
    """What a problem `type` means."""

    type: str
    title: str
    status: int
    description: str


class FieldProblem(BaseModel):
    field: str
    detail: str
    pointer: str | None = None


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route: these statuses answer problem+json."""
    return {
        status: {
            "model": ProblemDetails,
            "content": {"application/problem+json": {}},
            "description": "A problem (RFC 9457).",
        }
        for status in statuses
    }
