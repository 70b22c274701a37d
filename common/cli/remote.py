"""ApiTaskClient: the `tasklab` task verbs over the REST API (stage 4), with httpx.

Chosen by `common.cli.backend.choose_backend` when `TASKLAB_API_URL` is set; it sends
`X-API-Key` from `TASKLAB_API_KEY`. It answers in the same domain objects as `RedisBackend`
(a TaskView becomes a `Task`, RFC 3339 times become epoch seconds, a timeline entry takes the
store's shape), so every verb prints exactly what it prints over Redis.

Errors: an `application/problem+json` answer (RFC 9457) becomes one line, `title: detail` and
then each field error, exit code 2 for bad input (400, 413, 422) and 1 otherwise; an API that
cannot be reached is one line naming its URL. Nothing here retries a POST: a submit whose
answer was lost is the caller's to repeat, with a `--request-id` if it must not run twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from common.cli.backend import ChildRow, CliError, TaskBackend, TaskInfo
from common.client import wait_for_final
from common.domain.task import Task
from common.domain.transitions import TaskStatus

API = "/api/v1"
# The API's bounds (the REST contract): a synchronous submit waits at most this long, and a
# page holds at most this many tasks.
MAX_WAIT = 300
MAX_PAGE = 500
# A filtered listing may come back in short, even empty, pages that still have a cursor (each
# page scans a bounded stretch of the index); this many pages is where the CLI gives up.
MAX_PAGES = 1000
BAD_INPUT = frozenset({400, 413, 422})


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


def sse_events(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Server-Sent Events from a stream's lines (the WHATWG rules this API needs): `field:
    value` lines, one optional space after the colon, several `data` lines joined by newlines,
    a blank line ends an event, a line starting with `:` is a comment (a keep-alive)."""
    event, data, event_id = "", [], None
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data or event:
                yield SseEvent(event or "message", "\n".join(data), event_id)
            event, data, event_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


# --8<-- [start:to-domain]
def epoch(value: Any) -> float:
    """An RFC 3339 time (or epoch seconds) as epoch seconds; 0.0 for none, as the store has."""
    if value in (None, ""):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def task_of(view: dict[str, Any]) -> Task:
    """A TaskView (the API's camelCase JSON) as the domain `Task`."""
    data = dict(view)
    for key in ("createdAt", "updatedAt"):
        data[key] = epoch(data.get(key))
    if data.get("scheduledFor"):  # a schedule's run: the fire time, as the store keeps it
        data["scheduledFor"] = epoch(data["scheduledFor"])
    return Task.model_validate(data)


def child_row(ref: dict[str, Any]) -> ChildRow:
    """A ChildRef of a parent's view as the CLI's row."""
    return ChildRow(
        task_id=ref["taskId"],
        task_name=ref.get("taskName") or "",
        role=ref.get("role") or "",
        status=TaskStatus(ref["status"]),
        shard_index=ref.get("shardIndex"),
        node=ref.get("node"),
        agent_id=ref.get("agentId"),
    )


def history_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A REST timeline entry as the store appends it ({state, from?, at, actor, ...})."""
    out: dict[str, Any] = {"state": entry.get("state"), "at": epoch(entry.get("at"))}
    if entry.get("fromState"):
        out["from"] = entry["fromState"]
    out["actor"] = entry.get("actor", "")
    out["epoch"] = entry.get("epoch", 0)
    out["attempt"] = entry.get("attempt", 1)
    if entry.get("reason"):
        out["reason"] = entry["reason"]
    return out


# --8<-- [end:to-domain]


def problem_line(response: httpx.Response) -> str:
    """An error answer in one line: `title: detail; field: detail; ...` for a problem, else
    the status and the start of whatever the body was."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not (body.get("title") or body.get("detail")):
        text = " ".join(response.text.split())[:200]
        return f"HTTP {response.status_code} from {response.request.url}: {text or '(no body)'}"
    title = str(body.get("title") or f"HTTP {response.status_code}")
    detail = str(body.get("detail") or "")
    parts = [f"{title}: {detail}" if detail and detail != title else title]
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            where = error.get("field") or error.get("pointer") or ""
            parts.append(f"{where}: {error.get('detail', '')}" if where else str(error))
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        parts.append(f"retry after {retry_after}s")
    return "; ".join(parts)


