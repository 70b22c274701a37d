"""`GET /api/v1/tasks/{taskId}/logs?follow=true`: a task's Watch as Server-Sent Events.

    event: transition          data: a timeline entry (JSON, with its `sequence`)
    id: 3  event: log          data: a log line (the id is its sequence number)
    event: end                 data: the task in its final state (JSON)

A client that lost the stream reconnects with `Last-Event-ID: 3` (what a browser's EventSource
sends by itself) or `?fromLog=4`, and gets the lines after it. Transitions carry no id, so a
resumed stream replays them (a handful per task, each with its `sequence` to skip the seen
ones); `?fromTransition=N` skips them instead.

The Watch is consumed in segments of SEGMENT seconds, each resumed from the positions the last
one reached (the Watch is made to be resumed): between two segments the stream sends a comment
line, which keeps proxies from closing an idle stream and lets the server notice a client that
went away, so an abandoned follow holds a provider's thread for one segment at most.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import grpc

from common.api import views
from common.api.rpc_problems import problem_from_rpc

SEGMENT = 10.0  # seconds per Watch call
FOLLOW_MAX = 3600.0  # a follow ends after this long, as a Watch without a deadline does


def event(kind: str, data: str, event_id: int | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {kind}")
    # A line break inside the data would end the field: each line is a `data:` line of its own.
    lines.extend(f"data: {part}" for part in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def follow(
    tasks,
    task_id: str,
    from_transition: int,
    from_log: int,
    metadata,
    segment: float = SEGMENT,
    follow_max: float = FOLLOW_MAX,
) -> Iterator[str]:
    deadline = time.monotonic() + follow_max
    next_transition, next_log = from_transition, from_log
    yield ": following task " + task_id + "\n\n"
    while time.monotonic() < deadline:
        try:
            for item in tasks.watch(
                task_id, next_transition, next_log, timeout=segment, metadata=metadata
            ):
                kind = item.WhichOneof("event")
                if kind == "transition":
                    entry = views.timeline_entry(item.transition).model_dump(by_alias=True)
                    entry["sequence"] = item.sequence
                    yield event("transition", json.dumps(entry))
                    next_transition = item.sequence + 1
                elif kind == "log":
                    yield event("log", item.log.line, event_id=item.sequence)
                    next_log = item.sequence + 1
                elif kind == "final":
                    view = views.task_view(item.final).model_dump(by_alias=True, mode="json")
                    yield event("end", json.dumps(view))
                    return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                problem = problem_from_rpc(exc)
                yield event("error", json.dumps(problem.body()))
                return
        yield ": still running\n\n"
    yield event("error", json.dumps({"detail": f"follow ended after {follow_max:.0f}s"}))
