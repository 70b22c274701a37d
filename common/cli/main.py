"""`tasklab`: submit / composite / status / list / logs / cancel / retry / agents, `run ROLE`,
`dev up|down`, `bus` (stage 3 on).

The task verbs talk to Redis, or to the REST API when TASKLAB_API_URL is set (stage 4). The
choice is made once, in `tasks()`; the two backends (common/cli/backend.py, remote.py) answer
in the same domain objects, so each verb is written once and prints the same either way.

Errors a user can cause (bad task, unknown id, Redis not reachable, invalid config) print one
line to stderr and exit non-zero (2 for invalid input or config); never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.cli.archive import archive_app
from common.cli.backend import (
    API_KEY_ENV,
    API_URL_ENV,
    CliError,
    RedisBackend,
    TaskBackend,
    TaskInfo,
)
from common.cli.bus import bus_app
from common.cli.config import config_app
from common.cli.data import data_app
from common.cli.errors import OneLineErrors
from common.cli.explain import dead_letters_seen_command, explain_command
from common.cli.schedules import schedule_app
from common.cli.shared import fail, read_document, settings
from common.domain.task import (
    RUNNABLE_TYPES,
    Task,
    TaskValidationError,
)
from common.domain.transitions import TERMINAL_STATES, TaskStatus

app = OneLineErrors(
    help="tasklab: a distributed task scheduling and execution platform, built in stages.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(
    help="The native dev stack: real Redis/ZooKeeper/Kafka on this machine.", no_args_is_help=True
)
app.add_typer(dev_app, name="dev")
# Stage 3 on: the Kafka event bus (imports confluent-kafka only when a bus command runs).
app.add_typer(bus_app, name="bus")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(archive_app, name="archive")
app.add_typer(schedule_app, name="schedule")


# --8<-- [start:choose]
def tasks(environ: Mapping[str, str] | None = None) -> TaskBackend:
    """What the task verbs talk to, chosen here and nowhere else: the REST API when
    TASKLAB_API_URL is set (with TASKLAB_API_KEY, if set, as its key), else Redis. Redis
    settings are read only for Redis: a CLI pointed at an API needs none."""
    env = os.environ if environ is None else environ
    url = env.get(API_URL_ENV, "").strip()
    if not url:
        return RedisBackend.from_settings(settings())
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{API_URL_ENV}={url!r}: expected http://host:port", 2)
    try:
        from common.cli.remote import ApiTaskClient
    except ImportError as exc:  # httpx comes with the stage4 extra
        raise CliError(
            f"{API_URL_ENV} is set, but the HTTP client is missing ({exc}); "
            "install tasklab with its stage4 extra (`make setup` does)",
            2,
        ) from exc
    return ApiTaskClient(url, api_key=env.get(API_KEY_ENV) or None)


# --8<-- [end:choose]


# The types a submit may name: a COMPOSITE parent is submitted as a document (`composite`).
RunnableType = StrEnum("RunnableType", {t.value: t.value for t in RUNNABLE_TYPES})


def _when(ts: float | str | None) -> str:
    if not ts:
        return "-"
    # Whole milliseconds, truncated; the nudge keeps a time that came back from the API as
    # "…21:40:00.123Z" (the float 0.12299999…) at .123, as the same time read from Redis shows.
    millis = int(float(ts) * 1000 + 1e-3)
    return time.strftime("%H:%M:%S", time.localtime(millis // 1000)) + f".{millis % 1000:03d}"


def _moment(ts: float) -> str:
    """A fire time in UTC, to the second, as the schedule's own views show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _print_task(task: Task, history: list[dict] | None = None) -> None:
    typer.echo(f"taskId:   {task.task_id}")
    typer.echo(f"name:     {task.task_name}")
    typer.echo(f"type:     {task.task_type.value}")
    typer.echo(f"status:   {task.status.value}")
    typer.echo(f"attempt:  {task.attempt}")
    _print_parent(task)
    if task.agent_id:
        typer.echo(f"agent:    {task.agent_id}")
    if task.exit_code is not None:
        typer.echo(f"exitCode: {task.exit_code}")
    if task.schedule_id:
        # A cron schedule's run: `tasklab schedule show NAME` has the schedule's other runs.
        fired = f" (fired for {_moment(task.scheduled_for)})" if task.scheduled_for else ""
        typer.echo(f"schedule: {task.schedule_id}{fired}")
    if task.trace_id:
        # The trace of the current attempt, to look up in the trace store (tracing.py).
        typer.echo(f"traceId:  {task.trace_id}")
    if task.error:
        typer.echo(f"error:    {task.error}")
    if task.result:
        typer.echo("result:")
        for line in task.result.rstrip("\n").splitlines():
            typer.echo(f"  {line}")
    if history:
        typer.echo("timeline:")
        for h in history:
            extra = f"  ({h['reason']})" if h.get("reason") else ""
            typer.echo(
                f"  {_when(h.get('at'))}  {h['state']:<10} attempt {h.get('attempt', 1)}"
                f"  epoch {h.get('epoch', 0)}  by {h.get('actor', '?')}{extra}"
            )


