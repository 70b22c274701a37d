"""Cron schedules with Kubernetes CronJob semantics: the document, cron, and what fires when.

Pattern: level-triggered reconcile (introduced with schedules, stage 2 on). The firer in the
scheduler leader's term (common/scheduling/schedules.py) does not count ticks or keep timers:
each time it looks at a schedule it asks `decide_fires` "given the last fire time recorded,
the clock, and the runs still active, what should have fired by now?", and carries the answer
out with one fenced, idempotent write keyed by the fire time. A leader that died, froze or
missed a minute changes nothing: the next look computes the same answer from the same state.

Everything here is pure (no clock, no I/O): the parser and iterator of five-field cron in an
IANA time zone, the schedule document and its validation, and `decide_fires`, which follows
the Kubernetes CronJob controller (pkg/controller/cronjob, v2):

- the earliest time considered is the last schedule time (or the schedule's creation), moved
  up to `now - startingDeadlineSeconds` when a deadline is set;
- of the fire times missed since then only the most recent runs; the others are counted, and
  more than 100 missed is a warning ("too many missed start times");
- `suspend` fires nothing and records nothing, so on resume the same rule applies: the most
  recent fire time missed while suspended runs if it is within the deadline (or always, with
  no deadline, as Kubernetes does);
- `Forbid` skips while a run is active (and looks again, since the skipped time may still
  run late within its deadline); `Replace` cancels the active runs, then fires; `Allow` fires.

Cron is written here rather than taken from croniter: the rules a learner must see (the
day-of-month / day-of-week OR rule, names, macros, what a DST gap or overlap does) are a
hundred lines, and their tests are the specification.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator

from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    TaskSpec,
    TaskValidationError,
    _problems,
    _Wire,
    shown,
    validate_spec,
)

# -- cron ---------------------------------------------------------------------------------------

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())
}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# (name, low, high, names) per field, in the order they are written.
_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),  # 7 is Sunday too, as in Vixie cron
)
# How far ahead a search looks before saying an expression never fires: 29 February comes at
# least once in any eight years (2100 is not a leap year).
_HORIZON = timedelta(days=366 * 8 + 2)


class CronError(ValueError):
    """An expression that is not five-field cron; the message says which field and why."""


@dataclass(frozen=True)
class Cron:
    """A parsed five-field expression: the sets of values each field allows."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    # A day field written as `*` (or `?`) matches every day; robfig/cron (which Kubernetes
    # uses) and Vixie cron then AND the two day fields. If both are restricted, a day matches
    # when EITHER does: `0 0 13 * 5` is every 13th and every Friday, not Friday the 13th.
    days_star: bool
    weekdays_star: bool

    def day_matches(self, year: int, month: int, day: int) -> bool:
        weekday = datetime(year, month, day).isoweekday() % 7
        in_days, in_weekdays = day in self.days, weekday in self.weekdays
        if self.days_star or self.weekdays_star:
            return in_days and in_weekdays
        return in_days or in_weekdays


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"{name}: {shown(text)} is not a number" + (" or a name" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> tuple[set, bool]:
    values: set[int] = set()
    star = False
    for item in text.split(","):
        if not item:
            raise CronError(f"{name}: empty item in {shown(text)}")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {shown(step_text)} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                raise CronError(f"{name}: '?' is only for the day fields")
            start, end = low, high
            # As robfig/cron: `*/2` restricts the field, only a bare `*` is a star.
            star = star or step == 1
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, name, low, high, names), _value(b, name, low, high, names)
            if start > end:
                raise CronError(f"{name}: range {shown(base)} runs backwards")
        else:
            start = _value(base, name, low, high, names)
            # `5/15` is `5-max/15`, as robfig/cron and Vixie cron read it.
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return values, star


