"""Traces: one OpenTelemetry trace per task attempt, from the submit to the manager's write.

Design (stage 5). A trace is the causal story of one attempt, told by the processes it crossed:

    api      POST /api/v1/tasks        (SERVER; continues a caller's `traceparent` header)
    rpc        TaskService/Submit      (SERVER; parent from the gRPC metadata `traceparent`)
    rpc          submit                (the span that submitted: its id is stored on the task)
    scheduler      schedule            (parent: the task's stored `traceparent`; epoch, agent)
    agent            run               (parent: the dispatch message's `traceparent` header)
    manager            apply RUNNING   (parent: the status event's `traceparent` header)
    manager            apply SUCCESS

Where it starts: at the submit, in `TaskClient.submit` (span "submit"), the one place every way
in goes through (REST through gRPC, gRPC alone, the CLI on Redis). Before it, the REST route and
the gRPC method add their own SERVER spans when a caller came through them, so a trace that
entered through the API has the API as its root; a CLI submit on stage 1 starts at "submit".

What is stored on the task (common/domain/task.py, hash fields in camelCase as all others):
`traceId` (32 hex, the trace of the task's current attempt), `traceparent` (the W3C header of
the span that started that attempt: "submit" for attempt 1) and `traceAttempt` (which attempt
that trace belongs to; absent = 1). They travel in the task hash the submit script writes from
`Task.to_hash()` (submit.lua, schedule.lua and the claim scripts copy the hash they are given,
so no Lua script names them) and are updated by the fenced DISPATCHED transition, as fields.

How each hop continues it:
- scheduler: when it places a task it reads the stored `traceparent` (the task it got from
  schedule() is the stored hash) and runs the placement in a span "schedule" under it, with the
  epoch, attempt and chosen agent as attributes.
- dispatch (stages 3+): the Kafka dispatch message carries `traceparent` (the "schedule" span) as
  a message header, next to `agentId` (common/messaging/dispatch.py); a republished dispatch
  carries the stored one.
- agent: span "run" (attempt, agentId, exit code) under the dispatch header's traceparent, or,
  where no Kafka carries one (stages 1 and 2: Redis lists), under the task's stored traceparent.
- status events: the agent's RUNNING and final events carry the "run" span as `traceparent`
  header; the manager applies each in a span "apply".

A retry or a redelivery is a new attempt, and gets a new trace: when the scheduler places an
attempt newer than `traceAttempt` (or a task nobody traced, such as one pushed by hand onto
queue:pending), "schedule" starts a new trace, linked to the previous attempt's with a span
link, and the DISPATCHED transition stores its traceId/traceparent/traceAttempt on the task. The
history entry that starts an attempt's trace names it (`traceId` on the submit's PENDING entry
and on that DISPATCHED one; prelude.lua's create_task and transition write it when given it).
A retry by hand (`tasklab retry`) makes a new task: its "submit" span links to the original's
trace. Stage 1 has no scheduler: there the agent's "run" of a later attempt starts
its own trace linked to the stored one, but the stored traceId stays that of attempt 1.

Configuration: `otlp_endpoint` (TASKLAB_OTLP_ENDPOINT, an OTLP/gRPC collector such as
`http://127.0.0.1:4317`). Unset: tracing is off, nothing of OpenTelemetry is imported and every
`span()` is one shared no-op context manager. The resource says who sent a span:
`service.name=tasklab-<role>` and `service.instance.id=<the process's id>`. Spans leave in
batches (OTEL_BSP_SCHEDULE_DELAY, 5 s by default) and are flushed when the role stops.

Logs: inside a span the log context gets `traceId` and `spanId` (logging.bind), so a task's log
lines can be joined to its trace.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from common.observability.logging import bind, get_logger

if TYPE_CHECKING:
    from common.domain.task import Task

log = get_logger("tasklab.tracing")

# The W3C Trace Context header, as gRPC metadata key, Kafka header and task field.
TRACEPARENT = "traceparent"
# version 00, 32 hex trace id, 16 hex parent span id, 2 hex flags; an all-zero id is invalid.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

# Off = None: every function below returns at its first line, and OpenTelemetry is never
# imported (it is the stage5 extra; stages 1-4 run without it).
_tracer: Any = None
_provider: Any = None
_lock = threading.Lock()
_NOOP = contextlib.nullcontext()


def enabled() -> bool:
    return _tracer is not None


def parse(traceparent: str | None) -> tuple[str, str] | None:
    """(traceId, spanId) of a W3C traceparent value, or None if it is not a valid one."""
    if not traceparent:
        return None
    m = _TRACEPARENT.fullmatch(traceparent.strip())
    if m is None or m.group(1) == "0" * 32 or m.group(2) == "0" * 16:
        return None
    return m.group(1), m.group(2)


def trace_id_of(traceparent: str | None) -> str | None:
    parsed = parse(traceparent)
    return parsed[0] if parsed else None


# -- set-up ----------------------------------------------------------------------------------
def configure(endpoint: str, role: str, instance: str) -> bool:
    """Export this process's spans to the OTLP/gRPC `endpoint`; False (tracing off) if empty."""
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    insecure = not endpoint.startswith("https://")
    install(
        [BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure))],
        role,
        instance,
    )
    # The batch still in memory leaves at exit, however the role's function returned.
    atexit.register(shutdown)
    log.info("tracing to %s as tasklab-%s (%s)", endpoint, role, instance)
    return True