class ApiTaskClient(TaskBackend):
    """The REST API as a TaskBackend. One `httpx.Client` (keep-alive) per CLI run."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        follow_timeout: float = 3600.0,
        stream_idle: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        # `logs --follow` ends when the task does, or after this long (as over Redis); a stream
        # silent for `stream_idle` is reopened where it stopped, so a dead connection that
        # never says so cannot hang the command.
        self.follow_timeout = follow_timeout
        self.stream_idle = stream_idle
        headers = {"Accept": "application/json", "User-Agent": "tasklab-cli"}
        if api_key:
            headers["X-API-Key"] = api_key
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- the wire ----------------------------------------------------------------------------
    def _unreachable(self, exc: httpx.TransportError) -> CliError:
        if isinstance(exc, httpx.ConnectError):
            return CliError(
                f"cannot reach the API at {self.base_url} ({exc}); is it running? "
                "(`tasklab run api --stage 4` serves it)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"the API at {self.base_url} did not answer in time ({exc})")
        return CliError(f"lost the connection to the API at {self.base_url} ({exc})")

    def _raise_for(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        message = problem_line(response)
        if response.status_code == 401 and not self.api_key:
            message += " (TASKLAB_API_KEY is not set)"
        raise CliError(message, 2 if response.status_code in BAD_INPUT else 1)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(f"the API at {self.base_url} answered {path} with no JSON") from exc

    # -- the verbs ---------------------------------------------------------------------------
    def submit(self, data: dict, wait: float | None = None) -> tuple[Task, bool]:
        body = {k: v for k, v in data.items() if not (k == "taskName" and v == "")}
        if wait is None or wait <= 0:
            response = self._call("POST", "/tasks", json=body)
            return task_of(response.json()), response.status_code == 201
        deadline = time.monotonic() + wait
        # The API holds the answer until the task is final (200) or its wait is over (202);
        # the read timeout must outlast that wait.
        server_wait = min(MAX_WAIT, math.ceil(wait))
        response = self._call(
            "POST",
            "/tasks",
            json=body,
            params={"wait": server_wait},
            timeout=httpx.Timeout(self.timeout, read=server_wait + self.timeout),
        )
        task = task_of(response.json())
        if not task.is_terminal and wait > MAX_WAIT:
            task = self.wait(task.task_id, deadline - time.monotonic())
        # With a wait the API answers 200 for a new task and a replay alike.
        return task, response.status_code == 201

    def submit_composite(self, document: dict, wait: float | None = None) -> tuple[Task, bool]:
        # The API answers at once with the parent; a wait is this client's polling, as a
        # composite runs for as long as its slowest children.
        response = self._call("POST", "/composites", json=document)
        parent = task_of(response.json())
        if wait is not None and wait > 0:
            parent = self.wait(parent.task_id, wait)
        return parent, response.status_code == 201

    def wait(self, task_id: str, timeout: float, poll: float = 0.2) -> Task:
        """Poll the task until it is final or `timeout` passes (beyond the API's own wait)."""
        return wait_for_final(self.get, task_id, timeout, poll, max_delay=2.0)

    def get(self, task_id: str) -> Task:
        return task_of(self._json("GET", f"/tasks/{_segment(task_id)}"))

    def info(self, task_id: str) -> TaskInfo:
        view = self._json("GET", f"/tasks/{_segment(task_id)}")
        timeline = [history_entry(e) for e in view.get("timeline") or []]
        return TaskInfo(
            task_of(view),
            timeline,
            list(view.get("logs") or []),
            children=[child_row(c) for c in view.get("children") or []],
            edges=[(e["from"], e["to"]) for e in view.get("edges") or []],
            progress=dict(view.get("progress") or {}),
            archived=bool(view.get("archived")),
        )

    def logs(self, task_id: str) -> list[str]:
        return list(self._json("GET", f"/tasks/{_segment(task_id)}/logs").get("lines") or [])

    def follow_logs(self, task_id: str) -> Iterator[str]:
        """The log's Server-Sent Events: `log` lines are yielded, `transition`s skipped, `end`
        ends, `error` (a problem) is raised. A stream that breaks or goes silent is reopened
        from the lines already yielded (`fromLog`), so each line is printed once; the whole
        follow is bounded in time."""
        path = f"{API}/tasks/{_segment(task_id)}/logs"
        seen = 0
        broken = 0
        opened = False
        deadline = time.monotonic() + self.follow_timeout
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"follow": "true"}
            if seen:
                params["fromLog"] = seen
            try:
                with self.http.stream(
                    "GET",
                    path,
                    params=params,
                    headers={"Accept": "text/event-stream"},
                    timeout=httpx.Timeout(self.timeout, read=self.stream_idle),
                ) as response:
                    if not response.is_success:
                        response.read()
                        self._raise_for(response)
                    opened = True
                    for event in sse_events(response.iter_lines()):
                        if event.event == "log":
                            seen += 1
                            broken = 0
                            yield event.data
                        elif event.event == "end":
                            return
                        elif event.event == "error":
                            # The API ended the stream with a problem (the task vanished, no
                            # provider answered): said once, not retried.
                            raise CliError(_event_problem(event.data))
            except httpx.ReadTimeout as exc:
                if not opened:
                    raise self._unreachable(exc) from exc
                continue  # silent for stream_idle: reopen from `seen`
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as exc:
                broken += 1
                # An API never reached is said at once; a stream that was open is reopened.
                if not opened or broken > 5:
                    raise self._unreachable(exc) from exc
                time.sleep(min(0.2 * 2**broken, 2.0))
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc

    def list_tasks(self, status: TaskStatus | None, offset: int, limit: int) -> list[Task]:
        # The API pages with an opaque cursor; the CLI's --offset is reached by reading past it.
        wanted = offset + limit
        found: list[Task] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": min(MAX_PAGE, wanted - len(found))}
            if status is not None:
                params["status"] = status.value
            if cursor:
                params["cursor"] = cursor
            page = self._json("GET", "/tasks", params=params)
            found.extend(task_of(item) for item in page.get("items") or [])
            cursor = page.get("nextCursor")
            if len(found) >= wanted or not cursor:
                return found[offset:wanted]
        raise CliError(f"the listing did not end within {MAX_PAGES} pages; narrow it with --status")

    def cancel(self, task_id: str) -> None:
        # A finished task is a 409 problem, which says why in the API's words.
        self._call("DELETE", f"/tasks/{_segment(task_id)}")

    def retry(self, task_id: str) -> str:
        return str(self._json("POST", f"/tasks/{_segment(task_id)}/retry")["newTaskId"])

    def agents(self) -> list[dict]:
        rows = []
        for item in self._json("GET", "/agents").get("items") or []:
            beat = item.get("lastHeartbeat")
            rows.append(
                {
                    "agentId": item.get("agentId"),
                    "alive": bool(item.get("alive")),
                    "lastHeartbeat": epoch(beat) if beat not in (None, "") else None,
                    # The tasks it holds: what the Redis path counts in its processing list.
                    "processing": item.get("load", 0),
                }
            )
        return rows

    def close(self) -> None:
        self.http.close()


def _event_problem(data: str) -> str:
    """The one-line message of an `error` event, whose data is a problem's JSON."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"the log stream ended with an error: {data}"
    title, detail = body.get("title"), body.get("detail")
    parts = [f"{title}: {detail}" if title and detail else str(title or detail or data)]
    parts += [f"{e.get('field')}: {e.get('detail')}" for e in body.get("errors") or []]
    return "; ".join(parts)


def _segment(task_id: str) -> str:
    """A task id as one path segment: an id with a `/` or `?` must not address another URL."""
    from urllib.parse import quote

    return quote(task_id, safe="")


__all__ = ["ApiTaskClient", "SseEvent", "epoch", "problem_line", "sse_events", "task_of"]