def parse_cron(expression: str) -> Cron:
    """Parse five-field cron (minute hour day-of-month month day-of-week) or a macro."""
    if not isinstance(expression, str):
        raise CronError(f"must be text, got {type(expression).__name__}")
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in MACROS:
            raise CronError(
                f"unknown macro {shown(text)} (one of {', '.join(sorted(MACROS))}; "
                "@every is not cron and not offered)"
            )
        text = MACROS[text.lower()]
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"{shown(expression)} has {len(parts)} field(s); cron has five: "
            "minute hour day-of-month month day-of-week"
        )
    parsed = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
    (minutes, _), (hours, _), (days, days_star), (months, _), (weekdays, wd_star) = parsed
    if 7 in weekdays:
        weekdays = (weekdays - {7}) | {0}
    return Cron(
        expression=expression.strip(),
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(weekdays),
        days_star=days_star,
        weekdays_star=wd_star,
    )


def _instant(wall: datetime, zone: ZoneInfo) -> float | None:
    """The Unix time of a local wall-clock time, or None if the clock never shows it.

    A time in a spring-forward gap (02:30 when clocks jump 02:00 -> 03:00) does not exist:
    it comes back from UTC as another wall time, and that fire is skipped. A time shown twice
    (01:30 when clocks fall back) is taken at its first occurrence only (fold=0), so it fires
    once.
    """
    ts = wall.replace(tzinfo=zone, fold=0).timestamp()
    if datetime.fromtimestamp(ts, zone).replace(tzinfo=None) != wall:
        return None
    return ts


def iter_fires(cron: Cron, zone: ZoneInfo, after: float) -> Iterator[float]:
    """The fire times strictly after `after` (Unix seconds), in order, as Unix seconds.

    Walks local wall-clock time field by field (a month not allowed jumps to the next month,
    a day to the next day, an hour to the next hour). Wall times map to instants in increasing
    order (fold=0 throughout), so the walk starts three hours early to be sure to meet the
    first instant after `after` even inside a fall-back overlap. Stops (ends) when nothing
    matches within eight years: `0 0 30 2 *` never fires.
    """
    minutes = sorted(cron.minutes)
    start = datetime.fromtimestamp(after, zone).replace(tzinfo=None, second=0, microsecond=0)
    t = start - timedelta(hours=3)
    horizon = t + _HORIZON
    while t <= horizon:
        if t.month not in cron.months:
            y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
            t = datetime(y, m, 1)
            continue
        if not cron.day_matches(t.year, t.month, t.day):
            t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            continue
        if t.hour not in cron.hours:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        later = [m for m in minutes if m >= t.minute]
        if not later:
            t = t.replace(minute=0) + timedelta(hours=1)
            continue
        t = t.replace(minute=later[0])
        ts = _instant(t, zone)
        if ts is not None and ts > after:
            yield ts
            horizon = t + _HORIZON
        t += timedelta(minutes=1)


def next_fires(cron: Cron, zone: ZoneInfo, after: float, n: int) -> list[float]:
    """The next `n` fire times after `after` (fewer if the expression stops firing)."""
    out: list[float] = []
    for ts in iter_fires(cron, zone, after):
        out.append(ts)
        if len(out) >= n:
            break
    return out


