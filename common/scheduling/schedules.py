"""The schedule firer: the scheduler leader's hand on every cron schedule.

Pattern: level-triggered reconcile with an idempotent, fenced write (introduced with cron
schedules; docs/patterns/schedules.md). A thread of the leader's term, like the composite
coordinator. Per tick, for each schedule due in `schedules:due` (its next check has come, by
the Clock port, so a test can set the time):

1. Read the schedule and its active runs' statuses: a run seen final leaves the active set
   for its history; the history past its limits is deleted, as Kubernetes deletes old Jobs.
2. `decide_fires` (pure, common/domain/schedule.py): which one fire time runs now, if any,
   how many were missed, what Forbid or Replace says, and when to look again.
3. One `sync` write (schedule_sync.lua): fenced with the leader's epoch, and keyed by the fire
   time: the run's id is uuid5(schedule uid, fire time) and it is created only if the
   schedule's lastScheduleTime is older. So a leader that dies after the write and one that
   freezes before it and wakes deposed both leave exactly one run: the next leader decides
   the same fire time, and the store answers "already"; the frozen one is refused.
4. Replace: cancel the runs older than the last fire (after the write, so a deposed leader
   cancels nothing; a crash before the cancels leaves them for the next tick, which decides
   them again from the state).

Nothing is remembered between ticks, so a new leader, or one that missed minutes, starts
from the state in Redis and computes what should have fired by now. A stale epoch ends the
term (`Deposed`), as for a placement.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError

from common.config.settings import Settings
from common.domain.schedule import (
    FirePlan,
    Run,
    ScheduleSpec,
    decide_fires,
    iso,
    next_fires,
    parse_cron,
    run_id,
    runs_to_delete,
    zone_of,
)
from common.domain.task import Task
from common.domain.transitions import TERMINAL_STATES, TaskStatus
from common.observability import bind, get_logger, metrics
from common.ports.clock import Clock, SystemClock
from common.ports.schedule import Finished, ScheduleState, ScheduleStore, Sync, SyncResult
from common.ports.task_store import TaskStore
from common.scheduling.fencing import Deposed

log = get_logger("tasklab.schedules")

_FINAL = {s.value for s in TERMINAL_STATES}
# A schedule whose expression stops firing (none does once validated) is looked at hourly.
_IDLE_CHECK = 3600.0


def make_run(state: ScheduleState, fire_at: float, now: float) -> Task:
    """The task one fire creates: the template, an id derived from the fire time, and a name
    as Kubernetes names a CronJob's Job (the schedule's name, then minutes since the epoch)."""
    fields = state.spec.task.model_dump()
    fields["task_name"] = f"{state.name}-{int(fire_at // 60)}"
    return Task(
        task_id=run_id(state.uid, fire_at),
        **fields,
        created_at=now,
        updated_at=now,
        schedule_id=state.name,
        scheduled_for=fire_at,
    )


class ScheduleFirer:
    def __init__(
        self,
        store: ScheduleStore,
        tasks: TaskStore,
        actor: str,
        clock: Clock,
        *,
        interval: float = 0.5,
        max_per_tick: int = 256,
        recheck: float = 1.0,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.actor = actor
        self.clock = clock
        self.interval = interval
        # Bounded work per tick: the due set is read soonest first, the rest waits a tick.
        self.max_per_tick = max_per_tick
        # How soon a Forbid-blocked schedule looks again.
        self.recheck = recheck
        self.ticks = 0
        self.fired = 0
        self._reported: set[tuple[str, str]] = set()
        # Per schedule, the skipped start times already counted since its last recorded fire:
        # a Forbid wait sees the same due times again each recheck, counted once each.
        self._skips_counted: dict[str, tuple[float | None, int]] = {}

    # -- the loop ------------------------------------------------------------------------------
    def run(self, epoch: int, stop: threading.Event, paused: threading.Event | None = None) -> None:
        """Tick every `interval` until `stop` is set. Raises Deposed when a write says a newer
        leader exists. A Redis error or an unreadable clock skips a tick."""
        while not stop.is_set():
            if paused is not None and paused.is_set():
                stop.wait(self.interval)  # ZooKeeper is unsure we still lead: write nothing
                continue
            try:
                self.tick(epoch)
            except RedisError as exc:
                log.error("schedule firer: Redis failed (%s); next tick in 1 s", exc)
                stop.wait(1.0)
                continue
            except (OSError, ValueError) as exc:
                log.error("schedule firer: cannot read the clock (%s); next tick in 1 s", exc)
                stop.wait(1.0)
                continue
            stop.wait(self.interval)

    def tick(self, epoch: int) -> int:
        """One pass over the schedules due now; returns how many were looked at."""
        self.ticks += 1
        now = self.clock.now()
        names = self.store.due(now, self.max_per_tick)
        for name in names:
            try:
                self.reconcile(name, epoch, now)
            except (Deposed, RedisError):
                raise
            except Exception as exc:  # one bad schedule must not stop the others
                self._report(name, exc)
        return len(names)

    # -- one schedule -------------------------------------------------------------------------
    # --8<-- [start:reconcile]
    def reconcile(self, name: str, epoch: int, now: float) -> SyncResult | None:
        state = self.store.get(name)
        if state is None:
            self._skips_counted.pop(name, None)
            return None  # deleted meanwhile (a delete takes it off the due set too)
        statuses = self.store.run_statuses([r.run_id for r in state.active])
        finished: list[Finished] = []
        active: list[Run] = []
        for run in state.active:
            status = statuses.get(run.run_id)
            if status is None:
                finished.append(Finished(run.run_id, "gone"))
            elif status in _FINAL:
                ok = "succeeded" if status == TaskStatus.SUCCESS.value else "failed"
                finished.append(Finished(run.run_id, ok))
            else:
                active.append(run)
        spec = state.spec
        plan = decide_fires(
            spec, state.created_at, state.last_schedule_time, now, active, self.recheck
        )
        delete = self._trim(state, finished, {r.run_id: r.scheduled_for for r in state.active})
        fire = make_run(state, plan.fire_at, now) if plan.fire_at is not None else None
        write = Sync(
            uid=state.uid,
            next_check=plan.next_check if plan.next_check is not None else now + _IDLE_CHECK,
            fire_at=plan.fire_at,
            fire=fire,
            missed=plan.missed,
            skip=plan.skipped.value if plan.skipped and plan.missed else "",
            finished=finished,
            delete=delete,
        )
        with bind(epoch=epoch):
            result = self.store.sync(name, write, epoch, self.actor, now)
            if not result.accepted:
                if result.outcome == "stale_epoch":
                    raise Deposed
                return result  # gone: deleted or made again under its name meanwhile
            self._log(name, plan, fire, result, state.last_skip)
            self._count(name, plan, fire, result, state.last_schedule_time)
            for old in plan.cancel:
                cancelled = self.tasks.cancel(old, self.actor)
                if cancelled.accepted and cancelled.reason == "ok":
                    log.info("schedule %s: Replace cancelled run %s", name, old)
        return result

    # --8<-- [end:reconcile]

    def _trim(
        self, state: ScheduleState, finished: list[Finished], active_at: dict[str, float]
    ) -> list[str]:
        kept = [(r.run_id, r.scheduled_for, True) for r in state.succeeded]
        kept += [(r.run_id, r.scheduled_for, False) for r in state.failed]
        kept += [
            (f.run_id, active_at[f.run_id], f.outcome == "succeeded")
            for f in finished
            if f.outcome != "gone"
        ]
        spec = state.spec
        return runs_to_delete(
            kept, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit
        )

    def _log(
        self,
        name: str,
        plan: FirePlan,
        fire: Task | None,
        result: SyncResult,
        last_skip: str | None,
    ) -> None:
        fired = result.outcome == "fired" and fire is not None and plan.fire_at is not None
        # Missed times and skips are told once per fire or per change, not once a second
        # while a Forbid run goes on.
        told = fired or (plan.skipped is not None and plan.skipped.value != last_skip)
        if fired and fire is not None and plan.fire_at is not None:
            self.fired += 1
            with bind(taskId=fire.task_id):
                log.info("schedule %s fired for %s", name, iso(plan.fire_at))
        if told and plan.missed > 1:
            log.info("schedule %s: %d start time(s) missed", name, plan.missed - 1)
        if told and plan.too_many_missed:
            # Kubernetes' warning event, in spirit: the leader was away long or the clock
            # jumped; only the most recent time ran.
            log.warning(
                "schedule %s: too many missed start times (%s%d); set or decrease "
                "startingDeadlineSeconds or check clock skew",
                name,
                "at least " if plan.missed >= 1000 else "",
                plan.missed,
            )
        if told and plan.skipped is not None and plan.missed:
            log.info("schedule %s: a due start time did not run (%s)", name, plan.skipped.value)

    def _count(
        self,
        name: str,
        plan: FirePlan,
        fire: Task | None,
        result: SyncResult,
        last_fire: float | None,
    ) -> None:
        """The schedule metrics: a fire, the start times it passed over, and due times a
        policy skipped (only the ones not counted yet: `missed` counts every time due since
        the last fire, and a Forbid wait looks again each recheck)."""
        if result.outcome == "fired" and fire is not None and plan.fire_at is not None:
            metrics.SCHEDULE_FIRES.inc()
            if plan.missed > 1:
                metrics.SCHEDULE_MISSED.inc(plan.missed - 1)
            self._skips_counted.pop(name, None)
            return
        if plan.skipped is None or plan.skipped.value not in metrics.SCHEDULE_SKIP_REASONS:
            return
        since, counted = self._skips_counted.get(name, (last_fire, 0))
        if since != last_fire:
            counted = 0  # another leader fired it meanwhile: a new count
        if plan.missed > counted:
            metrics.SCHEDULE_SKIPPED.labels(plan.skipped.value).inc(plan.missed - counted)
            self._skips_counted[name] = (last_fire, plan.missed)

    def _report(self, name: str, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        if (name, problem) in self._reported:
            return
        self._reported.add((name, problem))
        log.error("schedule %s cannot be reconciled (%s); retried each tick", name, problem)


def firer_of(client: Redis, settings: Settings) -> ScheduleFirer:
    """The firer every stage's scheduler runs (stage 2 on): Redis-backed, on the system clock
    unless a test names a clock file."""
    from common.adapters.clock import FileClock
    from common.adapters.redis_schedule import RedisScheduleStore
    from common.adapters.redis_store import RedisTaskStore

    clock: Clock = FileClock(settings.clock_file) if settings.clock_file else SystemClock()
    return ScheduleFirer(
        RedisScheduleStore(client),
        RedisTaskStore(client),
        f"scheduler:{settings.scheduler_id}",
        clock,
        interval=settings.schedule_interval,
    )


# -- what clients call (the API, gRPC, the CLI) -------------------------------------------------


def first_check(spec: ScheduleSpec, now: float) -> float:
    """When a new or changed schedule is first due: its next fire time."""
    upcoming = next_fires(spec.cron, spec.zone, now, 1)
    return upcoming[0] if upcoming else now + _IDLE_CHECK


def create_schedule(store: ScheduleStore, spec: ScheduleSpec, now: float) -> ScheduleState:
    """Store a validated schedule; ScheduleExists if its name is taken."""
    return store.create(spec, now, first_check(spec, now))


def preview(cron: str, time_zone: str, now: float, n: int) -> list[float]:
    """The next `n` fire times of an expression in a zone (CronError if either is wrong)."""
    return next_fires(parse_cron(cron), zone_of(time_zone), now, n)


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def schedule_json(state: ScheduleState, fire_times: list[float]) -> dict:
    """A schedule as the REST API shows it (GET /api/v1/schedules/{name}), built from the
    store: what the CLI prints when it reads Redis directly, the same shape either way."""
    spec = state.spec
    doc = spec.model_dump(by_alias=True, mode="json")
    doc["task"] = {k: v for k, v in doc["task"].items() if k != "requestId"}

    def runs(rs: tuple[Run, ...]) -> list[dict]:
        return [{"taskId": r.run_id, "scheduledFor": _rfc3339(r.scheduled_for)} for r in rs]

    doc["status"] = {
        "uid": state.uid,
        "createdAt": _rfc3339(state.created_at),
        "updatedAt": _rfc3339(state.updated_at),
        "lastScheduleTime": _rfc3339(state.last_schedule_time),
        "lastRunId": state.last_run_id,
        "lastMissed": state.last_missed,
        "lastSkip": state.last_skip,
        "nextCheck": _rfc3339(state.next_check),
        "active": runs(state.active),
        "succeeded": runs(state.succeeded),
        "failed": runs(state.failed),
    }
    doc["nextFireTimes"] = [_rfc3339(t) for t in fire_times]
    return doc
