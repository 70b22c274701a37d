"""The console's pages: each one renders what a REST route answers, from the same calls.

Pattern: Facade, again (stage 5): the console is a second face of the API, not a client of it.
A page calls the TaskService stub with the operator's credentials, through the same commands
(common.api.commands), the same request DTOs (so a submit form's errors are the REST API's,
word for word) and the same views (common.api.views) as the REST routes: no HTTP round trip to
itself, and no second copy of a rule.

Live parts: the task list and the agents page re-render their table every few seconds (htmx
polling of the same URL, filters included, so a refresh never loses them); the task page
follows the task over Server-Sent Events (common.api.sse, the REST API's own log follow) and
re-renders its timeline on each transition.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import grpc
from fastapi import APIRouter, Depends, FastAPI, Form, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from common.api import commands, dto, routes_dead_letters, routes_schedules, sse, views
from common.api.console import session
from common.api.console.login_limit import LoginThrottle
from common.api.errors import validation_errors
from common.api.links import AUTH_ENABLED, forwarded_credentials, principal_of, require
from common.api.metrics import route_templates
from common.api.problems import Problem
from common.api.routes_tasks import list_request, task_page
from common.api.rpc_problems import problem_from_rpc
from common.security import ANONYMOUS, Principal, Role

HERE = Path(__file__).parent
HTMX = "htmx-2.0.11.min.js"  # vendored from the htmx.org package, 0BSD (static/README.md)
REFRESH_SECONDS = 3
PAGE_SIZE = 25
SCHEDULES_PAGE = "/ui/schedules"  # the nav shows it only while a route serves it

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

Reader = Annotated[Principal, Depends(require(Role.TASK_READ))]
Writer = Annotated[Principal, Depends(require(Role.TASK_WRITE))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]

# The submit form's fields, by the REST body's names (so an error's `field` names its input).
SUBMIT_FIELDS = ("taskName", "taskType", "payload", "executionTimeout", "retryCount", "requestId")
INT_FIELDS = ("executionTimeout", "retryCount")


# -- rendering ----------------------------------------------------------------------------------


def _nav(request: Request) -> list[dict[str, str]]:
    """The navigation; Schedules only once a schedules page is served (no page, no entry)."""
    entries = [
        ("/ui/tasks", "Tasks"),
        ("/ui/submit", "Submit"),
        ("/ui/agents", "Agents"),
        ("/ui/dead-letters", "Dead letters"),
    ]
    if has_route(request.app, SCHEDULES_PAGE):
        entries.insert(3, (SCHEDULES_PAGE, "Schedules"))
    here = request.url.path
    return [
        {"href": href, "label": label, "current": "page" if here.startswith(href) else ""}
        for href, label in entries
    ]


def has_route(app: FastAPI, path: str) -> bool:
    """Whether the app serves `path` (an exact route template), included routers walked into."""
    cached = getattr(app.state, "console_routes", None)
    if cached is None:
        cached = {t.template for t in route_templates(app.router.routes)}
        app.state.console_routes = cached
    return path in cached


def principal(request: Request) -> Principal:
    return principal_of(request.scope) or ANONYMOUS


def render(
    request: Request,
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    who = principal(request)
    auth_on = getattr(request.app.state, AUTH_ENABLED, False)
    return templates.TemplateResponse(
        request,
        name,
        {
            "nav": _nav(request),
            "who": who,
            "auth_on": auth_on,
            "can_write": who.may(Role.TASK_WRITE),
            "can_admin": who.may(Role.ADMIN),
            "htmx": HTMX,
            "refresh": REFRESH_SECONDS,
            "form_key": uuid.uuid4().hex,
            **context,
        },
        status_code=status_code,
        headers=headers,
    )


FORM_KEY = re.compile(r"^[0-9a-f]{32}$")


def idempotency_key(form_key: str, *parts: str) -> str | None:
    """The idempotency key of one rendered form's post: a double click, or the browser
    posting the form again on Back, gets the first answer instead of a second task. Each
    rendering has its own key, so a deliberate second submit (a new form) is a new task."""
    if not FORM_KEY.match(form_key or ""):
        return None
    return ":".join(("console", form_key, *parts))


def _tasks(request: Request):
    return request.app.state.backends.tasks


def _metadata(request: Request):
    return forwarded_credentials(request.scope)


def _problem(exc: Exception) -> Problem:
    return exc if isinstance(exc, Problem) else problem_from_rpc(exc)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _age(value: str | None, now: float) -> str:
    if not value:
        return "expired"
    seconds = max(0.0, now - _parse_time(value).timestamp())
    return f"{seconds:.1f} s"


def timeline_rows(timeline: list[dto.TimelineEntry]) -> list[dict[str, Any]]:
    """Each transition with the time it took since the one before (the step's latency)."""
    rows, before = [], None
    for entry in timeline:
        at = _parse_time(entry.at)
        step = None if before is None else round((at - before).total_seconds() * 1000)
        rows.append({"entry": entry, "step_ms": step})
        before = at
    return rows


# -- pages ------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/tasks", status_code=303)


FILTERS = ("status", "type", "name", "agent", "schedule")


def _filters(request: Request) -> tuple[dict[str, str], dict[str, str]]:
    """The list's filters from the URL (what a reload keeps), and a message per bad one."""
    values = {k: request.query_params.get(k, "").strip() for k in FILTERS}
    problems = {}
    if values["status"] and values["status"] not in dto.TaskStatus.__members__:
        problems["status"] = f"no status {values['status']!r}"
    if values["type"] and values["type"] not in dto.TaskType.__members__:
        problems["type"] = f"no task type {values['type']!r}"
    for key in ("name", "agent", "schedule"):
        if len(values[key]) > 200:
            problems[key] = "at most 200 characters"
    return values, problems


@router.get("/tasks", response_class=HTMLResponse)
def tasks_page(request: Request, _: Reader, cursor: str | None = None) -> HTMLResponse:
    values, problems = _filters(request)
    page, error = None, None
    if not problems:
        query = list_request(
            status=dto.TaskStatus(values["status"]) if values["status"] else None,
            task_type=dto.TaskType(values["type"]) if values["type"] else None,
            agent=values["agent"] or None,
            name=values["name"] or None,
            limit=PAGE_SIZE,
            cursor=(cursor or "")[:1000] or None,
            schedule_id=values["schedule"] or None,
        )
        try:
            page = task_page(_tasks(request), query, _metadata(request))
        except (grpc.RpcError, Problem) as exc:
            error = _problem(exc).detail
    kept = {k: v for k, v in values.items() if v}
    here = urlencode({**kept, **({"cursor": cursor} if cursor else {})})
    context = {
        "title": "Tasks",
        "filters": values,
        "filter_problems": problems,
        "page": page,
        "error": error,
        "here": "/ui/tasks" + (f"?{here}" if here else ""),
        "first": "/ui/tasks" + (f"?{urlencode(kept)}" if kept else ""),
        "next": (
            "/ui/tasks?" + urlencode({**kept, "cursor": page.next_cursor})
            if page and page.next_cursor
            else None
        ),
        "counts": _counts(page),
        "statuses": list(dto.TaskStatus.__members__),
        "types": list(dto.TaskType.__members__),
        "cursor": cursor,
    }
    if request.headers.get("hx-request"):
        return render(request, "_task_refresh.html", **context)
    return render(request, "tasks.html", **context)


def _counts(page: dto.TaskPage | None) -> str:
    if page is None:
        return ""
    by: dict[str, int] = {}
    for task in page.items:
        by[task.status.value] = by.get(task.status.value, 0) + 1
    parts = [f"{n} {s.lower()}" for s, n in sorted(by.items())]
    return f"{len(page.items)} tasks on this page" + (": " + ", ".join(parts) if parts else "")


@router.post("/tasks/bulk", response_class=HTMLResponse)
def bulk(
    request: Request,
    _: Writer,
    action: Annotated[str, Form(max_length=10)],
    form_key: Annotated[str, Form(alias="formKey", max_length=40)] = "",
    task_ids: Annotated[list[str], Form(alias="taskId", max_length=500)] = [],  # noqa: B006
) -> HTMLResponse:
    """Cancel or retry each selected task; one answer per task, in the order selected."""
    results = []
    tasks, metadata = _tasks(request), _metadata(request)
    for task_id in task_ids:
        try:
            if action == "cancel":
                outcome = commands.CancelTask(task_id).execute(tasks, metadata)
                text = f"cancelled (was {outcome.body.cancelled_from or 'final'})"
                if outcome.body.already_cancelled:
                    text = "already cancelled"
                results.append({"task_id": task_id, "ok": True, "text": text, "link": None})
            elif action == "retry":
                key = idempotency_key(form_key, task_id)
                outcome = commands.RetryTask(task_id, key).execute(tasks, metadata)
                new = outcome.body.new_task_id
                results.append(
                    {"task_id": task_id, "ok": True, "text": f"retried as {new}", "link": new}
                )
            else:
                results.append({"task_id": task_id, "ok": False, "text": "unknown action"})
        except (grpc.RpcError, Problem) as exc:
            problem = _problem(exc)
            results.append({"task_id": task_id, "ok": False, "text": problem.detail})
    return render(request, "bulk.html", title="Results", action=action, results=results)


def _task_context(request: Request, task_id: str) -> dict[str, Any]:
    info = _tasks(request).get_task_info(
        task_id, timeout=commands.CALL_TIMEOUT, metadata=_metadata(request)
    )
    task = views.task_detail(info)
    final = task.status in dto.TERMINAL
    return {
        "title": f"Task {task.task_name}",
        "task": task,
        "rows": timeline_rows(task.timeline),
        "attempts": sorted({e.attempt for e in task.timeline if e.attempt}),
        "final": final,
        "may_cancel": not final,
        "may_retry": task.status in (dto.TaskStatus.FAILED, dto.TaskStatus.CANCELLED),
    }


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
def task_page_view(request: Request, task_id: str, _: Reader) -> HTMLResponse:
    return render(request, "task.html", **_task_context(request, task_id))


@router.get("/tasks/{task_id}/live", response_class=HTMLResponse)
def task_live(request: Request, task_id: str, _: Reader) -> HTMLResponse:
    """The parts of the task page that change: status, timeline, result, children, actions."""
    return render(request, "_task_live.html", **_task_context(request, task_id))


@router.get("/tasks/{task_id}/events")
def task_events(
    request: Request,
    task_id: str,
    _: Reader,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> StreamingResponse:
    """The REST API's log follow (common.api.sse) under the console's path, where its cookie
    is sent: an EventSource cannot set the X-API-Key header the REST route would need."""
    tasks, metadata = _tasks(request), _metadata(request)
    # 404 (or 503) before the stream starts, as the REST route does: an EventSource gives up
    # on an error status, where an error inside a 200 stream would have it reconnect forever.
    tasks.get_task_info(task_id, timeout=commands.CALL_TIMEOUT, metadata=metadata)
    start, transitions = _position(request, "fromLog"), _position(request, "fromTransition")
    if last_event_id is not None and last_event_id.strip().isdigit():
        start = max(start, int(last_event_id) + 1)
    stream = sse.follow(tasks, task_id, transitions, start, metadata)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _position(request: Request, name: str) -> int:
    """A stream position from the query: the page's own count of what it already shows."""
    given = request.query_params.get(name, "0")
    return int(given) if given.isdigit() and len(given) < 12 else 0


def _act(request: Request, task_id: str, command) -> Response:
    try:
        outcome = command.execute(_tasks(request), _metadata(request))
    except (grpc.RpcError, Problem) as exc:
        problem = _problem(exc)
        context = _task_context(request, task_id)
        return render(request, "task.html", problem.status, error=problem.detail, **context)
    target = getattr(outcome.body, "new_task_id", None) or task_id
    return RedirectResponse(f"/ui/tasks/{target}", status_code=303)


@router.post("/tasks/{task_id}/cancel")
def cancel(request: Request, task_id: str, _: Writer) -> Response:
    return _act(request, task_id, commands.CancelTask(task_id))


@router.post("/tasks/{task_id}/retry")
def retry(
    request: Request,
    task_id: str,
    _: Writer,
    form_key: Annotated[str, Form(alias="formKey", max_length=40)] = "",
) -> Response:
    key = idempotency_key(form_key, task_id)
    return _act(request, task_id, commands.RetryTask(task_id, key))


# -- submit -------------------------------------------------------------------------------------


def submit_body(form: dict[str, str]) -> dict[str, Any]:
    """The form as the REST body: empty optional fields left out (the REST defaults apply),
    whole numbers as numbers; anything else is passed as typed, so the DTO names it."""
    body: dict[str, Any] = {}
    for name in SUBMIT_FIELDS:
        value = form.get(name, "")
        if value == "" and name != "payload":
            continue
        if name in INT_FIELDS and value.strip().lstrip("-").isdigit():
            body[name] = int(value.strip())
        else:
            body[name] = value
    return body


def field_problems(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The REST problem's `errors` by field: what the form shows next to each input."""
    out: dict[str, list[str]] = {}
    for error in errors:
        field = error.get("field", "")
        out.setdefault(field if field in SUBMIT_FIELDS else "", []).append(error["detail"])
    return out


def _submit_form(request: Request, form: dict[str, str], errors=None, status: int = 200):
    return render(
        request,
        "submit.html",
        status,
        title="Submit a task",
        form=form,
        errors=errors or {},
        types=[t.value for t in dto.RunnableType],
    )


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request, _: Reader) -> HTMLResponse:
    return _submit_form(request, {"taskType": "SHELL", "executionTimeout": "60", "retryCount": "0"})


@router.post("/submit")
async def submit(request: Request, _: Writer) -> Response:
    raw = await request.form()
    form = {name: str(raw.get(name, "")) for name in SUBMIT_FIELDS}
    try:
        # The REST route's own DTO: the same rules, and the same messages for each field.
        body = dto.SubmitTask.model_validate(submit_body(form))
    except ValidationError as exc:
        located = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        errors = validation_errors(RequestValidationError(located))
        return _submit_form(request, form, field_problems(errors), 422)
    key = body.request_id or idempotency_key(str(raw.get("formKey", "")))
    command = commands.SubmitTask(body, key)
    try:
        # The stub blocks: run it off the event loop, as FastAPI runs a `def` route.
        outcome = await run_in_threadpool(command.execute, _tasks(request), _metadata(request))
    except (grpc.RpcError, Problem) as exc:
        # The provider's own checks (a blank payload, one over the size limit) come back as
        # the same problem the REST API answers, each violation with its field.
        problem = _problem(exc)
        errors = field_problems(problem.errors) if problem.errors else {"": [problem.detail]}
        return _submit_form(request, form, errors, problem.status)
    return RedirectResponse(f"/ui/tasks/{outcome.body.task_id}", status_code=303)


# -- agents, dead letters ----------------------------------------------------------------------


@router.get("/agents", response_class=HTMLResponse)
def agents_page(request: Request, _: Reader) -> HTMLResponse:
    error = None
    items: list[dto.Agent] = []
    try:
        answer = _tasks(request).list_agents(
            timeout=commands.CALL_TIMEOUT, metadata=_metadata(request)
        )
        items = [views.agent(a) for a in answer.agents]
    except (grpc.RpcError, Problem) as exc:
        error = _problem(exc).detail
    cluster = request.app.state.backends.cluster()
    now = time.time()
    rows = []
    for agent in items:
        node = cluster.agents.get(agent.agent_id)
        rows.append(
            {
                "agent": agent,
                "age": _age(agent.last_heartbeat, now),
                "draining": node.draining if node else None,
                "host": node.host if node else "",
                "types": ", ".join(node.task_types) if node else "",
            }
        )
    name = "_agents_body.html" if request.headers.get("hx-request") else "agents.html"
    return render(request, name, title="Agents", rows=rows, cluster=cluster, error=error)


DEAD_LETTERS_SHOWN = 100  # of each box


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters_page(request: Request, _: Reader, done: str = "", outcome: str = ""):
    """Both dead-letter boxes in one table, newest first: the Redis list (requeue) and, from
    stage 3, the bus's dead-letter topic (read only). Redis away is the page's 503, as the REST
    route's; the bus away (or none configured) is a note above the table: the list still shows."""
    backends = request.app.state.backends
    listing = routes_dead_letters.list_dead_letters(backends.dead_letters, DEAD_LETTERS_SHOWN)
    try:
        bus = routes_dead_letters.list_bus_dead_letters(
            backends.bus_dead_letters, DEAD_LETTERS_SHOWN
        )
        bus_note, bus_total = bus.note, bus.total
    except Problem as exc:
        bus, bus_note, bus_total = None, f"The event bus did not answer: {exc.detail}", None
    items = listing.items + (bus.items if bus else [])
    items.sort(key=lambda d: d.at or "", reverse=True)
    return render(
        request,
        "dead_letters.html",
        title="Dead letters",
        listing=listing,
        items=items,
        bus_topic=backends.bus_dead_letters.topic,
        bus_total=bus_total,
        bus_note=bus_note,
        done=done[:16],
        outcome=outcome[:20],
    )


@router.post("/dead-letters/{entry_id}/requeue")
def requeue(request: Request, entry_id: str, _: Admin) -> Response:
    result = routes_dead_letters.requeue(request.app.state.backends.dead_letters, entry_id)
    query = urlencode({"done": result.entry_id, "outcome": result.outcome.value})
    return RedirectResponse(f"/ui/dead-letters?{query}", status_code=303)


# -- schedules ----------------------------------------------------------------------------------

# The create form's fields, by the path a problem names (`task.payload`), so an error from the
# REST route's own check lands next to its input.
SCHEDULE_FIELDS = (
    "name",
    "schedule",
    "timeZone",
    "concurrencyPolicy",
    "startingDeadlineSeconds",
    "task.taskType",
    "task.payload",
    "task.executionTimeout",
)
SCHEDULE_INTS = ("startingDeadlineSeconds", "task.executionTimeout")
POLICIES = ("Allow", "Forbid", "Replace")
SCHEDULE_DEFAULTS = {
    "timeZone": "UTC",
    "concurrencyPolicy": "Forbid",
    "task.taskType": "SHELL",
    "task.executionTimeout": "60",
}


def schedule_body(form: dict[str, str]) -> dict[str, Any]:
    """The form as the REST body: `task.x` fields nested under `task`, empty optional fields
    left out (the REST defaults apply), whole numbers as numbers; anything else as typed, so
    the check names it."""
    body: dict[str, Any] = {"task": {}}
    for name in SCHEDULE_FIELDS:
        value = form.get(name, "")
        if value == "" and name not in ("name", "schedule", "task.payload"):
            continue
        if name in SCHEDULE_INTS and value.strip().lstrip("-").isdigit():
            typed: Any = int(value.strip())
        else:
            typed = value
        head, _, tail = name.partition(".")
        if tail:
            body[head][tail] = typed
        else:
            body[name] = typed
    return body


def _schedule_problems(errors: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for error in errors:
        field = error.get("field", "")
        out.setdefault(field if field in SCHEDULE_FIELDS else "", []).append(error["detail"])
    return out


def _schedules_page(
    request: Request,
    form: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    status: int = 200,
    done: str = "",
) -> HTMLResponse:
    items: list[routes_schedules.ScheduleView] = []
    error = None
    try:
        answer = _tasks(request).list_schedules(
            timeout=commands.CALL_TIMEOUT, metadata=_metadata(request)
        )
        items = [routes_schedules.schedule_view(s) for s in answer.schedules]
    except (grpc.RpcError, Problem) as exc:
        error = _problem(exc).detail
    return render(
        request,
        "schedules.html",
        status,
        title="Schedules",
        items=items,
        error=error,
        form=form or dict(SCHEDULE_DEFAULTS),
        errors=errors or {},
        policies=POLICIES,
        types=[t.value for t in dto.RunnableType],
        done=done,
    )


@router.get(SCHEDULES_PAGE.removeprefix("/ui"), response_class=HTMLResponse)
def schedules_page(request: Request, _: Reader, done: str = "") -> HTMLResponse:
    return _schedules_page(request, done=done[:200])


@router.post(SCHEDULES_PAGE.removeprefix("/ui"))
async def create_schedule(request: Request, _: Writer) -> Response:
    raw = await request.form()
    form = {name: str(raw.get(name, "")) for name in SCHEDULE_FIELDS}
    try:
        # The REST route's own check: the same rules, and the same message for each field.
        spec = routes_schedules.checked_spec(schedule_body(form))
        await run_in_threadpool(
            _tasks(request).create_schedule,
            spec,
            timeout=commands.CALL_TIMEOUT,
            metadata=_metadata(request),
        )
    except (grpc.RpcError, Problem) as exc:
        # A taken name (409) or the provider's own checks come back as the REST problem.
        problem = _problem(exc)
        errors = _schedule_problems(problem.errors) if problem.errors else {}
        if problem.status == 409:
            errors = {"name": [problem.detail]}
        return _schedules_page(request, form, errors or {"": [problem.detail]}, problem.status)
    query = urlencode({"done": f"created {form['name']}"})
    return RedirectResponse(f"{SCHEDULES_PAGE}?{query}", status_code=303)


@router.get("/schedules/{name}", response_class=HTMLResponse)
def schedule_page(request: Request, name: str, _: Reader) -> HTMLResponse:
    answer = _tasks(request).get_schedule(
        name, 10, timeout=commands.CALL_TIMEOUT, metadata=_metadata(request)
    )
    view = routes_schedules.schedule_view(answer)
    return render(request, "schedule.html", title=f"Schedule {view.name}", s=view)


def _schedule_action(request: Request, name: str, action: str) -> Response:
    tasks, metadata = _tasks(request), _metadata(request)
    if action == "delete":
        tasks.delete_schedule(name, timeout=commands.CALL_TIMEOUT, metadata=metadata)
    else:
        suspend = action == "pause"
        tasks.set_schedule_suspended(
            name, suspend, timeout=commands.CALL_TIMEOUT, metadata=metadata
        )
    done = {"pause": "paused", "resume": "resumed", "delete": "deleted"}[action]
    query = urlencode({"done": f"{done} {name}"})
    return RedirectResponse(f"{SCHEDULES_PAGE}?{query}", status_code=303)


@router.post("/schedules/{name}/pause")
def pause_schedule(request: Request, name: str, _: Writer) -> Response:
    return _schedule_action(request, name, "pause")


@router.post("/schedules/{name}/resume")
def resume_schedule(request: Request, name: str, _: Writer) -> Response:
    return _schedule_action(request, name, "resume")


@router.post("/schedules/{name}/delete")
def delete_schedule(request: Request, name: str, _: Writer) -> Response:
    return _schedule_action(request, name, "delete")


# -- login ---------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "") -> HTMLResponse:  # noqa: A002
    return render(request, "login.html", title="Log in", next=session.safe_next(next), error="")


def _login_throttle(request: Request) -> LoginThrottle:
    """The login's limit, made on first use from the API's settings and Redis pool."""
    throttle = getattr(request.app.state, "console_login_throttle", None)
    if throttle is None:
        backends = request.app.state.backends
        throttle = LoginThrottle.from_settings(backends.settings, backends.redis)
        request.app.state.console_login_throttle = throttle
    return throttle


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form(alias="apiKey", max_length=4096)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",  # noqa: A002
) -> Response:
    authenticator = request.app.state.tasklab_authenticator
    target = session.safe_next(next)
    if not authenticator.enabled:
        return RedirectResponse(target, status_code=303)
    throttle = _login_throttle(request)
    address = request.client.host if request.client else ""
    # Looked at before the key is: while the bucket is empty no key is checked at all, so a
    # guesser learns nothing from the answer (see login_limit.py).
    wait = await throttle.blocked(address)
    if wait is not None:
        return render(
            request,
            "login.html",
            429,
            title="Log in",
            next=target,
            error=throttle.policy.message(wait),
            headers={"Retry-After": str(wait)},
        )
    try:
        authenticator.authenticate({"X-API-Key": key})
    except Exception as exc:  # noqa: BLE001 - Unauthenticated: say why, next to the field
        await throttle.failed(address)
        reason = getattr(exc, "reason", "") or "unknown API key"
        return render(request, "login.html", 401, title="Log in", next=target, error=reason)
    answer = RedirectResponse(target, status_code=303)
    session.set_key_cookie(answer, key, secure=request.url.scheme == "https")
    return answer


@router.post("/logout")
def logout(request: Request) -> Response:
    answer = RedirectResponse(session.LOGIN, status_code=303)
    session.forget_key_cookie(answer, secure=request.url.scheme == "https")
    return answer


# -- installing ---------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The console's routes, its static files, and its own rendering of a problem: an HTML
    page for a person under /ui/, the usual problem+json everywhere else."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="console-static")
    for kind in (Problem, grpc.RpcError):
        handler = app.exception_handlers[kind]
        app.add_exception_handler(kind, _console_first(handler))


def _console_first(handler):
    async def handle(request: Request, exc: Exception) -> Response:
        if not session.is_console(request.url.path):
            return await handler(request, exc)
        problem = _problem(exc)
        return render(
            request,
            "problem.html",
            problem.status,
            title=problem.title,
            problem=problem,
        )

    return handle