def zone_of(name: str) -> ZoneInfo:
    """An IANA time zone by name; CronError naming it if there is none."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise CronError(f"unknown time zone {shown(name)} (an IANA name such as Europe/Berlin)")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"unknown time zone {shown(name)} (an IANA name such as Europe/Berlin)"
        ) from None


# -- the schedule document -----------------------------------------------------------------------


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


# A name is its id: a DNS-1123 label of at most 52 characters, as a Kubernetes CronJob's (the
# controller appends 11 characters to name its Jobs; here it keeps names printable and safe in
# a Redis key and a URL path).
NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)
NAME_MAX = 52


class ScheduleSpec(_Wire):
    """What a client writes: a cron schedule and the task each fire submits."""

    name: str
    schedule: str
    time_zone: str = "UTC"
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    starting_deadline_seconds: int | None = Field(default=None, ge=0)
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=100)
    failed_jobs_history_limit: int = Field(default=1, ge=0, le=100)
    suspend: bool = False
    task: TaskSpec

    @field_validator(
        "starting_deadline_seconds",
        "successful_jobs_history_limit",
        "failed_jobs_history_limit",
        mode="before",
    )
    @classmethod
    def _not_a_boolean(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be an integer, not a boolean")
        return v

    @field_validator("suspend", mode="before")
    @classmethod
    def _a_boolean(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    @property
    def cron(self) -> Cron:
        return parse_cron(self.schedule)

    @property
    def zone(self) -> ZoneInfo:
        return zone_of(self.time_zone)


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return None  # the model reports the type
    if len(name) > NAME_MAX:
        return f"name: {len(name)} characters is over the {NAME_MAX}-character limit"
    if not NAME.fullmatch(name):
        return (
            f"name: {shown(name)} must be lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def validate_schedule(
    data: Any, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> ScheduleSpec:
    """Check a schedule document; raise TaskValidationError naming every problem.

    Problems are named by their path (`schedule: ...`, `task.payload: ...`); the cron
    expression and the time zone are checked even when other fields are wrong, so one round
    trip shows everything.
    """
    if not isinstance(data, dict):
        raise TaskValidationError([f"schedule: must be a JSON object, got {type(data).__name__}"])
    problems: list[str] = []
    spec: ScheduleSpec | None = None
    try:
        spec = ScheduleSpec.model_validate(data)
    except ValidationError as err:
        problems.extend(_problems(err))
    name_problem = _name_problem(data.get("name"))
    if name_problem:
        problems.append(name_problem)
    if isinstance(data.get("schedule"), str):
        try:
            parse_cron(data["schedule"])
        except CronError as exc:
            problems.append(f"schedule: {exc}")
    zone = data.get("timeZone", "UTC")
    if isinstance(zone, str):
        try:
            zone_of(zone)
        except CronError as exc:
            problems.append(f"timeZone: {exc}")
    too_large = False
    task = data.get("task")
    if isinstance(task, dict):
        if task.get("requestId") is not None:
            problems.append("task.requestId: each run's id derives from its fire time instead")
        try:
            validate_spec(task, max_payload_bytes)
        except TaskValidationError as exc:
            too_large = exc.too_large
            # The model reported the same field errors already; add only what it cannot see
            # (a payload's size, a handler's call).
            have = set(problems)
            problems.extend(p for p in (f"task.{q}" for q in exc.problems) if p not in have)
    if spec is not None and not problems:
        if not next_fires(spec.cron, spec.zone, 0.0, 1) and not next_fires(
            spec.cron, spec.zone, 4102444800.0, 1
        ):
            problems.append(f"schedule: {shown(spec.schedule)} never fires")
    if problems:
        raise TaskValidationError(problems, too_large=too_large)
    assert spec is not None
    return spec


def run_id(uid: str, fire_time: float) -> str:
    """The id of the run a schedule makes for one fire time: the same on every leader, so a
    fire repeated after a failover names the task it created already (uuid5, not uuid4)."""
    return str(uuid.uuid5(uuid.UUID(uid), f"{int(fire_time)}"))


def iso(ts: float) -> str:
    """A Unix time as RFC 3339 UTC, as a fire time is shown."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# -- deciding what fires ---------------------------------------------------------------------------

# Kubernetes warns "too many missed start times" past this many.
TOO_MANY_MISSED = 100
# Missed fire times are counted one by one up to this many; past it the count says "at least".
COUNT_CAP = 1000


@dataclass(frozen=True)
class Run:
    run_id: str
    scheduled_for: float


class Skip(StrEnum):
    SUSPENDED = "suspended"
    FORBID = "forbid_active"
    TOO_LATE = "too_late"


@dataclass(frozen=True)
class FirePlan:
    """What to do now. `fire_at`: the one fire time to run (None: nothing fires); `missed`:
    the fire times due since the last one recorded (fire_at included), counted up to
    COUNT_CAP; `skipped`: why a due time does not run; `cancel`: active runs to cancel first
    (Replace); `next_check`: when to look again."""

    fire_at: float | None
    next_check: float | None
    missed: int = 0
    skipped: Skip | None = None
    cancel: tuple[str, ...] = field(default=())

    @property
    def too_many_missed(self) -> bool:
        return self.missed > TOO_MANY_MISSED


