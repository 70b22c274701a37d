"""`tasklab schedule create|list|show|pause|resume|delete|preview`: cron schedules.

Like the task verbs, these talk to Redis directly, or to the REST API when TASKLAB_API_URL is
set; both answer in the REST API's JSON shape (common.scheduling.schedules.schedule_json), so
each verb prints the same either way. `preview` needs neither: it is the domain's fire-time
iterator, run here, creating nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Annotated, Any

import typer

from common.cli.backend import API_KEY_ENV, API_URL_ENV, CliError
from common.cli.errors import fail
from common.cli.shared import read_document, settings
from common.domain.schedule import CronError, iso, next_fires, parse_cron, zone_of
from common.domain.task import TaskValidationError

schedule_app = typer.Typer(
    help="Cron schedules (Kubernetes CronJob semantics): each fire submits a task.",
    no_args_is_help=True,
)


class _Local:
    """Redis directly (stages 1 to 3, or no API): the store and the use cases."""

    def __init__(self) -> None:
        from common.adapters.redis_client import redis_client
        from common.adapters.redis_schedule import RedisScheduleStore

        s = settings()
        self.max_payload_bytes = s.max_payload_bytes
        self.store = RedisScheduleStore(redis_client(s.redis_url))

    def _view(self, state, n: int) -> dict:
        from common.scheduling.schedules import preview, schedule_json

        return schedule_json(
            state, preview(state.spec.schedule, state.spec.time_zone, time.time(), n)
        )

    def _found(self, name: str, state) -> Any:
        if state is None:
            raise CliError(f"No such schedule: no schedule {name}", 1)
        return state

    def create(self, doc: dict) -> dict:
        from common.domain.schedule import validate_schedule
        from common.ports.schedule import ScheduleExists
        from common.scheduling.schedules import create_schedule

        spec = validate_schedule(doc, self.max_payload_bytes)
        try:
            state = create_schedule(self.store, spec, time.time())
        except ScheduleExists as exc:
            raise CliError(f"A schedule of this name exists: {exc}", 1) from None
        return self._view(state, 5)

    def list(self) -> list[dict]:
        return [self._view(s, 1) for s in self.store.list()]

    def show(self, name: str, n: int) -> dict:
        return self._view(self._found(name, self.store.get(name)), n)

    def suspend(self, name: str, suspend: bool) -> dict:
        return self._view(self._found(name, self.store.set_suspend(name, suspend, time.time())), 5)

    def delete(self, name: str) -> None:
        if not self.store.delete(name):
            raise CliError(f"No such schedule: no schedule {name}", 1)


class _Remote:
    """The REST API (stage 4 on), as the task verbs use it."""

    def __init__(self, url: str, api_key: str | None) -> None:
        from common.cli.remote import ApiTaskClient

        self.api = ApiTaskClient(url, api_key=api_key)

    def create(self, doc: dict) -> dict:
        return self.api._json("POST", "/schedules", json=doc)

    def list(self) -> list[dict]:
        return self.api._json("GET", "/schedules")["items"]

    def show(self, name: str, n: int) -> dict:
        return self.api._json("GET", f"/schedules/{name}", params={"preview": n})

    def suspend(self, name: str, suspend: bool) -> dict:
        return self.api._json("POST", f"/schedules/{name}/{'pause' if suspend else 'resume'}")

    def delete(self, name: str) -> None:
        self.api._call("DELETE", f"/schedules/{name}")


def _backend() -> _Local | _Remote:
    url = os.environ.get(API_URL_ENV, "").strip()
    if not url:
        return _Local()
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{API_URL_ENV}={url!r}: expected http://host:port", 2)
    return _Remote(url, os.environ.get(API_KEY_ENV) or None)


def _run(action):
    """Run one verb: the errors a user can cause become one line and an exit code."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        return action()
    except CliError as exc:
        fail(str(exc), exc.code)
    except TaskValidationError as exc:
        fail("invalid schedule: " + "; ".join(exc.problems), 2)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        fail(f"cannot reach Redis ({exc}); is it running? (`tasklab dev up` starts one)", 1)