def _task_json(task: Task, history: list[dict] | None = None, logs: list[str] | None = None):
    data = task.model_dump(by_alias=True, mode="json")
    if history is not None:
        data["timeline"] = history
    if logs is not None:
        data["logs"] = logs
    return data


def _guard(fn):
    """Turn the errors a user can cause into one line and an exit code."""
    import functools

    from common.client import IdempotencyConflict, NotRetryable, TaskNotFound

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            fail(str(exc), exc.code)
        except TaskValidationError as exc:
            fail(str(exc), 2)
        except (TaskNotFound, NotRetryable, IdempotencyConflict) as exc:
            fail(str(exc), 1)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            fail(
                f"cannot reach Redis at {settings().redis_url} ({exc}); is it running? "
                "(`tasklab dev up` starts one)",
                1,
            )

    return wrapper


@app.command()
@_guard
def submit(
    payload: Annotated[
        str,
        typer.Argument(
            help="Shell command, Python source, or for HANDLER"
            ' {"handler": "module:function", "args": {...}} (\'-\' = stdin).'
        ),
    ],
    task_type: Annotated[RunnableType, typer.Option("--type", "-t", case_sensitive=False)] = (
        RunnableType.SHELL
    ),
    name: Annotated[str, typer.Option("--name", "-n")] = "",
    timeout: Annotated[int, typer.Option("--timeout", help="executionTimeout, seconds")] = 60,
    retries: Annotated[int, typer.Option("--retries", help="retryCount")] = 0,
    request_id: Annotated[str | None, typer.Option("--request-id")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the final state.")] = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            help="Run the task N times as a SHARDS composite, each with TASKLAB_SHARD_INDEX "
            "0..N-1 and TASKLAB_SHARD_TOTAL N (--retries is then each shard's own).",
        ),
    ] = None,
    parallelism: Annotated[
        int | None, typer.Option("--parallelism", help="With --shards: at most P at once.")
    ] = None,
    max_failed: Annotated[
        int | None, typer.Option("--max-failed", help="With --shards: failed shards tolerated.")
    ] = None,
    wait_all: Annotated[
        bool,
        typer.Option(
            "--wait-all", help="With --shards: let every shard finish before failing (WAIT_ALL)."
        ),
    ] = False,
) -> None:
    """Submit a task (or, with --shards, a SHARDS composite of it).

    Exit code with --wait: 0 SUCCESS, 1 FAILED/CANCELLED/timeout."""
    if payload == "-":
        payload = sys.stdin.read()
    data = {
        "taskName": name,
        "taskType": task_type.value,
        "payload": payload,
        "executionTimeout": timeout,
        "retryCount": retries,
    }
    if shards is None:
        given = [
            flag
            for flag, value in (
                ("--parallelism", parallelism),
                ("--max-failed", max_failed),
                ("--wait-all", wait_all or None),
            )
            if value is not None
        ]
        if given:
            raise CliError(f"{', '.join(given)}: only with --shards N", 2)
    else:
        document = shards_document(data, shards, parallelism, max_failed, wait_all)
        if request_id:
            document["requestId"] = request_id
        _submit_composite(document, wait, wait_timeout, as_json)
        return
    if request_id:
        data["requestId"] = request_id
    backend = tasks()
    if not wait:
        task, created = backend.submit(data)
        if as_json:
            typer.echo(
                json.dumps(
                    {"taskId": task.task_id, "status": task.status.value, "created": created}
                )
            )
        else:
            typer.echo(task.task_id)
        return
    final, _ = backend.submit(data, wait=wait_timeout)
    if as_json:
        typer.echo(json.dumps(_task_json(final, backend.info(final.task_id).timeline)))
    else:
        _print_task(final)
    if final.status != TaskStatus.SUCCESS:
        if not final.is_terminal:
            typer.echo(f"still {final.status.value} after {wait_timeout:.0f}s", err=True)
        raise typer.Exit(1)