def _due(cron: Cron, zone: ZoneInfo, earliest: float, now: float) -> tuple[float | None, int]:
    """The most recent fire time in (earliest, now], and how many there are (capped)."""
    latest, count = None, 0
    for ts in iter_fires(cron, zone, earliest):
        if ts > now:
            return latest, count
        latest, count = ts, count + 1
        if count >= COUNT_CAP:
            break
    else:
        return latest, count
    # Thousands missed (every minute for a week): the exact count is not needed, the most
    # recent is. Look back from now over windows that double until one holds a fire time.
    span = 3600.0
    while span < _HORIZON.total_seconds():
        recent = None
        for ts in iter_fires(cron, zone, max(now - span, latest or earliest)):
            if ts > now:
                break
            recent = ts
        if recent is not None:
            return recent, COUNT_CAP
        span *= 2
    return latest, COUNT_CAP


# --8<-- [start:decide]
def decide_fires(
    spec: ScheduleSpec,
    created_at: float,
    last_scheduled: float | None,
    now: float,
    active: Sequence[Run],
    recheck: float = 1.0,
) -> FirePlan:
    """Kubernetes' CronJob sync for one schedule at `now`, as a pure function.

    `active`: its runs not final yet. `recheck`: how soon a Forbid-blocked schedule looks again
    (the time it skipped may still run once the active run ends, within its deadline).
    """
    cron, zone = spec.cron, spec.zone
    upcoming = next_fires(cron, zone, now, 1)
    next_time = upcoming[0] if upcoming else None
    # Replace, level-triggered: a run older than the last fire is to go, whoever fired it.
    stale = tuple(
        r.run_id
        for r in active
        if spec.concurrency_policy == ConcurrencyPolicy.REPLACE
        and last_scheduled is not None
        and r.scheduled_for < last_scheduled
    )
    if spec.suspend:
        # Nothing is recorded: on resume the rule below sees what was missed meanwhile.
        return FirePlan(None, next_time, skipped=Skip.SUSPENDED, cancel=stale)
    earliest = last_scheduled if last_scheduled is not None else created_at
    if spec.starting_deadline_seconds is not None:
        earliest = max(earliest, now - spec.starting_deadline_seconds)
    if earliest > now:
        return FirePlan(None, next_time, cancel=stale)
    latest, missed = _due(cron, zone, earliest, now)
    if latest is None:
        return FirePlan(None, next_time, cancel=stale)
    if spec.starting_deadline_seconds is not None and latest + spec.starting_deadline_seconds < now:
        return FirePlan(None, next_time, missed, Skip.TOO_LATE, stale)
    running = [r for r in active if r.run_id not in stale]
    if spec.concurrency_policy == ConcurrencyPolicy.FORBID and running:
        again = now + recheck
        return FirePlan(
            None, min(again, next_time) if next_time else again, missed, Skip.FORBID, stale
        )
    if spec.concurrency_policy == ConcurrencyPolicy.REPLACE:
        stale = tuple(r.run_id for r in active)
    return FirePlan(latest, next_time, missed, None, stale)


# --8<-- [end:decide]


def runs_to_delete(
    finished: Sequence[tuple[str, float, bool]], succeeded_limit: int, failed_limit: int
) -> list[str]:
    """Which finished runs go, as Kubernetes' cleanupFinishedJobs: of (runId, scheduledFor,
    succeeded), all but the newest `succeeded_limit` succeeded and `failed_limit` failed."""
    out: list[str] = []
    for ok, limit in ((True, succeeded_limit), (False, failed_limit)):
        runs = sorted((r for r in finished if r[2] == ok), key=lambda r: r[1], reverse=True)
        out.extend(r[0] for r in runs[limit:])
    return out