def _local_time(stamp: str | None, zone: str) -> str:
    if not stamp:
        return "-"
    from datetime import datetime

    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone(zone_of(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _print(view: dict) -> None:
    zone = view["timeZone"]
    status = view["status"]
    task = view["task"]
    deadline = view.get("startingDeadlineSeconds")
    typer.echo(f"name:        {view['name']}")
    typer.echo(f"schedule:    {view['schedule']}  ({zone})")
    typer.echo(f"policy:      {view['concurrencyPolicy']}")
    typer.echo(f"deadline:    {'-' if deadline is None else f'{deadline}s'}")
    typer.echo(
        f"history:     {view['successfulJobsHistoryLimit']} succeeded, "
        f"{view['failedJobsHistoryLimit']} failed"
    )
    typer.echo(f"suspended:   {'yes' if view['suspend'] else 'no'}")
    typer.echo(f"task:        {task['taskType']} {task['payload'].splitlines()[0][:60]}")
    typer.echo(f"last fired:  {_local_time(status.get('lastScheduleTime'), zone)}")
    if status.get("lastMissed", 0) > 1:
        typer.echo(f"missed:      {status['lastMissed'] - 1} start time(s) before the last")
    if status.get("lastSkip"):
        typer.echo(f"last skip:   {status['lastSkip']}")
    for label in ("active", "succeeded", "failed"):
        runs = status.get(label) or []
        if runs:
            typer.echo(f"{label + ':':<12} " + ", ".join(r["taskId"] for r in runs))
    typer.echo("next fires:")
    for stamp in view["nextFireTimes"]:
        typer.echo(f"  {_local_time(stamp, zone)}  ({stamp})")


def _document(file: str | None, fields: dict[str, Any]) -> dict:
    if file is not None:
        return read_document(file, "schedule")
    if any(fields[k] is None for k in ("name", "schedule", "payload")):
        raise CliError("give NAME, --cron and --payload (or --file with a document)", 2)
    doc: dict[str, Any] = {
        "name": fields["name"],
        "schedule": fields["schedule"],
        "timeZone": fields["zone"],
        "concurrencyPolicy": fields["policy"],
        "suspend": fields["suspend"],
        "task": {"taskType": fields["task_type"], "payload": fields["payload"]},
    }
    if fields["deadline"] is not None:
        doc["startingDeadlineSeconds"] = fields["deadline"]
    if fields["timeout"] is not None:
        doc["task"]["executionTimeout"] = fields["timeout"]
    if fields["retries"] is not None:
        doc["task"]["retryCount"] = fields["retries"]
    return doc


@schedule_app.command("create")
def create(
    name: Annotated[str | None, typer.Argument(help="The schedule's name (its id).")] = None,
    schedule: Annotated[
        str | None, typer.Option("--cron", help="Five-field cron, or @hourly, @daily, ...")
    ] = None,
    payload: Annotated[str | None, typer.Option("--payload", help="The task's payload.")] = None,
    task_type: Annotated[str, typer.Option("--type", help="The task's type.")] = "SHELL",
    zone: Annotated[str, typer.Option("--tz", help="IANA time zone.")] = "UTC",
    policy: Annotated[str, typer.Option("--policy", help="Allow, Forbid or Replace.")] = "Allow",
    deadline: Annotated[
        int | None, typer.Option("--deadline", help="startingDeadlineSeconds.")
    ] = None,
    timeout: Annotated[int | None, typer.Option("--timeout", help="executionTimeout.")] = None,
    retries: Annotated[int | None, typer.Option("--retries", help="retryCount.")] = None,
    suspend: Annotated[bool, typer.Option("--suspend", help="Create it paused.")] = False,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="A JSON schedule document instead ('-' = stdin)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a schedule from options or a document (POST /api/v1/schedules's body)."""
    fields = dict(
        name=name,
        schedule=schedule,
        payload=payload,
        task_type=task_type,
        zone=zone,
        policy=policy,
        deadline=deadline,
        timeout=timeout,
        retries=retries,
        suspend=suspend,
    )

    def submit() -> dict:
        # The document first: a bad one is said as such, whatever the backend.
        doc = _document(file, fields)
        return _backend().create(doc)

    view = _run(submit)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    typer.echo(f"created schedule {view['name']}")
    _print(view)


@schedule_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every schedule, by name, with its next fire time."""
    views = _run(lambda: _backend().list())
    if as_json:
        typer.echo(json.dumps(views, indent=2))
        return
    if not views:
        typer.echo("no schedules")
        return
    typer.echo(
        f"{'NAME':<24} {'SCHEDULE':<18} {'ZONE':<16} {'POLICY':<8} {'STATE':<7} "
        f"{'ACTIVE':>6}  {'LAST FIRED':<21} NEXT FIRE"
    )
    for v in views:
        zone = v["timeZone"]
        nxt = v["nextFireTimes"][0] if v["nextFireTimes"] else None
        typer.echo(
            f"{v['name'][:24]:<24} {v['schedule'][:18]:<18} {zone[:16]:<16} "
            f"{v['concurrencyPolicy']:<8} {'paused' if v['suspend'] else 'active':<7} "
            f"{len(v['status']['active']):>6}  "
            f"{_local_time(v['status'].get('lastScheduleTime'), zone):<21} "
            f"{_local_time(nxt, zone)}"
        )


@schedule_app.command("show")
def show(
    name: str,
    count: Annotated[int, typer.Option("--next", "-n", min=1, max=100)] = 5,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A schedule: its document, its last fire, its runs, and its next fire times."""
    view = _run(lambda: _backend().show(name, count))
    if as_json:
        typer.echo(json.dumps(view, indent=2))
    else:
        _print(view)


@schedule_app.command("pause")
def pause(name: str) -> None:
    """Suspend a schedule: nothing fires until it is resumed."""
    _run(lambda: _backend().suspend(name, True))
    typer.echo(f"paused schedule {name}")


@schedule_app.command("resume")
def resume(name: str) -> None:
    """Resume a schedule; the latest time missed while paused runs if within its deadline."""
    view = _run(lambda: _backend().suspend(name, False))
    nxt = view["nextFireTimes"][0] if view["nextFireTimes"] else None
    typer.echo(f"resumed schedule {name}; next fire {_local_time(nxt, view['timeZone'])}")


@schedule_app.command("delete")
def delete(name: str) -> None:
    """Delete a schedule; the runs it made stay tasks."""
    _run(lambda: _backend().delete(name))
    typer.echo(f"deleted schedule {name}")


@schedule_app.command("preview")
def preview(
    cron: Annotated[str, typer.Argument(help="Five-field cron, or @hourly, @daily, ...")],
    zone: Annotated[str, typer.Option("--tz", help="IANA time zone.")] = "UTC",
    count: Annotated[int, typer.Option("--next", "-n", min=1, max=100)] = 5,
    after: Annotated[
        str | None,
        typer.Option("--after", help="Count from this time (ISO 8601, in --tz) instead of now."),
    ] = None,
) -> None:
    """The next fire times of an expression in a zone, creating nothing (DST included)."""
    problems = []
    try:
        expr = parse_cron(cron)
    except CronError as exc:
        problems.append(f"schedule: {exc}")
    try:
        tz = zone_of(zone)
    except CronError as exc:
        problems.append(f"timeZone: {exc}")
    start = time.time()
    if after is not None and not problems:
        from datetime import datetime

        try:
            moment = datetime.fromisoformat(after)
        except ValueError:
            problems.append(f"--after: {after!r} is not an ISO 8601 time")
        else:
            start = (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()
    if problems:
        fail("; ".join(problems), 2)
    fires = next_fires(expr, tz, start, count)
    if not fires:
        typer.echo("never fires")
    for ts in fires:
        typer.echo(f"{_local_time(iso(ts), zone)}  ({iso(ts)})")