def shards_document(
    task: dict,
    shards: int,
    parallelism: int | None = None,
    max_failed: int | None = None,
    wait_all: bool = False,
) -> dict:
    """A SHARDS composite of `task` (the usual submit fields): the task is its template, its
    name the parent's."""
    template = {k: v for k, v in task.items() if k != "taskName" or v}
    document: dict = {"kind": "SHARDS", "completions": shards, "template": template}
    if task.get("taskName"):
        document["taskName"] = task["taskName"]
    if parallelism is not None:
        document["parallelism"] = parallelism
    if max_failed is not None or wait_all:
        document["failurePolicy"] = {
            "mode": "WAIT_ALL" if wait_all else "FAIL_FAST",
            "maxFailed": max_failed or 0,
        }
    return document


def _submit_composite(document: dict, wait: bool, wait_timeout: float, as_json: bool) -> None:
    backend = tasks()
    if not wait:
        parent, created = backend.submit_composite(document)
        if as_json:
            out = {"taskId": parent.task_id, "status": parent.status.value, "created": created}
            typer.echo(json.dumps(out))
        else:
            typer.echo(parent.task_id)
        return
    parent, _ = backend.submit_composite(document, wait=wait_timeout)
    info = backend.info(parent.task_id)
    if as_json:
        typer.echo(json.dumps(_info_json(info)))
    else:
        _print_task(info.task)
        _print_tree(info)
    if info.task.status != TaskStatus.SUCCESS:
        if not info.task.is_terminal:
            typer.echo(f"still {info.task.status.value} after {wait_timeout:.0f}s", err=True)
        raise typer.Exit(1)