def install(processors: Sequence[Any], role: str, instance: str = "") -> Any:
    """Turn tracing on with these span processors (tests: a SimpleSpanProcessor over an
    InMemorySpanExporter); returns the TracerProvider. Not the global provider of the
    OpenTelemetry API: tasklab asks for its tracer here, so a test can swap it per test."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    global _tracer, _provider
    resource = Resource.create(
        {"service.name": f"tasklab-{role}", "service.instance.id": instance or role}
    )
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    with _lock:
        _provider = provider
        _tracer = provider.get_tracer("tasklab")
    return provider


def shutdown() -> None:
    """Flush what is buffered and turn tracing off (a role's last step; idempotent)."""
    global _tracer, _provider
    with _lock:
        provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- spans -----------------------------------------------------------------------------------
def span(
    name: str,
    *,
    parent: str | None = None,
    root: bool = False,
    links: Sequence[str | None] = (),
    kind: str = "internal",
    attributes: Mapping[str, object] | None = None,
    deferrals: tuple[type[BaseException], ...] = (),
) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, made the current one; yields it (None when tracing is off).

    `parent`: a traceparent value from another process (a stored field, a header); without one
    the span is a child of the current span of this thread, or, with `root`, starts a trace.
    `links`: traceparents of related spans in other traces (the previous attempt's).
    An exception out of the block marks the span as an error, except one of `deferrals`: work
    put off on purpose (the manager's NotYet), noted as `tasklab.deferred` with its message."""
    if _tracer is None:
        return _NOOP
    return _span(name, parent, root, links, kind, attributes, deferrals)


@contextlib.contextmanager
def _span(
    name: str,
    parent: str | None,
    root: bool,
    links: Sequence[str | None],
    kind: str,
    attributes: Mapping[str, object] | None,
    deferrals: tuple[type[BaseException], ...],
) -> Iterator[Any]:
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    ctx = _context_of(parent)
    if ctx is None and (root or parent is not None):
        ctx = otel_context.Context()  # no usable parent: a new trace, not this thread's span
    span_links = [trace.Link(c) for c in (_span_context(tp) for tp in links) if c is not None]
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with _tracer.start_as_current_span(
        name,
        context=ctx,
        kind=getattr(trace.SpanKind, kind.upper()),
        attributes=attrs,
        links=span_links,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        sc = current.get_span_context()
        try:
            with bind(traceId=format(sc.trace_id, "032x"), spanId=format(sc.span_id, "016x")):
                yield current
        except deferrals as exc:
            current.set_attribute("tasklab.deferred", str(exc))
            raise
        except BaseException as exc:
            current.record_exception(exc)
            current.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def _span_context(traceparent: str | None) -> Any:
    parsed = parse(traceparent)
    if parsed is None:
        return None
    from opentelemetry import trace

    assert traceparent is not None
    flags = int(traceparent.strip()[-2:], 16)
    return trace.SpanContext(
        int(parsed[0], 16), int(parsed[1], 16), is_remote=True, trace_flags=trace.TraceFlags(flags)
    )


def _context_of(traceparent: str | None) -> Any:
    sc = _span_context(traceparent)
    if sc is None:
        return None
    from opentelemetry import trace

    return trace.set_span_in_context(trace.NonRecordingSpan(sc))


def current_traceparent() -> str | None:
    """The W3C traceparent of this thread's current span, or None (none, or tracing off)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def set_attributes(current: Any, **attributes: object) -> None:
    """Attributes known only at a span's end (an exit code); a no-op on a None span."""
    if current is not None:
        current.set_attributes({k: v for k, v in attributes.items() if v is not None})


# -- carriers --------------------------------------------------------------------------------
def headers(base: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """`base` plus the current span's traceparent, for a Kafka message's headers (None when
    that leaves nothing to send)."""
    out = dict(base or {})
    traceparent = current_traceparent()
    if traceparent:
        out[TRACEPARENT] = traceparent
    return out or None


def grpc_metadata(base: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """`base` plus the current span's traceparent, as gRPC call metadata."""
    out = list(base or [])
    traceparent = current_traceparent()
    if traceparent:
        out.append((TRACEPARENT, traceparent))
    return out


def from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The traceparent among gRPC invocation metadata (or HTTP header pairs), if any."""
    for key, value in metadata or ():
        if key.lower() == TRACEPARENT:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


# -- attempts ----------------------------------------------------------------------------------
# --8<-- [start:attempt-parent]
def attempt_parent(task: Task, attempt: int) -> tuple[str | None, list[str]]:
    """Where a span of `attempt` of `task` hangs: (parent traceparent or None for a new trace,
    links). The stored trace is this attempt's if it was made for it; an attempt newer than
    the stored trace starts a new trace linked to the previous one."""
    stored = task.traceparent if parse(task.traceparent) else None
    if stored is not None and (task.trace_attempt or 1) == attempt:
        return stored, []
    return None, [stored] if stored else []


# --8<-- [end:attempt-parent]


def task_fields(attempt: int) -> dict[str, str]:
    """The task fields naming the current span's trace as `attempt`'s ({} when off)."""
    traceparent = current_traceparent()
    if traceparent is None:
        return {}
    return {
        "traceId": traceparent[3:35],
        "traceparent": traceparent,
        "traceAttempt": str(attempt),
    }