@app.command()
@_guard
def composite(
    document: Annotated[
        str,
        typer.Argument(
            help="A JSON file with the composite document ('-' = stdin): kind GROUP, SHARDS, "
            "MAP_REDUCE, BROADCAST or DAG (docs/reference/rest.md, POST /api/v1/composites)."
        ),
    ],
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Sets the document's requestId.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the final state.")] = False,
    wait_timeout: Annotated[float, typer.Option("--wait-timeout")] = 300.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Submit a composite task; prints the parent's id (with --wait, its tree).

    Exit code with --wait: 0 SUCCESS, 1 FAILED/CANCELLED/timeout; 2 for a bad document."""
    data = read_document(document, "composite")
    if request_id:
        data["requestId"] = request_id
    _submit_composite(data, wait, wait_timeout, as_json)


def _info_json(info: TaskInfo) -> dict:
    data = _task_json(info.task, info.timeline, info.logs)
    if info.children:
        data["children"] = [
            {
                "taskId": c.task_id,
                "taskName": c.task_name,
                "role": c.role,
                "shardIndex": c.shard_index,
                "node": c.node,
                "status": c.status.value,
                "agentId": c.agent_id,
            }
            for c in info.children
        ]
        data["edges"] = [{"from": a, "to": b} for a, b in info.edges]
        data["progress"] = info.progress
    return data


def progress_line(progress: dict[str, int]) -> str:
    """`3 of 5 children final (SUCCESS 2, FAILED 1, RUNNING 1, WAITING 1)`."""
    total = sum(progress.values())
    final = sum(n for state, n in progress.items() if TaskStatus(state) in TERMINAL_STATES)
    order = [s.value for s in TaskStatus]
    counts = ", ".join(
        f"{state} {progress[state]}"
        for state in sorted(progress, key=lambda s: order.index(s) if s in order else len(order))
    )
    return f"{final} of {total} children final ({counts})"


def _print_tree(info: TaskInfo) -> None:
    if not info.children:
        return
    typer.echo("children:")
    places = [
        c.node if c.node else ("-" if c.shard_index is None else str(c.shard_index))
        for c in info.children
    ]
    # A DAG's node names are as wide as their longest; an index is a few digits.
    w = max(5, *(len(p) for p in places))
    typer.echo(f"  {'#':>{w}}  {'ROLE':<9} {'STATUS':<10} {'AGENT':<20} {'TASK ID':<36}  NAME")
    for c, where in zip(info.children, places, strict=True):
        typer.echo(
            f"  {where:>{w}}  {c.role:<9} {c.status.value:<10} {(c.agent_id or '-'):<20} "
            f"{c.task_id:<36}  {c.task_name[:40]}"
        )
    if info.edges:
        names = {c.task_id: c.node or c.task_id for c in info.children}
        typer.echo("edges:")
        for upstream, downstream in info.edges:
            typer.echo(f"  {names.get(upstream, upstream)} -> {names.get(downstream, downstream)}")
    typer.echo(f"progress: {progress_line(info.progress)}")


def _print_parent(task: Task) -> None:
    if not task.parent_id:
        return
    place = task.role or "child"
    if task.node:
        place += f" {task.node}"
    elif task.shard_index is not None and task.shard_total is not None:
        place += f" {task.shard_index} of {task.shard_total}"
    typer.echo(f"parent:   {task.parent_id} ({place})")
    if task.pinned_agent:
        typer.echo(f"pinned:   {task.pinned_agent}")


@app.command()
@_guard
def status(
    task_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a task: state, result, and its timeline of transitions.

    A composite parent also shows its children (state, index or node), a DAG's edges and a
    progress line; a composite's child names its parent. A task Redis no longer has is read
    from the PostgreSQL archive (TASKLAB_ARCHIVE_DSN), marked `archived`."""
    info = tasks().info(task_id)
    if as_json:
        data = _info_json(info)
        if info.archived:
            data["archived"] = True
        typer.echo(json.dumps(data))
    else:
        if info.archived:
            typer.echo("archived: yes (gone from Redis; read from the PostgreSQL archive)")
        _print_task(info.task, info.timeline)
        _print_tree(info)


@app.command("list")
@_guard
def list_tasks(
    status_filter: Annotated[TaskStatus | None, typer.Option("--status", case_sensitive=False)] = (
        None
    ),
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List tasks, newest first."""
    found = tasks().list_tasks(status_filter, offset=offset, limit=limit)
    if as_json:
        typer.echo(json.dumps([_task_json(t) for t in found]))
        return
    typer.echo(f"{'TASK ID':<36}  {'STATUS':<10} {'TYPE':<13} {'ATT':>3}  {'CREATED':<12} NAME")
    for t in found:
        typer.echo(
            f"{t.task_id:<36}  {t.status.value:<10} {t.task_type.value:<13} {t.attempt:>3}  "
            f"{_when(t.created_at):<12} {t.task_name[:40]}"
        )


@app.command()
@_guard
def logs(
    task_id: Annotated[str | None, typer.Argument(help="The task whose output to print.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    all_roles: Annotated[
        bool,
        typer.Option("--all", help="Every role's log lines from the log store (TASKLAB_LOGS_URL)."),
    ] = False,
    task: Annotated[str | None, typer.Option(help="With --all: lines about this task.")] = None,
    role: Annotated[str | None, typer.Option(help="With --all: lines of this role.")] = None,
    since: Annotated[str | None, typer.Option(help="With --all: lines this recent (10m).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="With --all: at most this many.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="With --all: the JSON lines.")] = False,
) -> None:
    """Print a task's output lines (--follow: until it finishes); --all: every role's log.

    --all reads the log store (TASKLAB_LOGS_URL): the lines about --task ID, of --role, from
    the last --since 10m, oldest first."""
    if all_roles:
        from common.cli.logstore import readable, store_lines

        if follow:
            raise CliError("--follow prints a task's own output; it does not go with --all", 2)
        for line in store_lines(settings().logs_url, task or task_id, role, since, limit):
            typer.echo(json.dumps(line) if as_json else readable(line))
        return
    if task_id is None:
        raise CliError("give a TASK_ID (or --all --task ID for every role's lines about it)", 2)
    backend = tasks()
    lines = backend.follow_logs(task_id) if follow else backend.logs(task_id)
    for line in lines:
        typer.echo(line)


@app.command()
@_guard
def cancel(task_id: str) -> None:
    """Cancel a task; a running one is killed with its whole process group."""
    tasks().cancel(task_id)
    typer.echo("Cancel request accepted.")


@app.command()
@_guard
def retry(task_id: str) -> None:
    """Submit a new task with the spec of a FAILED or CANCELLED TASK_ID; prints the new id."""
    typer.echo(tasks().retry(task_id))


@app.command()
@_guard
def agents(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List agents that are heartbeating."""
    rows = tasks().agents()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    typer.echo(f"{'AGENT':<40} {'ALIVE':<6} {'PROCESSING':>10}  LAST HEARTBEAT")
    for row in rows:
        typer.echo(
            f"{row['agentId']:<40} {str(row['alive']).lower():<6} "
            f"{row['processing']:>10}  {_when(row['lastHeartbeat'])}"
        )


@app.command("dead-letters")
@_guard
def dead_letters(limit: Annotated[int, typer.Option(min=1)] = 20) -> None:
    """Show messages that could not be run, with the reason."""
    from common import keys
    from common.adapters.redis_client import redis_client

    for raw in redis_client(settings().redis_url).lrange(keys.DEAD_LETTER, 0, limit - 1):
        typer.echo(raw.decode())


@app.command()
def health(
    role: Annotated[str, typer.Option(help="'agent' also checks this agent's heartbeat")] = "",
) -> None:
    """Exit 0 if Redis answers (and, with --role agent, this agent is heartbeating).

    Used by container healthchecks: the agent id comes from the same settings the agent uses.
    """
    from common import keys
    from common.adapters.redis_client import redis_client

    s = settings()
    try:
        r = redis_client(s.redis_url)
        r.ping()
        if role == "agent" and not r.exists(keys.heartbeat(s.agent_id)):
            fail(f"agent {s.agent_id} is not heartbeating", 1)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        fail(f"cannot reach Redis at {s.redis_url} ({exc})", 1)
    typer.echo("ok")


def serve_operator_port(s, role: str, stage: int) -> None:
    """/metrics, /health and /ready on `metrics_address`, if set, before the role starts: a
    probe must see a process that is still connecting as alive but not ready."""
    from common.observability.metrics import ROLE_INFO

    ROLE_INFO.labels(role, str(stage)).set(1)  # also on the API's own /metrics
    if not s.metrics_address:
        return
    from common.observability.http import serve_operator_port as serve

    try:
        serve(s.metrics_address)
    except OSError as exc:
        fail(f"cannot serve metrics on {s.metrics_address} ({exc})", 2)


def process_name(s, role: str) -> str:
    """The `process` of this role's log lines: TASKLAB_PROCESS_NAME, else ROLE-HOST-PID."""
    import socket

    return s.process_name or f"{role}-{socket.gethostname()}-{os.getpid()}"


@app.command()
def run(
    role: Annotated[
        str, typer.Argument(help="agent | scheduler | manager | api | rpc | checker | archiver")
    ],
    stage: Annotated[int | None, typer.Option("--stage", "-s")] = None,
) -> None:
    """Run one role of a stage in the foreground until SIGTERM / Ctrl-C."""
    from common.observability import configure_logging
    from common.stages import load_stage

    s = settings()
    number = stage or s.stage
    try:
        spec = load_stage(number)
    except LookupError as exc:
        fail(str(exc), 2)
    if role not in spec.roles:
        fail(f"stage {number} has no role {role!r} (roles: {', '.join(sorted(spec.roles))})", 2)
    configure_logging(s.log_level, s.log_format, role=role, process=process_name(s, role))
    if s.logs_url:
        from common.observability.logshipping import ship_logs

        # Never fails the role: an unusable URL is logged, an unreachable store retried.
        ship_logs(s.logs_url, queue_lines=s.logs_queue_lines, batch_lines=s.logs_batch_lines)
    serve_operator_port(s, role, number)
    trace_role(s, role)
    try:
        spec.roles[role](s)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        fail(f"cannot reach Redis at {s.redis_url} ({exc})", 1)
    finally:
        from common.observability import tracing

        # The spans of the role's last tasks are still in the batch: sent before it exits.
        tracing.shutdown()


def trace_role(s, role: str) -> None:
    """Send this role's spans to `otlp_endpoint`, if set, as tasklab-<role>/<its id>."""
    if not s.otlp_endpoint:
        return
    import os
    import socket

    from common.observability import tracing

    ids = {
        "agent": s.agent_id,
        "scheduler": s.scheduler_id,
        "manager": s.manager_id,
        "checker": s.checker_id,
    }
    instance = ids.get(role) or f"{role}-{socket.gethostname()}-{os.getpid()}"
    try:
        tracing.configure(s.otlp_endpoint, role, instance)
    except ImportError as exc:
        fail(
            f"TASKLAB_OTLP_ENDPOINT is set but tracing is not installed ({exc}): "
            "pip install -e '.[stage5]'",
            2,
        )


# Stage 5: why a task is in its state; dead letters marked as looked at (common/cli/explain.py).
app.command("explain")(explain_command)
app.command("dead-letters-seen")(dead_letters_seen_command)


@dev_app.command("up")
def dev_up(
    stage: Annotated[int, typer.Option("--stage", "-s")] = 1,
    state_dir: Annotated[Path | None, typer.Option(help="Where PIDs and data live.")] = None,
    metrics: Annotated[
        bool, typer.Option(help="Also print a free /metrics address for each process to run.")
    ] = False,
) -> None:
    """Start the stage's backing services; print TASKLAB_* lines to `export`."""
    from common.devstack import DevStack, ServiceUnavailable

    stack = DevStack(state_dir)
    try:
        running = stack.up(stage)
        roles = stack.role_env(stage)
    except (ServiceUnavailable, ValueError) as exc:
        fail(str(exc), 2)
    for svc in running:
        typer.echo(f"# {svc.name}: pid {svc.pid}, log {svc.log}", err=True)
    if roles.get("TASKLAB_API_ADDRESS"):
        typer.echo(
            f"# api: `tasklab run api --stage {stage}` serves on {roles['TASKLAB_API_ADDRESS']}",
            err=True,
        )
    # One operator port per process (/metrics /health /ready): each line starts one role.
    for name, (role, address) in (stack.metrics_addresses(stage) if metrics else {}).items():
        typer.echo(
            f"# {name}: TASKLAB_METRICS_ADDRESS={address} tasklab run {role} --stage {stage}",
            err=True,
        )
    for line in DevStack.env_lines(running, roles):
        typer.echo(line)


@dev_app.command("restart")
def dev_restart(
    name: Annotated[str, typer.Argument(help="redis | zookeeper | kafka")],
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
    state_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Restart one service on the same port with its data (also after a kill -9 of it)."""
    from common.devstack import DevStack, ServiceUnavailable

    try:
        svc = DevStack(state_dir).restart(name, grace)
    except (ServiceUnavailable, ValueError) as exc:
        fail(str(exc), 2)
    typer.echo(f"restarted {svc.name}: pid {svc.pid}, {svc.host}:{svc.port}")


@dev_app.command("down")
def dev_down(state_dir: Annotated[Path | None, typer.Option()] = None) -> None:
    """Stop the services `tasklab dev up` started (by their PIDs)."""
    from common.devstack import DevStack

    for svc in DevStack(state_dir).down():
        typer.echo(f"stopped {svc.name} (pid {svc.pid})")


@dev_app.command("status")
def dev_status(state_dir: Annotated[Path | None, typer.Option()] = None) -> None:
    """Show the dev stack's services and whether they are alive."""
    from common.devstack import DevStack

    for svc in DevStack(state_dir).load():
        state = "running" if svc.alive() else "dead"
        typer.echo(f"{svc.name:<10} pid {svc.pid:<8} {state:<8} {svc.host}:{svc.port}")


if __name__ == "__main__":
    app()
